import Foundation
import Testing
import TestSupport

/// Live migration and save/restore of a running RISC-V machine between swemu processes
/// (issue: snapshots and live migration), driven by QEMU's `qemu.qmp` client: the
/// migrate_counter guest prints a count every 10 ms, sleeping on its timer, and checks a RAM
/// buffer it rewrites every count; after the move its output must go on in the destination with
/// no gap and no repeat, and its checks hold. Faults (corrupt, foreign and mismatched streams, a
/// destination killed mid-transfer, migrate_cancel) leave the source running. Snapshots in
/// qcow2 disks go back to the saved point the same way.
@Suite(.serialized) struct MigrationTests {
    static var missing: String? { MonitorTests.missing }

    static func run(_ scenario: String, environment: [String: String] = [:]) throws {
        let elf = try GuestProgram.build("migrate_counter")
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("swemu-migrate-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("migration_machine.py").path
        let result = try GuestProgram.run(Python.executable, [script, LinuxBootTests.binary, elf, dir.path, scenario],
                                          timeout: 600, environment: environment)
        #expect(result.status == 0, "\(result.output)")
        #expect(!result.output.contains("FAIL"), "\(result.output)")
    }

    @Test(.enabled(if: missing == nil, "\(missing ?? "")"), arguments: ["unix", "unix-jit", "tcp-jit", "file", "exec", "defer"])
    func migratesWithNothingLost(_ transport: String) throws { try Self.run(transport) }

    @Test(.enabled(if: missing == nil, "\(missing ?? "")"))
    func badStreamsAndFailuresLeaveTheSourceRunning() throws { try Self.run("faults-jit") }

    /// savevm/loadvm/delvm/info snapshots, the QMP snapshot jobs with their JOB_STATUS_CHANGE
    /// events, -loadvm at start, qemu-img's view of the image (VM SIZE, check clean), and the
    /// refusals: unknown and disk-only snapshots, a writable raw disk beside the qcow2 one.
    @Test(.enabled(if: missing == nil, "\(missing ?? "")"))
    func snapshotsSaveLoadAndDelete() throws { try Self.run("snapshots-jit") }

    /// The guest script on the disk: a file written before, 400 counts 10 ms apart (busybox
    /// usleep) with a tmpfs buffer's checksum checked every 20, a file written after; the
    /// machine migrates at count 30 and the script ends on the destination.
    static let linuxScript = """
        #!/bin/sh
        echo before > /mnt/before.txt && sync
        dd if=/dev/urandom of=/tmp/buffer bs=64k count=16 2>/dev/null
        sum=$(md5sum < /tmp/buffer)
        i=0
        while [ $i -lt 400 ]; do
            i=$((i + 1))
            echo "count $i"
            usleep 10000
            if [ $((i % 20)) = 0 ] && [ "$(md5sum < /tmp/buffer)" != "$sum" ]; then echo "BAD checksum at count $i"; exit 1; fi
        done
        echo after > /mnt/after.txt && sync
        """

    @Test(.enabled(if: missing == nil && LinuxBootTests.missing == nil, "\(missing ?? LinuxBootTests.missing ?? "")"), .oneLinuxBootAtATime)
    func linuxWithTwoHartsAndADiskMigrates() throws {
        let disk = try LinuxBootTests.makeDisk(["migrate.sh": Self.linuxScript])
        defer { try? FileManager.default.removeItem(at: disk.deletingLastPathComponent()) }
        // On qcow2, whose metadata both processes would cache: the destination opens it
        // inactive and reads it afresh once loaded; the source hands it over.
        let qcow2 = disk.deletingLastPathComponent().appendingPathComponent("disk.qcow2").path
        let converted = try GuestProgram.run("/usr/bin/qemu-img", ["convert", "-f", "raw", "-O", "qcow2", disk.path, qcow2])
        try #require(converted.status == 0, "qemu-img convert: \(converted.output)")
        try Self.run("linux", environment: ["MIGRATE_KERNEL": LinuxBootTests.kernel, "MIGRATE_INITRD": LinuxBootTests.initrd,
                                            "MIGRATE_DISK": qcow2, "MIGRATE_DISK_FORMAT": "qcow2"])
        let image = try GuestProgram.run("/usr/bin/qemu-img", ["check", qcow2])
        #expect(image.status == 0 && image.output.contains("No errors were found"), "qemu-img check: \(image.output)")
        let back = try GuestProgram.run("/usr/bin/qemu-img", ["convert", "-f", "qcow2", "-O", "raw", qcow2, disk.path])
        try #require(back.status == 0, "qemu-img convert: \(back.output)")
        // The disk holds both files and is clean (the guest flushed, the source gave it up).
        let check = try GuestProgram.run("/sbin/e2fsck", ["-fn", disk.path])
        #expect(check.status == 0, "e2fsck: \(check.output)")
        #expect(try GuestProgram.run("/sbin/debugfs", ["-R", "cat /before.txt", disk.path]).output.contains("before"))
        #expect(try GuestProgram.run("/sbin/debugfs", ["-R", "cat /after.txt", disk.path]).output.contains("after"))
    }
}
