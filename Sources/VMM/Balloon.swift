import Devices
import Machines
import QMP

/// A board's virtio-balloon as the monitors reach it (`BalloonControl`).
final class BalloonHandle: BalloonControl {
    let device: VirtioBalloon
    init(_ device: VirtioBalloon) { self.device = device }
    func setTarget(bytes: UInt64) { device.setTarget(bytes: bytes) }
    var actualBytes: UInt64 { device.actualBytes }
}

extension VirtioBalloon {
    /// Sends BALLOON_CHANGE through `emit` whenever the guest moves `actual`. Called for each
    /// board the VMM builds (a reset builds a new one).
    func announceChanges(_ emit: @escaping @Sendable (MonitorEvent) -> Void) {
        setActualChangeListener { actual in emit(.balloonChange(actual: actual)) }
    }
}

extension VirtualMachine {
    public var balloon: (any BalloonControl)? { state.withLock { $0.board?.balloon }.map(BalloonHandle.init) }
}

extension KVMMachine {
    public var balloon: (any BalloonControl)? { state.withLock { $0.board?.balloon }.map(BalloonHandle.init) }
}
