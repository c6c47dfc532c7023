import CLinux
import Glibc

/// An `errno` value with its name and text (swift-system's `Errno`, reduced to what we need).
public struct Errno: Error, Equatable, Hashable, Sendable, CustomStringConvertible {
    public var rawValue: Int32
    public init(rawValue: Int32) { self.rawValue = rawValue }

    /// The calling thread's current `errno`.
    public static var current: Errno { Errno(rawValue: errno) }

    public static let interrupted = Errno(rawValue: EINTR)
    public static let wouldBlock = Errno(rawValue: EAGAIN)
    public static let noEntry = Errno(rawValue: ENOENT)
    public static let permissionDenied = Errno(rawValue: EACCES)
    public static let invalidArgument = Errno(rawValue: EINVAL)
    public static let brokenPipe = Errno(rawValue: EPIPE)
    public static let connectionRefused = Errno(rawValue: ECONNREFUSED)
    public static let inProgress = Errno(rawValue: EINPROGRESS)

    public var description: String { String(cString: strerror(rawValue)) }
}

/// The error every layer of swemu throws (DESIGN.md §9.8): an extensible code, an optional
/// underlying `Errno`, and a message a user can act on.
public struct SystemError: Error, Equatable, Sendable, CustomStringConvertible {
    public struct Code: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
        public var rawValue: String
        public init(rawValue: String) { self.rawValue = rawValue }
        public var description: String { rawValue }

        /// A system call failed; `errno` says why.
        public static let syscall = Code(rawValue: "syscall")
        /// The user's configuration is wrong (command line, option value).
        public static let configuration = Code(rawValue: "configuration")
        /// Input from outside (guest, file, socket, stream) is malformed.
        public static let badInput = Code(rawValue: "bad-input")
        /// A feature was asked for that this build does not provide.
        public static let unsupported = Code(rawValue: "unsupported")
    }

    public var code: Code
    public var errno: Errno?
    public var message: String

    public init(_ code: Code, _ message: String, errno: Errno? = nil) {
        self.code = code
        self.message = message
        self.errno = errno
    }

    public var description: String {
        if let errno { return "\(message): \(errno)" }
        return message
    }

    public static func configuration(_ message: String) -> SystemError { SystemError(.configuration, message) }
    public static func unsupported(_ message: String) -> SystemError { SystemError(.unsupported, message) }
    public static func badInput(_ message: String) -> SystemError { SystemError(.badInput, message) }
}

/// The one system-call wrapper (DESIGN.md §9.3): runs `body`, which returns a C-style result
/// (negative on failure, `errno` set), retries on `EINTR` when asked, and throws a typed error
/// naming what was attempted.
@inline(__always)
public func syscall<T: FixedWidthInteger>(
    _ what: @autoclosure () -> String,
    retryOnInterrupt: Bool = true,
    _ body: () -> T
) throws(SystemError) -> T {
    while true {
        let result = body()
        if result >= 0 { return result }
        let err = Errno.current
        if retryOnInterrupt && err == .interrupted { continue }
        throw SystemError(.syscall, what(), errno: err)
    }
}
