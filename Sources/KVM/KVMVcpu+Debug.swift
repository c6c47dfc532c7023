import CLinux
import SystemSupport

/// Guest debugging on x86 (api.rst 4.59 KVM_SET_GUEST_DEBUG, 4.38 KVM_TRANSLATE, 4.22
/// KVM_GET_FPU/KVM_SET_FPU): what a debugger needs from a vCPU besides its registers.
extension KVMVcpu {
    /// KVM_SET_GUEST_DEBUG. `control` is a set of KVM_GUESTDBG_* flags (0 turns debugging off);
    /// `debugRegisters` are DR0-DR7 as the host programs them for the guest when
    /// KVM_GUESTDBG_USE_HW_BP is set (DR4/DR5 unused). Only while this vCPU is outside KVM_RUN.
    public func setGuestDebug(control: UInt32, debugRegisters: X86HardwareDebug) throws(SystemError) {
        var debug = kvm_guest_debug()
        debug.control = control
        let registers = debugRegisters.registers
        withUnsafeMutableBytes(of: &debug.arch.debugreg) { raw in
            for (i, value) in registers.enumerated() { raw.storeBytes(of: value, toByteOffset: 8 * i, as: UInt64.self) }
        }
        try ioctl(clx_KVM_SET_GUEST_DEBUG, "KVM_SET_GUEST_DEBUG", &debug)
    }

    /// KVM_TRANSLATE: the guest-physical address of `linear` through this vCPU's current
    /// paging mode, or nil if nothing maps it.
    public func translate(_ linear: UInt64) throws(SystemError) -> (physical: UInt64, writeable: Bool)? {
        var translation = kvm_translation()
        translation.linear_address = linear
        try ioctl(clx_KVM_TRANSLATE, "KVM_TRANSLATE", &translation)
        guard translation.valid != 0 else { return nil }
        return (translation.physical_address, translation.writeable != 0)
    }

    /// KVM_GET_FPU: the x87, SSE and MXCSR state in FXSAVE layout.
    public func fpu() throws(SystemError) -> kvm_fpu {
        var fpu = kvm_fpu()
        try ioctl(clx_KVM_GET_FPU, "KVM_GET_FPU", &fpu)
        return fpu
    }

    public func setFPU(_ fpu: kvm_fpu) throws(SystemError) {
        var fpu = fpu
        try ioctl(clx_KVM_SET_FPU, "KVM_SET_FPU", &fpu)
    }

    /// MXCSR, which KVM_GET_FPU and KVM_SET_FPU leave out (x86.c copies every FXSAVE field but
    /// it; measured: a value set through KVM_SET_FPU reads back as 0). It travels in the
    /// legacy region of KVM_GET_XSAVE/KVM_SET_XSAVE instead (api.rst 4.42, 4.43), at byte 24 of
    /// the FXSAVE layout (SDM Vol. 1 10.5.1, Table 10-2).
    public func mxcsr() throws(SystemError) -> UInt32 {
        var xsave = kvm_xsave()
        try ioctl(clx_KVM_GET_XSAVE, "KVM_GET_XSAVE", &xsave)
        return withUnsafeBytes(of: &xsave.region) { $0.load(fromByteOffset: 24, as: UInt32.self) }
    }

    public func setMXCSR(_ value: UInt32) throws(SystemError) {
        var xsave = kvm_xsave()
        try ioctl(clx_KVM_GET_XSAVE, "KVM_GET_XSAVE", &xsave)
        // KVM_SET_XSAVE reads KVM_CAP_XSAVE2's size, 4096 unless a dynamic feature (AMX) was
        // enabled for the VM, which swemu never does.
        // The kernel loads MXCSR only when XSTATE_BV (the XSAVE header's first word, byte 512)
        // has SSE (bit 1) or AVX (bit 2) set (SDM Vol. 1 13.8.1); KVM_GET_XSAVE clears bits of
        // components in their initial state, with that state's values in the buffer, so setting
        // bit 1 keeps the XMM registers as they are.
        withUnsafeMutableBytes(of: &xsave.region) { raw in
            raw.storeBytes(of: value, toByteOffset: 24, as: UInt32.self)
            raw.storeBytes(of: raw.load(fromByteOffset: 512, as: UInt64.self) | 1 << 1, toByteOffset: 512, as: UInt64.self)
        }
        try ioctl(clx_KVM_SET_XSAVE, "KVM_SET_XSAVE", &xsave)
    }
}

/// The four debug-address registers DR0-DR3 and the DR7 that arms them (Intel SDM Vol. 3B
/// 18.2 "Debug Registers"), as one value: which slot holds an instruction breakpoint or a data
/// watchpoint, and what KVM_EXIT_DEBUG's DR6 says hit.
public struct X86HardwareDebug: Equatable, Sendable {
    /// SDM 18.2.4: the R/Wn field of DR7. (I/O breakpoints, 10b, need CR4.DE and are not offered.)
    public enum Condition: UInt64, Sendable {
        case execution = 0b00
        case write = 0b01
        case readWrite = 0b11
    }

    public struct Slot: Equatable, Sendable {
        public var address: UInt64
        public var condition: Condition
        /// 1, 2, 4 or 8 bytes; 1 for an instruction breakpoint.
        public var length: UInt64

        public init(address: UInt64, condition: Condition, length: UInt64) {
            self.address = address
            self.condition = condition
            self.length = length
        }
    }

    public private(set) var slots: [Slot?] = [nil, nil, nil, nil]

    public init() {}

    public var isEmpty: Bool { slots.allSatisfy { $0 == nil } }

    /// Arms a free slot; nil if all four are taken or the point cannot be expressed: a data
    /// watchpoint must be 1, 2, 4 or 8 bytes long and aligned to its length (SDM 18.2.5).
    public mutating func insert(_ slot: Slot) -> Int? {
        if slot.condition == .execution {
            guard slot.length == 1 else { return nil }
        } else {
            guard [1, 2, 4, 8].contains(slot.length), slot.address % slot.length == 0 else { return nil }
        }
        guard let index = slots.firstIndex(where: { $0 == nil }) else { return nil }
        slots[index] = slot
        return index
    }

    /// Disarms one slot holding exactly `slot`; false if none does.
    public mutating func remove(_ slot: Slot) -> Bool {
        guard let index = slots.firstIndex(of: slot) else { return false }
        slots[index] = nil
        return true
    }

    /// DR7 (SDM 18.2.4, Figure 18-2): Gn (bit 2n+1) enables slot n, R/Wn at bits 16+4n and
    /// LENn at 18+4n; GE (bit 9) asks for exact data breakpoint matches, as the SDM recommends.
    /// The length code is 00b for 1 byte, 01b for 2, 11b for 4 and 10b for 8 (SDM 18.2.5).
    public var dr7: UInt64 {
        var value: UInt64 = isEmpty ? 0 : 1 << 9
        for (n, slot) in slots.enumerated() {
            guard let slot else { continue }
            let lengthCode: UInt64 = slot.condition == .execution ? 0 : [1: 0b00, 2: 0b01, 4: 0b11, 8: 0b10][slot.length] ?? 0
            value |= 1 << (2 * UInt64(n) + 1)
            value |= slot.condition.rawValue << (16 + 4 * UInt64(n))
            value |= lengthCode << (18 + 4 * UInt64(n))
        }
        return value
    }

    /// DR0-DR7 for KVM_SET_GUEST_DEBUG's `arch.debugreg`.
    public var registers: [UInt64] {
        slots.map { $0?.address ?? 0 } + [0, 0, 0, dr7]
    }

    /// DR6 (SDM 18.2.3): Bn (bit n) says slot n's condition was met; BS (bit 14) a single step.
    public static let singleStepBit: UInt64 = 1 << 14

    /// The armed slot DR6 reports as hit, if any.
    public func hit(dr6: UInt64) -> Slot? {
        for n in 0..<4 where dr6 & (1 << UInt64(n)) != 0 {
            if let slot = slots[n] { return slot }
        }
        return nil
    }
}
