import CLinux
import DeviceModel
import Dispatch
import Glibc
import Synchronization
import SystemSupport

/// `-chardev socket`, `-serial unix:…`/`tcp:…`: a stream socket, server or client.
///
/// Server (`server=on`): listens and serves one client at a time; a second connection while
/// one is active is accepted and closed at once, so it sees end of file (QEMU serves one
/// client too). When the client goes away the backend listens again. With `wait=on` (QEMU's
/// default for servers) `init` blocks until the first client connects, printing
/// "swemu: waiting for connection on: …". A Unix server replaces a stale socket file (never
/// another kind of file) and removes its own on `close()`.
///
/// Client: connects in `init`, failing with the reason if it cannot; with `reconnect=N` it
/// instead keeps trying every N seconds, also after losing the server.
///
/// Output while no peer is connected is dropped, as a serial line with nothing plugged in
/// drops it. TCP sockets get TCP_NODELAY: a console sends a keystroke at a time.
///
/// The frontend hears `.opened` when a peer connects (before its first byte) and `.closed`
/// when it leaves, as QEMU's CHR_EVENT_OPENED/CLOSED: a monitor greets each new client.
public final class SocketBackend: CharDriver {
    public let options: ChardevSpec.Socket
    /// For a TCP server, the port it listens on (useful with port 0); else nil.
    public let boundPort: UInt16?
    public let label: String

    private let loop: EventLoop
    private let slot = FrontendSlot()
    private let report: @Sendable (String) -> Void
    private let state: Mutex<State>
    private let timer: LoopTimer?
    private let weakSelf = WeakBox<SocketBackend>()

    private struct State: ~Copyable {
        var listener: DescriptorSlot
        var listenerRegistered = false
        /// The unix socket file we bound, to remove it at close if it is still ours.
        var socketFile: (path: String, device: UInt64, inode: UInt64)?
        var client: StreamChannel?
        /// A client connect in progress (EINPROGRESS), watched for EPOLLOUT.
        var connecting = DescriptorSlot()
        var closed = false
    }

    /// - Parameters:
    ///   - id: the chardev id, for messages.
    ///   - report: where startup notices go (stderr by default).
    public init(_ options: ChardevSpec.Socket, loop: EventLoop, id: String? = nil,
                report: @escaping @Sendable (String) -> Void = CharDevice.reportToStderr) throws(SystemError) {
        self.options = options
        self.loop = loop
        self.report = report
        let weakSelf = weakSelf
        if options.server {
            let listening = try Self.listen(options.address)
            boundPort = listening.port
            var address = options.address
            if case .tcp(let host, _) = address, let port = listening.port { address = .tcp(host: host, port: port) }
            label = "\(address),server=on"
            let file = listening.file
            state = Mutex(State(listener: DescriptorSlot(fd: listening.fd), socketFile: file))
            timer = nil
        } else {
            boundPort = nil
            label = options.address.description
            state = Mutex(State(listener: DescriptorSlot()))
            timer = options.reconnectSeconds > 0 ? try LoopTimer(loop: loop) { weakSelf.value?.reconnect() } : nil
        }
        weakSelf.value = self
        do {
            try startUp(id: id)
        } catch {
            close()
            throw error
        }
    }

    deinit { close() }

    private func startUp(id: String?) throws(SystemError) {
        if options.server {
            if options.wait {
                report("swemu: waiting for connection on: disconnected:\(label)")
                try waitForFirstClient()
            }
            try state.withLock { (s: inout State) throws(SystemError) in try watchListener(&s) }
            return
        }
        do {
            let fd = try Self.connect(options.address)
            try adopt(fd)
        } catch {
            let what = "cannot connect\(id.map { " chardev '\($0)'" } ?? "") to \(options.address)"
            guard options.reconnectSeconds > 0 else { throw SystemError(.syscall, what, errno: error.errno) }
            report("swemu: \(what)\(error.errno.map { ": \($0)" } ?? ""); retrying every \(options.reconnectSeconds)s")
            timer?.arm(milliseconds: options.reconnectSeconds * 1000, repeating: true)
        }
    }

    /// Whether a peer is connected now.
    public var isConnected: Bool {
        state.withLock { s in s.client?.isConnected ?? false }
    }

    /// The connected socket's number, if any (for tests).
    func clientDescriptor() -> Int32? { state.withLock { $0.client }?.descriptor }

    public func attach(_ frontend: (any CharFrontend)?) {
        slot.set(frontend)
        if frontend != nil { acceptInput() }
    }

    public func acceptInput() {
        state.withLock { $0.client }?.resumeInput()
    }

    public func write(_ bytes: [UInt8]) {
        state.withLock { $0.client }?.write(bytes)
    }

    public func close() {
        let client = state.withLock { s -> StreamChannel? in
            guard !s.closed else { return nil }
            s.closed = true
            if s.listenerRegistered, let listener = s.listener.rawValue { loop.unregister(fd: listener) }
            s.listenerRegistered = false
            s.listener.fd = nil
            if let fd = s.connecting.rawValue { loop.unregister(fd: fd) }
            s.connecting.fd = nil
            if let file = s.socketFile {
                // Remove the socket file only if it is still the one we bound.
                var st = stat()
                if lstat(file.path, &st) == 0, UInt64(st.st_dev) == file.device, UInt64(st.st_ino) == file.inode {
                    unlink(file.path)
                }
                s.socketFile = nil
            }
            defer { s.client = nil }
            return s.client
        }
        timer?.close()
        client?.close()
        if client != nil { slot.closed() }
    }

    // MARK: server

    private struct Listening: ~Copyable {
        var fd: FileDescriptor
        var port: UInt16?
        var file: (path: String, device: UInt64, inode: UInt64)?
    }

    private static func listen(_ address: SocketAddress) throws(SystemError) -> Listening {
        switch address {
        case .unix(let path):
            let raw = try RawSocketAddress.unix(path)
            var st = stat()
            if lstat(path, &st) == 0 {
                guard st.st_mode & S_IFMT == S_IFSOCK else {
                    throw SystemError(.configuration, "cannot listen on unix:\(path): it exists and is not a socket; remove it or choose another path")
                }
                unlink(path)  // a stale socket from an earlier run (QEMU removes it too)
            }
            let fd = try Sockets.stream(family: AF_UNIX, nonBlocking: true)
            try Sockets.bind(fd.rawValue, raw, what: "cannot listen on unix:\(path)")
            _ = try syscall("cannot listen on unix:\(path)") { Glibc.listen(fd.rawValue, 1) }
            guard lstat(path, &st) == 0 else { return Listening(fd: fd) }
            return Listening(fd: fd, file: (path, UInt64(st.st_dev), UInt64(st.st_ino)))
        case .tcp(let host, let port):
            var lastError: SystemError?
            for raw in try RawSocketAddress.tcp(host: host, port: port, passive: true) {
                do {
                    let fd = try Sockets.stream(family: raw.family, nonBlocking: true)
                    Sockets.setOption(fd.rawValue, SOL_SOCKET, SO_REUSEADDR)
                    try Sockets.bind(fd.rawValue, raw, what: "bind")
                    _ = try syscall("listen") { Glibc.listen(fd.rawValue, 1) }
                    let bound = Sockets.localPort(fd.rawValue)
                    return Listening(fd: fd, port: bound)
                } catch {
                    lastError = error
                }
            }
            throw SystemError(.syscall, "cannot listen on \(address)", errno: lastError?.errno)
        case .fd(let n):
            let fd = try Sockets.inheritedStream(n, listening: true, what: "chardev socket")
            return Listening(fd: fd, port: Sockets.localPort(n))
        }
    }

    /// wait=on: blocks (before the loop watches the listener) until a client connects.
    private func waitForFirstClient() throws(SystemError) {
        while true {
            let listenerFD = state.withLock { $0.listener.rawValue }
            guard let listenerFD else { return }
            _ = Sockets.wait(listenerFD, events: Int16(POLLIN), milliseconds: -1)
            let accepted: FileDescriptor?
            do throws(SystemError) {
                accepted = try Sockets.accept(listenerFD)
            } catch {
                // Out of descriptors (say): the client stays in the backlog and poll would
                // return at once for it. Try again in a second instead of spinning.
                DebugLog.log(.guestErrors, "chardev \(label): cannot accept a connection (\(error)); trying again in a second")
                usleep(1_000_000)
                continue
            }
            if let fd = accepted {
                try adopt(fd)
                return
            }
        }
    }

    /// Loop thread: the listener is readable.
    private func acceptClients() {
        while true {
            var failure: SystemError?
            let accepted = state.withLock { s -> FileDescriptor? in
                guard !s.closed, let listener = s.listener.rawValue else { return nil }
                do throws(SystemError) {
                    return try Sockets.acceptOrUnwatch(listener, loop: loop, watched: &s.listenerRegistered)
                } catch {
                    failure = error
                    return nil
                }
            }
            if let failure {
                DebugLog.log(.guestErrors, "chardev \(label): cannot accept a connection (\(failure)); trying again in a second")
                let weakSelf = weakSelf
                DispatchQueue.global().asyncAfter(deadline: .now() + 1) { weakSelf.value?.watchListenerAgain() }
            }
            guard let fd = accepted else { return }
            let busy = state.withLock { $0.client != nil }
            if busy {
                continue  // one client at a time: `fd` closes here, the newcomer sees EOF
            }
            try? adopt(fd)
        }
    }

    private func watchListener(_ s: inout State) throws(SystemError) {
        guard !s.closed, !s.listenerRegistered, let listener = s.listener.rawValue else { return }
        let weakSelf = weakSelf
        try loop.register(fd: listener, events: EventLoop.readable) { _ in weakSelf.value?.acceptClients() }
        s.listenerRegistered = true
    }

    /// The listener is watched again after `acceptClients` gave up for a while.
    private func watchListenerAgain() {
        state.withLock { s in try? watchListener(&s) }
    }

    // MARK: client

    private static func connect(_ address: SocketAddress) throws(SystemError) -> FileDescriptor {
        let candidates: [RawSocketAddress]
        switch address {
        case .unix(let path): candidates = [try RawSocketAddress.unix(path)]
        case .tcp(let host, let port): candidates = try RawSocketAddress.tcp(host: host, port: port, passive: false)
        case .fd(let n): return try Sockets.inheritedStream(n, listening: false, what: "chardev socket")
        }
        var lastError: SystemError?
        for raw in candidates {
            do {
                let fd = try Sockets.stream(family: raw.family, nonBlocking: true)
                try Sockets.connect(fd.rawValue, raw, what: "connect")
                return fd
            } catch {
                lastError = error
            }
        }
        throw lastError ?? SystemError(.syscall, "connect")
    }

    /// Loop thread, on the reconnect timer: start a non-blocking connect.
    private func reconnect() {
        let idle = state.withLock { s in !s.closed && s.client == nil && s.connecting.rawValue == nil }
        guard idle else { return }
        let candidates: [RawSocketAddress]
        do {
            switch options.address {
            case .unix(let path): candidates = [try RawSocketAddress.unix(path)]
            case .tcp(let host, let port): candidates = try RawSocketAddress.tcp(host: host, port: port, passive: false)
            case .fd: return  // refused with reconnect= when parsed
            }
        } catch { return }
        guard let raw = candidates.first, let fd = try? Sockets.stream(family: raw.family, nonBlocking: true) else { return }
        let rc = raw.withSockaddr { addr, len in Glibc.connect(fd.rawValue, addr, len) }
        if rc == 0 {
            try? adopt(fd)
            return
        }
        guard Errno.current == .inProgress else { return }  // refused: try at the next tick
        let weakSelf = weakSelf
        let number = fd.release()  // moved into the state below (a closure cannot consume a capture)
        state.withLock { s in
            let pending = DescriptorSlot(fd: FileDescriptor(owning: number))
            guard !s.closed else { return }
            if (try? loop.register(fd: number, events: EventLoop.writable, { _ in weakSelf.value?.connectFinished() })) != nil {
                s.connecting = pending
            }
        }
    }

    /// Loop thread: the pending connect completed, one way or the other.
    private func connectFinished() {
        let done = state.withLock { s -> FileDescriptor? in
            guard let fd = s.connecting.fd.take() else { return nil }
            loop.unregister(fd: fd.rawValue)
            var error: Int32 = 0
            var length = socklen_t(MemoryLayout<Int32>.size)
            guard getsockopt(fd.rawValue, SOL_SOCKET, SO_ERROR, &error, &length) == 0, error == 0 else { return nil }
            return fd
        }
        if let fd = done { try? adopt(fd) }
    }

    // MARK: connection

    /// Makes `fd` the connection: reads on the loop, output goes to it.
    private func adopt(_ fd: consuming FileDescriptor) throws(SystemError) {
        let family = options.address.isTCP ? AF_INET : AF_UNIX
        Sockets.setNoDelay(fd.rawValue, family: family)
        let weakSelf = weakSelf
        let box = WeakBox<StreamChannel>()
        let channel = StreamChannel(fd: fd, kind: .socket, loop: loop, slot: slot) {
            if let channel = box.value { weakSelf.value?.peerGone(channel) }
        }
        box.value = channel
        let accepted = state.withLock { s -> Bool in
            guard !s.closed, s.client == nil else { return false }
            s.client = channel
            timer?.disarm()
            return true
        }
        guard accepted else {
            channel.close()
            return
        }
        // CHR_EVENT_OPENED before the first read, so a monitor greets before it hears input.
        slot.opened()
        do {
            try channel.start()
        } catch {
            peerGone(channel)
            throw error
        }
    }

    /// Loop thread: the peer closed or reset the connection.
    private func peerGone(_ channel: StreamChannel) {
        let (ours, reconnect) = state.withLock { s -> (Bool, Bool) in
            guard s.client === channel else { return (false, false) }
            s.client = nil
            return (true, !s.closed && !options.server && options.reconnectSeconds > 0)
        }
        channel.close()
        if ours { slot.closed() }
        if reconnect { timer?.arm(milliseconds: options.reconnectSeconds * 1000, repeating: true) }
    }
}

extension SocketAddress {
    var isTCP: Bool {
        switch self {
        case .tcp: return true
        case .unix: return false
        case .fd(let n): return RawSocketAddress.of(n, peer: false).map { $0.family != AF_UNIX } ?? false
        }
    }
}
