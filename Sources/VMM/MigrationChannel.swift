import CLinux
import Chardev
import Glibc
import SystemSupport

/// Where a migration stream goes (`migrate URI`) or comes from (`-incoming URI`), with QEMU's
/// URI forms.
public enum MigrationURI: Equatable, Sendable {
    case tcp(host: String, port: UInt16)
    case unix(String)
    case file(String)
    case exec(String)
    /// `fd:NAME`: a descriptor a monitor client gave the name (QMP `getfd`), or `fd:N` one
    /// the parent process left open (libvirt's save and restore).
    case fd(String)
    /// `-incoming defer`: the URI comes later, with `migrate-incoming`.
    case deferred

    static let accepted = "tcp:HOST:PORT, unix:PATH, file:PATH, exec:COMMAND, fd:NAME"

    /// An incoming channel that waits for a source to connect (a socket), rather than one
    /// that is there at once (a file, a command, a descriptor).
    var listens: Bool {
        switch self {
        case .tcp, .unix: return true
        case .file, .exec, .fd, .deferred: return false
        }
    }

    public static func parse(_ text: String, incoming: Bool) throws(SystemError) -> MigrationURI {
        if incoming && text == "defer" { return .deferred }
        guard let colon = text.firstIndex(of: ":") else {
            throw .configuration("migration URI '\(text)' is not one of \(accepted)\(incoming ? " or defer" : "")")
        }
        let scheme = text[..<colon], rest = String(text[text.index(after: colon)...])
        switch scheme {
        case "tcp":
            // HOST:PORT, HOST may be empty (every interface / localhost) or [v6]; QEMU's
            // trailing options (,to=,ipv4=,ipv6=) are not taken.
            guard !rest.contains(","), let portColon = rest.lastIndex(of: ":"),
                  let port = UInt16(rest[rest.index(after: portColon)...]) else {
                throw .configuration("migration URI '\(text)': expected tcp:HOST:PORT with a port number from 0 to 65535")
            }
            var host = String(rest[..<portColon])
            if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
            return .tcp(host: host, port: port)
        case "unix":
            guard !rest.isEmpty else { throw .configuration("migration URI '\(text)': expected unix:PATH") }
            return .unix(rest)
        case "file":
            guard !rest.isEmpty else { throw .configuration("migration URI '\(text)': expected file:PATH") }
            return .file(rest)
        case "exec":
            guard !rest.isEmpty else { throw .configuration("migration URI '\(text)': expected exec:COMMAND") }
            return .exec(rest)
        case "fd":
            guard !rest.isEmpty else { throw .configuration("migration URI '\(text)': expected fd:NAME (a getfd name) or fd:N") }
            return .fd(rest)
        default:
            throw .configuration("migration URI '\(text)': unknown transport '\(scheme)' (accepted: \(accepted))")
        }
    }
}

/// An open migration channel: a connected socket, a file, or a pipe to a command.
final class MigrationChannel: @unchecked Sendable {
    // SAFETY: used by one migration thread at a time; `close` is called once, by that thread.
    private var fd: Int32
    private let child: pid_t?
    private let uri: MigrationURI
    /// Sockets carry the destination's confirmation back (QEMU's return path).
    var acknowledges: Bool {
        switch uri {
        case .tcp, .unix: return true
        default: return false
        }
    }

    private init(fd: Int32, child: pid_t?, uri: MigrationURI) {
        self.fd = fd
        self.child = child
        self.uri = uri
    }

    deinit { if fd >= 0 { Glibc.close(fd) } }

    /// Opens the channel: connects (outgoing) or listens and takes one connection (incoming).
    /// `listening` is called once an incoming channel can be connected to (before the wait).
    static func open(_ uri: MigrationURI, outgoing: Bool, listening: () -> Void = {}, cancelled: () -> Bool) throws(SystemError) -> MigrationChannel {
        // A destination that goes away must be an error on write, not a signal that ends swemu.
        signal(SIGPIPE, SIG_IGN)
        switch uri {
        case .tcp(let host, let port):
            if outgoing { return MigrationChannel(fd: try StreamSockets.connect(host: host, port: port).release(), child: nil, uri: uri) }
            let listener = try StreamSockets.listen(host: host, port: port)
            listening()
            return MigrationChannel(fd: try StreamSockets.accept(listener, cancelled: cancelled).release(), child: nil, uri: uri)
        case .unix(let path):
            if outgoing { return MigrationChannel(fd: try StreamSockets.connect(unixPath: path).release(), child: nil, uri: uri) }
            let listener = try StreamSockets.listen(unixPath: path)
            defer { unlink(path) }
            listening()
            return MigrationChannel(fd: try StreamSockets.accept(listener, cancelled: cancelled).release(), child: nil, uri: uri)
        case .file(let path):
            if !outgoing { listening() }
            let flags = outgoing ? O_WRONLY | O_CREAT | O_TRUNC : O_RDONLY
            return MigrationChannel(fd: try FileDescriptor.open(path, flags, mode: 0o600).release(), child: nil, uri: uri)
        case .exec(let command):
            if !outgoing { listening() }
            return try spawn(command, outgoing: outgoing, uri: uri)
        case .fd(let name):
            // QEMU's monitor_fd_param: a number is the descriptor itself, a name one `getfd`
            // filed; either way the migration owns it now and closes it when done.
            if !outgoing { listening() }
            if let number = Int32(name), number >= 0 {
                guard number > 2, fcntl(number, F_GETFD) >= 0 else {
                    throw .configuration("fd:\(name): descriptor \(number) is not open (0 to 2 are stdio)")
                }
                _ = clx_set_cloexec(number)
                return MigrationChannel(fd: number, child: nil, uri: uri)
            }
            guard let fd = MonitorFDs.take(name) else {
                throw .configuration("File descriptor named '\(name)' has not been found")
            }
            return MigrationChannel(fd: fd, child: nil, uri: uri)
        case .deferred:
            throw .configuration("'defer' is not a migration URI to open")
        }
    }

    /// `/bin/sh -c COMMAND` with the stream on its stdin (outgoing) or stdout (incoming).
    private static func spawn(_ command: String, outgoing: Bool, uri: MigrationURI) throws(SystemError) -> MigrationChannel {
        try Spawning.check("exec:\(command)")
        var fds: [Int32] = [0, 0]
        _ = try syscall("cannot create a pipe for exec:\(command)") { pipe(&fds) }
        for fd in fds { _ = clx_set_cloexec(fd) }
        let (ours, theirs) = outgoing ? (fds[1], fds[0]) : (fds[0], fds[1])
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_adddup2(&actions, theirs, outgoing ? 0 : 1)
        var pid: pid_t = 0
        let argv: [UnsafeMutablePointer<CChar>?] = [strdup("/bin/sh"), strdup("-c"), strdup(command), nil]
        defer { for arg in argv { free(arg) } }
        let rc = posix_spawn(&pid, "/bin/sh", &actions, nil, argv, environ)
        Glibc.close(theirs)
        guard rc == 0 else {
            Glibc.close(ours)
            throw SystemError(.syscall, "cannot run exec:\(command)", errno: Errno(rawValue: rc))
        }
        return MigrationChannel(fd: ours, child: pid, uri: uri)
    }

    func writeAll(_ bytes: UnsafeRawBufferPointer) throws(SystemError) {
        // SAFETY: `done < bytes.count`, so every pointer handed to write(2) stays inside `bytes`.
        var done = 0
        while done < bytes.count {
            let n = Glibc.write(fd, bytes.baseAddress! + done, bytes.count - done)
            if n < 0 {
                if Errno.current == .interrupted { continue }
                throw SystemError(.syscall, "the migration stream could not be written (the destination went away?)", errno: .current)
            }
            done += n
        }
    }

    func read(into buffer: UnsafeMutableRawBufferPointer) throws(SystemError) -> Int {
        while true {
            let n = Glibc.read(fd, buffer.baseAddress, buffer.count)
            if n >= 0 { return n }
            if Errno.current == .interrupted { continue }
            throw SystemError(.syscall, "the migration stream could not be read", errno: .current)
        }
    }

    /// What the destination says back on a socket (QEMU's return path): it has loaded a
    /// pass (so the source's bandwidth figure includes the destination's pace, and the last
    /// pass is not left queued in socket buffers), and it has loaded the machine and runs it.
    enum Acknowledgement: UInt8 {
        case pass = 0x05
        case running = 0x06
    }

    func send(_ acknowledgement: Acknowledgement) {
        var byte = acknowledgement.rawValue
        _ = Glibc.write(fd, &byte, 1)
    }

    /// Waits up to `seconds` for the destination's word, giving up when `cancelled` says so.
    func await(_ expected: Acknowledgement, seconds: Int, cancelled: () -> Bool) throws(SystemError) {
        var waited = 0
        while !StreamSockets.waitReadable(fd, milliseconds: 100) {
            if cancelled() { throw .badInput("cancelled") }
            waited += 100
            guard waited < seconds * 1000 else {
                throw .badInput("the destination did not answer within \(seconds) s")
            }
        }
        var byte: UInt8 = 0
        let n = Glibc.read(fd, &byte, 1)
        guard n == 1, byte == expected.rawValue else {
            throw .badInput("the destination refused the machine or ended before it ran it (see its log)")
        }
    }

    /// Ends the channel: a file is synced, a command is waited for and must succeed.
    func finish() throws(SystemError) {
        if case .file = uri, fsync(fd) != 0 {
            throw SystemError(.syscall, "the migration file could not be synced", errno: .current)
        }
        Glibc.close(fd)
        fd = -1
        if let child {
            var status: Int32 = 0
            while waitpid(child, &status, 0) < 0 && Errno.current == .interrupted {}
            // WIFEXITED && WEXITSTATUS == 0
            guard status & 0x7f == 0, (status >> 8) & 0xff == 0 else {
                throw .badInput("the exec: migration command failed (wait status \(status))")
            }
        }
    }

    /// Closes at once (a cancelled or failed migration); a command child is reaped.
    func abort() {
        if fd >= 0 { Glibc.close(fd) }
        fd = -1
        if let child {
            var status: Int32 = 0
            kill(child, SIGTERM)
            while waitpid(child, &status, 0) < 0 && Errno.current == .interrupted {}
        }
    }
}
