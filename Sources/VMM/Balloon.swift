import Devices
import Machines
import QMP
import Synchronization

/// The machine's virtio-balloon as the monitors reach it (`BalloonControl`). It outlives the
/// boards: the VMM attaches each board's device as it builds it (a reset builds a new one),
/// the host's target carries over to it (QEMU's device keeps `num_pages` across a reset), and
/// `query-balloon` answers before the first board exists (all the RAM: no driver holds pages).
final class BalloonHandle: BalloonControl {
    private struct State {
        var device: VirtioBalloon?
        /// The last `balloon` target, given again to each new device.
        var target: UInt64?
    }
    private let ramSize: UInt64
    private let state = Mutex(State())

    init(ramSize: UInt64) { self.ramSize = ramSize }

    /// A new board's device: it takes the current target and sends BALLOON_CHANGE through `emit`.
    func attach(_ device: VirtioBalloon?, emit: @escaping @Sendable (MonitorEvent) -> Void) {
        guard let device else { return }
        device.setActualChangeListener { actual in emit(.balloonChange(actual: actual)) }
        let target = state.withLock { s in
            s.device = device
            return s.target
        }
        if let target { device.setTarget(bytes: target) }
    }

    func setTarget(bytes: UInt64) {
        let device = state.withLock { s in
            s.target = bytes
            return s.device
        }
        device?.setTarget(bytes: bytes)
    }

    var actualBytes: UInt64 { state.withLock { $0.device }?.actualBytes ?? ramSize }
}

extension VirtualMachine {
    public var balloon: (any BalloonControl)? { balloonHandle }
}

extension KVMMachine {
    public var balloon: (any BalloonControl)? { balloonHandle }
}
