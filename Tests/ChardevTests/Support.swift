import CLinux
import DeviceModel
import Glibc
import Synchronization
import SystemSupport
import Testing

@testable import Chardev

/// A frontend that records what it receives and takes at most `capacity` bytes at a time.
final class RecordingFrontend: CharFrontend {
    private struct State {
        var received: [UInt8] = []
        var capacity: Int
        var overruns = 0
    }
    private let state: Mutex<State>

    init(capacity: Int = 1 << 20) { state = Mutex(State(capacity: capacity)) }

    func receiveCapacity() -> Int { state.withLock { $0.capacity } }
    func receive(_ bytes: [UInt8]) {
        state.withLock { s in
            if bytes.count > s.capacity { s.overruns += 1 }
            s.received += bytes
        }
    }

    var received: [UInt8] { state.withLock { $0.received } }
    var text: String { String(decoding: received, as: UTF8.self) }
    /// Times `receive` got more than the capacity it had reported.
    var overruns: Int { state.withLock { $0.overruns } }
    func setCapacity(_ n: Int) { state.withLock { $0.capacity = n } }
}

/// A backend double for mux tests: records output; `inject` delivers input on the loop
/// thread, honouring the frontend's capacity, as real backends do.
final class FakeBackend: CharBackend {
    private struct State {
        var frontend: (any CharFrontend)?
        var output: [UInt8] = []
        var pendingInput: [UInt8] = []
        var acceptCalls = 0
    }
    private let state = Mutex(State())
    let loop: EventLoop
    init(loop: EventLoop) { self.loop = loop }

    var label: String { "fake" }
    func attach(_ frontend: (any CharFrontend)?) { state.withLock { $0.frontend = frontend } }
    func write(_ bytes: [UInt8]) { state.withLock { $0.output += bytes } }
    func acceptInput() {
        state.withLock { $0.acceptCalls += 1 }
        loop.execute { self.pump() }
    }

    func inject(_ bytes: [UInt8]) {
        state.withLock { $0.pendingInput += bytes }
        loop.execute { self.pump() }
    }
    func inject(_ text: String) { inject(Array(text.utf8)) }

    private func pump() {
        while true {
            guard let frontend = state.withLock({ $0.frontend }) else { return }
            let room = frontend.receiveCapacity()
            let chunk = state.withLock { s -> [UInt8] in
                let n = min(room, s.pendingInput.count)
                defer { s.pendingInput.removeFirst(n) }
                return Array(s.pendingInput.prefix(n))
            }
            if chunk.isEmpty { return }
            frontend.receive(chunk)
        }
    }

    var output: [UInt8] { state.withLock { $0.output } }
    var outputText: String { String(decoding: output, as: UTF8.self) }
    var pendingInputCount: Int { state.withLock { $0.pendingInput.count } }
    func clearOutput() { state.withLock { $0.output = [] } }
}

/// Collects lines a backend reports (instead of printing them on stderr).
final class Reports: Sendable {
    private let lines = Mutex<[String]>([])
    var sink: @Sendable (String) -> Void { { line in self.lines.withLock { $0.append(line) } } }
    var all: [String] { lines.withLock { $0 } }
}

/// An event loop on its own thread for the duration of `body`.
func withLoop<R>(_ body: (EventLoop) throws -> R) throws -> R {
    let loop = try EventLoop()
    try loop.start(name: "chardev-test")
    defer { loop.stop() }
    return try body(loop)
}

/// Polls `condition` until it holds or `seconds` pass (generous: the test machine is loaded).
func eventually(_ seconds: Double = 5, _ condition: () -> Bool) -> Bool {
    let deadline = monotonicSeconds() + seconds
    while monotonicSeconds() < deadline {
        if condition() { return true }
        usleep(1000)
    }
    return condition()
}

func monotonicSeconds() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
}

/// A unique path in the temporary directory.
func temporaryPath(_ name: String) -> String {
    let dir = getenv("TMPDIR").map { String(cString: $0) } ?? "/tmp"
    return "\(dir)/swemu-chardev-\(getpid())-\(UInt32.random(in: 0...UInt32.max))-\(name)"
}

/// A raw descriptor the test owns, closed on deinit.
final class TestFD: @unchecked Sendable {
    // SAFETY: used by one test at a time; the number is closed once, in deinit.
    let fd: Int32
    init(_ fd: Int32) { self.fd = fd }
    deinit { if fd >= 0 { Glibc.close(fd) } }

    func write(_ text: String) { write(Array(text.utf8)) }
    func write(_ bytes: [UInt8]) {
        var done = 0
        while done < bytes.count {
            let n = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress! + done, bytes.count - done) }
            if n > 0 { done += n } else if n < 0 && errno != EAGAIN && errno != EINTR { return } else { usleep(1000) }
        }
    }

    /// Reads (non-blocking fd) until `count` bytes arrived or `seconds` pass.
    func read(count: Int, seconds: Double = 5) -> [UInt8] {
        var out: [UInt8] = []
        let deadline = monotonicSeconds() + seconds
        var buf = [UInt8](repeating: 0, count: 4096)
        while out.count < count && monotonicSeconds() < deadline {
            var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            _ = poll(&p, 1, 20)
            let n = buf.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, min($0.count, count - out.count)) }
            if n > 0 { out += buf[0..<n] } else if n == 0 { break }
        }
        return out
    }
    func readText(count: Int, seconds: Double = 5) -> String {
        String(decoding: read(count: count, seconds: seconds), as: UTF8.self)
    }

    /// True once the peer closed (read returns 0), within `seconds`.
    func seesEOF(seconds: Double = 5) -> Bool {
        let deadline = monotonicSeconds() + seconds
        var buf = [UInt8](repeating: 0, count: 256)
        while monotonicSeconds() < deadline {
            var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            _ = poll(&p, 1, 20)
            let n = buf.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            if n == 0 { return true }
            if n < 0 && errno != EAGAIN && errno != EINTR { return true }
        }
        return false
    }

    func setNonBlocking() { _ = clx_fcntl_setfl(fd, clx_fcntl_getfl(fd) | O_NONBLOCK) }
}

/// Connects a client socket to `address`, non-blocking once connected.
func connectClient(_ address: SocketAddress) throws -> TestFD {
    let fd = try SocketTestSupport.connect(address)
    let client = TestFD(fd)
    client.setNonBlocking()
    return client
}

enum SocketTestSupport {
    static func connect(_ address: SocketAddress) throws(SystemError) -> Int32 {
        let raw: RawSocketAddress
        switch address {
        case .unix(let path): raw = try RawSocketAddress.unix(path)
        case .tcp(let host, let port): raw = try RawSocketAddress.tcp(host: host, port: port, passive: false)[0]
        case .fd(let fd): throw SystemError(.configuration, "fd=\(fd) is already a socket: nothing to connect to")
        }
        let fd = socket(raw.family, Int32(SOCK_STREAM.rawValue | SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw SystemError(.syscall, "socket", errno: .current) }
        let rc = raw.withSockaddr { Glibc.connect(fd, $0, $1) }
        if rc != 0 {
            let err = Errno.current
            Glibc.close(fd)
            throw SystemError(.syscall, "connect to \(address)", errno: err)
        }
        return fd
    }

    /// A listening TCP socket on 127.0.0.1 with a kernel-chosen port.
    static func listenTCP() throws(SystemError) -> (TestFD, UInt16) {
        let raw = try RawSocketAddress.tcp(host: "127.0.0.1", port: 0, passive: true)[0]
        let fd = socket(raw.family, Int32(SOCK_STREAM.rawValue | SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw SystemError(.syscall, "socket", errno: .current) }
        let owner = TestFD(fd)
        guard raw.withSockaddr({ bind(fd, $0, $1) }) == 0, listen(fd, 4) == 0,
              let port = Sockets.localPort(fd) else { throw SystemError(.syscall, "listen", errno: .current) }
        return (owner, port)
    }

    /// Accepts one connection within `seconds`.
    static func accept(_ listener: TestFD, seconds: Double = 5) -> TestFD? {
        guard Sockets.wait(listener.fd, events: Int16(POLLIN), milliseconds: Int32(seconds * 1000)) else { return nil }
        let fd = Glibc.accept(listener.fd, nil, nil)
        guard fd >= 0 else { return nil }
        let client = TestFD(fd)
        client.setNonBlocking()
        return client
    }
}

/// Opens a pty slave the way a terminal program would, but never as our controlling tty.
func openSlave(_ path: String) -> TestFD? {
    let fd = open(path, O_RDWR | O_NOCTTY | O_NONBLOCK | O_CLOEXEC)
    return fd >= 0 ? TestFD(fd) : nil
}

func termiosOf(_ fd: Int32) -> termios {
    var t = termios()
    _ = tcgetattr(fd, &t)
    return t
}
