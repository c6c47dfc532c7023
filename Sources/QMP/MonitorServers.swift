import DeviceModel
import Glibc
import Synchronization

extension QMPTimestamp {
    /// The wall clock now (qmp-spec: event timestamps are wall-clock time).
    public static func now() -> QMPTimestamp {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return QMPTimestamp(seconds: Int64(ts.tv_sec), microseconds: Int64(ts.tv_nsec) / 1000)
    }
}

/// A QMP monitor on a character backend (`-qmp unix:/tmp/q.sock,server=on,wait=off`, or
/// `-mon chardev=X,mode=control`): each client that connects gets a fresh `QMPSession` —
/// the greeting on the backend's `.opened`, the session dropped on `.closed` — and the
/// target's events once it has negotiated. One server serves one chardev; several `-qmp`
/// options make several servers, each with its own client, as in QEMU.
///
/// ```swift
/// let dev = try CharDevice.open(spec, loop: loop, quit: { ... })
/// let qmp = QMPServer(backend: try dev.claim(for: "qmp"), target: machine)
/// ```
///
/// Threads (DESIGN.md §4): input and connection events come on the event loop thread;
/// events may come from any thread (vCPU threads). Commands run on the loop thread with no
/// lock held, so a target may emit events from inside `stop()`; replies and events are
/// written under the server's lock, each message in one `write`, in order. A client that
/// leaves while its command runs does not stop the command; its reply is dropped, and the
/// next client starts afresh. `quit` is carried out after its reply is written.
public final class QMPServer: CharFrontend {
    public let backend: any CharBackend
    public let target: any MonitorTarget
    public let version: MonitorVersion
    private let maxMessageSize: Int
    /// `-mon ...,pretty=on`: messages in QEMU's indented form.
    private let pretty: Bool
    private let clock: @Sendable () -> QMPTimestamp
    private let state = Mutex(State())

    private struct State {
        /// The current client's session; nil without a client, or while a command runs.
        var session: QMPSession?
        /// Bumped on every open and close: a reply for an older generation is dropped.
        var generation: UInt64 = 0
        var busy = false
        /// The current session has negotiated (mirrors the session while it is busy).
        var negotiated = false
        var closed = false
        /// Descriptors the client sent (SCM_RIGHTS) that no `getfd` has taken yet; closed
        /// when the client leaves.
        var descriptors: [Int32] = []
    }

    /// Largest chunk taken per `receive`.
    static let inputChunk = 4096

    /// Attaches to `backend` (if a client is connected already, it is greeted at once) and
    /// registers for the target's events.
    /// - Parameters:
    ///   - maxMessageSize: longest QMP message accepted (see `QMPFramer`).
    ///   - pretty: QEMU's `pretty=on`.
    ///   - clock: event timestamps (tests inject one).
    public init(backend: any CharBackend, target: any MonitorTarget, version: MonitorVersion = .swemu,
                maxMessageSize: Int = QMPSession.defaultMaxMessageSize, pretty: Bool = false,
                clock: @escaping @Sendable () -> QMPTimestamp = QMPTimestamp.now) {
        self.backend = backend
        self.target = target
        self.version = version
        self.maxMessageSize = maxMessageSize
        self.pretty = pretty
        self.clock = clock
        target.addEventListener { [weak self] event in self?.deliver(event) }
        backend.attach(self)
    }

    /// Detaches from the backend; the current session ends. Idempotent.
    public func close() {
        let wasOpen = state.withLock { s -> Bool in
            defer {
                s.closed = true
                s.session = nil
                s.negotiated = false
                s.generation &+= 1
            }
            return !s.closed
        }
        if wasOpen { backend.attach(nil) }
    }

    /// Whether a client is connected and has completed `qmp_capabilities`.
    public var isNegotiated: Bool { state.withLock { $0.negotiated } }
    /// Whether a client session exists (connected).
    public var hasSession: Bool { state.withLock { $0.session != nil || $0.busy } }

    public func receiveCapacity() -> Int { Self.inputChunk }

    public func backendEvent(_ event: CharEvent) {
        state.withLock { s in
            guard !s.closed else { return }
            s.generation &+= 1
            s.negotiated = false
            s.busy = false
            for fd in s.descriptors + (s.session?.receivedDescriptors ?? []) { Glibc.close(fd) }
            s.descriptors = []
            switch event {
            case .opened:
                let session = QMPSession(target: target, version: version, maxMessageSize: maxMessageSize, pretty: pretty)
                backend.write(session.greeting())
                s.session = session
            case .closed:
                s.session = nil
            }
        }
    }

    public func receiveDescriptors(_ fds: [Int32]) {
        let refused = state.withLock { s -> [Int32] in
            guard !s.closed, s.session != nil else { return fds }
            s.descriptors += fds
            return []
        }
        for fd in refused { Glibc.close(fd) }
    }

    public func receive(_ bytes: [UInt8]) {
        let taken = state.withLock { s -> (QMPSession, UInt64)? in
            guard var session = s.session else { return nil }  // no client: nothing to answer
            s.session = nil
            s.busy = true
            session.receivedDescriptors += s.descriptors
            s.descriptors = []
            return (session, s.generation)
        }
        guard let (initial, generation) = taken else { return }
        var session = initial
        session.receive(bytes)
        // A client that left takes its unanswered requests with it (QEMU drops its queue).
        while state.withLock({ $0.generation == generation }), let reply = session.processNext() {
            state.withLock { s in
                guard s.generation == generation else { return }  // the client left meanwhile
                s.negotiated = session.isNegotiated
                backend.write(reply.bytes)
            }
            if reply.quitRequested { target.execute(.quit(reason: "host-qmp-quit")) }
        }
        let orphaned = state.withLock { s -> [Int32] in
            guard s.generation == generation else { return session.receivedDescriptors }  // the client left
            s.session = session
            s.busy = false
            return []
        }
        for fd in orphaned { Glibc.close(fd) }
    }

    private func deliver(_ event: MonitorEvent) {
        let timestamp = clock()
        state.withLock { s in
            guard s.negotiated, !s.closed else { return }
            backend.write(QMPSession.eventMessage(event, timestamp: timestamp, pretty: pretty))
        }
    }
}

/// The human monitor on a character backend (`-monitor stdio`, `-monitor unix:...`, or a
/// mux port under `-nographic`): each `.opened` prints the banner and a prompt and starts a
/// fresh `HumanMonitor`; `.closed` drops it.
///
/// On a mux port, wire the mux's focus callback to `setFocus` (QEMU's MUX_IN/MUX_OUT), and
/// say at init whether the port starts with focus: while the port is not focused, output
/// (the banner included) is held and sent when it gains focus, followed by a fresh prompt;
/// losing focus ends the current line. Threads and vanishing clients: as `QMPServer`.
///
/// ```swift
/// let port = try dev.claim(for: "monitor", onFocus: { monitor.setFocus($0) })
/// ```
/// (create the server before focus can change, e.g. with a box the closure reads).
public final class HumanMonitorServer: CharFrontend {
    public let backend: any CharBackend
    public let target: any MonitorTarget
    public let version: MonitorVersion
    private let state: Mutex<State>

    /// Most output held while unfocused; beyond it output is dropped.
    static let heldOutputLimit = 64 * 1024

    private struct State {
        var monitor: HumanMonitor?
        var generation: UInt64 = 0
        var busy = false
        var focused: Bool
        var held: [UInt8] = []
        var closed = false
    }

    /// Attaches to `backend`. `focused`: false for a mux port that does not have the focus.
    public init(backend: any CharBackend, target: any MonitorTarget, version: MonitorVersion = .swemu,
                focused: Bool = true) {
        self.backend = backend
        self.target = target
        self.version = version
        state = Mutex(State(focused: focused))
        backend.attach(self)
    }

    /// Detaches from the backend. Idempotent.
    public func close() {
        let wasOpen = state.withLock { s -> Bool in
            defer {
                s.closed = true
                s.monitor = nil
                s.generation &+= 1
            }
            return !s.closed
        }
        if wasOpen { backend.attach(nil) }
    }

    public var hasSession: Bool { state.withLock { $0.monitor != nil || $0.busy } }

    public func receiveCapacity() -> Int { QMPServer.inputChunk }

    /// Output to the peer, or held while the mux shows another frontend. Under the lock.
    private func emit(_ bytes: [UInt8], _ s: inout State) {
        if bytes.isEmpty { return }
        if s.focused {
            backend.write(bytes)
        } else {
            s.held += bytes.prefix(max(0, Self.heldOutputLimit - s.held.count))
        }
    }

    /// The mux gave (true) or took (false) the focus.
    public func setFocus(_ focused: Bool) {
        state.withLock { s in
            guard s.focused != focused, !s.closed else { return }
            if focused {
                s.focused = true
                let held = s.held
                s.held = []
                emit(held, &s)
                // readline_restart + show_prompt; a busy monitor prompts when it finishes.
                if s.monitor != nil { emit(s.monitor!.restart().bytes, &s) }
            } else {
                if s.monitor != nil || s.busy { emit(Array("\r\n".utf8), &s) }
                s.focused = false
            }
        }
    }

    public func backendEvent(_ event: CharEvent) {
        state.withLock { s in
            guard !s.closed else { return }
            s.generation &+= 1
            s.busy = false
            s.held = []
            switch event {
            case .opened:
                var monitor = HumanMonitor(target: target, version: version)
                // QEMU prints the banner always, the prompt only when the monitor shows.
                let out = s.focused ? monitor.open() : MonitorOutput(bytes: monitorLineEnds(monitor.banner))
                emit(out.bytes, &s)
                s.monitor = monitor
            case .closed:
                s.monitor = nil
            }
        }
    }

    public func receive(_ bytes: [UInt8]) {
        let taken = state.withLock { s -> (HumanMonitor, UInt64)? in
            guard let monitor = s.monitor else { return nil }
            s.monitor = nil
            s.busy = true
            return (monitor, s.generation)
        }
        guard let (initial, generation) = taken else { return }
        var monitor = initial
        let out = monitor.feed(bytes)
        state.withLock { s in
            guard s.generation == generation else { return }
            emit(out.bytes, &s)
            s.monitor = monitor
            s.busy = false
        }
        if out.quitRequested { target.execute(.quit(reason: "host-qmp-quit")) }
    }
}
