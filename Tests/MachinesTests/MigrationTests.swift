import Foundation
import Testing
import TestSupport

/// Live migration and save/restore of a running RISC-V machine between swemu processes
/// (issue: snapshots and live migration), driven by QEMU's `qemu.qmp` client: the
/// migrate_counter guest prints a count every 10 ms, sleeping on its timer, and checks a RAM
/// buffer it rewrites every count; after the move its output must go on in the destination with
/// no gap and no repeat, and its checks hold. Faults (corrupt, foreign and mismatched streams, a
/// destination killed mid-transfer, migrate_cancel) leave the source running.
@Suite(.serialized) struct MigrationTests {
    static var missing: String? { MonitorTests.missing }

    static func run(_ scenario: String) throws {
        let elf = try GuestProgram.build("migrate_counter")
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("swemu-migrate-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("migration_machine.py").path
        let result = try GuestProgram.run(Python.executable, [script, LinuxBootTests.binary, elf, dir.path, scenario], timeout: 300)
        #expect(result.status == 0, "\(result.output)")
        #expect(!result.output.contains("FAIL"), "\(result.output)")
    }

    @Test(.enabled(if: missing == nil, "\(missing ?? "")"), arguments: ["unix", "tcp", "file", "exec", "defer"])
    func migratesWithNothingLost(_ transport: String) throws { try Self.run(transport) }

    @Test(.enabled(if: missing == nil, "\(missing ?? "")"))
    func badStreamsAndFailuresLeaveTheSourceRunning() throws { try Self.run("faults") }
}
