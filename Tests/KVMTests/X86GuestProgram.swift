import Foundation
import Glibc
import KVM

/// x86-64 guest programs written in this repository (Tests/GuestPrograms/x86_64), built on
/// demand with the host's gcc into .build/guest-programs/x86_64 and rebuilt when a source is
/// newer, and the swemu binary that runs them.
enum X86GuestProgram {
    static let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    static let sourceDirectory = packageRoot.appendingPathComponent("Tests/GuestPrograms/x86_64")
    static let outputDirectory = packageRoot.appendingPathComponent(".build/guest-programs/x86_64")
    static let compiler = "/usr/bin/gcc"
    static let binary = ProcessInfo.processInfo.environment["SWEMU_X86_BINARY"]
        ?? packageRoot.appendingPathComponent(".build/debug/swemu-system-x86_64").path

    /// Why the end-to-end tests cannot run here, or nil.
    static var missing: String? {
        if !FileManager.default.isExecutableFile(atPath: compiler) { return "needs \(compiler) (Debian's gcc; scripts/setup installs it)" }
        if !FileManager.default.isExecutableFile(atPath: binary) { return "needs \(binary) (swift build)" }
        if access("/dev/kvm", R_OK | W_OK) != 0 { return "needs read/write access to /dev/kvm (KVM flavour here: \(KVMFlavour.detect().rawValue))" }
        return nil
    }

    /// Builds `name.S` if needed and returns the ELF's path.
    static func build(_ name: String) throws -> String {
        let source = sourceDirectory.appendingPathComponent("\(name).S")
        let output = outputDirectory.appendingPathComponent("\(name).elf")
        try FileManager.default.createDirectory(at: outputDirectory, withIntermediateDirectories: true)
        let inputs = [source, sourceDirectory.appendingPathComponent("guest.h"), sourceDirectory.appendingPathComponent("link.ld")]
        let sourceDate = try inputs.map { try FileManager.default.attributesOfItem(atPath: $0.path)[.modificationDate] as? Date ?? .distantFuture }.max()!
        if let outDate = (try? FileManager.default.attributesOfItem(atPath: output.path))?[.modificationDate] as? Date, outDate >= sourceDate {
            return output.path
        }
        // Build to a unique name and rename, so tests running in parallel never see half a file.
        let temporary = output.path + ".\(getpid()).\(UInt32.random(in: 0...UInt32.max))"
        let result = try Subprocess.run(compiler, ["-nostdlib", "-static", "-no-pie", "-Wl,--build-id=none", "-Wl,--no-warn-rwx-segments",
                                                   "-Wl,-T," + sourceDirectory.appendingPathComponent("link.ld").path,
                                                   "-I", sourceDirectory.path, "-o", temporary, source.path])
        guard result.status == 0 else { throw BuildError(message: "building \(name).S failed:\n\(result.output)") }
        _ = rename(temporary, output.path)
        return output.path
    }

    struct BuildError: Error, CustomStringConvertible {
        let message: String
        var description: String { message }
    }

    /// Runs `program` on `-M microvm -accel kvm` with `arguments` added.
    static func run(_ program: String, _ arguments: [String], timeout: Double = 60) throws -> (status: Int32, output: String) {
        let elf = try build(program)
        return try Subprocess.run(binary, ["-M", "microvm", "-accel", "kvm", "-m", "256M", "-nographic", "-kernel", elf] + arguments,
                                  timeout: timeout)
    }
}
