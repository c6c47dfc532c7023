import DeviceModel
import GuestMemory
import SystemSupport

/// The Host-Target Interface of Spike and QEMU's spike machine (hw/char/riscv_htif.c): the
/// guest writes a command to the 64-bit `tohost` word in RAM, the host answers in `fromhost`.
/// device 0 (syscall proxy) with an odd payload ends the run with exit code payload >> 1
/// (riscv-tests' pass/fail); device 1 command 1 writes a console character.
///
/// `tohost` lives in RAM, so the board polls it between instruction batches instead of
/// trapping every store; programs spin waiting for the host, so nothing is missed.
final class HTIF: Sendable {
    let memory: GuestMemory
    let tohost: GuestAddress
    let fromhost: GuestAddress
    let console: (any CharBackend)?

    init(memory: GuestMemory, tohost: GuestAddress, fromhost: GuestAddress, console: (any CharBackend)?) {
        self.memory = memory
        self.tohost = tohost
        self.fromhost = fromhost
        self.console = console
    }

    /// Handles a pending command; returns an exit code when the guest asked to end.
    func poll() -> Int32? {
        guard let value = try? memory.read(UInt64.self, at: tohost), value != 0 else { return nil }
        let device = value >> 56
        let command = (value >> 48) & 0xff
        let payload = value & 0xffff_ffff_ffff
        try? memory.write(UInt64(0), at: tohost)
        switch (device, command) {
        case (0, 0) where payload & 1 == 1:
            return Int32(truncatingIfNeeded: payload >> 1)
        case (1, 1):
            console?.write([UInt8(truncatingIfNeeded: payload)])
            try? memory.write(UInt64(device << 56 | command << 48), at: fromhost)
        default:
            DebugLog.log(.unimplemented, "htif: unsupported command device \(device) cmd \(command) payload \(hex(payload))")
            try? memory.write(UInt64(device << 56 | command << 48), at: fromhost)
        }
        return nil
    }
}
