/// Privilege levels (Privileged ISA §1.2): the encoding used in `mstatus.MPP` and `SPP`.
public enum PrivilegeMode: UInt8, Sendable, Codable {
    case user = 0
    case supervisor = 1
    case machine = 3
}

/// A synchronous exception or an interrupt on its way to a trap handler (Privileged §3.1.15,
/// table 3.6). Thrown (typed) by the execution helpers; carries `xtval`.
public struct Trap: Error, Equatable, Sendable {
    public var cause: UInt64
    public var tval: UInt64

    public static let interruptBit: UInt64 = 1 << 63

    public init(_ cause: ExceptionCause, tval: UInt64 = 0) {
        self.cause = cause.rawValue
        self.tval = tval
    }

    package init(interrupt: InterruptCause) {
        cause = Trap.interruptBit | interrupt.rawValue
        tval = 0
    }

    public var isInterrupt: Bool { cause & Trap.interruptBit != 0 }
}

/// Exception codes (Privileged §3.1.15, table 3.6).
public enum ExceptionCause: UInt64, Sendable {
    case instructionAddressMisaligned = 0
    case instructionAccessFault = 1
    case illegalInstruction = 2
    case breakpoint = 3
    case loadAddressMisaligned = 4
    case loadAccessFault = 5
    case storeAddressMisaligned = 6
    case storeAccessFault = 7
    case environmentCallFromU = 8
    case environmentCallFromS = 9
    case environmentCallFromM = 11
    case instructionPageFault = 12
    case loadPageFault = 13
    case storePageFault = 15
}

/// Interrupt codes and their `mip`/`mie` bits (Privileged §3.1.9).
public enum InterruptCause: UInt64, Sendable, CaseIterable {
    case supervisorSoftware = 1
    case machineSoftware = 3
    case supervisorTimer = 5
    case machineTimer = 7
    case supervisorExternal = 9
    case machineExternal = 11

    public var mask: UInt64 { 1 << rawValue }
}

/// `mip`/`mie` bit masks.
public enum InterruptBits {
    public static let ssip: UInt64 = 1 << 1
    public static let msip: UInt64 = 1 << 3
    public static let stip: UInt64 = 1 << 5
    public static let mtip: UInt64 = 1 << 7
    public static let seip: UInt64 = 1 << 9
    public static let meip: UInt64 = 1 << 11
    public static let supervisor: UInt64 = ssip | stip | seip
    public static let all: UInt64 = supervisor | msip | mtip | meip
}

/// `mstatus` fields (Privileged §3.1.6, RV64 layout).
public enum MStatus {
    public static let sie: UInt64 = 1 << 1
    public static let mie: UInt64 = 1 << 3
    public static let spie: UInt64 = 1 << 5
    public static let ube: UInt64 = 1 << 6
    public static let mpie: UInt64 = 1 << 7
    public static let spp: UInt64 = 1 << 8
    public static let vs: UInt64 = 3 << 9
    public static let mppShift: UInt64 = 11
    public static let mpp: UInt64 = 3 << 11
    public static let fsShift: UInt64 = 13
    public static let fs: UInt64 = 3 << 13
    public static let xs: UInt64 = 3 << 15
    public static let mprv: UInt64 = 1 << 17
    public static let sum: UInt64 = 1 << 18
    public static let mxr: UInt64 = 1 << 19
    public static let tvm: UInt64 = 1 << 20
    public static let tw: UInt64 = 1 << 21
    public static let tsr: UInt64 = 1 << 22
    public static let uxl: UInt64 = 3 << 32
    public static let sxl: UInt64 = 3 << 34
    public static let sd: UInt64 = 1 << 63

    /// Fields M-mode may write. UXL/SXL are fixed at 64 bits, endianness is little, VS/XS are
    /// 0 (no V extension, no custom state).
    static let writable: UInt64 = sie | mie | spie | mpie | spp | mpp | fs | mprv | sum | mxr | tvm | tw | tsr
    /// The `sstatus` view (Privileged §4.1.1).
    static let supervisorView: UInt64 = sie | spie | ube | spp | vs | fs | xs | sum | mxr | uxl | sd
    static let supervisorWritable: UInt64 = sie | spie | spp | fs | sum | mxr
    /// UXL = SXL = 2 (64-bit), read-only.
    static let fixed: UInt64 = 2 << 32 | 2 << 34
}

/// Everything architectural about one hart that the interpreter touches per instruction,
/// in one struct reached through a pointer (DESIGN.md §7): no ARC, no existentials.
public struct HartState {
    // The fields translated code touches most come first, then the integer registers: the
    // JIT reaches them with one-byte displacements (RISCVJIT's StateLayout).
    public var pc: UInt64 = 0
    /// The machine counters (Privileged §3.1.11): one cycle per instruction here.
    public var mcycle: UInt64 = 0
    public var minstret: UInt64 = 0
    /// Instructions the JIT's generated code may still run before it returns to its dispatcher
    /// (the dispatcher sets it per chunk; each translated block subtracts its length on entry
    /// and leaves when it finds it spent), so chained blocks see interrupts within a bounded delay.
    package var jitBudget: Int64 = 0
    /// The privilege part of TLB tags for fetches and for data accesses (which MPRV may
    /// redirect), kept current by `Hart.updatePrivilegeKeys()`: 0 U, 1 S, 3 M, and for data
    /// 2 = S with mstatus.SUM set (`Hart.supervisorUserKey`).
    package var fetchKey: UInt64 = 3
    package var dataKey: UInt64 = 3
    public var x = InlineArray<32, UInt64>(repeating: 0)
    public var f = InlineArray<32, UInt64>(repeating: 0)
    public var privilege: PrivilegeMode = .machine

    // Machine-level CSRs (Privileged chapter 3).
    public var mstatus: UInt64 = MStatus.fixed
    public var medeleg: UInt64 = 0
    public var mideleg: UInt64 = 0
    public var mie: UInt64 = 0
    /// The software-writable part of `mip` (SSIP, STIP without Sstc, SEIP); the lines driven by
    /// devices are in `Hart.externalInterrupts` and are ORed in when read.
    public var mipSoftware: UInt64 = 0
    public var mtvec: UInt64 = 0
    public var mscratch: UInt64 = 0
    public var mepc: UInt64 = 0
    public var mcause: UInt64 = 0
    public var mtval: UInt64 = 0
    public var mcounteren: UInt32 = 0
    public var mcountinhibit: UInt32 = 0
    public var menvcfg: UInt64 = 0
    public var mhartid: UInt64 = 0

    // Supervisor-level CSRs (Privileged chapter 4).
    public var stvec: UInt64 = 0
    public var sscratch: UInt64 = 0
    public var sepc: UInt64 = 0
    public var scause: UInt64 = 0
    public var stval: UInt64 = 0
    public var scounteren: UInt32 = 0
    public var senvcfg: UInt64 = 0
    public var satp: UInt64 = 0
    /// Sstc's supervisor timer compare; STIP is (time >= stimecmp) while menvcfg.STCE is set.
    public var stimecmp: UInt64 = .max

    // F/D: fcsr = frm << 5 | fflags.
    public var fflags: UInt8 = 0
    public var frm: UInt8 = 0

    // PMP (Privileged §3.7): 16 entries.
    public var pmpcfg = InlineArray<16, UInt8>(repeating: 0)
    public var pmpaddr = InlineArray<16, UInt64>(repeating: 0)

    /// The LR reservation: the physical address reserved by LR, or `noReservation`.
    public var reservation: UInt64 = HartState.noReservation
    /// The value LR loaded; SC succeeds only if memory still holds it (compare-and-swap), so
    /// a store by another hart in between makes it fail.
    public var reservationValue: UInt64 = 0
    public static let noReservation: UInt64 = .max

    /// Set by anything that may enable a pending interrupt (CSR writes, xRET) or stop the
    /// hart (WFI), so the interpreter leaves its inner loop and looks.
    package var endChunk = false
    /// The hart is stalled in WFI (see `Hart.isAsleep`): `run` returns `.waitingForInterrupt`
    /// until an interrupt is pending in `mip & mie`. Saved with the hart.
    package var waiting = false
    /// Debugger breakpoints as a filter on pc: bit (pc >> 1) & 63 is set for each breakpoint
    /// address, so the breakpoint table is looked up for 1/64 of the instructions when one
    /// breakpoint is set, and never when none is (0).
    package var breakpointFilter: UInt64 = 0
    /// A debugger set watchpoints: data accesses take the slow path, which checks them.
    package var checkWatchpoints = false

    public init() {}
}

/// `menvcfg` fields (Privileged §3.1.18).
public enum EnvConfig {
    public static let fiom: UInt64 = 1
    /// Sstc enable: S-mode may use `stimecmp`, STIP follows it.
    public static let stce: UInt64 = 1 << 63
}
