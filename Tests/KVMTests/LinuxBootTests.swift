import Foundation
import Glibc
import KVM
import Testing
import TestSupport

/// Debian 12's cloud kernel with the project's amd64 initramfs (scripts/guests) on
/// `-M microvm -accel kvm`: both the bzImage (64-bit boot protocol) and the ELF vmlinux (PVH).
/// These need KVM on VT-x or AMD-V: on a PVM host (kvm_pvm) Linux's kernel mode is emulated and
/// fails, so they are skipped there with the flavour named.
@Suite(.serialized, .oneLinuxBootAtATime) struct X86LinuxBootTests {
    static let guests = ProcessInfo.processInfo.environment["SWEMU_GUEST_CACHE"].map { $0 + "/x86_64" }
        ?? FileManager.default.homeDirectoryForCurrentUser.appendingPathComponent(".cache/swemu/guests/x86_64").path
    static let initrd = guests + "/initramfs.cpio.gz"
    /// The release binary boots faster; the debug one works too (KVM runs the guest either way).
    static let binary = ProcessInfo.processInfo.environment["SWEMU_X86_BINARY"]
        ?? X86GuestProgram.packageRoot.appendingPathComponent(".build/debug/swemu-system-x86_64").path

    static var missing: String? {
        let flavour = KVMFlavour.detect()
        guard flavour.isHardwareVirtualization else {
            return "needs KVM on VT-x or AMD-V (kvm_intel or kvm_amd); /dev/kvm here is served by \(flavour.rawValue)"
        }
        if access("/dev/kvm", R_OK | W_OK) != 0 { return "needs read/write access to /dev/kvm" }
        if !FileManager.default.isExecutableFile(atPath: binary) { return "needs \(binary) (swift build)" }
        for file in ["vmlinuz", "vmlinux", "initramfs.cpio.gz"] where !FileManager.default.fileExists(atPath: guests + "/" + file) {
            return "needs the x86_64 guest images in \(guests) (run scripts/guests)"
        }
        for tool in ["/sbin/mke2fs", "/sbin/debugfs"] where !FileManager.default.isExecutableFile(atPath: tool) {
            return "needs \(tool) (Debian's e2fsprogs; scripts/setup installs it)"
        }
        return nil
    }

    /// An ext4 image holding `files`, made by the host's mke2fs.
    static func makeDisk(_ files: [String: String]) throws -> URL {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("swemu-x86-disk-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir.appendingPathComponent("root"), withIntermediateDirectories: true)
        for (name, text) in files {
            try text.write(to: dir.appendingPathComponent("root/\(name)"), atomically: true, encoding: .utf8)
        }
        let image = dir.appendingPathComponent("disk.img")
        let made = try Subprocess.run("/sbin/mke2fs", ["-q", "-t", "ext4", "-d", dir.appendingPathComponent("root").path, image.path, "16M"])
        try #require(made.status == 0, "mke2fs: \(made.output)")
        return image
    }

    static func boot(kernel: String, test: String, disk: URL, extra: [String] = []) throws -> (status: Int32, output: String) {
        try Subprocess.run(binary, ["-M", "microvm", "-accel", "kvm", "-m", "512M", "-smp", "4", "-nographic",
                                    "-kernel", guests + "/" + kernel, "-initrd", initrd,
                                    "-append", "console=ttyS0 reboot=k swemu.test=/tests/\(test)",
                                    "-drive", "file=\(disk.path),format=raw,if=virtio"] + extra, timeout: 120)
    }

    static func value(_ key: String, in output: String) -> String? {
        for line in output.split(whereSeparator: \.isNewline) where line.hasPrefix(key + "=") {
            return String(line.dropFirst(key.count + 1))
        }
        return nil
    }

    /// Early boot on any KVM, PVM included: through either entry path Debian's kernel finds the
    /// command line and e820 map swemu gave it (zero page or PVH start info), the ACPI tables, and
    /// the CPUs the MADT lists. On PVM the kernel dies later with an emulation failure, and the
    /// bzImage's decompressor alone takes about two minutes there (it prints nothing meanwhile:
    /// Debian builds without X86_VERBOSE_BOOTUP), so that case runs with SWEMU_SLOW_TESTS=1.
    @Test(.enabled(if: earlyBootMissing == nil, "\(earlyBootMissing ?? "")"))
    func earlyBootOfTheELFKernel() throws {
        try Self.earlyBootSeesTheBoardsDescription(kernel: "vmlinux")
    }

    @Test(.enabled(if: earlyBootMissing == nil, "\(earlyBootMissing ?? "")"),
          .enabled(if: bzImageEarlyBootIsQuick, "\(bzImageEarlyBootSlowReason)"))
    func earlyBootOfTheBzImage() throws {
        try Self.earlyBootSeesTheBoardsDescription(kernel: "vmlinuz")
    }

    /// The bzImage's decompressor runs in the guest's kernel mode: quick on VT-x/AMD-V, minutes
    /// on PVM, where it runs only when asked for.
    static var bzImageEarlyBootIsQuick: Bool {
        KVMFlavour.detect().isHardwareVirtualization || ProcessInfo.processInfo.environment["SWEMU_SLOW_TESTS"] != nil
    }
    static var bzImageEarlyBootSlowReason: String {
        "under \(KVMFlavour.detect().rawValue) the bzImage's decompression takes minutes; set SWEMU_SLOW_TESTS=1 to run it"
    }

    static func earlyBootSeesTheBoardsDescription(kernel: String) throws {
        let output = try Subprocess.output(of: Self.binary, ["-M", "microvm", "-accel", "kvm", "-m", "512M", "-smp", "2", "-nographic",
                                                         "-kernel", Self.guests + "/" + kernel, "-append", "console=ttyS0 earlyprintk=serial,ttyS0,115200 swemu-early-boot"],
                                           until: "smpboot: Allowing", timeout: 400)
        #expect(output.contains("Command line: console=ttyS0 earlyprintk=serial,ttyS0,115200 swemu-early-boot"), "\(output.suffix(2000))")
        #expect(output.contains("BIOS-e820: [mem 0x0000000000100000-0x000000001fffffff] usable"))
        #expect(output.contains("ACPI: RSDP 0x00000000000E0000"))
        #expect(output.contains("Hypervisor detected: KVM"))
        #expect(output.contains("IOAPIC[0]: apic_id 0, version 17, address 0xfec00000, GSI 0-23"))
        #expect(output.contains("smpboot: Allowing 2 CPUs"), "\(output.suffix(2000))")
    }

    static var earlyBootMissing: String? {
        if access("/dev/kvm", R_OK | W_OK) != 0 { return "needs read/write access to /dev/kvm" }
        if !FileManager.default.isExecutableFile(atPath: binary) { return "needs \(binary) (swift build)" }
        for file in ["vmlinuz", "vmlinux"] where !FileManager.default.fileExists(atPath: guests + "/" + file) {
            return "needs the x86_64 guest images in \(guests) (run scripts/guests)"
        }
        return nil
    }

    @Test(.enabled(if: missing == nil, "\(missing ?? "")"), arguments: ["vmlinuz", "vmlinux"])
    func bootsMountsExt4AndPowersOff(kernel: String) throws {
        let disk = try Self.makeDisk(["host.txt": "hello from the host"])
        defer { try? FileManager.default.removeItem(at: disk.deletingLastPathComponent()) }
        let run = try Self.boot(kernel: kernel, test: "acceptance", disk: disk, extra: ["-device", "virtio-rng-device"])
        #expect(run.status == 0, "swemu exited \(run.status):\n\(run.output.suffix(3000))")
        #expect(run.output.contains("SWEMU-GUEST-READY"))
        #expect(run.output.contains("smp: Brought up 1 node, 4 CPUs"), "-smp 4 did not give 4 CPUs")
        #expect(Self.value("SWEMU-TEST-EXIT", in: run.output) == "0", "guest test failed:\n\(run.output.suffix(3000))")
        #expect(Self.value("UNAME", in: run.output)?.contains("x86_64") == true)
        #expect(Self.value("HOSTFILE", in: run.output) == "hello from the host")
        #expect(Self.value("DISK", in: run.output) == "ok")
        let written = try Subprocess.run("/sbin/debugfs", ["-R", "cat /guest.txt", disk.path])
        #expect(written.output.contains("written by the guest"))
    }

    @Test(.enabled(if: missing == nil, "\(missing ?? "")"))
    func rebootBootsAgain() throws {
        let disk = try Self.makeDisk([:])
        defer { try? FileManager.default.removeItem(at: disk.deletingLastPathComponent()) }
        let run = try Self.boot(kernel: "vmlinuz", test: "reboot", disk: disk)
        #expect(run.status == 0)
        #expect(run.output.contains("FIRST-BOOT"))
        #expect(run.output.contains("SECOND-BOOT"), "no second boot:\n\(run.output.suffix(2000))")
    }
}
