/// swemu's libFuzzer targets (scripts/fuzz runs them; NOTES.md "Fuzzing Swift with libFuzzer
/// under SwiftPM"). Each takes any bytes and must end in a clean error or success: a trap, an
/// ASan report or a hang is a bug in swemu. `seeds` are small valid inputs to start a corpus
/// from, so the fuzzer gets past the first checks at once. The regression inputs of every
/// crash found are replayed through the same `run` by FuzzTests/FuzzRegressionTests.
package struct FuzzTarget: Sendable {
    package let name: String
    /// What it drives, for `swemu-fuzz --list`.
    package let summary: String
    /// libFuzzer's -max_len for it.
    package let maxLength: Int
    /// Runs one input.
    package let run: @Sendable (UnsafeRawBufferPointer) -> Void
    /// Valid inputs (name, bytes) to seed the corpus.
    package let seeds: @Sendable () -> [(String, [UInt8])]

    package static let all: [FuzzTarget] = [
        VirtioFuzz.block, VirtioFuzz.console, VirtioFuzz.rng, VirtioFuzz.net, VirtioFuzz.balloon, VirtioFuzz.input,
        QMPFuzz.json, QMPFuzz.session, QMPFuzz.human,
        GDBFuzz.packets, GDBFuzz.session,
        LoaderFuzz.fdt, LoaderFuzz.elf, LoaderFuzz.gzip, LoaderFuzz.kernel,
        Qcow2Fuzz.target, MigrationFuzz.target,
    ]

    package static func named(_ name: String) -> FuzzTarget? { all.first { $0.name == name } }

    package func run(_ bytes: [UInt8]) { bytes.withUnsafeBytes { run($0) } }
}
