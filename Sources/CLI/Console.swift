import Chardev
import DeviceModel
import SystemSupport

/// The machine's host-side character devices: every `-chardev`, and the ones `-serial` short
/// forms (and the `mon:stdio` default) create. Hands the board its serial backends.
final class Console: Sendable {
    private let devices: [CharDevice]
    /// What serial0, serial1, ... write to (nil: `-serial none`).
    let serials: [(any CharBackend)?]

    /// `quit` is Ctrl-A x, `commit` Ctrl-A s (write -snapshot disks back).
    init(config: SystemConfiguration, loop: EventLoop, quit: @escaping @Sendable () -> Void,
         commit: @escaping @Sendable () -> Void) throws(SystemError) {
        var devices: [CharDevice] = []
        do throws(SystemError) {
            for spec in config.chardevs {
                devices.append(try CharDevice.open(spec, loop: loop, quit: quit, commit: commit))
            }
            var serials: [(any CharBackend)?] = []
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
                case .new(let spec, _):
                    let device = try CharDevice.open(spec, loop: loop, quit: quit, commit: commit)
                    devices.append(device)
                    serials.append(try device.claim(for: user))
                }
            }
            self.devices = devices
            self.serials = serials
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
