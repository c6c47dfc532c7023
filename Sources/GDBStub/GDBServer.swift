import DeviceModel
import Glibc
import Synchronization

/// The GDB stub on a character backend (`-gdb tcp::1234`, `-s`): each client connection gets
/// a fresh `GDBSession`; connecting stops the machine, and a client that goes away without
/// detaching is detached for it (its breakpoints removed, the machine running on), so a
/// debugger that dies mid-step never leaves the guest stuck.
///
/// Threads: input arrives on the backend's thread and is handled with the session taken out
/// of the lock (target calls may wait for the vCPU thread, which reports stops through
/// `deliver`); a stop that arrives meanwhile is queued and answered after the packet.
public final class GDBServer: CharFrontend {
    public let backend: any CharBackend
    public let target: any GDBTarget
    private let state = Mutex(State())

    private struct State {
        var session: GDBSession?
        /// Bumped on every open and close: stops and replies of an older client are dropped.
        var generation: UInt64 = 0
        var busy = false
        var pendingStops: [GDBStopEvent] = []
        var closed = false
    }

    public init(backend: any CharBackend, target: any GDBTarget) {
        self.backend = backend
        self.target = target
        backend.attach(self)
    }

    /// Detaches from the backend (a connected debugger is detached first). Idempotent.
    /// A packet being handled is given a moment to finish, so that the stop reply or exit
    /// status it led to (`W` when the guest ends after `continue`) reaches the debugger.
    public func close() {
        for _ in 0..<1000 where state.withLock({ $0.busy }) { usleep(1000) }
        let hadSession = state.withLock { s -> Bool? in
            guard !s.closed else { return nil }
            defer {
                s.closed = true
                s.session = nil
                s.generation &+= 1
            }
            return s.session != nil || s.busy
        }
        guard let hadSession else { return }
        if hadSession { target.detach() }
        backend.attach(nil)
    }

    public var hasSession: Bool { state.withLock { $0.session != nil || $0.busy } }

    public func receiveCapacity() -> Int { 4096 }

    public func backendEvent(_ event: CharEvent) {
        let (attach, detach, generation) = state.withLock { s -> (Bool, Bool, UInt64) in
            guard !s.closed else { return (false, false, s.generation) }
            let hadSession = s.session != nil || s.busy
            s.generation &+= 1
            s.busy = false
            s.pendingStops.removeAll()
            switch event {
            case .opened:
                s.session = GDBSession(target: target)
                return (true, hadSession, s.generation)
            case .closed:
                s.session = nil
                return (false, hadSession, s.generation)
            }
        }
        if detach { target.detach() }
        if attach {
            target.attach { [weak self] event in self?.deliver(event, generation: generation) }
        }
    }

    public func receive(_ bytes: [UInt8]) {
        let taken = state.withLock { s -> (GDBSession, UInt64)? in
            guard let session = s.session else { return nil }
            s.session = nil
            s.busy = true
            return (session, s.generation)
        }
        guard let (initial, generation) = taken else { return }
        var session = initial
        session.receive(bytes) { reply in
            state.withLock { s in
                guard s.generation == generation else { return }  // the client left meanwhile
                backend.write(reply)
            }
        }
        state.withLock { s in
            guard s.generation == generation else { return }
            for event in s.pendingStops {
                let stopReply = session.stopped(event)
                if !stopReply.isEmpty { backend.write(stopReply) }
            }
            s.pendingStops.removeAll()
            s.session = session
            s.busy = false
        }
    }

    private func deliver(_ event: GDBStopEvent, generation: UInt64) {
        state.withLock { s in
            guard s.generation == generation, !s.closed else { return }
            if s.busy {
                s.pendingStops.append(event)
            } else if var session = s.session {
                let reply = session.stopped(event)
                s.session = session
                if !reply.isEmpty { backend.write(reply) }
            }
        }
    }
}
