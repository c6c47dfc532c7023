import Dispatch
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
        /// `guest-stats-polling-interval` and its timer.
        var interval = 0
        var timer: DispatchSourceTimer?
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

    var statistics: (values: [(name: String, value: UInt64?)], lastUpdate: Int64) {
        let statistics = state.withLock { $0.device }?.statistics
        let values = statistics?.values ?? Array(repeating: nil, count: VirtioBalloon.statisticNames.count)
        return (zip(VirtioBalloon.statisticNames, values).map { (name: $0, value: $1) }, statistics?.lastUpdate ?? 0)
    }

    /// Asks the current device for statistics every `pollingInterval` seconds (QEMU's stats
    /// timer): the guest's driver answers on the stats queue.
    var pollingInterval: Int {
        get { state.withLock { $0.interval } }
        set {
            state.withLock { s in
                s.timer?.cancel()
                s.timer = nil
                s.interval = newValue
                guard newValue > 0 else { return }
                let timer = DispatchSource.makeTimerSource(queue: .global())
                timer.schedule(deadline: .now() + .seconds(newValue), repeating: .seconds(newValue))
                timer.setEventHandler { [weak self] in self?.state.withLock { $0.device }?.requestStatistics() }
                timer.resume()
                s.timer = timer
            }
        }
    }

    deinit { state.withLock { $0.timer?.cancel() } }
}
