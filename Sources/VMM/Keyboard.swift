import Devices
import Machines
import QMP

extension VirtualMachine {
    /// The virtio keyboards of the current board, when it has any (`send-key`, `sendkey`).
    public var keyboard: (any KeyboardControl)? {
        state.withLock { $0.board }.flatMap { board in board.keyboards.isEmpty ? nil : Keyboards(board.keyboards) }
    }
}

extension KVMMachine {
    public var keyboard: (any KeyboardControl)? {
        state.withLock { $0.board }.flatMap { board in board.keyboards.isEmpty ? nil : Keyboards(board.keyboards) }
    }
}

/// The monitors' keys go to every virtio keyboard of the board (QEMU sends them to the one
/// keyboard handler in focus; a machine has one keyboard in practice).
struct Keyboards: KeyboardControl {
    let devices: [VirtioInput]
    init(_ devices: [VirtioInput]) { self.devices = devices }
    func key(_ code: UInt16, pressed: Bool) {
        for device in devices { device.send(VirtioInput.Event.key(code, pressed: pressed)) }
    }
}
