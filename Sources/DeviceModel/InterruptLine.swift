import Synchronization

/// A wire from a device to an interrupt controller (DESIGN.md §3). The board decides where it
/// goes: a PLIC source, an ACLINT input, a KVM irqfd.
public protocol InterruptLine: AnyObject, Sendable {
    /// Drives the line to `level` (true = asserted). Level-triggered sources hold it.
    func set(level: Bool)
}

extension InterruptLine {
    /// An edge: assert, then deassert.
    public func pulse() {
        set(level: true)
        set(level: false)
    }
}

/// A line that remembers its level and calls `onChange` on each transition. Boards use it to
/// feed a controller; tests use it to observe a device.
public final class LevelInterruptLine: InterruptLine {
    private struct State {
        var level = false
        var risingEdges = 0
    }
    private let state = Mutex(State())
    private let onChange: (@Sendable (Bool) -> Void)?

    public init(onChange: (@Sendable (Bool) -> Void)? = nil) { self.onChange = onChange }

    public func set(level: Bool) {
        let changed = state.withLock { s in
            guard s.level != level else { return false }
            s.level = level
            if level { s.risingEdges += 1 }
            return true
        }
        if changed { onChange?(level) }
    }

    public var level: Bool { state.withLock { $0.level } }
    /// How many times the line went from low to high.
    public var risingEdges: Int { state.withLock { $0.risingEdges } }
}
