import Devices
import Machines
import QMP

/// The monitors' keys go to every virtio keyboard of the board (QEMU sends them to the one
/// keyboard handler in focus; a machine has one keyboard in practice).
struct Keyboards: KeyboardControl {
    let devices: [VirtioInput]
    init(_ devices: [VirtioInput]) { self.devices = devices }
    func key(_ code: UInt16, pressed: Bool) {
        for device in devices { device.send(VirtioInput.Event.key(code, pressed: pressed)) }
    }
}
