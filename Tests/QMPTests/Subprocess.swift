import Glibc
import TestSupport
import Synchronization

/// Serialises pipe creation and spawning, so one test's pipes never leak into another
/// test's child between pipe() and FD_CLOEXEC.
private let spawnLock = Mutex(())

/// Runs a program (looked up on PATH) with `input` on its stdin, collecting stdout and stderr,
/// killing it after `timeout` seconds. For the interop tests: socat, python3 with qemu.qmp.
struct Subprocess {
    struct Result {
        var status: Int32
        var stdout: [UInt8]
        var stderr: [UInt8]
        var timedOut: Bool
        var output: String { String(decoding: stdout, as: UTF8.self) }
        var errorOutput: String { String(decoding: stderr, as: UTF8.self) }
    }

    enum Failure: Error, CustomStringConvertible {
        case spawn(String, Int32)
        var description: String {
            switch self {
            case .spawn(let program, let err): return "cannot start \(program): \(String(cString: strerror(err)))"
            }
        }
    }

    static func run(_ arguments: [String], input: [UInt8] = [], environment: [String: String] = [:],
                    timeout: Double = 30) throws -> Result {
        // A child that exits before reading its input must not kill the test run.
        signal(SIGPIPE, SIG_IGN)
        var inPipe: [Int32] = [0, 0]
        var outPipe: [Int32] = [0, 0]
        var errPipe: [Int32] = [0, 0]
        let created = spawnLock.withLock { _ -> Bool in
            guard pipe(&inPipe) == 0, pipe(&outPipe) == 0, pipe(&errPipe) == 0 else { return false }
            // Only the dup2'ed copies may reach the child.
            for fd in inPipe + outPipe + errPipe { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
            return true
        }
        guard created else { throw Failure.spawn(arguments[0], errno) }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_adddup2(&actions, inPipe[0], 0)
        posix_spawn_file_actions_adddup2(&actions, outPipe[1], 1)
        posix_spawn_file_actions_adddup2(&actions, errPipe[1], 2)

        var env: [String] = []
        var index = 0
        while let entry = environ[index] {
            let text = String(cString: entry)
            let key = String(text.prefix { $0 != "=" })
            if environment[key] == nil { env.append(text) }
            index += 1
        }
        for (key, value) in environment { env.append("\(key)=\(value)") }

        let argv = arguments.map { strdup($0) } + [nil]
        let envp = env.map { strdup($0) } + [nil]
        defer {
            argv.forEach { free($0) }
            envp.forEach { free($0) }
        }
        var pid: pid_t = 0
        let rc = spawnLock.withLock { _ in posix_spawnp(&pid, arguments[0], &actions, nil, argv, envp) }
        close(inPipe[0])
        close(outPipe[1])
        close(errPipe[1])
        guard rc == 0 else {
            close(inPipe[1])
            close(outPipe[0])
            close(errPipe[0])
            throw Failure.spawn(arguments[0], rc)
        }
        for fd in [inPipe[1], outPipe[0], errPipe[0]] { _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) }

        var result = Result(status: -1, stdout: [], stderr: [], timedOut: false)
        var written = 0
        var stdinFD: Int32 = inPipe[1]
        if input.isEmpty {
            close(stdinFD)
            stdinFD = -1
        }
        var open: Set<Int32> = [outPipe[0], errPipe[0]]
        let deadline = monotonicSeconds() + timeout
        var buffer = [UInt8](repeating: 0, count: 65536)
        while !open.isEmpty {
            if monotonicSeconds() > deadline {
                result.timedOut = true
                kill(pid, SIGKILL)
                break
            }
            var fds = open.map { pollfd(fd: $0, events: Int16(POLLIN), revents: 0) }
            if stdinFD >= 0 { fds.append(pollfd(fd: stdinFD, events: Int16(POLLOUT), revents: 0)) }
            _ = poll(&fds, nfds_t(fds.count), 50)
            for p in fds where p.revents != 0 {
                if p.fd == stdinFD {
                    let n = input.withUnsafeBytes { write(stdinFD, $0.baseAddress! + written, input.count - written) }
                    if n > 0 { written += n }
                    if n < 0 && errno != EAGAIN && errno != EINTR { written = input.count }
                    if written >= input.count {
                        close(stdinFD)
                        stdinFD = -1
                    }
                    continue
                }
                let n = buffer.withUnsafeMutableBytes { read(p.fd, $0.baseAddress, $0.count) }
                if n > 0 {
                    if p.fd == outPipe[0] { result.stdout += buffer[0..<n] } else { result.stderr += buffer[0..<n] }
                } else if n == 0 || (errno != EAGAIN && errno != EINTR) {
                    close(p.fd)
                    open.remove(p.fd)
                }
            }
        }
        if stdinFD >= 0 { close(stdinFD) }
        for fd in open { close(fd) }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        // WIFEXITED / WEXITSTATUS by hand (macros are not imported).
        result.status = (status & 0x7F) == 0 ? (status >> 8) & 0xFF : -(status & 0x7F)
        return result
    }

    /// The python3 to use for the qemu.qmp tests: $SWEMU_PYTHON, else python3 on PATH (TestSupport).
    static var python: String { Python.executable }

    static let hasSocat: Bool = {
        guard let r = try? run(["socat", "-V"], timeout: 30) else { return false }
        return r.status == 0
    }()
}
