import DeviceModel
import SystemSupport

/// The SiFive test finisher ("sifive,test0"/"syscon" on QEMU's virt at 0x100000): a 32-bit
/// register whose writes end the machine. Low 16 bits: 0x5555 pass (power off, exit 0),
/// 0x3333 fail (exit code in the upper 16 bits), 0x7777 reset. Linux's syscon-poweroff and
/// syscon-reboot drivers write 0x5555 and 0x7777.
public final class SiFiveTest: BusDevice {
    public enum Event: Equatable, Sendable {
        case powerOff(exitCode: Int32)
        case reset
    }

    public let name = "sifive_test"
    private let onEvent: @Sendable (Event) -> Void

    public init(onEvent: @escaping @Sendable (Event) -> Void) { self.onEvent = onEvent }

    public func read(offset: UInt64, size: Int) -> UInt64 { 0 }

    public func write(offset: UInt64, value: UInt64, size: Int) {
        guard offset == 0 else {
            DebugLog.log(.guestErrors, "sifive_test: write to offset \(offset)")
            return
        }
        let code = UInt32(truncatingIfNeeded: value)
        switch code & 0xffff {
        case 0x5555: onEvent(.powerOff(exitCode: 0))
        case 0x3333: onEvent(.powerOff(exitCode: Int32(code >> 16)))
        case 0x7777: onEvent(.reset)
        default: DebugLog.log(.guestErrors, "sifive_test: unknown command 0x\(String(code, radix: 16))")
        }
    }
}
