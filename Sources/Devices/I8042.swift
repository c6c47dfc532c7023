import DeviceModel
import SystemSupport

/// The 8042 keyboard controller, as much as a PC board needs without a keyboard: the status
/// port reads "no data, input buffer empty" so Linux's `reboot=k` finds it ready, and command
/// 0xFE ("pulse output port bit 0", the CPU reset line) resets the machine. Two windows: the
/// data port 0x60 (offset 0 of a one-byte window) and the command/status port 0x64, placed by
/// the board; both are this one device with `port` telling them apart.
public final class I8042: BusDevice {
    public enum Port: Sendable { case data, command }
    public let name: String
    private let port: Port
    private let onReset: @Sendable () -> Void

    /// The reset command (IBM PC/AT Technical Reference, 8042 "Pulse Output Port").
    public static let resetCommand: UInt64 = 0xfe

    public init(port: Port, onReset: @escaping @Sendable () -> Void) {
        self.port = port
        self.name = port == .data ? "i8042-data" : "i8042-cmd"
        self.onReset = onReset
    }

    /// Status: output buffer empty (bit 0), input buffer empty (bit 1); data: nothing queued.
    public func read(offset: UInt64, size: Int) -> UInt64 { 0 }

    public func write(offset: UInt64, value: UInt64, size: Int) {
        guard port == .command else { return }
        if value & 0xff == I8042.resetCommand {
            onReset()
        } else {
            DebugLog.log(.guestErrors, "i8042: command 0x\(String(value & 0xff, radix: 16)) ignored")
        }
    }
}
