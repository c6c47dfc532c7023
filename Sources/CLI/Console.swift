import Chardev
import QMP
import Synchronization
import DeviceModel
import SystemSupport

/// The machine's host-side character devices: every `-chardev`, and the ones `-serial` short
/// forms (and the `mon:stdio` default) create. Hands the board its serial backends.
final class Console: Sendable {
    private let devices: [CharDevice]
    /// What serial0, serial1, ... write to (nil: `-serial none`).
    let serials: [(any CharBackend)?]
    /// Each monitor's mode and backend: the `-monitor`/`-qmp`/`-mon` ones, and the human
    /// monitor that `mon:stdio` (the -nographic default) shares with the serial port, reached
    /// with Ctrl-A c.
    let monitors: [(mode: MonitorSpec.Mode, pretty: Bool, backend: any CharBackend, focus: FocusRelay?)]
    /// The GDB stub's backend (`-gdb`, `-s`).
    let gdb: (any CharBackend)?

    /// `quit` is Ctrl-A x, `commit` Ctrl-A s (write -snapshot disks back).
    init(config: SystemConfiguration, loop: EventLoop, quit: @escaping @Sendable () -> Void,
         commit: @escaping @Sendable () -> Void) throws(SystemError) {
        var devices: [CharDevice] = []
        do throws(SystemError) {
            for spec in config.chardevs {
                devices.append(try CharDevice.open(spec, loop: loop, quit: quit, commit: commit))
            }
            var serials: [(any CharBackend)?] = []
            var monitors: [(mode: MonitorSpec.Mode, pretty: Bool, backend: any CharBackend, focus: FocusRelay?)] = []
            for (index, target) in config.serials.enumerated() {
                let user = "serial\(index)"
                switch target {
                case .none:
                    serials.append(nil)
                case .chardev(let id):
                    guard let device = devices.first(where: { $0.id == id }) else {
                        throw SystemError.configuration("-serial: chardev '\(id)' is not defined")
                    }
                    serials.append(try device.claim(for: user))
                case .new(let spec, let monitor):
                    let device = try CharDevice.open(spec, loop: loop, quit: quit, commit: commit)
                    devices.append(device)
                    serials.append(try device.claim(for: user))
                    if monitor && !config.noDefaultMonitor {
                        // The serial port took the mux's first port, which has focus: the
                        // monitor waits for Ctrl-A c before it shows its banner and prompt.
                        let relay = FocusRelay()
                        let port = try device.claim(for: "monitor", onFocus: { focused in relay.setFocus(focused) })
                        monitors.append((.readline, false, port, relay))
                    }
                }
            }
            for (index, monitor) in config.monitors.enumerated() {
                switch monitor.target {
                case .none:
                    continue
                case .chardev(let id):
                    guard let device = devices.first(where: { $0.id == id }) else {
                        throw SystemError.configuration("monitor: chardev '\(id)' is not defined")
                    }
                    monitors.append((monitor.mode, monitor.pretty, try device.claim(for: "monitor\(index)"), nil))
                case .new(let spec, _):
                    let device = try CharDevice.open(spec, loop: loop, quit: quit, commit: commit)
                    devices.append(device)
                    monitors.append((monitor.mode, monitor.pretty, try device.claim(for: "monitor\(index)"), nil))
                }
            }
            switch config.gdb {
            case nil, .none?:
                gdb = nil
            case .chardev(let id)?:
                guard let device = devices.first(where: { $0.id == id }) else {
                    throw SystemError.configuration("-gdb: chardev '\(id)' is not defined")
                }
                gdb = try device.claim(for: "gdb")
            case .new(let spec, _)?:
                let device = try CharDevice.open(spec, loop: loop, quit: quit, commit: commit)
                devices.append(device)
                gdb = try device.claim(for: "gdb")
            }
            self.devices = devices
            self.serials = serials
            self.monitors = monitors
        } catch {
            for device in devices { device.close() }
            throw error
        }
    }

    /// `query-chardev`: (label, filename) of every chardev, in QEMU's naming.
    var chardevList: [(label: String, filename: String)] {
        devices.enumerated().map { index, device in (device.id ?? "compat_monitor\(index)", device.driver.label) }
    }

    /// The backend of `-chardev id=ID` for `user` (a device frontend).
    func claim(chardev id: String, for user: String) throws(SystemError) -> any CharBackend {
        guard let device = devices.first(where: { $0.id == id }) else {
            throw .configuration("chardev '\(id)' is not defined")
        }
        return try device.claim(for: user)
    }

    /// Writes a notice for the user on stderr, as a line of its own even in raw mode.
    func notice(_ text: String) {
        writeOut("swemu: \(text)\r\n", fd: 2)
    }

    /// Closes every chardev (restoring the terminal, removing socket files).
    func close() {
        for device in devices { device.close() }
    }
}

/// Carries a mux port's focus changes (Ctrl-A c) to the human monitor created on it later.
final class FocusRelay: Sendable {
    private let server = Mutex<HumanMonitorServer?>(nil)

    /// The monitor starts without focus: the serial port has it.
    var initiallyFocused: Bool { false }

    func attach(_ monitor: HumanMonitorServer) { server.withLock { $0 = monitor } }

    func setFocus(_ focused: Bool) { server.withLock { $0 }?.setFocus(focused) }
}
