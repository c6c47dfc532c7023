import Synchronization

/// Whether this process may start programs. `-sandbox on,spawn=deny` forbids it (its seccomp
/// filter would end the process at the clone, without a word: posix_spawn blocks every signal
/// around it, so the filter's SIGSYS cannot be reported). The places that start programs
/// (`migrate exec:`, a tap's scripts) ask first and fail with a clear error instead, and the
/// machine goes on.
public enum Spawning {
    private static let denial = Mutex<String?>(nil)

    /// From now on starting a program fails, `reason` saying why.
    public static func deny(_ reason: String) {
        denial.withLock { $0 = reason }
    }

    /// Throws unless a program may be started now; `what` is the feature that would start it.
    public static func check(_ what: String) throws(SystemError) {
        if let reason = denial.withLock({ $0 }) {
            throw SystemError(.configuration, "\(what) needs to start a program, which \(reason) forbids")
        }
    }
}
