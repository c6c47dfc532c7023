import CLinux
import DeviceModel
import Glibc
import Synchronization
import SystemSupport

/// A descriptor that may be gone, as Mutex state (a stored property lets pattern matching
/// borrow the ~Copyable value instead of consuming it).
struct DescriptorSlot: ~Copyable {
    var fd: FileDescriptor?
    var rawValue: Int32? {
        switch fd {
        case .some(let fd): return fd.rawValue
        case .none: return nil
        }
    }
}

/// The frontend a backend feeds, shared by the backend and its channels. It is the only link
/// from a channel back to the device, so no reference cycle runs through the event loop.
///
/// It also carries the connection state behind QEMU's CHR_EVENT_OPENED/CLOSED: a frontend
/// hears `.opened` when the host side connects, or at `set` when it is connected already
/// (QEMU's qemu_chr_fe_set_handlers does the same), and `.closed` when it goes away. A new
/// frontend is published only after it heard `.opened`, so it never gets input first; a
/// frontend must not call `attach` from inside `backendEvent` (the event lock is held).
final class FrontendSlot: Sendable {
    private let frontend = Mutex<(any CharFrontend)?>(nil)
    /// Whether the host side is connected. Held while an event is delivered and while a
    /// frontend is installed, so each frontend hears `.opened` once per connection.
    private let connection = Mutex(false)

    func get() -> (any CharFrontend)? { frontend.withLock { $0 } }

    func set(_ new: (any CharFrontend)?) {
        connection.withLock { open in
            if open, let new { new.backendEvent(.opened) }
            frontend.withLock { $0 = new }
        }
    }

    var isOpen: Bool { connection.withLock { $0 } }

    /// The host side connected: tells the frontend (once, until `closed`).
    func opened() {
        connection.withLock { open in
            guard !open else { return }
            open = true
            get()?.backendEvent(.opened)
        }
    }

    /// The host side went away: tells the frontend (once, if it was open).
    func closed() {
        connection.withLock { open in
            guard open else { return }
            open = false
            get()?.backendEvent(.closed)
        }
    }
}

/// One descriptor carrying a character stream (a pty master, a connected socket, stdin),
/// read on the event loop with the frontend's flow control and written without blocking.
///
/// Threads (DESIGN.md §4): reads, and every change to what epoll watches for input, happen on
/// the loop thread (handlers and `execute` tasks), so input keeps its order. `write` comes
/// from vCPU threads: it never blocks; what the peer cannot take now waits in a bounded queue
/// flushed when the descriptor is writable, and beyond that bound output is dropped, as a
/// serial line with nobody reading drops it. System calls run under the lock, so `close` can
/// never race a read on a descriptor number the kernel has already handed out again; the
/// frontend is always called outside the lock, so it may call back into the backend.
final class StreamChannel: Sendable {
    enum Kind: Sendable {
        /// send(2) with MSG_NOSIGNAL: a peer that went away must not raise SIGPIPE.
        case socket
        /// read(2)/write(2): ttys, pipes, files.
        case stream
    }

    /// Most output kept for a peer that is connected but slow, before dropping (64 KiB).
    static let outputQueueLimit = 64 * 1024
    /// Largest single read.
    static let readChunk = 4096
    /// Most descriptors taken with one read of a unix socket (SCM_RIGHTS); more are closed.
    static let maxDescriptors = 16

    private struct State: ~Copyable {
        var fd: DescriptorSlot
        var ownsDescriptor: Bool
        var registered = false
        /// epoll refuses regular files and /dev/null; those are read from `execute` tasks.
        var pollable = true
        var pumpScheduled = false
        /// Input flows (frontend has room); false stops watching until `resumeInput`.
        var inputWanted = true
        var inputEnded = false
        /// The peer hung up while input was paused: stop watching (epoll would report the
        /// hangup forever) and finish reading what is left once the frontend has room.
        var hungUpWhilePaused = false
        /// Input and output are live; false while a pty has nobody on its slave side.
        var connected = true
        var output: [UInt8] = []
        var outputStart = 0
        var droppedOutput = 0
    }

    let loop: EventLoop
    let kind: Kind
    private let slot: FrontendSlot
    private let onHangup: @Sendable () -> Void
    private let state: Mutex<State>

    /// - Parameters:
    ///   - fd: the descriptor; closed by `close()` when `owned`, else only released.
    ///   - onHangup: called on the loop thread once, when the peer ends the stream (EOF,
    ///     EIO from a pty master, a reset); the channel has stopped watching by then.
    init(fd: consuming FileDescriptor, owned: Bool = true, kind: Kind, loop: EventLoop, slot: FrontendSlot,
         onHangup: @escaping @Sendable () -> Void) {
        self.loop = loop
        self.kind = kind
        self.slot = slot
        self.onHangup = onHangup
        state = Mutex(State(fd: DescriptorSlot(fd: fd), ownsDescriptor: owned))
    }

    deinit { close() }

    /// Starts watching: call once after init.
    func start() throws(SystemError) {
        try state.withLock { (s: inout State) throws(SystemError) in try updateInterest(&s) }
    }

    var isConnected: Bool { state.withLock { $0.connected && $0.fd.rawValue != nil } }
    /// The descriptor number while open (tests inspect socket options through it).
    var descriptor: Int32? { state.withLock { $0.fd.rawValue } }
    var droppedOutputBytes: Int { state.withLock { $0.droppedOutput } }

    /// Stops input and output and closes (or releases) the descriptor. Idempotent.
    func close() {
        state.withLock { s in
            // What the peer has not taken yet gets one last try without blocking (the last
            // monitor event before swemu exits, say); the rest is dropped.
            if let fd = s.fd.rawValue, s.outputStart < s.output.count { _ = send(fd, s.output[s.outputStart...]) }
            if s.registered, let fd = s.fd.rawValue { loop.unregister(fd: fd) }
            s.registered = false
            s.output = []
            s.outputStart = 0
            if let fd = s.fd.fd.take(), !s.ownsDescriptor { _ = fd.release() }
        }
    }

    /// Marks the peer present or absent (a pty's slave side). While absent nothing is read
    /// and output is dropped; the owner polls for the peer's return.
    func setConnected(_ connected: Bool) {
        state.withLock { s in
            guard s.connected != connected else { return }
            s.connected = connected
            s.inputEnded = false
            s.hungUpWhilePaused = false
            s.inputWanted = true
            s.output = []
            s.outputStart = 0
            try? updateInterest(&s)
        }
    }

    /// The frontend has room again (or was attached): resume reading on the loop thread.
    func resumeInput() {
        loop.execute { [weak self] in self?.resumeOnLoop() }
    }

    // MARK: input (loop thread)

    private func resumeOnLoop() {
        let pump = state.withLock { s -> Bool in
            guard s.fd.rawValue != nil, s.connected, !s.inputEnded else { return false }
            s.inputWanted = true
            if !s.pollable || s.hungUpWhilePaused { return true }
            try? updateInterest(&s)
            return false
        }
        if pump { pumpInput(hangup: false) }
    }

    private func handle(_ events: UInt32) {
        if events & EventLoop.writable != 0 { flushOutput() }
        let hangup = events & EventLoop.hangup != 0
        if events & EventLoop.readable != 0 || hangup {
            pumpInput(hangup: hangup)
        }
    }

    private enum ReadResult { case data([UInt8], [Int32]), wouldBlock, end, paused, idle }

    /// Reads once, at most what the frontend can take, and hands it over.
    private func pumpInput(hangup: Bool) {
        let frontend = slot.get()
        let capacity = frontend.map { max(0, $0.receiveCapacity()) } ?? 0
        let result = state.withLock { s -> ReadResult in
            s.pumpScheduled = false
            guard let fd = s.fd.rawValue, s.connected, !s.inputEnded else { return .idle }
            let hangup = hangup || s.hungUpWhilePaused
            guard capacity > 0 else {
                // Nobody to hand the rest to: the stream is over.
                if frontend == nil && hangup { return .end }
                s.inputWanted = false
                if hangup { s.hungUpWhilePaused = true }
                try? updateInterest(&s)
                return .paused
            }
            var buffer = [UInt8](repeating: 0, count: min(capacity, Self.readChunk))
            var n: Int
            var descriptors: [Int32] = []
            repeat {
                // SAFETY: read and recvmsg write at most b.count bytes into the buffer they are
                // given, and clx_recv_with_fds at most f.count entries into `f`, of which it
                // reports `received`; only sockets carry descriptors, so only they pay for `f`.
                n = buffer.withUnsafeMutableBytes { b in
                    guard kind == .socket else { return Glibc.read(fd, b.baseAddress, b.count) }
                    return withUnsafeTemporaryAllocation(of: Int32.self, capacity: Self.maxDescriptors) { f in
                        var received: Int32 = 0
                        let n = clx_recv_with_fds(fd, b.baseAddress, b.count, f.baseAddress, Int32(f.count), &received)
                        descriptors = Array(f.prefix(Int(received)))
                        return n
                    }
                }
            } while n < 0 && Errno.current == .interrupted
            if n < 0 && Errno.current == .wouldBlock { return hangup ? .end : .wouldBlock }
            // 0: end of file. EIO (a pty master with no slave), ECONNRESET: the peer is gone.
            if n <= 0 {
                for fd in descriptors { Glibc.close(fd) }
                return .end
            }
            buffer.removeSubrange(n...)
            return .data(buffer, descriptors)
        }
        switch result {
        case .data(let bytes, let descriptors):
            // Descriptors first: the command they came with may use them (QMP getfd).
            if !descriptors.isEmpty {
                if let frontend { frontend.receiveDescriptors(descriptors) } else { for fd in descriptors { Glibc.close(fd) } }
            }
            frontend?.receive(bytes)
            schedulePumpIfUnpollable()
        case .end:
            let notify = state.withLock { s -> Bool in
                guard !s.inputEnded else { return false }
                s.inputEnded = true
                s.hungUpWhilePaused = false
                try? updateInterest(&s)
                return true
            }
            if notify { onHangup() }
        case .wouldBlock, .paused, .idle:
            break
        }
    }

    /// Descriptors epoll refuses are always ready: keep reading from loop tasks.
    private func schedulePumpIfUnpollable() {
        let schedule = state.withLock { s -> Bool in
            guard !s.pollable || s.hungUpWhilePaused, !s.pumpScheduled, s.inputWanted, !s.inputEnded else { return false }
            s.pumpScheduled = true
            return true
        }
        if schedule { loop.execute { [weak self] in self?.pumpInput(hangup: false) } }
    }

    // MARK: output (any thread)

    /// Sends `bytes` without blocking; see the type's comment for what is kept or dropped.
    func write(_ bytes: [UInt8]) {
        if bytes.isEmpty { return }
        state.withLock { s in
            guard let fd = s.fd.rawValue, s.connected, !s.inputEnded, !s.hungUpWhilePaused else {
                s.droppedOutput &+= bytes.count
                return
            }
            var written = 0
            if s.output.count == s.outputStart {
                guard let n = send(fd, bytes[...]) else {
                    // EPIPE, EIO, ECONNRESET: the peer is gone; the read side reports it.
                    s.droppedOutput &+= bytes.count
                    return
                }
                written = n
            }
            if written == bytes.count { return }
            let room = Self.outputQueueLimit - (s.output.count - s.outputStart)
            let keep = min(room, bytes.count - written)
            s.output.append(contentsOf: bytes[written..<(written + keep)])
            s.droppedOutput &+= bytes.count - written - keep
            try? updateInterest(&s)
        }
    }

    private func flushOutput() {
        state.withLock { s in
            guard let fd = s.fd.rawValue else { return }
            let pending = s.output[s.outputStart...]
            if let n = send(fd, pending) {
                s.outputStart += n
            } else {
                s.droppedOutput &+= pending.count
                s.outputStart = s.output.count
            }
            if s.outputStart == s.output.count {
                s.output = []
                s.outputStart = 0
            }
            try? updateInterest(&s)
        }
    }

    /// One non-blocking write; the count taken (0 when full), or nil when the peer is gone.
    private func send(_ fd: Int32, _ bytes: ArraySlice<UInt8>) -> Int? {
        while true {
            // SAFETY: the kernel reads at most b.count bytes from the buffer during the call.
            let n = bytes.withUnsafeBytes { b -> Int in
                switch kind {
                case .socket: return Glibc.send(fd, b.baseAddress, b.count, Int32(MSG_NOSIGNAL | MSG_DONTWAIT))
                case .stream: return Glibc.write(fd, b.baseAddress, b.count)
                }
            }
            if n >= 0 { return n }
            let err = Errno.current
            if err == .interrupted { continue }
            if err == .wouldBlock { return 0 }
            return nil
        }
    }

    // MARK: epoll interest (under the lock)

    private func updateInterest(_ s: inout State) throws(SystemError) {
        guard let fd = s.fd.rawValue else { return }
        if s.hungUpWhilePaused || s.inputEnded || !s.connected {
            // The peer is gone: what it did not take is lost, as on a cut serial line.
            s.droppedOutput &+= s.output.count - s.outputStart
            s.output = []
            s.outputStart = 0
        }
        var events: UInt32 = 0
        if s.connected && !s.inputEnded && !s.hungUpWhilePaused {
            // EPOLLRDHUP even while paused: a TCP peer's FIN shows only as readable, and a
            // server must learn its client left even when the guest is not reading.
            events |= UInt32(clx_EPOLLRDHUP)
            if s.inputWanted { events |= EventLoop.readable }
        }
        if s.output.count > s.outputStart { events |= EventLoop.writable }
        guard s.pollable else { return }
        if events == 0 {
            if s.registered {
                loop.unregister(fd: fd)
                s.registered = false
            }
            return
        }
        if s.registered {
            try loop.modify(fd: fd, events: events)
            return
        }
        do {
            try loop.register(fd: fd, events: events) { [weak self] ev in self?.handle(ev) }
            s.registered = true
        } catch where error.errno == Errno(rawValue: EPERM) {
            // A regular file or /dev/null: always readable, never pollable.
            s.pollable = false
            if !s.pumpScheduled {
                s.pumpScheduled = true
                loop.execute { [weak self] in self?.pumpInput(hangup: false) }
            }
        }
    }
}
