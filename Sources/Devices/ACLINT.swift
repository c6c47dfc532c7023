import DeviceModel
import Synchronization
import SystemSupport

/// The RISC-V ACLINT in SiFive CLINT layout, as QEMU's virt places it at 0x2000000
/// (ACLINT spec 1.0: MSWI device at offset 0, MTIMER's mtimecmp at 0x4000 and mtime at
/// 0xbff8): per hart a machine software interrupt bit (`msip`) and a timer compare.
///
/// `mtime` counts the machine's `TimeBase`. The device keeps each `mtimecmp` for reads and
/// hands every write to the hart (`timerCompareChanged`), which compares it with the time
/// itself; so MTIP needs no host timer thread here.
public final class ACLINT: BusDevice, Snapshottable {
    public let name = "riscv.aclint"
    public static let size: UInt64 = 0x10000
    static let mtimecmpBase: UInt64 = 0x4000
    static let mtimeOffset: UInt64 = 0xbff8

    private let timeBase: TimeBase
    private let softwareInterrupts: [any InterruptLine]
    private let timerCompareChanged: @Sendable (_ hart: Int, _ value: UInt64) -> Void
    private struct Registers {
        var msip: [Bool]
        var mtimecmp: [UInt64]
    }
    private let state: Mutex<Registers>

    /// `softwareInterrupts[i]` drives hart i's MSIP; `timerCompareChanged(i, v)` sets its mtimecmp.
    public init(timeBase: TimeBase, softwareInterrupts: [any InterruptLine],
                timerCompareChanged: @escaping @Sendable (Int, UInt64) -> Void) {
        self.timeBase = timeBase
        self.softwareInterrupts = softwareInterrupts
        self.timerCompareChanged = timerCompareChanged
        let harts = softwareInterrupts.count
        state = Mutex(Registers(msip: Array(repeating: false, count: harts), mtimecmp: Array(repeating: .max, count: harts)))
    }

    var hartCount: Int { softwareInterrupts.count }

    public func read(offset: UInt64, size: Int) -> UInt64 {
        let harts = UInt64(hartCount)
        switch offset {
        case 0..<(4 * harts) where offset % 4 == 0:
            return state.withLock { $0.msip[Int(offset / 4)] } ? 1 : 0
        case ACLINT.mtimecmpBase..<(ACLINT.mtimecmpBase + 8 * harts):
            let hart = Int((offset - ACLINT.mtimecmpBase) / 8)
            let value = state.withLock { $0.mtimecmp[hart] }
            return ACLINT.slice(value, offset: offset % 8, size: size)
        case ACLINT.mtimeOffset..<(ACLINT.mtimeOffset + 8):
            return ACLINT.slice(timeBase.now(), offset: offset - ACLINT.mtimeOffset, size: size)
        default:
            DebugLog.log(.guestErrors, "aclint: read of \(size) bytes at offset 0x\(String(offset, radix: 16))")
            return 0
        }
    }

    public func write(offset: UInt64, value: UInt64, size: Int) {
        let harts = UInt64(hartCount)
        switch offset {
        case 0..<(4 * harts) where offset % 4 == 0:
            let hart = Int(offset / 4)
            let level = value & 1 != 0
            state.withLock { $0.msip[hart] = level }
            softwareInterrupts[hart].set(level: level)
        case ACLINT.mtimecmpBase..<(ACLINT.mtimecmpBase + 8 * harts):
            let hart = Int((offset - ACLINT.mtimecmpBase) / 8)
            // 32-bit halves are written separately by RV32 software; merge them.
            let new = state.withLock { s in
                s.mtimecmp[hart] = ACLINT.merge(s.mtimecmp[hart], value, offset: offset % 8, size: size)
                return s.mtimecmp[hart]
            }
            timerCompareChanged(hart, new)
        case ACLINT.mtimeOffset..<(ACLINT.mtimeOffset + 8):
            // mtime is the shared time base; QEMU's virt lets software set it, which no
            // firmware or kernel we run does. Log rather than silently diverge.
            DebugLog.log(.unimplemented, "aclint: write to mtime ignored")
        default:
            DebugLog.log(.guestErrors, "aclint: write of \(size) bytes at offset 0x\(String(offset, radix: 16))")
        }
    }

    // MARK: Snapshot

    /// The MSWI bits and the MTIMER compare values, one of each per hart. `mtime` is the
    /// machine's clock, saved with it.
    public struct State: Codable, Sendable, Equatable {
        public static let currentVersion: UInt32 = 1
        public var version: UInt32 = State.currentVersion
        public var msip: [Bool]
        public var mtimecmp: [UInt64]
    }

    public func saveState() -> State {
        state.withLock { State(msip: $0.msip, mtimecmp: $0.mtimecmp) }
    }

    /// Loads an untrusted saved state, after checking it; drives the MSIP lines and hands
    /// each compare value to its hart.
    public func restore(_ saved: State) throws(SystemError) {
        guard saved.version == State.currentVersion else {
            throw .badInput("ACLINT state: version \(saved.version) is not supported (this build reads version \(State.currentVersion))")
        }
        guard saved.msip.count == hartCount, saved.mtimecmp.count == hartCount else {
            throw .badInput("ACLINT state: \(saved.msip.count) MSWI and \(saved.mtimecmp.count) MTIMER harts for a machine of \(hartCount)")
        }
        state.withLock { s in
            s.msip = saved.msip
            s.mtimecmp = saved.mtimecmp
        }
        for hart in 0..<hartCount {
            softwareInterrupts[hart].set(level: saved.msip[hart])
            timerCompareChanged(hart, saved.mtimecmp[hart])
        }
    }

    /// The bytes `[offset, offset + size)` of a 64-bit register.
    static func slice(_ value: UInt64, offset: UInt64, size: Int) -> UInt64 {
        let shifted = value >> (8 * offset)
        return size >= 8 ? shifted : shifted & ((1 << (8 * UInt64(size))) - 1)
    }

    static func merge(_ old: UInt64, _ value: UInt64, offset: UInt64, size: Int) -> UInt64 {
        if size >= 8 && offset == 0 { return value }
        let width = UInt64(min(size, 8 - Int(offset))) * 8
        let mask: UInt64 = (width >= 64 ? .max : (1 << width) - 1) << (8 * offset)
        return (old & ~mask) | ((value << (8 * offset)) & mask)
    }
}
