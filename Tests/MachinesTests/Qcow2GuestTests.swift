import Foundation
import Testing
import TestSupport

/// Debian's riscv64 kernel on a qcow2 disk (`-drive format=qcow2,if=virtio`): the guest mounts
/// the ext4 file system, reads a file the host put there and writes one back; qemu-img then
/// finds the image clean and the guest's file in it. Also: the same after `kill -9` of swemu
/// once the guest has synced (crash safety), random writes through an overlay over a
/// compressed base, and `-snapshot` leaving the image untouched.
@Suite(.serialized, .oneLinuxBootAtATime) struct Qcow2GuestTests {
    static var missing: String? {
        if let missing = LinuxBootTests.missing { return missing }
        if !FileManager.default.isExecutableFile(atPath: "/usr/bin/qemu-img") {
            return "needs qemu-img (Debian's qemu-utils; scripts/setup installs it)"
        }
        return nil
    }

    /// The acceptance disk as qcow2 (made by qemu-img from mke2fs's raw image).
    static func qcow2Disk() throws -> URL {
        let raw = try LinuxBootTests.makeDisk(["host.txt": "hello from the host"])
        let image = raw.deletingLastPathComponent().appendingPathComponent("disk.qcow2")
        let made = try GuestProgram.run("/usr/bin/qemu-img", ["convert", "-f", "raw", "-O", "qcow2", "-o", "cluster_size=65536", raw.path, image.path])
        try #require(made.status == 0, "qemu-img convert: \(made.output)")
        try FileManager.default.removeItem(at: raw)
        return image
    }

    static func arguments(_ disk: URL, extra: [String] = []) -> [String] {
        ["-M", "virt", "-m", "512M", "-nographic", "-kernel", LinuxBootTests.kernel, "-initrd", LinuxBootTests.initrd,
         "-append", "console=ttyS0 quiet swemu.test=/tests/acceptance", "-drive", "file=\(disk.path),format=qcow2,if=virtio"] + extra
    }

    /// What the guest wrote, read back through qemu-img (convert to raw) and debugfs.
    static func guestFile(_ disk: URL) throws -> String {
        let raw = disk.deletingLastPathComponent().appendingPathComponent("check.raw")
        defer { try? FileManager.default.removeItem(at: raw) }
        _ = try GuestProgram.run("/usr/bin/qemu-img", ["convert", "-O", "raw", disk.path, raw.path])
        return try GuestProgram.run("/sbin/debugfs", ["-R", "cat /guest.txt", raw.path]).output
    }

    @Test(.enabled(if: missing == nil, "\(missing ?? "")"))
    func guestWritesAQcow2Disk() throws {
        let disk = try Self.qcow2Disk()
        defer { try? FileManager.default.removeItem(at: disk.deletingLastPathComponent()) }
        let run = try GuestProgram.run(LinuxBootTests.binary, Self.arguments(disk), timeout: 300)
        #expect(run.status == 0, "swemu exited \(run.status)")
        #expect(LinuxBootTests.value("HOSTFILE", in: run.output) == "hello from the host", "\(run.output.suffix(2000))")
        #expect(LinuxBootTests.value("DISK", in: run.output) == "ok")
        let check = try GuestProgram.run("/usr/bin/qemu-img", ["check", disk.path])
        #expect(check.status == 0, "qemu-img check: \(check.output)")
        #expect(try GuestProgram.run("/usr/bin/qemu-img", ["info", disk.path]).output.contains("corrupt: false"))
        #expect(try Self.guestFile(disk).contains("written by the guest"))
    }

    @Test(.enabled(if: missing == nil, "\(missing ?? "")"))
    func killedAfterTheGuestSyncedLosesNothing() throws {
        let disk = try Self.qcow2Disk()
        defer { try? FileManager.default.removeItem(at: disk.deletingLastPathComponent()) }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: LinuxBootTests.binary)
        process.arguments = Self.arguments(disk)
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        process.standardInput = FileHandle.nullDevice
        try process.run()
        var output = ""
        let deadline = Date().addingTimeInterval(300)
        while !output.contains("DISK=ok") && Date() < deadline {
            let data = pipe.fileHandleForReading.availableData
            if data.isEmpty { break }
            output += String(decoding: data, as: UTF8.self)
        }
        // No clean close: the dirty bit stays set. Only if still running: an ended process's pid
        // may be another test's swemu by now.
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
        try #require(output.contains("DISK=ok"), "the guest never synced: \(output.suffix(2000))")
        // Killed while open for writing: the dirty bit says so.
        let info = try GuestProgram.run("/usr/bin/qemu-img", ["info", "--output=json", disk.path])
        #expect(info.output.contains("\"dirty-flag\": true"), "\(info.output)")
        // The guest's sync reached the image (write-through metadata, fdatasync on flush):
        // at worst leaks, which check -r all repairs; then the file is there.
        let repair = try GuestProgram.run("/usr/bin/qemu-img", ["check", "-r", "all", disk.path])
        #expect(repair.status == 0, "qemu-img check -r all: \(repair.output)")
        #expect(try GuestProgram.run("/usr/bin/qemu-img", ["check", disk.path]).status == 0)
        #expect(try Self.guestFile(disk).contains("written by the guest"))
    }

    /// The guest writes random data straight to a second disk, a qcow2 overlay (4 KiB
    /// clusters) over a compressed qcow2 base made by qemu-img: partial clusters, COW from
    /// the compressed base. qemu-img check is clean and reads the same bytes the guest hashed.
    @Test(.enabled(if: missing == nil, "\(missing ?? "")"))
    func guestRandomWritesThroughAnOverlay() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("swemu-qcow2-guest-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir.appendingPathComponent("root"), withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let script = """
            dd if=/dev/urandom of=/dev/vdb bs=4096 count=300 seek=17 conv=notrunc 2>/dev/null || exit 3
            dd if=/dev/urandom of=/dev/vdb bs=65536 count=64 seek=100 conv=notrunc 2>/dev/null || exit 4
            dd if=/dev/urandom of=/dev/vdb bs=512 count=77 seek=5001 conv=notrunc 2>/dev/null || exit 5
            sync
            echo "HASH=$(md5sum /dev/vdb | cut -d' ' -f1)"
            """
        try script.write(to: dir.appendingPathComponent("root/run"), atomically: true, encoding: .utf8)
        let boot = dir.appendingPathComponent("boot.img")
        #expect(try GuestProgram.run("/sbin/mke2fs", ["-q", "-t", "ext4", "-d", dir.appendingPathComponent("root").path, boot.path, "8M"]).status == 0)
        let base = dir.appendingPathComponent("base.raw")
        _ = try GuestProgram.run("/bin/sh", ["-c", "head -c 12582912 /dev/urandom > \(base.path); truncate -s 16M \(base.path)"])
        let baseQcow2 = dir.appendingPathComponent("base.qcow2"), top = dir.appendingPathComponent("top.qcow2")
        #expect(try GuestProgram.run("/usr/bin/qemu-img", ["convert", "-c", "-O", "qcow2", base.path, baseQcow2.path]).status == 0)
        #expect(try GuestProgram.run("/usr/bin/qemu-img", ["create", "-f", "qcow2", "-o", "cluster_size=4096", "-b", baseQcow2.path, "-F", "qcow2", top.path]).status == 0)
        let run = try GuestProgram.run(LinuxBootTests.binary, [
            "-M", "virt", "-m", "512M", "-nographic", "-kernel", LinuxBootTests.kernel, "-initrd", LinuxBootTests.initrd,
            "-append", "console=ttyS0 quiet swemu.test=/mnt/run",
            "-drive", "file=\(boot.path),format=raw,if=virtio", "-drive", "file=\(top.path),format=qcow2,if=virtio",
        ], timeout: 300)
        #expect(LinuxBootTests.value("SWEMU-TEST-EXIT", in: run.output) == "0", "\(run.output.suffix(2000))")
        let guestHash = try #require(LinuxBootTests.value("HASH", in: run.output))
        let check = try GuestProgram.run("/usr/bin/qemu-img", ["check", top.path])
        #expect(check.status == 0, "qemu-img check: \(check.output)")
        let flat = dir.appendingPathComponent("flat.raw")
        #expect(try GuestProgram.run("/usr/bin/qemu-img", ["convert", "-O", "raw", top.path, flat.path]).status == 0)
        let hostHash = try GuestProgram.run("/usr/bin/md5sum", [flat.path]).output.prefix(32)
        #expect(String(hostHash) == guestHash)
    }

    @Test(.enabled(if: missing == nil, "\(missing ?? "")"))
    func snapshotLeavesTheImageUntouched() throws {
        let disk = try Self.qcow2Disk()
        defer { try? FileManager.default.removeItem(at: disk.deletingLastPathComponent()) }
        let before = try Data(contentsOf: disk)
        let run = try GuestProgram.run(LinuxBootTests.binary, Self.arguments(disk, extra: ["-snapshot"]), timeout: 300)
        #expect(LinuxBootTests.value("DISK", in: run.output) == "ok", "\(run.output.suffix(2000))")
        #expect(try Data(contentsOf: disk) == before)
    }
}
