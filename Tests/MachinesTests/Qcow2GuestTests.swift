import Foundation
import Testing

/// Debian's riscv64 kernel on a qcow2 disk (`-drive format=qcow2,if=virtio`): the guest mounts
/// the ext4 file system, reads a file the host put there and writes one back; qemu-img then
/// finds the image clean and the guest's file in it. Also: the same after `kill -9` of swemu
/// once the guest has synced (crash safety), and `-snapshot` leaving the image untouched.
@Suite(.serialized) struct Qcow2GuestTests {
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
        kill(process.processIdentifier, SIGKILL)  // no clean close: the dirty bit stays set
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
