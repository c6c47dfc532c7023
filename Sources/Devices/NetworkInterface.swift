import DeviceModel
import Synchronization

/// One NIC the command line asked for (`-device virtio-net-device,netdev=ID` or `-nic`): what
/// outlives the board. A guest reboot builds the board, and so the `VirtioNet`, again; the
/// NIC's name, MAC, backend and link state (`set_link`) stay, as QEMU keeps them on the
/// NetClientState rather than in the device.
public final class NetworkInterface: Sendable {
    /// `info network`'s name: the `-device` id, or QEMU's "virtio-net-device.N".
    public let name: String
    /// The `-netdev` id of the backend, nil for a NIC with no backend (frames go nowhere).
    public let netdev: String?
    public let backend: (any NetBackend)?
    public let mac: MACAddress

    private struct State {
        var linkUp = true
        /// Whether the machine runs (`setRunning`): a board built while it is stopped gets a
        /// device that holds the network back too.
        var running: Bool
        /// The device of the board now running (nil before the first board).
        var device: VirtioNet?
    }
    private let state: Mutex<State>

    /// `running`: whether the machine runs from the start (not with -S, -incoming, -loadvm).
    public init(name: String, netdev: String?, backend: (any NetBackend)?, mac: MACAddress, running: Bool) {
        state = Mutex(State(running: running))
        self.name = name
        self.netdev = netdev
        self.backend = backend
        self.mac = mac
    }

    /// The device for a new board: it takes the backend over from the previous board's device
    /// and starts with the link state the monitor last set.
    package func makeDevice() -> VirtioNet {
        // Built held back; let go below only if the machine runs once the device is in place,
        // so a `setRunning(false)` meanwhile is not lost.
        let device = VirtioNet(backend: backend, mac: mac, running: false)
        let (up, running) = state.withLock { s in
            // The link the last board's guest saw (a restore may have changed it) carries over.
            if let old = s.device { s.linkUp = old.linkUp }
            s.device = device
            return (s.linkUp, s.running)
        }
        if !up { device.setLinkUp(false) }
        if running { device.setRunning(true) }
        return device
    }

    /// The device of the running board, if one was built.
    package var device: VirtioNet? { state.withLock { $0.device } }

    /// The link as the guest sees it: the device's (a restored machine brings its own), else
    /// what the monitor last set.
    public var linkUp: Bool {
        let (device, up) = state.withLock { ($0.device, $0.linkUp) }
        return device?.linkUp ?? up
    }

    /// The machine stopped or runs again (the VMM's STOP and RESUME): see `VirtioNet.setRunning`.
    public func setRunning(_ running: Bool) {
        let device = state.withLock { s in
            s.running = running
            return s.device
        }
        device?.setRunning(running)
    }

    /// `set_link`: the guest sees the link status change (VIRTIO_NET_S_LINK_UP) and frames stop
    /// both ways while it is down.
    public func setLink(up: Bool) {
        let device = state.withLock { s -> VirtioNet? in
            s.linkUp = up
            return s.device
        }
        device?.setLinkUp(up)
    }
}
