import DeviceModel
import Foundation
import TestSupport
import Synchronization

/// Bare-metal guest programs written in this repository (Tests/GuestPrograms), built on demand
/// with Debian's riscv64-unknown-elf toolchain (installed by scripts/setup) into
/// .build/guest-programs, and rebuilt when their source is newer.
enum GuestProgram {
    static let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    static let sourceDirectory = packageRoot.appendingPathComponent("Tests/GuestPrograms/riscv")
    static let outputDirectory = packageRoot.appendingPathComponent(".build/guest-programs/riscv")
    static let compiler = "/usr/bin/riscv64-unknown-elf-gcc"
    static let qemu = "/usr/bin/qemu-system-riscv64"

    static var compilerMissingReason: String? {
        FileManager.default.isExecutableFile(atPath: compiler)
            ? nil : "needs \(compiler) (Debian's gcc-riscv64-unknown-elf; scripts/setup installs it)"
    }

    /// Every program source (`*.S`) in the directory. A test that finds nothing to test must
    /// fail, not pass with zero cases: when the directory is missing or holds no program, the
    /// list is one placeholder that `build` refuses, naming the directory.
    static var all: [String] {
        let files = (try? FileManager.default.contentsOfDirectory(atPath: sourceDirectory.path)) ?? []
        let names = files.filter { $0.hasSuffix(".S") }.map { String($0.dropLast(2)) }.sorted()
        return names.isEmpty ? [noPrograms] : names
    }

    /// The placeholder `all` holds when it finds no program.
    static let noPrograms = "(no guest programs)"

    /// Builds `name.S` if needed and returns the ELF's path.
    static func build(_ name: String) throws -> String {
        if name == noPrograms {
            throw BuildError(message: "no guest program (*.S) in \(sourceDirectory.path): nothing to test")
        }
        let source = sourceDirectory.appendingPathComponent("\(name).S")
        let output = outputDirectory.appendingPathComponent("\(name).elf")
        try FileManager.default.createDirectory(at: outputDirectory, withIntermediateDirectories: true)
        let sourceDate = try newestInput(source)
        if let outDate = (try? FileManager.default.attributesOfItem(atPath: output.path))?[.modificationDate] as? Date,
           outDate >= sourceDate {
            return output.path
        }
        // Build to a unique name and rename, so tests running in parallel never see half a file.
        let temporary = output.path + ".\(getpid()).\(UInt32.random(in: 0...UInt32.max))"
        let result = try run(compiler, ["-march=rv64gc_zba_zbb_zbs", "-mabi=lp64d", "-nostdlib", "-nostartfiles",
                                        "-T", sourceDirectory.appendingPathComponent("link.ld").path,
                                        "-I", sourceDirectory.path, "-o", temporary, source.path])
        guard result.status == 0 else { throw BuildError(message: "building \(name).S failed:\n\(result.output)") }
        _ = rename(temporary, output.path)
        return output.path
    }

    private static func newestInput(_ source: URL) throws -> Date {
        let inputs = [source, sourceDirectory.appendingPathComponent("test.h"), sourceDirectory.appendingPathComponent("link.ld")]
        return try inputs.map { try FileManager.default.attributesOfItem(atPath: $0.path)[.modificationDate] as? Date ?? .distantFuture }.max()!
    }

    struct BuildError: Error, CustomStringConvertible {
        let message: String
        var description: String { message }
    }

    /// Runs a program to completion (bounded by `timeout` seconds) and returns its exit status
    /// and combined output.
    static func run(_ path: String, _ arguments: [String], timeout: Double = 120,
                    environment: [String: String] = [:]) throws -> (status: Int32, output: String) {
        try runProgram(path: path, arguments, timeout: timeout, environment: environment)
    }
}

/// A character backend that records what the guest wrote.
final class CaptureBackend: CharBackend {
    private let bytes = Mutex<[UInt8]>([])
    var label: String { "capture" }
    func attach(_ frontend: (any CharFrontend)?) {}
    func write(_ data: [UInt8]) { bytes.withLock { $0 += data } }
    func acceptInput() {}
    var text: String { String(decoding: bytes.withLock { $0 }, as: UTF8.self) }
}
