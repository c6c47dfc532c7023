import Foundation
import Loader
import Testing
import TestSupport

/// Debian's riscv64 kernel on the `virt` board, end to end: OpenSBI (-bios default), the
/// kernel, the project's busybox initramfs (scripts/guests), virtio-blk/rng, the RTC, poweroff
/// and reboot. These run the release binary (an interpreter built for debugging is far too
/// slow to boot Linux in a test): scripts/test builds it first.
@Suite(.serialized, .oneLinuxBootAtATime) struct LinuxBootTests {
    static let binary = ProcessInfo.processInfo.environment["SWEMU_RELEASE_BINARY"]
        ?? GuestProgram.packageRoot.appendingPathComponent(".build/release/swemu-system-riscv64").path
    static let guests = ProcessInfo.processInfo.environment["SWEMU_GUEST_CACHE"].map { $0 + "/riscv64" }
        ?? FileManager.default.homeDirectoryForCurrentUser.appendingPathComponent(".cache/swemu/guests/riscv64").path
    static let kernel = guests + "/Image"
    /// Both execution engines, as `-accel` values: the interpreter and the JIT.
    static let accelerators = ["tcg,jit=off", "tcg,jit=on"]
    static let initrd = guests + "/initramfs.cpio.gz"

    static var missing: String? {
        if !FileManager.default.isExecutableFile(atPath: binary) {
            return "needs the release binary \(binary) (swift build -c release; scripts/test builds it)"
        }
        if !FileManager.default.fileExists(atPath: kernel) || !FileManager.default.fileExists(atPath: initrd) {
            return "needs the riscv64 guest images in \(guests) (run scripts/guests; scripts/test does)"
        }
        for tool in ["/sbin/mke2fs", "/sbin/debugfs"] where !FileManager.default.isExecutableFile(atPath: tool) {
            return "needs \(tool) (Debian's e2fsprogs; scripts/setup installs it)"
        }
        return nil
    }

    /// An ext4 image holding `files`, made by the host's mke2fs.
    static func makeDisk(_ files: [String: String]) throws -> URL {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("swemu-disk-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir.appendingPathComponent("root"), withIntermediateDirectories: true)
        for (name, text) in files {
            try text.write(to: dir.appendingPathComponent("root/\(name)"), atomically: true, encoding: .utf8)
        }
        let image = dir.appendingPathComponent("disk.img")
        let made = try GuestProgram.run("/sbin/mke2fs", ["-q", "-t", "ext4", "-d", dir.appendingPathComponent("root").path, image.path, "16M"])
        try #require(made.status == 0, "mke2fs: \(made.output)")
        return image
    }

    static func boot(test: String, disk: URL, extra: [String] = []) throws -> (status: Int32, output: String) {
        try GuestProgram.run(binary, ["-M", "virt", "-m", "512M", "-nographic", "-kernel", kernel, "-initrd", initrd,
                                      "-append", "console=ttyS0 quiet swemu.test=/tests/\(test)",
                                      "-drive", "file=\(disk.path),format=raw,if=virtio"] + extra, timeout: 300)
    }

    static func value(_ key: String, in output: String) -> String? {
        for line in output.split(whereSeparator: \.isNewline) where line.hasPrefix(key + "=") {
            return String(line.dropFirst(key.count + 1))
        }
        return nil
    }

    @Test(.enabled(if: missing == nil, "\(missing ?? "")"), arguments: accelerators)
    func bootsToUserspaceAndUsesEveryDevice(accel: String) throws {
        let disk = try Self.makeDisk(["host.txt": "hello from the host"])
        defer { try? FileManager.default.removeItem(at: disk.deletingLastPathComponent()) }
        let started = Date().timeIntervalSince1970
        // Two harts: Linux starts the second through OpenSBI (SBI HSM) and both share the disk.
        let run = try Self.boot(test: "acceptance", disk: disk, extra: ["-device", "virtio-rng-device", "-smp", "2", "-accel", accel])
        let finished = Date().timeIntervalSince1970
        #expect(run.status == 0, "swemu exited \(run.status)")
        let out = run.output
        #expect(out.contains("SWEMU-GUEST-READY"))
        #expect(Self.value("SWEMU-TEST-EXIT", in: out) == "0", "guest test failed:\n\(out.suffix(3000))")
        #expect(Self.value("UNAME", in: out)?.contains("riscv64") == true)
        #expect(Self.value("ISA", in: out)?.hasPrefix("rv64imafdc_zicntr_zicsr_zifencei_zihpm") == true)
        #expect(Self.value("ISA", in: out)?.contains("zba_zbb_zbs_sstc") == true)
        #expect(Self.value("CPUS", in: out) == "2", "\(out.suffix(3000))")
        // The RTC gives the host's date: within the run's window, give or take a few seconds.
        let date = Double(Self.value("DATE", in: out) ?? "") ?? 0
        #expect(date >= started - 5 && date <= finished + 5, "guest date \(date) outside \(started)...\(finished)")
        #expect(Self.value("RNG", in: out)?.count == 32)
        #expect(Self.value("HOSTFILE", in: out) == "hello from the host")
        #expect(Self.value("DISK", in: out) == "ok")
        // The host finds what the guest wrote.
        let written = try GuestProgram.run("/sbin/debugfs", ["-R", "cat /guest.txt", disk.path])
        #expect(written.output.contains("written by the guest"))
    }

    @Test(.enabled(if: missing == nil, "\(missing ?? "")"), arguments: accelerators)
    func rebootStartsTheMachineAgain(accel: String) throws {
        let disk = try Self.makeDisk([:])
        defer { try? FileManager.default.removeItem(at: disk.deletingLastPathComponent()) }
        let run = try Self.boot(test: "reboot", disk: disk, extra: ["-accel", accel])
        #expect(run.status == 0)
        #expect(run.output.contains("FIRST-BOOT"))
        #expect(run.output.contains("SECOND-BOOT"), "no second boot:\n\(run.output.suffix(2000))")
        #expect(run.output.components(separatedBy: "SWEMU-GUEST-READY").count == 3)
        // With -no-reboot the guest's reboot ends swemu after the first boot.
        let noReboot = try Self.boot(test: "reboot", disk: try Self.makeDisk([:]), extra: ["-no-reboot", "-accel", accel])
        #expect(noReboot.status == 0)
        #expect(noReboot.output.contains("FIRST-BOOT") && !noReboot.output.contains("SECOND-BOOT"))
    }
}
