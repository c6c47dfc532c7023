import CLinux
import DeviceModel
import Dispatch
import Glibc
import Synchronization
import SystemSupport

/// `-netdev stream` (QEMU 7.2, net/stream.c) and the TCP forms of `-netdev socket`
/// (`listen=`, `connect=`, net/socket.c): Ethernet frames over a stream socket, each preceded
/// by its length in 4 bytes big-endian, so two swemu or QEMU processes can be wired together.
///
///     -netdev stream,id=n0,server=on,addr.type=inet,addr.host=127.0.0.1,addr.port=1234
///     -netdev stream,id=n0,server=off,addr.type=unix,addr.path=/tmp/net.sock
///     -netdev stream,id=n0,server=on,addr.type=fd,addr.str=3     (an inherited listening socket)
///
/// Server: listens, and serves one peer at a time. As QEMU 7.2 does, it stops accepting while
/// a peer is connected (a second client waits in the listen backlog and is taken when the
/// first leaves); when the peer leaves it listens again. A unix server replaces a stale socket
/// file (never another kind of file) and removes its own at `close()`.
///
/// Client: connects in `init`, failing with the address and the reason ("Connection
/// refused"); QEMU 7.2 has no `reconnect=` (QEMU 8 added it) and neither has swemu yet. Once
/// the server goes away the client stays disconnected, as QEMU 7.2's does.
///
/// Frames the guest sends while no peer is connected are dropped and counted; a peer that
/// sends a length of 0 or over QEMU's NET_BUFSIZE (69632) is disconnected with a `-d
/// guest_errors` line. TCP sockets get TCP_NODELAY: frames are written whole, so Nagle's
/// algorithm would only delay the guest's small segments (its ACKs).
public final class StreamBackend: NetBackend {
    struct Config: Equatable, Sendable {
        var server: Bool
        var address: NetSocketAddress
    }

    public let id: String
    /// For a TCP server, the port it listens on (useful with `addr.port=0`); else nil.
    public let boundPort: UInt16?

    private let config: Config
    private let loop: EventLoop
    private let slot = FrontendSlot()
    private let state: Mutex<State>
    /// "tcp:127.0.0.1:1234" with the real port, for `info` and messages.
    private let label: String

    private struct State: ~Copyable {
        var listener: FileDescriptor?
        var listenerWatched = false
        /// The unix socket file we bound, removed at close if it is still ours.
        var socketFile: (path: String, device: UInt64, inode: UInt64)?
        var channel: FrameChannel?
        var info: String
        var closed = false
        /// Counters of connections that ended, and frames sent with no peer.
        var earlier = NetCounters()
        var connections = 0
    }

    /// `options`: one `-netdev stream,...` (the type as implied value or absent; `id` may be
    /// among them).
    public convenience init(id: String, options: QemuOpts, loop: EventLoop) throws(SystemError) {
        try self.init(id: id, config: try Self.parse(options), what: "-netdev stream", loop: loop)
    }

    /// `what` names the option in messages ("-netdev stream", "-netdev socket").
    init(id: String, config: Config, what: String, loop: EventLoop) throws(SystemError) {
        self.id = id
        self.config = config
        self.loop = loop
        if config.server {
            let listening = try Self.listen(config.address, what: what)
            boundPort = listening.port
            label = listening.label
            state = Mutex(State(listener: listening.fd, socketFile: listening.file, info: "listening on \(listening.label)"))
            try state.withLock { (s: inout State) throws(SystemError) in try watchListener(&s) }
        } else {
            boundPort = nil
            label = config.address.description
            state = Mutex(State(info: "connecting to \(label)"))
            let fd = try Self.connect(config.address, what: what)
            try adopt(fd)
        }
    }

    deinit { close() }

    static let acceptedKeys = ["id", "server"] + NetSocketAddress.keys(prefix: "addr")

    static func parse(_ options: QemuOpts) throws(SystemError) -> Config {
        let what = "-netdev stream"
        let options = try options.validate(accepted: acceptedKeys, booleans: ["server"], context: "netdev 'stream'")
        guard let address = try NetSocketAddress.parse(options, prefix: "addr", what: what) else {
            throw SystemError(.configuration, "\(what): an address is required: addr.type=inet,addr.host=HOST,addr.port=PORT or addr.type=unix,addr.path=PATH")
        }
        return Config(server: try options.bool("server", default: false), address: address)
    }

    // MARK: NetBackend

    public var info: String { state.withLock { $0.info } }

    /// Counters over every connection so far (tests).
    package var counters: NetCounters {
        let (earlier, channel) = state.withLock { ($0.earlier, $0.channel) }
        guard let now = channel?.counters else { return earlier }
        return earlier + now
    }

    /// Whether a peer is connected now.
    public var isConnected: Bool { state.withLock { $0.channel != nil } }

    /// How many peers have connected so far (tests).
    package var connectionCount: Int { state.withLock { $0.connections } }

    public func attach(_ frontend: (any NetFrontend)?) {
        slot.set(frontend)
        if frontend != nil { state.withLock { $0.channel }?.resumeReceive() }
    }

    public func send(_ frame: [UInt8]) -> Bool {
        let channel = state.withLock { s -> FrameChannel? in
            if s.channel == nil { s.earlier.transmitDropped += 1 }
            return s.channel
        }
        return channel?.send(frame) ?? true
    }

    public func frontendReady() {
        state.withLock { $0.channel }?.resumeReceive()
    }

    public func close() {
        let channel = state.withLock { s -> FrameChannel? in
            guard !s.closed else { return nil }
            s.closed = true
            if s.listenerWatched, let raw = s.listener?.rawValue { loop.unregister(fd: raw) }
            s.listenerWatched = false
            s.listener = nil
            if let file = s.socketFile {
                // Remove the socket file only if it is still the one we bound.
                var st = stat()
                if lstat(file.path, &st) == 0, UInt64(st.st_dev) == file.device, UInt64(st.st_ino) == file.inode {
                    unlink(file.path)
                }
                s.socketFile = nil
            }
            s.info = "closed"
            defer { s.channel = nil }
            return s.channel
        }
        if let channel {
            channel.close()
            state.withLock { $0.earlier = $0.earlier + channel.counters }
        }
    }

    // MARK: server

    private struct Listening: ~Copyable {
        var fd: FileDescriptor
        var port: UInt16?
        var label: String
        var file: (path: String, device: UInt64, inode: UInt64)?
    }

    private static func listen(_ address: NetSocketAddress, what: String) throws(SystemError) -> Listening {
        switch address {
        case .unix(let path):
            let raw = try RawSocketAddress.unix(path)
            var st = stat()
            if lstat(path, &st) == 0 {
                guard st.st_mode & S_IFMT == S_IFSOCK else {
                    throw SystemError(.configuration, "\(what): cannot listen on unix:\(path): it exists and is not a socket; remove it or choose another path")
                }
                unlink(path)  // a stale socket from an earlier run (QEMU removes it too)
            }
            let fd = try Sockets.open(family: AF_UNIX, type: Int32(SOCK_STREAM.rawValue), nonBlocking: true, what: "\(what): cannot create a socket")
            try Sockets.bind(fd.rawValue, raw, what: "\(what): cannot listen on unix:\(path)")
            _ = try syscall("\(what): cannot listen on unix:\(path)") { Glibc.listen(fd.rawValue, 1) }
            guard lstat(path, &st) == 0 else { return Listening(fd: fd, label: address.description) }
            return Listening(fd: fd, label: address.description, file: (path, UInt64(st.st_dev), UInt64(st.st_ino)))
        case .inet(let host, let port):
            var lastError: SystemError?
            for raw in try RawSocketAddress.resolve(host: host, port: port, socketType: Int32(SOCK_STREAM.rawValue), passive: true) {
                do throws(SystemError) {
                    let fd = try Sockets.open(family: raw.family, type: Int32(SOCK_STREAM.rawValue), nonBlocking: true, what: "\(what): cannot create a socket")
                    Sockets.setOption(fd.rawValue, SOL_SOCKET, SO_REUSEADDR)
                    try Sockets.bind(fd.rawValue, raw, what: "bind")
                    _ = try syscall("listen") { Glibc.listen(fd.rawValue, 1) }
                    let local = RawSocketAddress.of(fd.rawValue, peer: false)
                    return Listening(fd: fd, port: local?.port, label: local?.uri ?? address.description)
                } catch {
                    lastError = error
                }
            }
            throw SystemError(.syscall, "\(what): cannot listen on \(address)", errno: lastError?.errno)
        case .fd(let n):
            let fd = try Sockets.inheritedStream(n, listening: true, what: what)
            let local = RawSocketAddress.of(n, peer: false)
            return Listening(fd: fd, port: local?.port, label: "fd:\(n)")
        }
    }

    private func watchListener(_ s: inout State) throws(SystemError) {
        guard !s.closed, !s.listenerWatched, let raw = s.listener?.rawValue else { return }
        try loop.register(fd: raw, events: EventLoop.readable) { [weak self] _ in self?.acceptPeer() }
        s.listenerWatched = true
    }

    /// Loop thread: a peer is waiting in the backlog.
    private func acceptPeer() {
        var failure: SystemError?
        let accepted = state.withLock { s -> FileDescriptor? in
            guard !s.closed, s.channel == nil, let raw = s.listener?.rawValue else { return nil }
            do throws(SystemError) {
                return try Sockets.acceptOrUnwatch(raw, loop: loop, watched: &s.listenerWatched)
            } catch {
                failure = error
                return nil
            }
        }
        if let accepted {
            try? adopt(accepted)
        } else if let failure {
            DebugLog.log(.guestErrors, "netdev \(id): cannot accept a connection (\(failure)); trying again in a second")
            DispatchQueue.global().asyncAfter(deadline: .now() + 1) { [weak self] in self?.watchAgain() }
        }
    }

    /// The listener is watched again after `acceptPeer` gave up for a while (if no peer came
    /// meanwhile: then it waits for that one to leave).
    private func watchAgain() {
        state.withLock { s in
            guard s.channel == nil else { return }
            try? watchListener(&s)
        }
    }

    // MARK: client

    private static func connect(_ address: NetSocketAddress, what: String) throws(SystemError) -> FileDescriptor {
        let candidates: [RawSocketAddress]
        switch address {
        case .unix(let path): candidates = [try RawSocketAddress.unix(path)]
        case .inet(let host, let port):
            candidates = try RawSocketAddress.resolve(host: host, port: port, socketType: Int32(SOCK_STREAM.rawValue), passive: false)
        case .fd(let n):
            return try Sockets.inheritedStream(n, listening: false, what: what)
        }
        var lastError: SystemError?
        for raw in candidates {
            do throws(SystemError) {
                let fd = try Sockets.open(family: raw.family, type: Int32(SOCK_STREAM.rawValue), nonBlocking: true, what: "\(what): cannot create a socket")
                try Sockets.connect(fd.rawValue, raw, what: "connect")
                return fd
            } catch {
                lastError = error
            }
        }
        throw SystemError(.syscall, "\(what): cannot connect to \(address)", errno: lastError?.errno)
    }

    // MARK: connection

    /// Makes `fd` the connection (both roles).
    private func adopt(_ fd: consuming FileDescriptor) throws(SystemError) {
        let raw = fd.rawValue
        let family = RawSocketAddress.of(raw, peer: false)?.family ?? AF_UNIX
        Sockets.setNoDelay(raw, family: family)
        let peer: String
        if !config.server {
            peer = "connected to \(label)"
        } else if family == AF_UNIX {
            peer = "connection on \(label)"
        } else {
            peer = "connection from \(RawSocketAddress.of(raw, peer: true)?.uri ?? "?")"
        }
        let channel = FrameChannel(fd: fd, wire: .lengthPrefixed, name: "netdev \(id)", loop: loop, slot: slot) { [weak self] channel, why in
            self?.peerGone(channel, why)
        }
        let adopted = state.withLock { s -> Bool in
            guard !s.closed, s.channel == nil else { return false }
            s.channel = channel
            s.connections += 1
            s.info = peer
            // One peer at a time (QEMU 7.2 net_stream_listen removes its client func).
            if s.listenerWatched, let listener = s.listener?.rawValue { loop.unregister(fd: listener) }
            s.listenerWatched = false
            return true
        }
        guard adopted else {
            channel.close()
            return
        }
        do {
            try channel.start()
        } catch {
            peerGone(channel, "\(error)")
            throw error
        }
    }

    /// Loop thread (or `adopt`): the connection ended. A server listens again.
    private func peerGone(_ channel: FrameChannel, _ why: String) {
        let owed = channel.close()
        DebugLog.log(.guestErrors, "netdev \(id): \(label): \(why); connection closed")
        state.withLock { s in
            guard s.channel === channel else { return }
            s.channel = nil
            s.earlier = s.earlier + channel.counters
            guard !s.closed else { return }
            if config.server {
                s.info = "listening on \(label)"
                try? watchListener(&s)
            } else {
                s.info = "disconnected from \(label)"
            }
        }
        // The frontend waited for this channel to drain: its frames are gone instead.
        if owed { slot.get()?.backendReady() }
    }
}

extension NetCounters {
    static func + (a: NetCounters, b: NetCounters) -> NetCounters {
        NetCounters(transmitDropped: a.transmitDropped + b.transmitDropped, receiveDropped: a.receiveDropped + b.receiveDropped,
                    malformed: a.malformed + b.malformed, transmitted: a.transmitted + b.transmitted, received: a.received + b.received)
    }
}
