import CLinux
import DeviceModel
import Glibc
import Synchronization
import SystemSupport

/// QEMU's stream framing (net/net.c `net_fill_rstate`, used by `-netdev stream` and the TCP
/// forms of `-netdev socket`): each frame is preceded by its length, 4 bytes big-endian.
/// A codec with no I/O (DESIGN.md §9.6): feed the bytes read, take whole frames out.
///
/// The length comes from the peer, so it is checked before anything is kept: 0, or more than
/// QEMU's NET_BUFSIZE (4096 + 65536), is malformed and ends the connection (QEMU drops the
/// connection on an oversized length too). A frame's bytes are kept only as they arrive.
struct LengthPrefixedFrames: Sendable {
    /// QEMU's NET_BUFSIZE: the largest frame a peer may announce.
    static let maximumLength = 4096 + 65536

    struct Malformed: Error, Equatable {
        var length: UInt32
    }

    private var header: UInt32 = 0
    private var headerBytes = 0
    private var expected = 0
    private var payload: [UInt8] = []

    /// Bytes of a frame received so far (0 between frames).
    var partialCount: Int { headerBytes + payload.count }

    /// Appends the frames `bytes` completes to `frames`; throws at the first bad length.
    mutating func feed(_ bytes: UnsafeRawBufferPointer, into frames: inout [[UInt8]]) throws(Malformed) {
        var i = 0
        while i < bytes.count {
            if headerBytes < 4 {
                header = header << 8 | UInt32(bytes[i])
                headerBytes += 1
                i += 1
                if headerBytes == 4 {
                    guard header > 0, header <= UInt32(Self.maximumLength) else { throw Malformed(length: header) }
                    expected = Int(header)
                    payload.reserveCapacity(expected)
                }
                continue
            }
            let take = min(expected - payload.count, bytes.count - i)
            // SAFETY: i + take <= bytes.count, so the rebased slice stays inside `bytes`.
            payload.append(contentsOf: UnsafeRawBufferPointer(rebasing: bytes[i..<(i + take)]))
            i += take
            if payload.count == expected {
                frames.append(payload)
                payload = []
                header = 0
                headerBytes = 0
                expected = 0
            }
        }
    }

    /// The bytes that carry `frame` on a stream.
    static func encode(_ frame: [UInt8]) -> [UInt8] {
        let length = UInt32(truncatingIfNeeded: frame.count)
        var out: [UInt8] = [UInt8(length >> 24), UInt8(length >> 16 & 0xff), UInt8(length >> 8 & 0xff), UInt8(length & 0xff)]
        out.reserveCapacity(frame.count + 4)
        out += frame
        return out
    }
}

/// The NIC a backend feeds, shared by the backend and its channels (the only link back to
/// the device, so no reference cycle runs through the event loop).
final class FrontendSlot: Sendable {
    private let frontend = Mutex<(any NetFrontend)?>(nil)
    func get() -> (any NetFrontend)? { frontend.withLock { $0 } }
    func set(_ new: (any NetFrontend)?) { frontend.withLock { $0 = new } }
}

/// What one backend has counted (tests, `info network` later).
package struct NetCounters: Sendable, Equatable {
    /// Guest frames dropped: no peer connected, the connection lost with frames queued, or the
    /// host refused a datagram (EMSGSIZE, ECONNREFUSED...).
    package var transmitDropped = 0
    /// Frames from the network dropped: no NIC attached, or lost with a closing connection.
    package var receiveDropped = 0
    /// Connections closed because the peer sent a bad length.
    package var malformed = 0
    package var transmitted = 0
    package var received = 0
}

/// One descriptor carrying Ethernet frames: a connected stream socket (length-prefixed), a
/// datagram socket (one datagram per frame) or a tap device (one read/write per frame).
/// The stream, dgram, socket and tap backends differ only in how they get this descriptor.
///
/// Threads (DESIGN.md §4, NetBackend.swift): every read and write of the descriptor runs on
/// the event loop thread; `send` (any thread) queues the frame and asks the loop to flush.
/// System calls run under the lock, so `close` on another thread can never race one on a
/// descriptor number the kernel has handed out again; the frontend is called outside it.
///
/// Flow control: the transmit queue is bounded (`frameLimit` frames or `byteLimit` bytes);
/// past it `send` still takes the frame but returns false, and `backendReady()` follows once
/// the queue has drained to half. A frame the frontend refuses is kept with the rest of what
/// was read, and the descriptor leaves epoll altogether (so a hung-up peer cannot make the
/// loop spin) until `resumeReceive` — always run on the loop thread, after the handler that
/// paused, so a `frontendReady` racing the refusal is never lost.
final class FrameChannel: Sendable {
    enum Wire: Sendable {
        /// A connected stream socket: 4-byte big-endian length, then the frame.
        case lengthPrefixed
        /// A datagram socket: sendto `destination`, or send on a connected socket when nil.
        case datagram(destination: RawSocketAddress?)
        /// A tap device: read/write whole frames after `prefix` bytes we neither keep nor fill
        /// in (zero when we send): an inherited descriptor's virtio-net header whose size we
        /// could not set. A virtio-net header the backend passes through (its `offloads`) is
        /// part of the frame here, with a prefix of 0.
        case tap(prefix: Int)
    }

    static let frameLimit = 256
    static let byteLimit = 4 << 20
    /// The most read at once from a stream (a little over one largest frame).
    private static let readChunk = LengthPrefixedFrames.maximumLength + 4

    private struct State: ~Copyable {
        var fd: FileDescriptor?
        /// The epoll events we watch now (0: not registered).
        var watched: UInt32 = 0
        var queue: [[UInt8]] = []
        var head = 0
        var queuedBytes = 0
        /// Bytes of queue[head] already written (streams write partially).
        var written = 0
        var flushScheduled = false
        /// Waiting for EPOLLOUT.
        var blocked = false
        /// `send` returned false: `backendReady()` is owed.
        var owesReady = false
        /// The frontend refused a frame: these wait, oldest first, and we do not read.
        var pending: [[UInt8]] = []
        var paused = false
        var decoder = LengthPrefixedFrames()
        var counters = NetCounters()
        var closed = false
    }

    let wire: Wire
    let name: String
    private let loop: EventLoop
    private let slot: FrontendSlot
    private let state: Mutex<State>
    /// Called once (loop thread) when the descriptor fails for good: end of stream, reset,
    /// malformed input. The owner closes the channel and decides what comes next.
    private let onGone: @Sendable (FrameChannel, String) -> Void

    init(fd: consuming FileDescriptor, wire: Wire, name: String, loop: EventLoop, slot: FrontendSlot,
         onGone: @escaping @Sendable (FrameChannel, String) -> Void) {
        self.wire = wire
        self.name = name
        self.loop = loop
        self.slot = slot
        self.onGone = onGone
        state = Mutex(State(fd: fd))
    }

    deinit { _ = close() }

    /// Starts reading (registers the descriptor with the loop).
    func start() throws(SystemError) {
        try state.withLock { (s: inout State) throws(SystemError) in try updateWatch(&s) }
    }

    var counters: NetCounters { state.withLock { $0.counters } }

    /// Any thread: runs `body` with the descriptor, which stays open during the call; nothing
    /// once the channel is closed.
    func withDescriptor(_ body: (Int32) -> Void) {
        state.withLock { s in
            guard !s.closed, let raw = s.fd?.rawValue else { return }
            body(raw)
        }
    }

    // MARK: transmit

    /// Any thread: queues `frame`; false when the queue is past its bound.
    func send(_ frame: [UInt8]) -> Bool {
        let bytes: [UInt8]
        switch wire {
        case .lengthPrefixed: bytes = LengthPrefixedFrames.encode(frame)
        case .datagram: bytes = frame
        case .tap(let prefix): bytes = prefix == 0 ? frame : [UInt8](repeating: 0, count: prefix) + frame
        }
        let (schedule, full) = state.withLock { s -> (Bool, Bool) in
            guard !s.closed else {
                s.counters.transmitDropped += 1
                return (false, false)
            }
            s.queue.append(bytes)
            s.queuedBytes += bytes.count
            let schedule = !s.flushScheduled && !s.blocked
            if schedule { s.flushScheduled = true }
            let full = s.queue.count - s.head >= Self.frameLimit || s.queuedBytes >= Self.byteLimit
            if full { s.owesReady = true }
            return (schedule, full)
        }
        if schedule { loop.execute { [weak self] in self?.flush() } }
        return !full
    }

    /// Loop thread: writes what the descriptor takes now.
    private func flush() {
        var gone: String?
        let notify = state.withLock { s -> Bool in
            s.flushScheduled = false
            guard !s.closed, let raw = s.fd?.rawValue else { return false }
            var blocked = false
            writing: while s.head < s.queue.count {
                switch write(raw, s.queue[s.head], from: s.written) {
                case .wrote(let n):
                    s.written += n
                    guard s.written == s.queue[s.head].count else { continue writing }
                    s.counters.transmitted += 1
                case .wouldBlock:
                    blocked = true
                    break writing
                case .dropped(let why):
                    s.counters.transmitDropped += 1
                    DebugLog.log(.guestErrors, "\(name): frame of \(s.queue[s.head].count) bytes dropped: \(why)")
                case .failed(let why):
                    gone = why
                    return false
                }
                s.queuedBytes -= s.queue[s.head].count
                s.queue[s.head] = []
                s.head += 1
                s.written = 0
            }
            if s.head == s.queue.count {
                s.queue.removeAll(keepingCapacity: true)
                s.head = 0
            } else if s.head >= 64 {
                s.queue.removeFirst(s.head)
                s.head = 0
            }
            s.blocked = blocked
            try? updateWatch(&s)
            let drained = s.queue.count - s.head <= Self.frameLimit / 2 && s.queuedBytes <= Self.byteLimit / 2
            guard drained, s.owesReady else { return false }
            s.owesReady = false
            return true
        }
        if notify { slot.get()?.backendReady() }
        if let gone { onGone(self, gone) }
    }

    private enum WriteResult {
        case wrote(Int)
        case wouldBlock
        /// This frame is lost, the descriptor is fine (datagram errors).
        case dropped(String)
        /// The descriptor is done (a stream peer went away).
        case failed(String)
    }

    private func write(_ fd: Int32, _ bytes: [UInt8], from offset: Int) -> WriteResult {
        while true {
            let n: Int = bytes.withUnsafeBytes { b in
                // SAFETY: offset < b.count (a frame is removed once fully written), so the
                // pointer and length stay inside the array for the duration of the call.
                let start = b.baseAddress! + offset
                let count = b.count - offset
                switch wire {
                case .lengthPrefixed:
                    return Glibc.send(fd, start, count, Int32(MSG_NOSIGNAL) | Int32(MSG_DONTWAIT))
                case .datagram(let destination?):
                    return destination.withSockaddr { Glibc.sendto(fd, start, count, Int32(MSG_NOSIGNAL) | Int32(MSG_DONTWAIT), $0, $1) }
                case .datagram(nil):
                    return Glibc.send(fd, start, count, Int32(MSG_NOSIGNAL) | Int32(MSG_DONTWAIT))
                case .tap:
                    return Glibc.write(fd, start, count)
                }
            }
            if n >= 0 { return .wrote(n) }
            let err = Errno.current
            switch err {
            case .interrupted: continue
            case .wouldBlock: return .wouldBlock
            default:
                if case .lengthPrefixed = wire { return .failed("send: \(err)") }
                return .dropped("\(err)")
            }
        }
    }

    // MARK: receive

    /// Loop thread: the descriptor has input, an error or a hang-up.
    private func handle(_ events: UInt32) {
        if events & EventLoop.writable != 0 { flush() }
        if events & (EventLoop.readable | EventLoop.hangup) != 0 { receive() }
    }

    private enum ReadResult {
        /// Frames read; then, if `gone`, the descriptor failed after them (a bad length).
        case frames([[UInt8]], gone: String?)
        case nothing
        case gone(String)
    }

    /// Loop thread: reads once (epoll is level-triggered: what is left fires again) and offers
    /// the frames to the frontend.
    private func receive() {
        let result = state.withLock { s -> ReadResult in
            guard !s.closed, !s.paused, let raw = s.fd?.rawValue else { return .nothing }
            return read(raw, &s)
        }
        switch result {
        case .nothing: return
        case .gone(let why): onGone(self, why)
        case .frames(let frames, let gone):
            deliver(frames)
            if let gone { onGone(self, gone) }
        }
    }

    private func read(_ fd: Int32, _ s: inout State) -> ReadResult {
        let capacity: Int
        switch wire {
        case .lengthPrefixed: capacity = Self.readChunk
        case .datagram: capacity = 65536
        // A GSO frame (NetOffloads.maxFrameSize) and its virtio-net header fit whole.
        case .tap(let prefix): capacity = prefix + NetOffloads.headerSize + NetOffloads.maxFrameSize
        }
        var buffer = [UInt8](repeating: 0, count: capacity)
        while true {
            let n = buffer.withUnsafeMutableBytes { b in
                // SAFETY: the kernel writes at most b.count bytes into the array's storage.
                switch wire {
                case .lengthPrefixed, .datagram: return Glibc.recv(fd, b.baseAddress, b.count, Int32(MSG_DONTWAIT))
                case .tap: return Glibc.read(fd, b.baseAddress, b.count)
                }
            }
            if n < 0 {
                let err = Errno.current
                if err == .interrupted { continue }
                if err == .wouldBlock { return .nothing }
                if case .lengthPrefixed = wire { return .gone("receive: \(err)") }
                if case .tap = wire, err.rawValue == EBADFD || err.rawValue == EIO { return .gone("read: \(err)") }
                // A datagram socket reports an earlier send's ICMP error here once; it is not
                // fatal (QEMU ignores it too).
                return .nothing
            }
            switch wire {
            case .lengthPrefixed:
                if n == 0 { return .gone(s.decoder.partialCount > 0 ? "the peer closed the connection inside a frame" : "the peer closed the connection") }
                var frames: [[UInt8]] = []
                var decoder = s.decoder
                s.decoder = LengthPrefixedFrames()  // one owner of the partial frame: no copy on write
                let malformed = buffer.withUnsafeBytes { b -> UInt32? in
                    do throws(LengthPrefixedFrames.Malformed) {
                        // SAFETY: n <= b.count (the kernel wrote n bytes into the buffer).
                        try decoder.feed(UnsafeRawBufferPointer(rebasing: b[0..<n]), into: &frames)
                        return nil
                    } catch {
                        return error.length
                    }
                }
                s.decoder = decoder
                if let malformed {
                    s.counters.malformed += 1
                    return .frames(frames, gone: "malformed frame length \(malformed) from the peer (accepted: 1 to \(LengthPrefixedFrames.maximumLength))")
                }
                return frames.isEmpty ? .nothing : .frames(frames, gone: nil)
            case .datagram:
                return .frames([Array(buffer[0..<n])], gone: nil)
            case .tap(let prefix):
                guard n > prefix else { return .nothing }
                return .frames([Array(buffer[prefix..<n])], gone: nil)
            }
        }
    }

    /// Loop thread: offers `frames` in order; keeps the rest from the first one refused.
    private func deliver(_ frames: [[UInt8]]) {
        guard let frontend = slot.get() else {
            // No NIC attached: what arrives is dropped (NetBackend.attach).
            state.withLock { $0.counters.receiveDropped += frames.count }
            return
        }
        for (i, frame) in frames.enumerated() where !frontend.receive(frame) {
            state.withLock { s in
                guard !s.closed else {
                    s.counters.receiveDropped += frames.count - i
                    return
                }
                s.counters.received += i
                s.pending = Array(frames[i...])
                s.paused = true
                try? updateWatch(&s)
            }
            return
        }
        state.withLock { $0.counters.received += frames.count }
    }

    /// Any thread: the frontend has room again (or a new one was attached).
    func resumeReceive() {
        loop.execute { [weak self] in self?.resumeOnLoop() }
    }

    private func resumeOnLoop() {
        let frames = state.withLock { s -> [[UInt8]]? in
            guard !s.closed, s.paused else { return nil }
            s.paused = false
            defer { s.pending = [] }
            return s.pending
        }
        guard let frames else { return }
        deliver(frames)
        state.withLock { s in
            guard !s.closed, !s.paused else { return }
            try? updateWatch(&s)
        }
    }

    // MARK: epoll interest

    /// Watches input unless paused, output while blocked; leaves epoll when neither.
    private func updateWatch(_ s: inout State) throws(SystemError) {
        guard !s.closed, let raw = s.fd?.rawValue else { return }
        var events: UInt32 = 0
        if !s.paused { events |= EventLoop.readable }
        if s.blocked { events |= EventLoop.writable }
        guard events != s.watched else { return }
        if events == 0 {
            loop.unregister(fd: raw)
        } else if s.watched == 0 {
            try loop.register(fd: raw, events: events) { [weak self] fired in self?.handle(fired) }
        } else {
            try loop.modify(fd: raw, events: events)
        }
        s.watched = events
    }

    // MARK: close

    /// Any thread: closes the descriptor and drops what is queued (counted). Returns whether
    /// `backendReady()` was owed, so an owner that carries on (a server waiting for its next
    /// peer) can release a frontend that is waiting on this channel.
    @discardableResult
    func close() -> Bool {
        state.withLock { s in
            guard !s.closed else { return false }
            s.closed = true
            if s.watched != 0, let raw = s.fd?.rawValue { loop.unregister(fd: raw) }
            s.watched = 0
            s.fd = nil
            s.counters.transmitDropped += s.queue.count - s.head
            s.counters.receiveDropped += s.pending.count
            s.queue = []
            s.head = 0
            s.queuedBytes = 0
            s.pending = []
            defer { s.owesReady = false }
            return s.owesReady
        }
    }
}
