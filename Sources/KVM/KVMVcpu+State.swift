import CLinux
import Glibc
import SystemSupport

/// The saved state of an x86-64 vCPU (DESIGN.md §3, §5): everything KVM keeps for it, as plain
/// Codable values, for snapshots and live migration. A state read from a stream is untrusted:
/// `restore(_:)` checks its shape against this vCPU and this host's KVM before it changes
/// anything, and KVM checks the rest (a refusal names the ioctl and the errno).
///
/// Save order (api.rst §4; Firecracker's vCPU `save_state`): KVM_GET_MP_STATE first, because it
/// makes KVM accept pending INIT/SIPI events (`kvm_apic_accept_events`), which may change the
/// registers and the local APIC read after it; then REGS, SREGS, XSAVE (or FPU), XCRS,
/// DEBUGREGS, LAPIC, MSRS, CPUID2, the TSC frequency, and KVM_GET_VCPU_EVENTS last, as the
/// other reads may still settle pending events.
///
/// Restore order (Firecracker's `restore_state`, QEMU's `kvm_arch_put_registers`):
///  1. KVM_SET_CPUID2: what the guest may use decides which MSRs, XSAVE components and XCR0
///     bits KVM accepts below;
///  2. KVM_SET_TSC_KHZ, where the saved frequency differs from this host's: before any TSC value;
///  3. KVM_SET_MP_STATE;
///  4. KVM_SET_REGS;
///  5. KVM_SET_SREGS: CR0/CR4/EFER and the APIC base, which enables the local APIC before its
///     registers are loaded; a pending external interrupt travels in its interrupt bitmap;
///  6. KVM_SET_XSAVE (or KVM_SET_FPU), after CR4;
///  7. KVM_SET_XCRS;
///  8. KVM_SET_DEBUGREGS;
///  9. KVM_SET_LAPIC, after the APIC base;
/// 10. KVM_SET_MSRS in `savedMSRs` order: the TSC first, IA32_TSC_DEADLINE last (KVM arms it
///     only when the LAPIC timer is in TSC-deadline mode and counts it against the guest TSC),
///     MSR_KVM_ASYNC_PF_INT before MSR_KVM_ASYNC_PF_EN (KVM refuses interrupt delivery of async
///     page faults before the vector is known);
/// 11. KVM_SET_VCPU_EVENTS last: pending and injected exceptions, NMIs, the interrupt shadow and
///     SIPI vector, which the writes above may have reset.
///
/// The TSC: with VT-x or AMD-V, restoring IA32_TSC makes the guest's TSC go on from the saved
/// value, so the time between the save and the restore does not show. PVM (kvm_pvm) ignores
/// the write (checked: a value 100 s back reads back as the host's TSC, and the guest's
/// user-mode `rdtsc`, run natively, returns the host's TSC): there the guest's TSC is the
/// host's, it goes on across a migration between two processes of one host, and the guest sees
/// the real time the machine spent stopped (a live migration's downtime; a saved file's time on
/// disk). kvmclock, restored by KVM_SET_CLOCK, does go on from its saved value.
///
/// A vCPU is saved only at rest: outside KVM_RUN, with no exit half handled (an `in` or MMIO
/// read is complete only once KVM_RUN was entered again: `requestCompletionOnly()`).
extension KVMVcpu {
    /// What of the saved state this host's KVM reads and writes (KVM_CHECK_EXTENSION), fixed
    /// when the vCPU is made.
    struct StateCapabilities: Sendable {
        var xsave: Bool
        var xcrs: Bool
        var debugRegisters: Bool
        var getTSCKHz: Bool
        var setTSCKHz: Bool
        /// The VM has the in-kernel irqchip (created before its vCPUs), so each vCPU a local APIC.
        var localAPIC: Bool
        /// For KVM_GET_MSR_INDEX_LIST, a system ioctl.
        let system: KVMSystem

        init(_ system: KVMSystem, localAPIC: Bool) {
            self.system = system
            xsave = system.check(KVM_CAP_XSAVE) > 0
            xcrs = system.check(KVM_CAP_XCRS) > 0
            debugRegisters = system.check(KVM_CAP_DEBUGREGS) > 0
            getTSCKHz = system.check(KVM_CAP_GET_TSC_KHZ) > 0
            setTSCKHz = system.check(KVM_CAP_TSC_CONTROL) > 0
            self.localAPIC = localAPIC
        }
    }

    /// The size of KVM_GET_XSAVE's area (`struct kvm_xsave`: 4096 bytes). A bigger area
    /// (KVM_GET_XSAVE2) is needed only for dynamically enabled components (AMX), which swemu
    /// never asks for.
    package static let xsaveSize = MemoryLayout<kvm_xsave>.size
    /// The local APIC's register page (`struct kvm_lapic_state`: 1 KiB).
    package static let lapicSize = MemoryLayout<kvm_lapic_state>.size
    /// `struct kvm_fpu` as raw bytes (FXSAVE-like layout; api.rst 4.22).
    package static let fpuSize = MemoryLayout<kvm_fpu>.size
    /// KVM_MAX_CPUID_ENTRIES (arch/x86/include/asm/kvm_host.h).
    package static let maxCPUIDEntries = 256
    /// Two TSC frequencies closer than this (parts per million) are the same: KVM's own
    /// `tsc_tolerance_ppm` default, within which it does not even scale.
    package static let tscToleranceppm: UInt64 = 250

    package struct State: Codable, Sendable, Equatable {
        package static let currentVersion: UInt32 = 1

        package var version: UInt32
        /// The vCPU's index and APIC id (KVM_CREATE_VCPU's argument); checked on restore.
        package var id: Int
        /// KVM_GET_CPUID2: what `cpuid` answers in the guest.
        package var cpuid: [CPUIDEntry]
        /// KVM_GET_MP_STATE (KVM_MP_STATE_*: 0 runnable, 1 uninitialized, 2 INIT received,
        /// 3 halted, 4 SIPI received, 9 AP reset hold).
        package var mpState: UInt32
        package var registers: Registers
        package var specialRegisters: SpecialRegisters
        /// KVM_GET_XSAVE's area (`xsaveSize` bytes, the XSAVE layout: SDM Vol. 1 13.4), where the
        /// host has KVM_CAP_XSAVE; else nil and `fpu` holds the x87/SSE state.
        package var xsave: [UInt8]?
        /// KVM_GET_FPU's `struct kvm_fpu` (`fpuSize` bytes), without XSAVE.
        package var fpu: [UInt8]?
        /// KVM_GET_XCRS (XCR0), where the host has KVM_CAP_XCRS.
        package var xcrs: [ExtendedControlRegister]?
        /// KVM_GET_DEBUGREGS, where the host has KVM_CAP_DEBUGREGS.
        package var debugRegisters: DebugRegisters?
        /// KVM_GET_LAPIC's register page (`lapicSize` bytes, SDM Vol. 3 11.4.1 offsets), with
        /// an in-kernel irqchip.
        package var lapic: [UInt8]?
        /// KVM_GET_MSRS of the `savedMSRs` KVM answered, in `savedMSRs` order.
        package var msrs: [ModelSpecificRegister]
        package var events: Events
        /// KVM_GET_TSC_KHZ: the guest TSC's frequency, where the host says.
        package var tscKHz: UInt32?

        package init(version: UInt32 = State.currentVersion, id: Int, cpuid: [CPUIDEntry], mpState: UInt32,
                     registers: Registers, specialRegisters: SpecialRegisters, xsave: [UInt8]?, fpu: [UInt8]?,
                     xcrs: [ExtendedControlRegister]?, debugRegisters: DebugRegisters?, lapic: [UInt8]?,
                     msrs: [ModelSpecificRegister], events: Events, tscKHz: UInt32?) {
            self.version = version
            self.id = id
            self.cpuid = cpuid
            self.mpState = mpState
            self.registers = registers
            self.specialRegisters = specialRegisters
            self.xsave = xsave
            self.fpu = fpu
            self.xcrs = xcrs
            self.debugRegisters = debugRegisters
            self.lapic = lapic
            self.msrs = msrs
            self.events = events
            self.tscKHz = tscKHz
        }

        /// An MSR's saved value, if the state has it.
        package func msr(_ index: UInt32) -> UInt64? { msrs.first { $0.index == index }?.value }
    }

    // MARK: - Saving

    /// Reads the whole vCPU state (in the save order above). Only while the vCPU is at rest:
    /// outside KVM_RUN, its last exit completed.
    package func saveState() throws(SystemError) -> State {
        var mp = kvm_mp_state()
        try ioctl(clx_KVM_GET_MP_STATE, "KVM_GET_MP_STATE", &mp)
        let regs = try registers()
        let sregs = try specialRegisters()
        var xsave: [UInt8]?
        var fpu: [UInt8]?
        if capabilities.xsave {
            var area = kvm_xsave()
            try ioctl(clx_KVM_GET_XSAVE, "KVM_GET_XSAVE", &area)
            xsave = withUnsafeBytes(of: &area) { Array($0) }
        } else {
            var area = kvm_fpu()
            try ioctl(clx_KVM_GET_FPU, "KVM_GET_FPU", &area)
            fpu = withUnsafeBytes(of: &area) { Array($0) }
        }
        var xcrs: [ExtendedControlRegister]?
        if capabilities.xcrs {
            var raw = kvm_xcrs()
            try ioctl(clx_KVM_GET_XCRS, "KVM_GET_XCRS", &raw)
            xcrs = ExtendedControlRegister.list(raw)
        }
        var debug: DebugRegisters?
        if capabilities.debugRegisters {
            var raw = kvm_debugregs()
            try ioctl(clx_KVM_GET_DEBUGREGS, "KVM_GET_DEBUGREGS", &raw)
            debug = DebugRegisters(raw)
        }
        var lapic: [UInt8]?
        if capabilities.localAPIC {
            var raw = kvm_lapic_state()
            try ioctl(clx_KVM_GET_LAPIC, "KVM_GET_LAPIC", &raw)
            lapic = withUnsafeBytes(of: &raw) { Array($0) }
        }
        let msrs = try readMSRs(KVMVcpu.msrsToSave(indexList: try capabilities.system.msrIndexList()))
        let cpuid = try currentCPUID()
        var tscKHz: UInt32?
        if capabilities.getTSCKHz {
            let khz = try ioctl(clx_KVM_GET_TSC_KHZ, "KVM_GET_TSC_KHZ", value: 0)
            if khz > 0 { tscKHz = UInt32(khz) }
        }
        var events = kvm_vcpu_events()
        try ioctl(clx_KVM_GET_VCPU_EVENTS, "KVM_GET_VCPU_EVENTS", &events)
        return State(id: id, cpuid: cpuid, mpState: mp.mp_state, registers: Registers(regs),
                     specialRegisters: SpecialRegisters(sregs), xsave: xsave, fpu: fpu, xcrs: xcrs, debugRegisters: debug,
                     lapic: lapic, msrs: msrs, events: Events(events), tscKHz: tscKHz)
    }

    /// KVM_GET_CPUID2: the CPUID this vCPU was given.
    private func currentCPUID() throws(SystemError) -> [CPUIDEntry] {
        var buffer = CPUIDBuffer(capacity: KVMVcpu.maxCPUIDEntries)
        let rc = buffer.withHeader { rawIoctl(clx_KVM_GET_CPUID2, $0) }
        if rc < 0 { throw SystemError(.syscall, "KVM_GET_CPUID2 (vCPU \(id))", errno: .current) }
        return buffer.entries.map(CPUIDEntry.init)
    }

    /// KVM_GET_MSRS of `indices`, leaving out those KVM will not read: it answers how many
    /// entries it read and stops at the first it refuses (arch/x86/kvm/x86.c `__msr_io`).
    func readMSRs(_ indices: [UInt32]) throws(SystemError) -> [ModelSpecificRegister] {
        var result: [ModelSpecificRegister] = []
        var remaining = indices[...]
        while !remaining.isEmpty {
            // struct kvm_msrs { __u32 nmsrs; __u32 pad; struct kvm_msr_entry entries[]; } with
            // 16-byte entries { __u32 index; __u32 reserved; __u64 data; }.
            var words = [UInt64](repeating: 0, count: 1 + 2 * remaining.count)
            words[0] = UInt64(remaining.count)
            for (i, index) in remaining.enumerated() { words[1 + 2 * i] = UInt64(index) }
            // SAFETY: the buffer holds the header and `remaining.count` entries, as nmsrs says.
            let read = words.withUnsafeMutableBytes { rawIoctl(clx_KVM_GET_MSRS, $0.baseAddress!) }  // never empty
            if read < 0 { throw SystemError(.syscall, "KVM_GET_MSRS (vCPU \(id))", errno: .current) }
            let count = min(Int(read), remaining.count)
            for i in 0..<count {
                result.append(ModelSpecificRegister(index: remaining[remaining.startIndex + i], value: words[2 + 2 * i]))
            }
            remaining = remaining.dropFirst(count + 1)  // the refused one, if any, is left out
        }
        return result
    }

    // MARK: - Restoring

    /// Checks `state` against this vCPU and this host's KVM without changing anything: what
    /// `restore(_:)` would refuse before its first ioctl.
    package func validate(_ state: State) throws(SystemError) {
        func bad(_ what: String) -> SystemError { .badInput("vCPU \(id) state: \(what)") }
        guard state.version == State.currentVersion else {
            throw bad("version \(state.version) is not supported (this build reads version \(State.currentVersion))")
        }
        guard state.id == id else { throw bad("the state is vCPU \(state.id)'s") }
        guard state.cpuid.count <= KVMVcpu.maxCPUIDEntries else {
            throw bad("\(state.cpuid.count) CPUID entries (KVM takes at most \(KVMVcpu.maxCPUIDEntries))")
        }
        guard KVMVcpu.x86MPStates.contains(state.mpState) else {
            throw bad("MP state \(state.mpState) is not one of x86's (\(KVMVcpu.x86MPStates.sorted().map(String.init).joined(separator: ", ")))")
        }
        guard state.specialRegisters.interruptBitmap.count == 4 else {
            throw bad("interrupt bitmap of \(state.specialRegisters.interruptBitmap.count) words (256 vectors are 4)")
        }
        switch (state.xsave, state.fpu) {
        case (let xsave?, nil):
            guard xsave.count == KVMVcpu.xsaveSize else {
                throw bad("XSAVE area of \(xsave.count) bytes (KVM_SET_XSAVE takes \(KVMVcpu.xsaveSize))")
            }
            guard capabilities.xsave else { throw .unsupported("vCPU \(id) state has an XSAVE area, and KVM here lacks KVM_CAP_XSAVE") }
        case (nil, let fpu?):
            guard fpu.count == KVMVcpu.fpuSize else {
                throw bad("FPU state of \(fpu.count) bytes (struct kvm_fpu has \(KVMVcpu.fpuSize))")
            }
        default:
            throw bad("it needs exactly one of an XSAVE area and an FPU state")
        }
        if let xcrs = state.xcrs {
            guard xcrs.count <= Int(KVM_MAX_XCRS) else { throw bad("\(xcrs.count) XCRs (KVM takes at most \(KVM_MAX_XCRS))") }
            guard capabilities.xcrs else { throw .unsupported("vCPU \(id) state has XCRs, and KVM here lacks KVM_CAP_XCRS") }
        }
        if let debug = state.debugRegisters {
            guard debug.db.count == 4 else { throw bad("\(debug.db.count) debug address registers (DR0-DR3 are 4)") }
            // SDM Vol. 3 18.2.3-4: the upper halves of DR6 and DR7 are reserved (KVM refuses them).
            guard debug.dr6 >> 32 == 0, debug.dr7 >> 32 == 0 else {
                throw bad("DR6 \(hex(debug.dr6)) / DR7 \(hex(debug.dr7)) set reserved bits 32-63")
            }
            guard capabilities.debugRegisters else {
                throw .unsupported("vCPU \(id) state has debug registers, and KVM here lacks KVM_CAP_DEBUGREGS")
            }
        }
        switch (state.lapic, capabilities.localAPIC) {
        case (let lapic?, true):
            guard lapic.count == KVMVcpu.lapicSize else {
                throw bad("local APIC page of \(lapic.count) bytes (KVM_SET_LAPIC takes \(KVMVcpu.lapicSize))")
            }
        case (nil, false):
            break
        case (nil, true):
            throw bad("it has no local APIC state, and this vCPU has an in-kernel local APIC")
        case (_?, false):
            throw bad("it has a local APIC state, and this VM has no in-kernel irqchip")
        }
        var seen = Set<UInt32>()
        for msr in state.msrs {
            guard KVMVcpu.savedMSRRank[msr.index] != nil else { throw bad("MSR \(hex(msr.index)) is not one a vCPU state carries") }
            guard seen.insert(msr.index).inserted else { throw bad("MSR \(hex(msr.index)) appears twice") }
        }
        try state.events.validate(bad)
        if let saved = state.tscKHz, capabilities.getTSCKHz, !capabilities.setTSCKHz {
            let here = UInt64(max(0, try ioctl(clx_KVM_GET_TSC_KHZ, "KVM_GET_TSC_KHZ", value: 0)))
            let difference = here > saved ? here - UInt64(saved) : UInt64(saved) - here
            guard difference * 1_000_000 <= UInt64(saved) * KVMVcpu.tscToleranceppm else {
                throw .unsupported("vCPU \(id) state: the guest's TSC ran at \(saved) kHz, this host's at \(here) kHz, and KVM here cannot scale it (no KVM_CAP_TSC_CONTROL)")
            }
        }
    }

    /// Loads a saved state, in the restore order above. `validate(_:)` runs first, so a state
    /// that does not fit changes nothing; if KVM refuses a part later, the vCPU is left partly
    /// restored and the error names the ioctl (the board then must not run it).
    package func restore(_ state: State) throws(SystemError) {
        try validate(state)
        try setCPUID(state.cpuid.map(\.kvm))
        if let saved = state.tscKHz, capabilities.getTSCKHz, capabilities.setTSCKHz {
            let here = UInt64(max(0, try ioctl(clx_KVM_GET_TSC_KHZ, "KVM_GET_TSC_KHZ", value: 0)))
            if here != UInt64(saved) { try ioctl(clx_KVM_SET_TSC_KHZ, "KVM_SET_TSC_KHZ \(saved)", value: UInt(saved)) }
        }
        var mp = kvm_mp_state(mp_state: state.mpState)
        try ioctl(clx_KVM_SET_MP_STATE, "KVM_SET_MP_STATE \(state.mpState)", &mp)
        try setRegisters(state.registers.kvm)
        try setSpecialRegisters(state.specialRegisters.kvm)
        // SAFETY (the three copies below): validate(_:) checked each blob is exactly its
        // structure's size, and the structures are plain bytes.
        if let xsave = state.xsave {
            var area = kvm_xsave()
            withUnsafeMutableBytes(of: &area) { $0.copyBytes(from: xsave) }  // count checked: xsaveSize
            try ioctl(clx_KVM_SET_XSAVE, "KVM_SET_XSAVE", &area)
        } else if let fpu = state.fpu {
            var area = kvm_fpu()
            withUnsafeMutableBytes(of: &area) { $0.copyBytes(from: fpu) }  // count checked: fpuSize
            try ioctl(clx_KVM_SET_FPU, "KVM_SET_FPU", &area)
        }
        if let xcrs = state.xcrs {
            var raw = ExtendedControlRegister.kvm(xcrs)
            try ioctl(clx_KVM_SET_XCRS, "KVM_SET_XCRS", &raw)
        }
        if let debug = state.debugRegisters {
            var raw = debug.kvm
            try ioctl(clx_KVM_SET_DEBUGREGS, "KVM_SET_DEBUGREGS", &raw)
        }
        if let lapic = state.lapic {
            var raw = kvm_lapic_state()
            withUnsafeMutableBytes(of: &raw) { $0.copyBytes(from: lapic) }  // count checked: lapicSize
            try ioctl(clx_KVM_SET_LAPIC, "KVM_SET_LAPIC", &raw)
        }
        let msrs = state.msrs.sorted { KVMVcpu.savedMSRRank[$0.index]! < KVMVcpu.savedMSRRank[$1.index]! }  // validated: all ranked
        try setMSRs(msrs.map { ($0.index, $0.value) })
        var events = state.events.kvm
        try ioctl(clx_KVM_SET_VCPU_EVENTS, "KVM_SET_VCPU_EVENTS", &events)
    }

    /// KVM_MP_STATE_* values KVM's x86 KVM_SET_MP_STATE takes (api.rst 4.38; SIPI_RECEIVED
    /// becomes INIT_RECEIVED with the SIPI pending).
    static let x86MPStates: Set<UInt32> = [0, 1, 2, 3, 4, 9]
}

// MARK: - The MSRs a vCPU state carries

extension KVMVcpu {
    /// One MSR of `savedMSRs`.
    package struct SavedMSR: Sendable {
        package var index: UInt32
        package var name: String
        /// Read even when KVM_GET_MSR_INDEX_LIST does not name it: KVM emulates the MTRRs and
        /// TSC_AUX for every guest but lists them only on some hosts (a refused read leaves the
        /// MSR out).
        package var unlisted: Bool

        init(_ index: UInt32, _ name: String, unlisted: Bool = false) {
            self.index = index
            self.name = name
            self.unlisted = unlisted
        }
    }

    /// The MSRs that matter to a running guest (as Firecracker's and cloud-hypervisor's lists:
    /// KVM_GET_MSR_INDEX_LIST filtered), in restore order. Left out: EFER, FS/GS base and the
    /// APIC base, which KVM_SET_SREGS carries; feature and read-only MSRs the host decides
    /// (ARCH_CAPABILITIES, PERF_CAPABILITIES, PLATFORM_INFO, UCODE_REV, MCG_CAP, SMI_COUNT);
    /// last-branch records and nested-virtualization state.
    package static let savedMSRs: [SavedMSR] = {
        var list = [
            // The TSC first: TSC_ADJUST, TSC_DEADLINE and kvmclock are read against it.
            SavedMSR(0x10, "IA32_TSC"),
            SavedMSR(0x3b, "IA32_TSC_ADJUST"),
            SavedMSR(0x3a, "IA32_FEATURE_CONTROL"),
            SavedMSR(0x48, "IA32_SPEC_CTRL"),
            SavedMSR(0x140, "MISC_FEATURES_ENABLES"),
            SavedMSR(0x174, "IA32_SYSENTER_CS"),
            SavedMSR(0x175, "IA32_SYSENTER_ESP"),
            SavedMSR(0x176, "IA32_SYSENTER_EIP"),
            SavedMSR(0x17a, "IA32_MCG_STATUS"),
            SavedMSR(0x17b, "IA32_MCG_CTL"),
            SavedMSR(0x1a0, "IA32_MISC_ENABLE"),
            SavedMSR(0x1d9, "IA32_DEBUGCTL"),
            SavedMSR(0x277, "IA32_PAT"),
        ]
        // SDM Vol. 3 12.11: variable-range MTRRs (KVM offers 8 pairs), the fixed ranges, then the
        // default type, whose E bit turns them all on.
        for n in 0..<16 { list.append(SavedMSR(0x200 + UInt32(n), n % 2 == 0 ? "IA32_MTRR_PHYSBASE\(n / 2)" : "IA32_MTRR_PHYSMASK\(n / 2)", unlisted: true)) }
        list.append(SavedMSR(0x250, "IA32_MTRR_FIX64K_00000", unlisted: true))
        list.append(SavedMSR(0x258, "IA32_MTRR_FIX16K_80000", unlisted: true))
        list.append(SavedMSR(0x259, "IA32_MTRR_FIX16K_A0000", unlisted: true))
        for n in 0..<8 { list.append(SavedMSR(0x268 + UInt32(n), "IA32_MTRR_FIX4K_\(String(0xc0000 + n * 0x8000, radix: 16, uppercase: true))", unlisted: true)) }
        list.append(SavedMSR(0x2ff, "IA32_MTRR_DEF_TYPE", unlisted: true))
        list += [
            SavedMSR(0xc000_0081, "STAR"),
            SavedMSR(0xc000_0082, "LSTAR"),
            SavedMSR(0xc000_0083, "CSTAR"),
            SavedMSR(0xc000_0084, "SFMASK"),
            SavedMSR(0xc000_0102, "KERNEL_GS_BASE"),
            SavedMSR(0xc000_0103, "TSC_AUX", unlisted: true),
            SavedMSR(0xc001_0015, "HWCR"),
            SavedMSR(0xc001_011f, "VIRT_SPEC_CTRL"),
            // KVM's paravirtual MSRs (Documentation/virt/kvm/x86/msr.rst).
            SavedMSR(0x11, "MSR_KVM_WALL_CLOCK"),
            SavedMSR(0x12, "MSR_KVM_SYSTEM_TIME"),
            SavedMSR(0x4b56_4d00, "MSR_KVM_WALL_CLOCK_NEW"),
            SavedMSR(0x4b56_4d01, "MSR_KVM_SYSTEM_TIME_NEW"),
            SavedMSR(0x4b56_4d03, "MSR_KVM_STEAL_TIME"),
            SavedMSR(0x4b56_4d04, "MSR_KVM_PV_EOI_EN"),
            SavedMSR(0x4b56_4d05, "MSR_KVM_POLL_CONTROL"),
            // Interrupt-based async page faults need their vector before they are enabled.
            SavedMSR(0x4b56_4d06, "MSR_KVM_ASYNC_PF_INT"),
            SavedMSR(0x4b56_4d02, "MSR_KVM_ASYNC_PF_EN"),
            SavedMSR(0x4b56_4d08, "MSR_KVM_MIGRATION_CONTROL"),
            // Last: counted against the TSC, armed only in the LAPIC timer's TSC-deadline mode.
            SavedMSR(0x6e0, "IA32_TSC_DEADLINE"),
        ]
        return list
    }()

    /// Each saved MSR's position in `savedMSRs` (the restore order).
    static let savedMSRRank: [UInt32: Int] = Dictionary(uniqueKeysWithValues: savedMSRs.enumerated().map { ($1.index, $0) })

    /// The `savedMSRs` to read on a host whose KVM_GET_MSR_INDEX_LIST is `indexList`.
    package static func msrsToSave(indexList: [UInt32]) -> [UInt32] {
        let listed = Set(indexList)
        return savedMSRs.filter { $0.unlisted || listed.contains($0.index) }.map(\.index)
    }
}

// MARK: - Codable mirrors of KVM's structures

extension KVMVcpu {
    /// `struct kvm_cpuid_entry2`.
    package struct CPUIDEntry: Codable, Sendable, Equatable {
        package var function: UInt32
        package var index: UInt32
        package var flags: UInt32
        package var eax: UInt32
        package var ebx: UInt32
        package var ecx: UInt32
        package var edx: UInt32

        init(_ e: kvm_cpuid_entry2) {
            function = e.function; index = e.index; flags = e.flags
            eax = e.eax; ebx = e.ebx; ecx = e.ecx; edx = e.edx
        }

        var kvm: kvm_cpuid_entry2 {
            var e = kvm_cpuid_entry2()
            e.function = function; e.index = index; e.flags = flags
            e.eax = eax; e.ebx = ebx; e.ecx = ecx; e.edx = edx
            return e
        }
    }

    /// `struct kvm_regs`: the general-purpose registers, RIP and RFLAGS.
    package struct Registers: Codable, Sendable, Equatable {
        package var rax, rbx, rcx, rdx, rsi, rdi, rsp, rbp: UInt64
        package var r8, r9, r10, r11, r12, r13, r14, r15: UInt64
        package var rip, rflags: UInt64

        package init(_ r: kvm_regs) {
            rax = r.rax; rbx = r.rbx; rcx = r.rcx; rdx = r.rdx; rsi = r.rsi; rdi = r.rdi; rsp = r.rsp; rbp = r.rbp
            r8 = r.r8; r9 = r.r9; r10 = r.r10; r11 = r.r11; r12 = r.r12; r13 = r.r13; r14 = r.r14; r15 = r.r15
            rip = r.rip; rflags = r.rflags
        }

        package var kvm: kvm_regs {
            kvm_regs(rax: rax, rbx: rbx, rcx: rcx, rdx: rdx, rsi: rsi, rdi: rdi, rsp: rsp, rbp: rbp,
                     r8: r8, r9: r9, r10: r10, r11: r11, r12: r12, r13: r13, r14: r14, r15: r15, rip: rip, rflags: rflags)
        }
    }

    /// `struct kvm_segment`: a segment register with its hidden descriptor part.
    package struct Segment: Codable, Sendable, Equatable {
        package var base: UInt64
        package var limit: UInt32
        package var selector: UInt16
        package var type, present, dpl, db, s, l, g, avl, unusable: UInt8

        init(_ s: kvm_segment) {
            base = s.base; limit = s.limit; selector = s.selector; type = s.type; present = s.present; dpl = s.dpl
            db = s.db; self.s = s.s; l = s.l; g = s.g; avl = s.avl; unusable = s.unusable
        }

        var kvm: kvm_segment {
            kvm_segment(base: base, limit: limit, selector: selector, type: type, present: present, dpl: dpl, db: db,
                        s: s, l: l, g: g, avl: avl, unusable: unusable, padding: 0)
        }
    }

    /// `struct kvm_dtable`: GDTR or IDTR.
    package struct DescriptorTable: Codable, Sendable, Equatable {
        package var base: UInt64
        package var limit: UInt16
    }

    /// `struct kvm_sregs`: segments, descriptor tables, control registers, EFER, the APIC base
    /// and the bitmap of a pending external interrupt.
    package struct SpecialRegisters: Codable, Sendable, Equatable {
        package var cs, ds, es, fs, gs, ss, tr, ldt: Segment
        package var gdt, idt: DescriptorTable
        package var cr0, cr2, cr3, cr4, cr8, efer, apicBase: UInt64
        /// Four 64-bit words, one bit per vector.
        package var interruptBitmap: [UInt64]

        package init(_ s: kvm_sregs) {
            cs = Segment(s.cs); ds = Segment(s.ds); es = Segment(s.es); fs = Segment(s.fs)
            gs = Segment(s.gs); ss = Segment(s.ss); tr = Segment(s.tr); ldt = Segment(s.ldt)
            gdt = DescriptorTable(base: s.gdt.base, limit: s.gdt.limit)
            idt = DescriptorTable(base: s.idt.base, limit: s.idt.limit)
            cr0 = s.cr0; cr2 = s.cr2; cr3 = s.cr3; cr4 = s.cr4; cr8 = s.cr8; efer = s.efer; apicBase = s.apic_base
            interruptBitmap = withUnsafeBytes(of: s.interrupt_bitmap) { Array($0.bindMemory(to: UInt64.self)) }
        }

        /// Needs `interruptBitmap.count == 4` (validated).
        package var kvm: kvm_sregs {
            var s = kvm_sregs()
            s.cs = cs.kvm; s.ds = ds.kvm; s.es = es.kvm; s.fs = fs.kvm; s.gs = gs.kvm; s.ss = ss.kvm; s.tr = tr.kvm; s.ldt = ldt.kvm
            s.gdt.base = gdt.base; s.gdt.limit = gdt.limit
            s.idt.base = idt.base; s.idt.limit = idt.limit
            s.cr0 = cr0; s.cr2 = cr2; s.cr3 = cr3; s.cr4 = cr4; s.cr8 = cr8; s.efer = efer; s.apic_base = apicBase
            withUnsafeMutableBytes(of: &s.interrupt_bitmap) { raw in
                for (i, word) in interruptBitmap.prefix(4).enumerated() { raw.storeBytes(of: word, toByteOffset: 8 * i, as: UInt64.self) }
            }
            return s
        }
    }

    /// One `struct kvm_xcr`.
    package struct ExtendedControlRegister: Codable, Sendable, Equatable {
        package var xcr: UInt32
        package var value: UInt64

        static func list(_ raw: kvm_xcrs) -> [ExtendedControlRegister] {
            withUnsafeBytes(of: raw.xcrs) { bytes in
                let entries = bytes.bindMemory(to: kvm_xcr.self)
                return entries.prefix(Int(min(raw.nr_xcrs, UInt32(KVM_MAX_XCRS)))).map { ExtendedControlRegister(xcr: $0.xcr, value: $0.value) }
            }
        }

        /// Needs at most KVM_MAX_XCRS entries (validated).
        static func kvm(_ list: [ExtendedControlRegister]) -> kvm_xcrs {
            var raw = kvm_xcrs()
            raw.nr_xcrs = UInt32(list.count)
            withUnsafeMutableBytes(of: &raw.xcrs) { bytes in
                let entries = bytes.bindMemory(to: kvm_xcr.self)
                for (i, x) in list.prefix(entries.count).enumerated() { entries[i] = kvm_xcr(xcr: x.xcr, reserved: 0, value: x.value) }
            }
            return raw
        }
    }

    /// `struct kvm_debugregs`: DR0-DR3, DR6, DR7.
    package struct DebugRegisters: Codable, Sendable, Equatable {
        package var db: [UInt64]
        package var dr6, dr7: UInt64

        init(_ raw: kvm_debugregs) {
            db = withUnsafeBytes(of: raw.db) { Array($0.bindMemory(to: UInt64.self)) }
            dr6 = raw.dr6
            dr7 = raw.dr7
        }

        var kvm: kvm_debugregs {
            var raw = kvm_debugregs()
            withUnsafeMutableBytes(of: &raw.db) { bytes in
                for (i, value) in db.prefix(4).enumerated() { bytes.storeBytes(of: value, toByteOffset: 8 * i, as: UInt64.self) }
            }
            raw.dr6 = dr6
            raw.dr7 = dr7
            return raw
        }
    }

    /// One MSR and its value (`struct kvm_msr_entry`).
    package struct ModelSpecificRegister: Codable, Sendable, Equatable {
        package var index: UInt32
        package var value: UInt64

        package init(index: UInt32, value: UInt64) {
            self.index = index
            self.value = value
        }
    }

    /// `struct kvm_vcpu_events` (api.rst 4.31): what is in flight between instructions.
    package struct Events: Codable, Sendable, Equatable {
        package var exceptionInjected: Bool
        package var exceptionNumber: UInt8
        package var exceptionHasErrorCode: Bool
        package var exceptionPending: Bool
        package var exceptionErrorCode: UInt32
        package var interruptInjected: Bool
        package var interruptNumber: UInt8
        package var interruptSoft: Bool
        /// KVM_X86_SHADOW_INT_MOV_SS (1) and KVM_X86_SHADOW_INT_STI (2).
        package var interruptShadow: UInt8
        package var nmiInjected: Bool
        /// NMIs waiting (KVM counts up to two).
        package var nmiPending: UInt8
        package var nmiMasked: Bool
        package var sipiVector: UInt32
        /// The KVM_VCPUEVENT_VALID_* bits KVM_GET_VCPU_EVENTS set.
        package var flags: UInt32
        package var smm: Bool
        package var smiPending: Bool
        package var smmInsideNMI: Bool
        package var latchedINIT: Bool

        /// What KVM_SET_VCPU_EVENTS takes without capabilities swemu does not enable
        /// (exception payloads, triple-fault events): NMI_PENDING, SIPI_VECTOR, SHADOW, SMM.
        static let acceptedFlags = UInt32(KVM_VCPUEVENT_VALID_NMI_PENDING | KVM_VCPUEVENT_VALID_SIPI_VECTOR
                                          | KVM_VCPUEVENT_VALID_SHADOW | KVM_VCPUEVENT_VALID_SMM)

        init(_ e: kvm_vcpu_events) {
            exceptionInjected = e.exception.injected != 0
            exceptionNumber = e.exception.nr
            exceptionHasErrorCode = e.exception.has_error_code != 0
            exceptionPending = e.exception.pending != 0
            exceptionErrorCode = e.exception.error_code
            interruptInjected = e.interrupt.injected != 0
            interruptNumber = e.interrupt.nr
            interruptSoft = e.interrupt.soft != 0
            interruptShadow = e.interrupt.shadow
            nmiInjected = e.nmi.injected != 0
            nmiPending = e.nmi.pending
            nmiMasked = e.nmi.masked != 0
            sipiVector = e.sipi_vector
            flags = e.flags
            smm = e.smi.smm != 0
            smiPending = e.smi.pending != 0
            smmInsideNMI = e.smi.smm_inside_nmi != 0
            latchedINIT = e.smi.latched_init != 0
        }

        /// The value KVM_SET_VCPU_EVENTS gets: the saved parts, with the NMI count and SIPI
        /// vector marked valid too (they always travel).
        var kvm: kvm_vcpu_events {
            var e = kvm_vcpu_events()
            e.exception.injected = exceptionInjected ? 1 : 0
            e.exception.nr = exceptionNumber
            e.exception.has_error_code = exceptionHasErrorCode ? 1 : 0
            e.exception.pending = exceptionPending ? 1 : 0
            e.exception.error_code = exceptionErrorCode
            e.interrupt.injected = interruptInjected ? 1 : 0
            e.interrupt.nr = interruptNumber
            e.interrupt.soft = interruptSoft ? 1 : 0
            e.interrupt.shadow = interruptShadow
            e.nmi.injected = nmiInjected ? 1 : 0
            e.nmi.pending = nmiPending
            e.nmi.masked = nmiMasked ? 1 : 0
            e.sipi_vector = sipiVector
            e.flags = (flags & Events.acceptedFlags) | UInt32(KVM_VCPUEVENT_VALID_NMI_PENDING | KVM_VCPUEVENT_VALID_SIPI_VECTOR)
            e.smi.smm = smm ? 1 : 0
            e.smi.pending = smiPending ? 1 : 0
            e.smi.smm_inside_nmi = smmInsideNMI ? 1 : 0
            e.smi.latched_init = latchedINIT ? 1 : 0
            return e
        }

        func validate(_ bad: (String) -> SystemError) throws(SystemError) {
            if flags & ~Events.acceptedFlags != 0 {
                throw bad("vCPU event flags \(hex(flags)) include parts this build does not restore (only \(hex(Events.acceptedFlags)))")
            }
            // SDM Vol. 3 6.3.1: vectors 0-31 are exceptions; NMI (2) travels as an NMI.
            if (exceptionInjected || exceptionPending) && (exceptionNumber > 31 || exceptionNumber == 2) {
                throw bad("exception vector \(exceptionNumber) is not an exception (0-31, not NMI)")
            }
            if interruptShadow & ~3 != 0 { throw bad("interrupt shadow \(hex(interruptShadow)) has bits other than MOV SS and STI") }
        }
    }
}

/// `0x`-prefixed hexadecimal, for messages.
func hex<T: BinaryInteger>(_ value: T) -> String { "0x" + String(value, radix: 16) }
