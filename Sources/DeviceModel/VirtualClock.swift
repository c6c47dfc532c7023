import Glibc
import Synchronization

/// Guest time (QEMU's `QEMU_CLOCK_VIRTUAL`): host monotonic time that stops while the machine
/// is paused, so a guest does not see the time it spent stopped as a jump. Timers of the
/// ACLINT, RTC alarms and virtio rate limits all read this clock.
public final class VirtualClock: Sendable {
    private struct State {
        /// Guest nanoseconds = host monotonic ns - offset, while running.
        var offset: Int64
        /// The guest time at which the clock was stopped, when stopped.
        var frozenAt: Int64?
    }
    private let state: Mutex<State>

    public init() {
        state = Mutex(State(offset: VirtualClock.hostMonotonicNanoseconds(), frozenAt: nil))
    }

    /// CLOCK_MONOTONIC in nanoseconds.
    public static func hostMonotonicNanoseconds() -> Int64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Int64(ts.tv_sec) * 1_000_000_000 + Int64(ts.tv_nsec)
    }

    /// Nanoseconds of guest time since the clock was created (or set).
    public var nanoseconds: Int64 {
        state.withLock { s in s.frozenAt ?? (VirtualClock.hostMonotonicNanoseconds() - s.offset) }
    }

    public var isRunning: Bool { state.withLock { $0.frozenAt == nil } }

    /// Stops guest time (machine paused, snapshot being taken).
    public func stop() {
        state.withLock { s in
            if s.frozenAt == nil { s.frozenAt = VirtualClock.hostMonotonicNanoseconds() - s.offset }
        }
    }

    /// Lets guest time run again from where it stopped.
    public func resume() {
        state.withLock { s in
            if let frozen = s.frozenAt {
                s.offset = VirtualClock.hostMonotonicNanoseconds() - frozen
                s.frozenAt = nil
            }
        }
    }

    /// Sets guest time (restoring a snapshot or an incoming migration). Keeps the stopped state.
    public func set(nanoseconds: Int64) {
        state.withLock { s in
            if s.frozenAt != nil {
                s.frozenAt = nanoseconds
            } else {
                s.offset = VirtualClock.hostMonotonicNanoseconds() - nanoseconds
            }
        }
    }
}
