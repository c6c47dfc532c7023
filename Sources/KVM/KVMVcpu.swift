import CLinux
import Glibc
import Synchronization
import SystemSupport

/// Why `KVM_RUN` returned (api.rst §5, `struct kvm_run`'s exit reasons), as Swift values.
public enum KVMExit: Sendable, Equatable {
    /// KVM_EXIT_IO: `in`/`out` (or `ins`/`outs` with `count` > 1) to a port the kernel does not
    /// emulate. Values travel through `KVMVcpu.ioValue(at:)` / `setIOValue(_:at:)`.
    case io(port: UInt16, size: Int, count: Int, isWrite: Bool)
    /// KVM_EXIT_MMIO: an access to guest-physical memory no slot backs. A write's value is
    /// `value`; a read's answer goes to `KVMVcpu.setMMIOReadValue(_:)`.
    case mmio(address: UInt64, size: Int, isWrite: Bool, value: UInt64)
    /// KVM_EXIT_HLT: `hlt`; only without an in-kernel local APIC (with one, hlt waits in the kernel).
    case halt
    /// KVM_EXIT_SHUTDOWN: the guest triple-faulted (api.rst: "shutdown of the guest").
    case shutdown
    /// KVM_EXIT_SYSTEM_EVENT: `type` is KVM_SYSTEM_EVENT_SHUTDOWN, _RESET or _CRASH.
    case systemEvent(type: UInt32)
    /// KVM_EXIT_INTERNAL_ERROR: the kernel could not go on (suberror 1 is an emulation failure).
    case internalError(suberror: UInt32)
    /// KVM_EXIT_FAIL_ENTRY: the hardware refused the guest state.
    case failEntry(reason: UInt64)
    /// KVM_EXIT_DEBUG (api.rst 5, `struct kvm_debug_exit_arch`): a debug exception with guest
    /// debugging on (KVMVcpu+Debug.swift); `exception` is 1 (#DB) or 3 (#BP).
    case debug(exception: UInt32, pc: UInt64, dr6: UInt64, dr7: UInt64)
    /// KVM_RUN returned EINTR: another thread kicked this vCPU (`kick()`).
    case interrupted
    /// A reason swemu does not handle; the number is KVM's.
    case unknown(reason: UInt32)
}

/// A vCPU fd and its shared `kvm_run` area (api.rst §4 "vcpu ioctl", §5). Used by one thread,
/// the vCPU thread, except for `kick()`.
public final class KVMVcpu: @unchecked Sendable {
    // SAFETY: `run` points to the `mapSize` bytes mmap'ed from the vCPU fd in init and unmapped in
    // deinit; only the vCPU thread reads and writes it, except the one-byte `immediate_exit`
    // store of `kick()`, which KVM reads at the next KVM_RUN (api.rst 5: immediate_exit).
    private let fd: FileDescriptor
    private let run: UnsafeMutablePointer<kvm_run>
    private let mapSize: Int
    /// The APIC id this vCPU was created with (KVM_CREATE_VCPU's argument).
    public let id: Int
    /// The pthread running this vCPU, for `kick()`; 0 before `bindToCurrentThread()`.
    private let thread = Atomic<UInt>(0)
    private let threadIDStorage = Atomic<Int>(0)
    /// The signal that kicks a vCPU thread out of KVM_RUN.
    public static let kickSignal = SIGUSR2
    /// Which parts of the saved state this host's KVM reads and writes (KVMVcpu+State.swift).
    let capabilities: StateCapabilities

    init(fd: consuming FileDescriptor, id: Int, mapSize: Int, capabilities: StateCapabilities) throws(SystemError) {
        let raw = mmap(nil, mapSize, PROT_READ | PROT_WRITE, MAP_SHARED, fd.rawValue, 0)
        guard let raw, clx_is_map_failed(raw) == 0 else {
            throw SystemError(.syscall, "cannot map kvm_run of vCPU \(id)", errno: .current)
        }
        self.fd = fd
        self.id = id
        self.mapSize = mapSize
        self.capabilities = capabilities
        run = raw.bindMemory(to: kvm_run.self, capacity: 1)
    }

    deinit { munmap(run, mapSize) }

    /// One vCPU ioctl with a pointer argument; returns its non-negative result (KVM_GET_MSRS and
    /// KVM_SET_MSRS answer how many entries they processed).
    @discardableResult
    func ioctl(_ request: UInt, _ what: @autoclosure () -> String, _ arg: UnsafeMutableRawPointer) throws(SystemError) -> Int32 {
        try syscall("\(what()) (vCPU \(id))") { clx_ioctl_ptr(fd.rawValue, request, arg) }
    }

    /// One vCPU ioctl whose result the caller checks (negative: failed, `errno` says why).
    func rawIoctl(_ request: UInt, _ arg: UnsafeMutableRawPointer) -> Int32 {
        clx_ioctl_ptr(fd.rawValue, request, arg)
    }

    /// One vCPU ioctl with an integer argument (KVM_GET_TSC_KHZ, KVM_SET_TSC_KHZ).
    @discardableResult
    func ioctl(_ request: UInt, _ what: @autoclosure () -> String, value: UInt) throws(SystemError) -> Int32 {
        try syscall("\(what()) (vCPU \(id))") { clx_ioctl_int(fd.rawValue, request, value) }
    }

    // MARK: - Running

    /// Records the calling thread as this vCPU's, so `kick()` can interrupt it, and makes the
    /// kick signal interrupt KVM_RUN instead of being restarted.
    public func bindToCurrentThread() {
        _ = clx_install_kick_signal(KVMVcpu.kickSignal)
        thread.store(UInt(pthread_self()), ordering: .sequentiallyConsistent)
        threadIDStorage.store(HostThread.currentID(), ordering: .sequentiallyConsistent)
    }

    /// The kernel's id of the vCPU thread (QEMU's `thread_id` in query-cpus-fast); 0 before it runs.
    public var threadID: Int { threadIDStorage.load(ordering: .sequentiallyConsistent) }

    /// Makes the vCPU thread's KVM_RUN return `.interrupted` now or at its next entry (from any thread).
    public func kick() {
        // SAFETY: one byte of the shared kvm_run; KVM reads it at entry (api.rst 5 immediate_exit).
        run.pointer(to: \.immediate_exit)!.pointee = 1
        let t = thread.load(ordering: .sequentiallyConsistent)
        if t != 0 { _ = pthread_kill(pthread_t(t), KVMVcpu.kickSignal) }
    }

    /// Makes the next KVM_RUN only finish the operation of the last exit and return
    /// `.interrupted` before the guest runs another instruction. An `in`, an MMIO read or a
    /// string instruction is complete, and the guest state consistent, only after userspace has
    /// re-entered KVM_RUN; that pending part is in no state userspace can read (api.rst 5,
    /// the note under KVM_EXIT_IO / KVM_EXIT_MMIO), so a vCPU must do this before it is saved.
    package func requestCompletionOnly() {
        // SAFETY: as in kick(); called on the vCPU thread itself, outside KVM_RUN.
        run.pointer(to: \.immediate_exit)!.pointee = 1
    }

    /// KVM_RUN once; returns why the guest stopped.
    public func runOnce() throws(SystemError) -> KVMExit {
        if clx_ioctl_int(fd.rawValue, clx_KVM_RUN, 0) < 0 {
            let err = Errno.current
            if err == .interrupted || err == .wouldBlock {
                // SAFETY: as in kick(). Cleared by the vCPU thread itself, which checks why it
                // was kicked (stop, pause) before it enters again.
                run.pointer(to: \.immediate_exit)!.pointee = 0
                return .interrupted
            }
            throw SystemError(.syscall, "KVM_RUN (vCPU \(id))", errno: err)
        }
        let r = run.pointee
        switch Int32(r.exit_reason) {
        case KVM_EXIT_IO:
            return .io(port: r.io.port, size: Int(r.io.size), count: Int(r.io.count), isWrite: r.io.direction == KVM_EXIT_IO_OUT)
        case KVM_EXIT_MMIO:
            var value: UInt64 = 0
            withUnsafeBytes(of: r.mmio.data) { bytes in
                for i in 0..<min(8, Int(r.mmio.len)) { value |= UInt64(bytes[i]) << (8 * UInt64(i)) }
            }
            return .mmio(address: r.mmio.phys_addr, size: Int(r.mmio.len), isWrite: r.mmio.is_write != 0, value: value)
        case KVM_EXIT_HLT: return .halt
        case KVM_EXIT_SHUTDOWN: return .shutdown
        case KVM_EXIT_SYSTEM_EVENT: return .systemEvent(type: r.system_event.type)
        case KVM_EXIT_INTERNAL_ERROR: return .internalError(suberror: r.internal.suberror)
        case KVM_EXIT_FAIL_ENTRY: return .failEntry(reason: r.fail_entry.hardware_entry_failure_reason)
        case KVM_EXIT_INTR: return .interrupted
        case KVM_EXIT_DEBUG: return .debug(exception: r.debug.arch.exception, pc: r.debug.arch.pc, dr6: r.debug.arch.dr6, dr7: r.debug.arch.dr7)
        default: return .unknown(reason: r.exit_reason)
        }
    }

    /// The address of item `index` of the current KVM_EXIT_IO's data, or nil when the kernel's
    /// offsets do not fit the mapping (never trusted blindly).
    private func ioSlot(_ index: Int, size: Int) -> UnsafeMutableRawPointer? {
        let offset = Int(run.pointee.io.data_offset) + index * size
        guard offset >= 0, offset + size <= mapSize else { return nil }
        return UnsafeMutableRawPointer(run) + offset
    }

    /// Value `index` of an `out` (little-endian, `size` bytes).
    public func ioValue(at index: Int, size: Int) -> UInt64 {
        guard let p = ioSlot(index, size: size) else { return 0 }
        // SAFETY: ioSlot checked that [p, p + size) is inside the kvm_run mapping.
        var value: UInt64 = 0
        for i in 0..<size { value |= UInt64(p.load(fromByteOffset: i, as: UInt8.self)) << (8 * UInt64(i)) }
        return value
    }

    /// Answers item `index` of an `in`.
    public func setIOValue(_ value: UInt64, at index: Int, size: Int) {
        guard let p = ioSlot(index, size: size) else { return }
        // SAFETY: as in ioValue.
        for i in 0..<size { p.storeBytes(of: UInt8(truncatingIfNeeded: value >> (8 * UInt64(i))), toByteOffset: i, as: UInt8.self) }
    }

    /// Answers the current KVM_EXIT_MMIO read.
    public func setMMIOReadValue(_ value: UInt64) {
        withUnsafeMutableBytes(of: &run.pointee.mmio.data) { bytes in
            for i in 0..<8 { bytes[i] = UInt8(truncatingIfNeeded: value >> (8 * UInt64(i))) }
        }
    }

    // MARK: - State

    public func registers() throws(SystemError) -> kvm_regs {
        var regs = kvm_regs()
        try ioctl(clx_KVM_GET_REGS, "KVM_GET_REGS", &regs)
        return regs
    }

    public func setRegisters(_ regs: kvm_regs) throws(SystemError) {
        var regs = regs
        try ioctl(clx_KVM_SET_REGS, "KVM_SET_REGS", &regs)
    }

    public func specialRegisters() throws(SystemError) -> kvm_sregs {
        var sregs = kvm_sregs()
        try ioctl(clx_KVM_GET_SREGS, "KVM_GET_SREGS", &sregs)
        return sregs
    }

    public func setSpecialRegisters(_ sregs: kvm_sregs) throws(SystemError) {
        var sregs = sregs
        try ioctl(clx_KVM_SET_SREGS, "KVM_SET_SREGS", &sregs)
    }

    /// KVM_SET_FPU with the x87 control word and MXCSR at their reset values (SDM Vol. 1
    /// 8.1.5: FCW 0x37f; 10.2.3.1: MXCSR 0x1f80), as Linux's boot protocol expects.
    public func resetFPU() throws(SystemError) {
        var fpu = kvm_fpu()
        fpu.fcw = 0x37f
        fpu.mxcsr = 0x1f80
        try ioctl(clx_KVM_SET_FPU, "KVM_SET_FPU", &fpu)
    }

    /// KVM_SET_MSRS; every MSR must be taken, else the error names the first refused one.
    public func setMSRs(_ msrs: [(index: UInt32, value: UInt64)]) throws(SystemError) {
        // struct kvm_msrs { __u32 nmsrs; __u32 pad; struct kvm_msr_entry entries[]; } with
        // 16-byte entries { __u32 index; __u32 reserved; __u64 data; }.
        var words = [UInt64](repeating: 0, count: 1 + 2 * msrs.count)
        words[0] = UInt64(msrs.count)
        for (i, msr) in msrs.enumerated() {
            words[1 + 2 * i] = UInt64(msr.index)
            words[2 + 2 * i] = msr.value
        }
        let taken = try words.withUnsafeMutableBytes { raw in
            Result { () throws(SystemError) in
                try syscall("KVM_SET_MSRS (vCPU \(id))") { clx_ioctl_ptr(fd.rawValue, clx_KVM_SET_MSRS, raw.baseAddress!) }
            }
        }.get()
        guard Int(taken) == msrs.count else {
            throw .unsupported("KVM refused MSR 0x\(String(msrs[Int(taken)].index, radix: 16)) of vCPU \(id)")
        }
    }

    /// KVM_SET_CPUID2: what `cpuid` answers in the guest.
    public func setCPUID(_ entries: [kvm_cpuid_entry2]) throws(SystemError) {
        var buffer = CPUIDBuffer(entries)
        let rc = buffer.withHeader { clx_ioctl_ptr(fd.rawValue, clx_KVM_SET_CPUID2, $0) }
        if rc < 0 { throw SystemError(.syscall, "KVM_SET_CPUID2 (vCPU \(id))", errno: .current) }
    }

    /// Programs the local APIC's LINT0 as ExtINT (the 8259's output) and LINT1 as NMI, the
    /// virtual-wire mode the MP spec (§3.6.2.2) and Linux expect at boot.
    public func configureLocalInterrupts() throws(SystemError) {
        var lapic = kvm_lapic_state()
        try ioctl(clx_KVM_GET_LAPIC, "KVM_GET_LAPIC", &lapic)
        // SDM Vol. 3 11.5.1: LVT LINT0 at 0x350, LINT1 at 0x360; delivery mode in bits 8-10
        // (7 = ExtINT, 4 = NMI).
        withUnsafeMutableBytes(of: &lapic.regs) { regs in
            for (offset, mode) in [(0x350, UInt32(7)), (0x360, UInt32(4))] {
                let old = regs.load(fromByteOffset: offset, as: UInt32.self)
                regs.storeBytes(of: (old & ~0x700) | mode << 8, toByteOffset: offset, as: UInt32.self)
            }
        }
        try ioctl(clx_KVM_SET_LAPIC, "KVM_SET_LAPIC", &lapic)
    }

    /// The registers as text, for triple faults and internal errors.
    public func registerDump() -> String {
        guard let r = try? registers(), let s = try? specialRegisters() else { return "(registers unavailable)" }
        func h(_ v: UInt64) -> String {
            let digits = String(v, radix: 16)
            return String(repeating: "0", count: max(0, 16 - digits.count)) + digits
        }
        func seg(_ name: String, _ s: kvm_segment) -> String {
            "\(name) =\(String(s.selector, radix: 16)) base=\(h(s.base)) limit=\(String(s.limit, radix: 16)) type=\(s.type) l=\(s.l) db=\(s.db)"
        }
        return """
        RAX=\(h(r.rax)) RBX=\(h(r.rbx)) RCX=\(h(r.rcx)) RDX=\(h(r.rdx))
        RSI=\(h(r.rsi)) RDI=\(h(r.rdi)) RBP=\(h(r.rbp)) RSP=\(h(r.rsp))
        R8 =\(h(r.r8)) R9 =\(h(r.r9)) R10=\(h(r.r10)) R11=\(h(r.r11))
        R12=\(h(r.r12)) R13=\(h(r.r13)) R14=\(h(r.r14)) R15=\(h(r.r15))
        RIP=\(h(r.rip)) RFL=\(h(r.rflags))
        \(seg("CS", s.cs))
        \(seg("SS", s.ss))
        \(seg("DS", s.ds))
        GDT=\(h(s.gdt.base)) \(String(s.gdt.limit, radix: 16)) IDT=\(h(s.idt.base)) \(String(s.idt.limit, radix: 16))
        CR0=\(h(s.cr0)) CR2=\(h(s.cr2)) CR3=\(h(s.cr3)) CR4=\(h(s.cr4)) EFER=\(h(s.efer))
        """
    }
}
