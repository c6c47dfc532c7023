import Foundation
import Synchronization

/// The Python the tests run, by one rule everywhere: `$SWEMU_PYTHON`, else the first `python3`
/// on `PATH`. scripts/test sets SWEMU_PYTHON to the interpreter scripts/setup installed the
/// pinned packages for (and stops with an error when one is missing), so a run under
/// scripts/test never depends on the caller's PATH; someone running `swift test` by hand gets
/// python3 from PATH and a recorded skip, with the reason, for tests whose package it lacks.
public enum Python {
    /// An absolute path when python3 is found on PATH (so messages name the exact interpreter);
    /// "python3" itself when it is not, which then fails to start with a clear error.
    /// (A bare name in SWEMU_PYTHON is looked up on PATH too: callers start it as a file.)
    public static let executable: String = {
        let environment = ProcessInfo.processInfo.environment
        let name = environment["SWEMU_PYTHON"].flatMap { $0.isEmpty ? nil : $0 } ?? "python3"
        if name.contains("/") { return name }
        for directory in (environment["PATH"] ?? "/usr/bin:/bin").split(separator: ":") {
            let candidate = "\(directory)/\(name)"
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        }
        return name
    }()

    /// Where `executable` came from, for skip reasons.
    public static var origin: String {
        ProcessInfo.processInfo.environment["SWEMU_PYTHON"].map { $0.isEmpty ? "python3 on PATH" : "$SWEMU_PYTHON" }
            ?? "python3 on PATH"
    }

    private static let probed = Mutex<[String: String?]>([:])

    /// Why `module` cannot be imported by `executable` (a skip reason), or nil when it can.
    /// Probed once per module.
    public static func missing(_ module: String) -> String? {
        if let known = probed.withLock({ $0[module] }) { return known }
        let reason: String?
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = ["-c", "import \(module)"]
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        do {
            try process.run()
            process.waitUntilExit()
            reason = process.terminationStatus == 0 ? nil
                : "\(executable) (\(origin)) cannot import \(module): scripts/setup installs it for the Python scripts/test uses; "
                    + "set SWEMU_PYTHON to a Python that has it"
        } catch {
            reason = "cannot run \(executable) (\(origin)): \(error)"
        }
        probed.withLock { $0[module] = reason }
        return reason
    }
}
