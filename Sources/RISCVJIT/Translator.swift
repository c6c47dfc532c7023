import CLinux
import RISCV

/// Field offsets of `HartState` and `TLBEntry`, read once from the compiler's layout
/// (`MemoryLayout.offset(of:)`): generated code reaches hart state and the TLB after it
/// through r15 at these displacements. r15 points `bias` bytes into the state, so that the
/// fields `HartState` puts first and most of `x` are within a signed byte of it (shorter code).
struct StateLayout {
    let x: Int32
    let f: Int32
    let pc: Int32
    let mstatus: Int32
    let fflags: Int32
    let frm: Int32
    let dataKey: Int32
    let fetchKey: Int32
    let budget: Int32
    /// The TLB from r15 (it follows the state, `Hart.tlbOffsetFromState`).
    let tlb: Int32
    let tlbStride: Int32
    let tlbTag: Int32
    let tlbAddend: Int32
    /// `Hart.tlbPhysicalPages` from r15.
    let tlbPhysicalPages: Int32
    let cacheStride: Int32
    let cacheVirtual: Int32
    let cachePhysical: Int32
    let cacheCode: Int32

    static let shared = StateLayout()
    /// r15 = the state's address + bias.
    static let bias: Int32 = 128

    private init() {
        func offset<T>(_ key: PartialKeyPath<T>) -> Int32 {
            guard let value = MemoryLayout<T>.offset(of: key) else { preconditionFailure("stored property expected") }
            return Int32(value)
        }
        func state(_ key: PartialKeyPath<HartState>) -> Int32 { offset(key) - Self.bias }
        x = state(\HartState.x)
        f = state(\HartState.f)
        pc = state(\HartState.pc)
        mstatus = state(\HartState.mstatus)
        fflags = state(\HartState.fflags)
        frm = state(\HartState.frm)
        dataKey = state(\HartState.dataKey)
        fetchKey = state(\HartState.fetchKey)
        budget = state(\HartState.jitBudget)
        tlb = Int32(Hart.tlbOffsetFromState) - Self.bias
        tlbStride = Int32(MemoryLayout<TLBEntry>.stride)
        tlbTag = offset(\TLBEntry.tag)
        tlbAddend = offset(\TLBEntry.addend)
        tlbPhysicalPages = Int32(Hart.tlbPhysicalPagesOffsetFromState) - Self.bias
        cacheStride = Int32(MemoryLayout<CacheEntry>.stride)
        cacheVirtual = offset(\CacheEntry.virtual)
        cachePhysical = offset(\CacheEntry.physical)
        cacheCode = offset(\CacheEntry.code)
        precondition(cacheStride == 24, "the jump cache is indexed as index * 3 * 8")
        // InlineArray stores its elements inline and contiguously: x[i] is at x + 8 * i.
        precondition(MemoryLayout<InlineArray<32, UInt64>>.size == 32 * 8)
    }
}

/// What generated code returns to the dispatcher in eax (values below `firstChainSite`);
/// a larger value is the address of a `jmp rel32` whose target block may be chained.
enum ExitStatus: UInt64 {
    /// `pc` holds the next guest pc: look its block up.
    case jump = 0
    case trapped = 1
    case leave = 2
    case debugStop = 3
    /// The chunk's instruction budget was spent before the block started (pc is the block's).
    case budget = 4

    static let firstChainSite: UInt64 = 16
}

/// Addresses of the helpers translated code calls, and of the shared epilogue.
struct HelperAddresses {
    /// The thunks in the code buffer (`JITEngine.emitRuntime`) that call the TLB-miss helpers
    /// for loads and stores (rax = vaddr, rdx = pc, ecx = info) and the interpreter (rax =
    /// the decoded instruction's slot, rdx = pc, ecx = the unretired count); eax = the
    /// helper's status out. They keep every register of the translator's cache pool.
    let loadThunk: UInt
    let storeThunk: UInt
    let interpretThunk: UInt
    let epilogue: UInt
    /// In the runtime area: MXCSR's value with every exception masked, no flag raised,
    /// round to nearest, no DAZ/FTZ (4 bytes); and 64 bytes mapping MXCSR's exception flags
    /// (IE DE ZE OE UE PE, bits 0-5) to RISC-V's fflags (NV DZ OF UF NX).
    let mxcsrClean: UInt64
    let flagTable: UInt64
    /// The engine's `CacheEntry` array (`JITEngine.cacheSize` entries).
    let jumpCache: UInt64
}

/// Translates one block of RISC-V code into x86-64 (the speed issue, part 2): a basic block,
/// or a loop whose conditional branches before its last leave it (`JITEngine.loopBlockLength`).
///
/// Register conventions in generated code: r15 = `HartState*` (and the hart's TLB after it);
/// r8 = the instruction budget (`budget`); rax, rcx and rdx are scratch; ten more hold guest
/// registers within a block (`pool`). The engine (the helpers' first argument) is on the
/// stack, where the thunks find it. The stack stays 16-byte aligned (the trampoline sets it
/// up), so helpers are called as plain C functions.
///
/// Precise state: `pc` is written at every exit to the dispatcher and passed to every helper.
/// Counters are not touched here: a block takes its length from the budget (r8, which is
/// `HartState.jitBudget` outside translated code) on entry, gives back the part that did not
/// retire when it leaves early (a trap, an interpreted instruction), and the engine turns
/// what the budget lost into minstret and mcycle (`JITEngine.syncCounters`) before anything
/// can read them.
struct Translator: ~Copyable {
    /// A block ends after this many instructions (bounds translation work and trap latency).
    static let maxInstructions = 128

    let layout = StateLayout.shared
    let helpers: HelperAddresses

    /// One instruction of the block being translated.
    struct Instruction {
        let pc: UInt64
        let decoded: DecodedInstruction
        /// Where the interpreter finds it, for instructions handed to the interpreter.
        let slot: UnsafePointer<DecodedInstruction>?
    }

    struct Result {
        let code: [UInt8]
        let instructions: Int
        let fusedRotations: Int
    }

    // MARK: - Which instructions are translated

    /// Instructions emitted as host code; everything else (CSRs, FP, atomics, system
    /// instructions, the rarer bit-manipulation ones) calls the interpreter.
    static func isNative(_ op: Op) -> Bool {
        switch op {
        case .lui, .auipc, .jal, .jalr, .beq, .bne, .blt, .bge, .bltu, .bgeu,
             .lb, .lh, .lw, .ld, .lbu, .lhu, .lwu, .sb, .sh, .sw, .sd,
             .addi, .slti, .sltiu, .xori, .ori, .andi, .slli, .srli, .srai,
             .add, .sub, .sll, .slt, .sltu, .xor, .srl, .sra, .or, .and,
             .addiw, .slliw, .srliw, .sraiw, .addw, .subw, .sllw, .srlw, .sraw,
             .fence, .mul, .mulh, .mulhsu, .mulhu, .mulw,
             .div, .divu, .rem, .remu, .divw, .divuw, .remw, .remuw,
             .add_uw, .sh1add, .sh2add, .sh3add, .sh1add_uw, .sh2add_uw, .sh3add_uw, .slli_uw,
             .andn, .orn, .xnor, .max, .maxu, .min, .minu, .sext_b, .sext_h, .zext_h, .rev8,
             .rol, .ror, .rori, .rolw, .rorw, .roriw, .orc_b,
             .bclr, .bclri, .bext, .bexti, .binv, .binvi, .bset, .bseti:
            return true
        case .clz, .clzw, .ctz, .ctzw, .cpop, .cpopw:
            return hostHasBitCounts
        default:
            return false
        }
    }

    /// lzcnt, tzcnt and popcnt (Linux's strlen/strcmp and ffs use Zbb's orc.b, clz and ctz
    /// once it finds Zbb: 6 M of them in a boot and module load, interpreted until these
    /// were translated).
    static let hostHasBitCounts = clx_cpu_has_bit_counts() != 0

    /// beq, bne, blt, bge, bltu, bgeu: the one kind of `endsBlock` instruction a block may go
    /// past (a loop's early exit, `JITEngine.loopBlockLength`).
    static func isConditionalBranch(_ op: Op) -> Bool {
        op.rawValue &- Op.beq.rawValue <= Op.bgeu.rawValue &- Op.beq.rawValue
    }

    /// Instructions after which a block ends: control transfers, and interpreted
    /// instructions that change privilege, translation, counters' rules or the code itself.
    static func endsBlock(_ op: Op) -> Bool {
        switch op {
        case .jal, .jalr, .beq, .bne, .blt, .bge, .bltu, .bgeu,
             .ecall, .ebreak, .mret, .sret, .wfi, .sfence_vma, .fence_i, .illegal,
             .csrrw, .csrrs, .csrrc, .csrrwi, .csrrsi, .csrrci:
            return true
        default:
            return false
        }
    }

    /// Whether a translated instruction reads rs2 (the decoder fills the field from bits
    /// 24:20 whatever the format).
    static func readsRS2(_ op: Op) -> Bool {
        switch op {
        case .add, .sub, .sll, .slt, .sltu, .xor, .srl, .sra, .or, .and, .addw, .subw, .sllw, .srlw, .sraw,
             .mul, .mulh, .mulhsu, .mulhu, .mulw, .div, .divu, .rem, .remu, .divw, .divuw, .remw, .remuw,
             .sh1add, .sh2add, .sh3add, .sh1add_uw, .sh2add_uw, .sh3add_uw,
             .add_uw, .andn, .orn, .xnor, .max, .maxu, .min, .minu, .rol, .ror, .rolw, .rorw,
             .bclr, .bext, .binv, .bset,
             .beq, .bne, .blt, .bge, .bltu, .bgeu, .sb, .sh, .sw, .sd:
            return true
        default:
            return false
        }
    }

    /// The guest registers (bit i = x_i, x0 left out) a translated instruction reads and
    /// writes.
    static func registerMasks(_ d: DecodedInstruction) -> (reads: UInt32, writes: UInt32) {
        var reads: UInt32 = 0, writes: UInt32 = 0
        switch d.op {
        case .lui, .auipc, .jal, .fence: break
        default: reads |= 1 << UInt32(d.rs1)
        }
        if readsRS2(d.op) { reads |= 1 << UInt32(d.rs2) }
        switch d.op {
        case .beq, .bne, .blt, .bge, .bltu, .bgeu, .sb, .sh, .sw, .sd, .fence: break
        default: writes |= 1 << UInt32(d.rd)
        }
        return (reads & ~1, writes & ~1)
    }

    // MARK: - Emission

    private var a: X86Assembler
    /// The block's length, taken from the budget on entry, and the index of the instruction
    /// being emitted: an exit at it gives back `count - index` (it and those after it).
    private var count: Int32 = 0
    private var index: Int32 = 0
    private var unretired: Int32 { count - index }
    private let blockPC: UInt64
    /// The virtual page of the block: exits to it may be chained.
    private let page: UInt64
    /// Out-of-line TLB-miss paths, emitted after the block's straight-line code.
    private struct SlowPath {
        var label: Label
        let thunk: UInt
        let pc: UInt64
        let info: UInt64
        let unretired: Int32
        let done: Label
        /// Dirty cached registers where the fast path branched off: written back first.
        let dirty: CacheState
        /// For a load: the guest register the helper writes, and the slot that holds it
        /// after the fast path (reloaded from memory before going back).
        let reload: (guest: UInt8, slot: Int)?
        /// For an instruction the interpreter finishes (the F/D fallback): its decoded slot,
        /// passed in rax; the helper gives back the budget itself when it leaves.
        var interpretedSlot: UInt64? = nil
        /// MXCSR (the D extension): flags the fast path had not accrued yet where it
        /// branched off (accrued before the helper runs: it may trap, and the handler may
        /// read fflags), and whether the fast path reaches `done` with MXCSR clean (then
        /// cleaned again after the helper, whose host code may have raised flags).
        var accrue = false
        var reclean = false
        /// Dropped shifts whose values the helper's trap handler could see
        /// (`unmaterialized` where the fast path branched off): computed first.
        var materialize: [DecodedInstruction] = []
    }
    private var slowPaths: [SlowPath] = []

    /// Shifts `fuseRotations` dropped whose registers have not been written since: their
    /// values are architectural but in no register. The slow paths of loads and stores
    /// emitted meanwhile compute them into `HartState` before their helpers
    /// (`SlowPath.materialize`); nothing else can come between (`onlyReadBy`).
    private var unmaterialized: [DecodedInstruction] = []

    /// Taken paths of conditional branches inside a block, emitted after its straight-line
    /// code: where each goes, and the translator's state where it branched off.
    private struct SideExit {
        let label: Label
        let target: UInt64
        let index: Int32
        let state: BranchState
    }
    private var sideExits: [SideExit] = []

    /// False under `-d nochain`: exits always return to the dispatcher.
    private let chaining: Bool

    /// MXCSR at this point of the block: unknown (host code ran since the block began or
    /// since a helper call), or cleaned by this block, with flags of native D-extension
    /// operations not yet accrued into fflags (`pending`) or none.
    private enum MXCSRState {
        case unknown
        case clean(pending: Bool)
    }
    private var mxcsr = MXCSRState.unknown
    private var mxcsrPending: Bool { if case .clean(pending: true) = mxcsr { true } else { false } }
    private var mxcsrClean: Bool { if case .clean = mxcsr { true } else { false } }
    /// mstatus.FS was found on (not Off) earlier in the block, and set Dirty by it.
    private var fsChecked = false
    private var fsDirty = false
    /// Out-of-line NaN results to canonicalize: where to, and where to come back.
    private var nanFixes: [(fix: Label, back: Label)] = []

    init(origin: UInt, blockPC: UInt64, chaining: Bool, helpers: HelperAddresses) {
        a = X86Assembler(origin: origin)
        page = blockPC >> 12
        self.blockPC = blockPC
        self.chaining = chaining
        self.helpers = helpers
        slowPaths.reserveCapacity(16)
    }

    @inline(__always)
    private func x(_ r: UInt8) -> Mem { Mem(.r15, layout.x + Int32(r) * 8) }
    private var pcField: Mem { Mem(.r15, layout.pc) }

    // MARK: - Guest registers in host registers

    /// Host registers that hold guest registers within a block (JIT.md, "guest registers in
    /// host registers"): the callee-saved ones first, then caller-saved ones that slow paths
    /// save around their helper calls. rax, rcx and rdx stay scratch; r15 is pinned.
    static let pool: [Reg] = [.rbx, .rbp, .r12, .r13, .r14, .r9, .r10, .r11, .rsi, .rdi]
    static let callerSavedPool: [Reg] = [.r9, .r10, .r11, .rsi, .rdi]

    static let poolSize = 10

    /// `HartState.jitBudget` while translated code runs: the trampoline loads it, the
    /// epilogue stores it, and the thunks store it before a helper (which may read or change
    /// it) and load it after. In a register, a block's entry check and charge are two
    /// register operations rather than a load and a read-modify-write of memory that the
    /// next block's entry waits on (perf put 6-8 % of translated code's samples there). A
    /// pool of ten rather than eleven costs sha256 nothing measurable; bare metal, min of 9
    /// interleaved runs: branchy -6 %, mixed -5 %, intbench -5 %.
    static let budget = Reg.r8

    // The translator's own state is kept in fixed-size inline storage, not arrays or
    // dictionaries: translation cost (Benchmarks/jit-riscv64) is part of every boot.

    /// The guest register each pool slot holds (0 = none: x0 is never cached).
    private var slotGuest = InlineArray<10, UInt8>(repeating: 0)
    /// When each slot was last used, for least-recently-used eviction.
    private var slotUse = InlineArray<10, Int>(repeating: 0)
    private var useClock = 0
    /// Guest registers whose cached value is newer than `HartState.x` (bit i = x_i).
    private var dirty: UInt32 = 0
    /// Cached guest registers whose host register holds the right low 32 bits only: the
    /// result of a W instruction (or of and/or/xor on such values), not sign-extended yet.
    /// Each is dirty. A reader that wants 64 bits (`source`), a write-back and the back edge
    /// of a self-loop sign-extend it first; W instructions, narrow stores and bit operations
    /// on 32-bit values read it as it is (`source32`). TCG's optimizer drops the same
    /// extensions; sha256, all W instructions, is much of a Linux boot (its crypto tests) and
    /// of loading a signed module.
    private var lazy: UInt32 = 0
    /// Cached guest registers known to hold a sign-extended 32-bit value (a W instruction's
    /// result, a load of 32 bits or fewer): and/or/xor of two of them is one too.
    private var sext32: UInt32 = 0

    @inline(__always)
    private func slot(of r: UInt8) -> Int? {
        guard r != 0 else { return nil }
        for i in 0..<Self.poolSize where slotGuest[i] == r { return i }
        return nil
    }

    /// The block being translated.
    private var instructions: [Instruction] = []

    /// The guest registers each instruction of the block reads and writes, for looking
    /// ahead when a slot must be freed. An interpreted instruction reads none (the
    /// interpreter reads memory) and writes its rd (its cached copy is dropped). As many
    /// as `maxInstructions`.
    private var readMasks = InlineArray<128, UInt32>(repeating: 0)
    private var writeMasks = InlineArray<128, UInt32>(repeating: 0)

    /// Where each slot's guest register is next read, from the instruction being emitted on
    /// (its own sources count): an index, or Int.max when it is overwritten first, not read
    /// again, or the slot is free. One pass over the rest of the block for all the slots.
    @inline(__always)
    private func nextReads() -> InlineArray<10, Int> {
        var next = InlineArray<10, Int>(repeating: .max)
        var pending: UInt32 = 0
        for i in 0..<Self.poolSize where slotGuest[i] != 0 { pending |= 1 << UInt32(slotGuest[i]) }
        var j = Int(index)
        while pending != 0 && j < Int(count) {
            let read = readMasks[j] & pending
            if read != 0 {
                for i in 0..<Self.poolSize where read & (1 << UInt32(slotGuest[i])) != 0 && slotGuest[i] != 0 { next[i] = j }
            }
            pending &= ~(read | writeMasks[j])
            j += 1
        }
        return next
    }

    /// A slot for guest register `r` (not cached yet): a free one, else the one whose register
    /// is read again last (Belady's choice: the block is known ahead), clean before dirty, least
    /// recently used last; written back first if dirty. The current instruction's sources
    /// are read now, so they are never chosen.
    private mutating func allocate(_ r: UInt8) -> Int {
        var victim = -1
        for i in 0..<Self.poolSize where slotGuest[i] == 0 {
            victim = i
            break
        }
        if victim < 0 {
            victim = evictionVictim()
        }
        spill(victim)
        slotGuest[victim] = r
        return victim
    }

    /// Empties pool slot `i`: its guest register, if any, is written back first when dirty
    /// (sign-extended if lazy).
    private mutating func spill(_ i: Int) {
        let r = slotGuest[i]
        guard r != 0 else { return }
        let bit: UInt32 = 1 << UInt32(r)
        if dirty & bit != 0 {
            if lazy & bit != 0 { a.movsxd(Self.pool[i], Self.pool[i]) }
            a.store(x(r), Self.pool[i])
        }
        uncache(r)
        slotGuest[i] = 0
    }

    /// The slot to free when none is: Belady's choice, as `allocate` says.
    @inline(__always)
    private func evictionVictim() -> Int {
        var victim = 0
        var best = (next: -1, clean: false, age: 0)
        let next = nextReads()
        for i in 0..<Self.poolSize where pinned & (1 << UInt32(slotGuest[i])) == 0 {
            let g = slotGuest[i]
            let candidate = (next: next[i], clean: dirty & (1 << UInt32(g)) == 0, age: -slotUse[i])
            if candidate.next > best.next
                || (candidate.next == best.next && (candidate.clean && !best.clean
                    || (candidate.clean == best.clean && candidate.age > best.age))) {
                best = candidate
                victim = i
            }
        }
        return victim
    }

    private mutating func touch(_ slot: Int) {
        useClock += 1
        slotUse[slot] = useClock
    }

    /// The host register holding guest register `r`, loaded into the cache if it was not
    /// there; nil for x0. Sources are taken before the destination is allocated, so the
    /// destination never evicts them (they are the most recently used).
    private mutating func source(_ r: UInt8) -> Reg? {
        guard let reg = source32(r) else { return nil }
        if lazy & (1 << UInt32(r)) != 0 {
            a.movsxd(reg, reg)
            lazy &= ~(1 << UInt32(r))
            sext32 |= 1 << UInt32(r)
        }
        return reg
    }

    /// As `source`, for a reader of the low 32 bits only: the register may hold a lazy value.
    private mutating func source32(_ r: UInt8) -> Reg? {
        guard r != 0 else { return nil }
        let slot: Int
        if let cached = self.slot(of: r) {
            slot = cached
        } else {
            slot = allocate(r)
            a.load(Self.pool[slot], x(r))
        }
        touch(slot)
        return Self.pool[slot]
    }

    /// The host register that receives guest register `r`'s new value, marked dirty; nil
    /// for x0 (its writes are dropped).
    private mutating func destination(_ r: UInt8) -> Reg? {
        guard r != 0 else { return nil }
        let slot = self.slot(of: r) ?? allocate(r)
        touch(slot)
        written(r)
        return Self.pool[slot]
    }

    /// Guest register `r` has a new value in its host register, 64 bits wide unless the
    /// caller says otherwise (`lazy`, `sext32`).
    private mutating func written(_ r: UInt8) {
        let bit: UInt32 = 1 << UInt32(r)
        constants[r] = nil
        dirty |= bit
        lazy &= ~bit
        sext32 &= ~bit
    }

    /// Guest register `r`, just written, holds a 32-bit value: lazily (only its low 32 bits
    /// right) or sign-extended.
    private mutating func written32(_ r: UInt8, lazy isLazy: Bool) {
        if isLazy { lazy |= 1 << UInt32(r) } else { sext32 |= 1 << UInt32(r) }
    }

    /// Drops what the translator knows of guest register `r`'s cached value (it leaves its
    /// host register, written back if it was dirty).
    private mutating func uncache(_ r: UInt8) {
        let bit: UInt32 = 1 << UInt32(r)
        dirty &= ~bit
        lazy &= ~bit
        sext32 &= ~bit
    }

    /// Whether guest register `r` holds a 32-bit value, sign-extended or lazily (x0 does).
    @inline(__always)
    private func is32(_ r: UInt8) -> Bool {
        r == 0 || (lazy | sext32) & (1 << UInt32(r)) != 0
    }

    /// Guest register `r` into host register `dst` (x0 reads 0).
    private mutating func loadX(_ dst: Reg, _ r: UInt8) {
        if let src = source(r) { a.mov(dst, src) } else { a.mov(dst, imm: 0) }
    }

    /// Guest registers whose value this block knows at translation time (set by lui, auipc
    /// or li earlier in the block): a jalr through one is a direct jump (`auipc`+`jalr`).
    private var constants = Constants()

    struct Constants {
        private var values = InlineArray<32, UInt64>(repeating: 0)
        private var known: UInt32 = 0

        subscript(r: UInt8) -> UInt64? {
            get { known & (1 << UInt32(r)) != 0 ? values[Int(r)] : nil }
            set {
                if let newValue {
                    values[Int(r)] = newValue
                    known |= 1 << UInt32(r)
                } else {
                    known &= ~(1 << UInt32(r))
                }
            }
        }
    }

    /// Host register `src` into guest register `r` (writes to x0 are dropped); the value stays
    /// in a host register until an exit or a helper call writes it back.
    private mutating func storeX(_ r: UInt8, _ src: Reg) {
        if let dst = destination(r) { a.mov(dst, src) }
    }

    /// Which slot holds which guest register and which are dirty, at one point of the
    /// code (where a slow path branches off).
    struct CacheState {
        let slotGuest: InlineArray<10, UInt8>
        let dirty: UInt32
        let lazy: UInt32
    }

    private var cacheState: CacheState { CacheState(slotGuest: slotGuest, dirty: dirty, lazy: lazy) }

    /// All the translator knows of the registers at one point of the straight-line code, for
    /// a branch's paths that are emitted from there one after the other (each exit writes
    /// back and changes what is dirty, lazy and extended).
    private struct BranchState {
        let cache: CacheState
        let sext32: UInt32
        let mxcsr: MXCSRState
    }

    private var branchState: BranchState {
        get { BranchState(cache: cacheState, sext32: sext32, mxcsr: mxcsr) }
        set { (slotGuest, dirty, lazy, sext32, mxcsr) = (newValue.cache.slotGuest, newValue.cache.dirty, newValue.cache.lazy,
                                                         newValue.sext32, newValue.mxcsr) }
    }

    /// Stores the dirty registers of `state` back to `HartState.x`, sign-extending the lazy
    /// ones first (in place: their low 32 bits stay right for any path that goes on).
    private mutating func writeBack(_ state: CacheState) {
        for i in 0..<Self.poolSize {
            let r = state.slotGuest[i]
            guard r != 0 && state.dirty & (1 << UInt32(r)) != 0 else { continue }
            if state.lazy & (1 << UInt32(r)) != 0 { a.movsxd(Self.pool[i], Self.pool[i]) }
            a.store(x(r), Self.pool[i])
        }
    }

    /// Writes every dirty guest register back to `HartState.x`; they stay cached.
    private mutating func writeBack() {
        writeBack(cacheState)
        sext32 |= lazy
        dirty = 0
        lazy = 0
    }

    /// Sign-extends every lazy register in place (where code joins a path that expects
    /// 64-bit values: the header of a self-loop).
    private mutating func widenLazy() {
        for i in 0..<Self.poolSize where slotGuest[i] != 0 && lazy & (1 << UInt32(slotGuest[i])) != 0 {
            a.movsxd(Self.pool[i], Self.pool[i])
        }
        sext32 |= lazy
        lazy = 0
    }

    /// Drops the cached copy of guest register `r`, clean (written back) by now: something
    /// else wrote it in memory.
    private mutating func forget(_ r: UInt8) {
        if let s = slot(of: r) { slotGuest[s] = 0 }
        uncache(r)
        constants[r] = nil
    }

    /// The first half of a constant (lui/auipc, or li's part of a longer sequence): when the
    /// next instruction only finishes it in the same register (`addi r, r, imm`: la, li; or
    /// `jalr r, imm(r)`: call), nothing is emitted: the value is only remembered, and the
    /// next instruction, which cannot trap, writes r. Not in a self-loop block, whose
    /// registers keep fixed host registers.
    private mutating func storeConstantPart(_ r: UInt8, _ value: UInt64) {
        let j = Int(index) + 1
        if r != 0 && loopHeader == nil && j < instructions.count {
            let next = instructions[j].decoded
            if (next.op == .addi || next.op == .jalr) && next.rs1 == r && next.rd == r {
                forget(r)  // its old value is dead: overwritten by the next instruction
                constants[r] = value
                return
            }
        }
        storeConstant(r, value)
    }

    /// Guest register `r` = `value`, known from here on in the block.
    private mutating func storeConstant(_ r: UInt8, _ value: UInt64) {
        guard let dst = destination(r) else { return }
        a.mov(dst, imm: value)
        constants[r] = value
        if Int64(bitPattern: value) == Int64(Int32(truncatingIfNeeded: value)) { written32(r, lazy: false) }
    }

    /// Leaving before the instruction at `index` retired: gives its budget back, and that of
    /// the instructions after it, so that only retired instructions are counted.
    private mutating func giveBackBudget(_ amount: Int32) {
        a.alu(.add, Self.budget, imm: amount)
    }

    private mutating func returnStatus(_ status: ExitStatus) {
        a.mov(.rax, imm: status.rawValue)
        a.jmp(absolute: helpers.epilogue)
    }

    // MARK: - Rotations

    /// Rotations as RV64GC code writes them without Zbb: two shifts of one register by
    /// amounts that add up to its width, then the or of the results (xor and add are the
    /// same on their disjoint bits). Each such or becomes `rori`/`roriw` of the shifted
    /// register, and each shift whose result nothing else reads (nor could see: no exit,
    /// memory access or helper before the register is written again) becomes a no-op
    /// (`addi x0, x0, 0`): the two shifts and the or were five host instructions or more,
    /// and two more guest registers held in host registers. sha256 (Linux's, which checks
    /// every module's signature, and the CPU suite's) rotates six times per round; QEMU
    /// translates each shift.
    static func fuseRotations(_ block: [Instruction]) -> (block: [Instruction], fused: Int, dropped: [(index: Int, shift: DecodedInstruction)]) {
        var block = block, fused = 0
        var dropped: [(index: Int, shift: DecodedInstruction)] = []
        // The shift-immediate instruction whose result each guest register holds, while the
        // register it shifted keeps the same value; -1 for none.
        var shiftedBy = InlineArray<32, Int>(repeating: -1)
        var holding: UInt32 = 0  // the registers whose shiftedBy is set
        for j in block.indices {
            let d = block[j].decoded
            if d.op == .or || d.op == .xor || d.op == .add, d.rs1 != 0 && d.rs2 != 0 && d.rs1 != d.rs2,
               case let (p, q) = (shiftedBy[Int(d.rs1)], shiftedBy[Int(d.rs2)]), p >= 0 && q >= 0,
               let rotation = rotation(block[p].decoded, block[q].decoded) {
                let deadP = onlyReadBy(j, shift: p, in: block), deadQ = onlyReadBy(j, shift: q, in: block)
                if deadP || deadQ {
                    var rotate = d
                    (rotate.op, rotate.rs1, rotate.rs2) = (rotation.word ? .roriw : .rori, rotation.source, 0)
                    rotate.imm = Int64(rotation.right)
                    block[j] = Instruction(pc: block[j].pc, decoded: rotate, slot: nil)
                    fused += 1
                    func drop(_ i: Int) {
                        shiftedBy[Int(block[i].decoded.rd)] = -1
                        holding &= ~(1 << UInt32(block[i].decoded.rd))
                        dropped.append((i, block[i].decoded))
                        var nop = block[i].decoded
                        (nop.op, nop.rd, nop.rs1, nop.rs2, nop.imm) = (.addi, 0, 0, 0, 0)
                        block[i] = Instruction(pc: block[i].pc, decoded: nop, slot: nil)
                    }
                    if deadP { drop(p) }
                    if deadQ { drop(q) }
                }
            }
            // What this instruction writes no longer holds a shift's result, and the shifts
            // of what it writes no longer shifted the register's value.
            let w = block[j].decoded
            let writes = isNative(w.op) ? registerMasks(w).writes : 1 << UInt32(w.rd) & ~1
            guard writes != 0 else { continue }
            var each = holding
            while each != 0 {
                let r = each.trailingZeroBitCount
                each &= each - 1
                if writes & (1 << UInt32(r)) != 0 || writes & (1 << UInt32(block[shiftedBy[r]].decoded.rs1)) != 0 {
                    shiftedBy[r] = -1
                    holding &= ~(1 << UInt32(r))
                }
            }
            switch w.op {
            case .slli, .srli, .slliw, .srliw:
                if w.rs1 != 0 && w.rs1 != w.rd {
                    shiftedBy[Int(w.rd)] = j
                    holding |= 1 << UInt32(w.rd)
                }
            default: break
            }
        }
        dropped.sort { $0.index < $1.index }
        return (block, fused, dropped)
    }

    /// The rotation that the or of shifts `p` and `q` (of one register, each by an immediate)
    /// is: of which register, right by how much, in 32 or 64 bits; nil when they are not
    /// one left and one right by amounts that add up to the width.
    private static func rotation(_ p: DecodedInstruction, _ q: DecodedInstruction) -> (source: UInt8, right: Int, word: Bool)? {
        guard p.rs1 == q.rs1 else { return nil }
        let (left, right) = p.op == .slli || p.op == .slliw ? (p, q) : (q, p)
        let word = left.op == .slliw
        guard (left.op == .slli || left.op == .slliw) && right.op == (word ? .srliw : .srli) else { return nil }
        let width: Int64 = word ? 32 : 64
        let l = left.imm & (width - 1), r = right.imm & (width - 1)
        guard l > 0 && r > 0 && l + r == width else { return nil }
        return (left.rs1, Int(r), word)
    }

    /// Whether the result of the shift at `shift` is read by instruction `j` only and is
    /// dead after it: written again at or after `j` before the block ends, with nothing in
    /// between that reads it or could see it. Exits, helpers and whatever else is not integer
    /// arithmetic could; a load or store may too, but only in its slow path (a trap there
    /// sees every register), which computes the shift's value first (`SlowPath.materialize`),
    /// so it may come between while the shifted register still holds what the shift read.
    /// Linux's sha256 interleaves the loads of each round with its rotations.
    private static func onlyReadBy(_ j: Int, shift: Int, in block: [Instruction]) -> Bool {
        let r = block[shift].decoded.rd, source = block[shift].decoded.rs1
        let bit: UInt32 = 1 << UInt32(r)
        var sourceWritten = false
        for k in (shift + 1)..<block.count {
            let d = block[k].decoded
            if !isArithmetic(d.op) {
                guard isLoadOrStore(d.op) && !sourceWritten else { return false }
            }
            let masks = registerMasks(d)
            if k != j && masks.reads & bit != 0 { return false }
            if masks.writes & bit != 0 { return k >= j }
            if masks.writes & (1 << UInt32(source)) != 0 { sourceWritten = true }
        }
        return false
    }

    /// The loads and stores translated with a TLB fast path and a helper behind it.
    static func isLoadOrStore(_ op: Op) -> Bool {
        switch op {
        case .lb, .lh, .lw, .ld, .lbu, .lhu, .lwu, .sb, .sh, .sw, .sd: return true
        default: return false
        }
    }

    /// Natively translated integer arithmetic, which neither leaves the block nor calls out
    /// (loads, stores, branches and jumps do).
    static func isArithmetic(_ op: Op) -> Bool {
        guard isNative(op) else { return false }
        switch op {
        case .jal, .jalr, .beq, .bne, .blt, .bge, .bltu, .bgeu, .fence: return false
        default: return !isLoadOrStore(op)
        }
    }

    /// The guest registers a block that loops to its own start keeps in host registers
    /// across iterations (`pinned`), when every instruction is translated natively (an
    /// interpreted one would flush the cache); nil for any other block. All it uses when they
    /// fit in the pool. Else a set chosen greedily, one register at a time, by the loads and
    /// stores an iteration would make (`spillCost`), as long as each instruction keeps the
    /// slots for its other registers (rs1, rs2 and rd, when distinct and not pinned): Linux's
    /// vli_mult (elliptic-curve arithmetic, which module signatures are checked with) loops
    /// over eleven registers, and stored and reloaded them all at every iteration.
    /// The block's register masks (`readMasks`, `writeMasks`) are set already.
    private func selfLoopRegisters(_ block: [Instruction]) -> UInt32? {
        guard let last = block.last else { return nil }
        let d = last.decoded
        let target = last.pc &+ UInt64(bitPattern: d.imm)
        switch d.op {
        case .beq, .bne, .blt, .bge, .bltu, .bgeu, .jal:
            guard target == block[0].pc else { return nil }
        default:
            return nil
        }
        var masks: [(reads: UInt32, writes: UInt32)] = []
        masks.reserveCapacity(block.count)
        var used: UInt32 = 0
        for (i, insn) in block.enumerated() {
            guard Self.isNative(insn.decoded.op) || Self.isNativeFloat(insn.decoded) else { return nil }
            masks.append((readMasks[i], writeMasks[i]))
            used |= readMasks[i] | writeMasks[i]
        }
        if used.nonzeroBitCount <= Self.pool.count { return used }
        // nextRead[i * 32 + r]: where x_r is next read from instruction i on (i itself
        // included), Int.max when it is written first or not read again.
        var nextRead = [Int](repeating: .max, count: (masks.count + 1) * 32)
        for i in masks.indices.reversed() {
            for r in 1..<32 {
                let bit: UInt32 = 1 << UInt32(r)
                nextRead[i * 32 + r] = masks[i].reads & bit != 0 ? i : masks[i].writes & bit != 0 ? .max : nextRead[(i + 1) * 32 + r]
            }
        }
        var pinned: UInt32 = 0
        var cost = Self.spillCost(masks, nextRead: nextRead, pinned: pinned)
        while true {
            var best: (pinned: UInt32, cost: Int)?
            for r in 1..<32 where used & ~pinned & (1 << UInt32(r)) != 0 {
                let candidate = pinned | 1 << UInt32(r)
                let free = Self.pool.count - candidate.nonzeroBitCount
                guard masks.allSatisfy({ (($0.reads | $0.writes) & ~candidate).nonzeroBitCount <= free }) else { continue }
                let c = Self.spillCost(masks, nextRead: nextRead, pinned: candidate)
                if c < best?.cost ?? cost { best = (candidate, c) }
            }
            guard let best else { return pinned }
            (pinned, cost) = (best.pinned, best.cost)
        }
    }

    /// The loads and stores of guest registers one iteration of a self-loop makes outside
    /// the `pinned` registers (its instructions' register `masks`, and where each register
    /// is read next, `nextRead`), the others sharing the rest of the pool as `allocate`
    /// shares it: a read of one not cached loads it, a slot for one evicts the register read
    /// again last (storing it if it was written), and the back edge stores what is written
    /// and still cached.
    static func spillCost(_ masks: [(reads: UInt32, writes: UInt32)], nextRead: [Int], pinned: UInt32) -> Int {
        let slots = pool.count - pinned.nonzeroBitCount
        var cached: UInt32 = 0, dirty: UInt32 = 0, cost = 0
        for (i, m) in masks.enumerated() {
            let reads = m.reads & ~pinned, writes = m.writes & ~pinned
            var missing = (reads | writes) & ~cached
            while missing != 0 {
                let bit: UInt32 = 1 << UInt32(missing.trailingZeroBitCount)
                missing &= ~bit
                if reads & bit != 0 { cost += 1 }
                if cached.nonzeroBitCount == slots {
                    // Belady's victim: read again last (or never), not one of this instruction's.
                    var victim: UInt32 = 0, furthest = -1
                    var candidates = cached & ~(reads | writes)
                    while candidates != 0 {
                        let v: UInt32 = 1 << UInt32(candidates.trailingZeroBitCount)
                        candidates &= ~v
                        let distance = nextRead[(i + 1) * 32 + v.trailingZeroBitCount]
                        if distance > furthest { (victim, furthest) = (v, distance) }
                    }
                    if dirty & victim != 0 { cost += 1 }
                    cached &= ~victim
                    dirty &= ~victim
                }
                cached |= bit
            }
            dirty |= writes
        }
        return cost + dirty.nonzeroBitCount
    }

    /// The guest registers a self-loop keeps in host registers across iterations
    /// (`selfLoopRegisters`): never evicted, in the slots the header loaded them into. The
    /// back edge writes back and drops every other cached register, so that each iteration
    /// starts with the header's cache.
    private var pinned: UInt32 = 0

    /// Set for a self-loop block (`selfLoopRegisters`): where its back edge goes.
    private var loopHeader: Label?

    /// Leaves the block for guest pc `target`: chained later if it is on this page.
    private mutating func exit(to target: UInt64) {
        accrueFloatFlags()
        if let loopHeader, target == blockPC {
            // The back edge of a self-loop: pinned registers stay where the header expects
            // them, 64 bits wide, and the others leave the cache, as the header has it; the
            // budget is checked as a block entry would.
            for i in 0..<Self.poolSize where pinned & (1 << UInt32(slotGuest[i])) == 0 { spill(i) }
            widenLazy()
            let leave = a.newLabel()
            a.test(Self.budget, Self.budget)
            a.jcc(.le, leave)
            a.jmp(loopHeader)
            a.bind(leave)
            writeBack()
            a.mov(.rax, imm: target)
            a.store(pcField, .rax)
            return returnStatus(.budget)
        }
        writeBack()
        if chaining && target >> 12 == page {
            // A jmp the dispatcher patches to the target's block; until then it lands on the
            // stub after it, which sets pc and returns the jmp's own address. A chained jump
            // skips the stub: the next block passes its own pcs to helpers and sets pc
            // wherever it leaves.
            let site = a.jmpPatchable()
            a.mov(.rax, imm: target)
            a.store(pcField, .rax)
            a.movabs(.rax, imm: UInt64(a.origin) + UInt64(site))
            a.jmp(absolute: helpers.epilogue)
        } else {
            a.mov(.rax, imm: target)
            a.store(pcField, .rax)
            emitLookupAndJump()
        }
    }

    /// With the target pc in rax (and in `pc`): finds its block through the execute TLB and
    /// the jump cache, as the dispatcher would, and jumps straight into it; anything
    /// missing (TLB entry, translation) returns to the dispatcher. QEMU's lookup_and_goto_ptr.
    private mutating func emitLookupAndJump() {
        guard chaining else { return returnStatus(.jump) }
        let miss = a.newLabel()
        let tlbBase = layout.tlb + Int32(AccessType.execute.rawValue * Hart.tlbSize) * layout.tlbStride
        a.mov(.rcx, .rax)
        a.shift(.shr, .rcx, imm: 12)
        a.mov(.rdx, .rcx, w: false)
        a.alu(.and, .rdx, imm: Int32(Hart.tlbSize - 1), w: false)
        a.shift(.shl, .rcx, imm: 2)
        a.alu(.or, .rcx, Mem(.r15, layout.fetchKey))
        // rdx = index * 2: entries of 16 bytes (scale 8), physical pages of 8 (scale 4).
        precondition(layout.tlbStride == 16)
        a.alu(.add, .rdx, .rdx, w: false)
        a.alu(.cmp, .rcx, Mem(.r15, index: .rdx, scale: 8, tlbBase + layout.tlbTag))
        a.jcc(.ne, miss)
        // rcx = physical pc = the entry's physical page | the page offset.
        let physicalBase = layout.tlbPhysicalPages + Int32(AccessType.execute.rawValue * Hart.tlbSize * 8)
        a.load(.rcx, Mem(.r15, index: .rdx, scale: 4, physicalBase))
        a.mov(.rdx, .rax, w: false)
        a.alu(.and, .rdx, imm: 0xfff, w: false)
        a.alu(.or, .rcx, .rdx)
        // rsi = &cache[JITEngine.cacheIndex(pc)], 24 bytes an entry.
        a.mov(.rdx, .rax, w: false)
        a.shift(.shr, .rdx, imm: 1, w: false)
        a.alu(.and, .rdx, imm: Int32(JITEngine.cacheSize - 1), w: false)
        a.lea(.rdx, Mem(.rdx, index: .rdx, scale: 2))
        a.mov(.rsi, imm: helpers.jumpCache)
        a.lea(.rsi, Mem(.rsi, index: .rdx, scale: 8))
        a.alu(.cmp, .rax, Mem(.rsi, layout.cacheVirtual))
        a.jcc(.ne, miss)
        a.alu(.cmp, .rcx, Mem(.rsi, layout.cachePhysical))
        a.jcc(.ne, miss)
        a.load(.rsi, Mem(.rsi, layout.cacheCode))
        a.jmp(.rsi)
        a.bind(miss)
        returnStatus(.jump)
    }

    /// Translates `block` (at most `maxInstructions`, all on one page, the first native or
    /// not). The caller places the code at `origin`.
    mutating func translate(_ block: [Instruction]) -> Result {
        let (block, fusedRotations, dropped) = Self.fuseRotations(block)
        var nextDropped = 0
        // Entry: leave if the chunk's budget is spent, else take this block's share of it.
        let spent = a.newLabel()
        count = Int32(block.count)
        instructions = block
        precondition(block.count <= Self.maxInstructions && Self.maxInstructions <= readMasks.count
                     && Self.pool.count == Self.poolSize)
        for (i, insn) in block.enumerated() {
            let d = insn.decoded
            // An interpreted instruction reads guest registers in memory and may write rd.
            let masks: (reads: UInt32, writes: UInt32)
            if Self.isNative(d.op) {
                masks = Self.registerMasks(d)
            } else if Self.isNativeFloat(d) {
                masks = Self.floatRegisterMasks(d)
            } else if Self.isNativeAtomic(d) {
                let reads: UInt32 = 1 << UInt32(d.rs1) | 1 << UInt32(d.rs2)
                masks = (reads & ~1, 1 << UInt32(d.rd) & ~1)
            } else {
                masks = (0, 1 << UInt32(d.rd) & ~1)
            }
            readMasks[i] = masks.reads
            writeMasks[i] = masks.writes
        }
        a.test(Self.budget, Self.budget)
        a.jcc(.le, spent)
        if chaining, let used = selfLoopRegisters(block) {
            // A loop within one block (it ends jumping back to its own start): the guest
            // registers it pins (every one it uses, when they fit) get a host register for the
            // whole block, loaded once here, so the back edge keeps them there (`exit(to:)`)
            // instead of storing and reloading them per iteration. The header assumes dirty
            // whatever the body writes: on the first iteration those hold the values just
            // loaded, so writing them back is harmless.
            var writes: UInt32 = 0
            for r in 1..<32 where used & (1 << UInt32(r)) != 0 { _ = source(UInt8(r)) }
            for i in 0..<block.count { writes |= writeMasks[i] }
            dirty = writes & used
            pinned = used
            // A loop doing FP arithmetic cleans MXCSR once, here: each iteration's back edge
            // accrues its flags (re-accruing them is harmless) and nothing in a loop of native
            // instructions can clear fflags, so every iteration starts clean.
            if block.contains(where: { Self.isNativeFloat($0.decoded) && Self.usesMXCSR($0.decoded.op) }) {
                cleanMXCSR()
                mxcsr = .clean(pending: false)
            }
            loopHeader = a.newLabel()
            a.bind(loopHeader!)
        }
        a.alu(.sub, Self.budget, imm: count)

        for (i, insn) in block.enumerated() {
            index = Int32(i)
            precondition(!Self.endsBlock(insn.decoded.op) || i == block.count - 1 || Self.isConditionalBranch(insn.decoded.op),
                         "an instruction that ends a block inside one")
            if nextDropped < dropped.count && dropped[nextDropped].index == i {
                unmaterialized.append(dropped[nextDropped].shift)
                nextDropped += 1
            }
            emit(insn)
            if !unmaterialized.isEmpty {
                let writes = writeMasks[i]
                unmaterialized.removeAll { writes & (1 << UInt32($0.rd)) != 0 }
            }
        }
        if let last = block.last, !Self.endsBlock(last.decoded.op) {
            exit(to: last.pc &+ UInt64(last.decoded.length))
        }
        for side in sideExits {
            // The state where the branch was taken; what the block had not run yet goes
            // back to the budget (on a self-loop's back edge too: the header takes the
            // whole block's length again).
            a.bind(side.label)
            branchState = side.state
            index = side.index + 1
            if unretired > 0 { giveBackBudget(unretired) }
            exit(to: side.target)
        }

        // A chained jump into this block did not set pc.
        a.bind(spent)
        a.mov(.rax, imm: blockPC)
        a.store(pcField, .rax)
        returnStatus(.budget)
        for path in slowPaths {
            a.bind(path.label)
            callSlowPath(path)
        }
        for (fix, back) in nanFixes {
            // RISC-V's NaN results are always the canonical NaN (Unprivileged §11.3); x86
            // gives the default NaN (sign set) or propagates an operand's payload.
            a.bind(fix)
            a.mov(.rcx, imm: 0x7ff8_0000_0000_0000)
            a.movq(.xmm0, .rcx)
            a.jmp(back)
        }
        return Result(code: a.finish(), instructions: block.count, fusedRotations: fusedRotations)
    }

    private mutating func emit(_ insn: Instruction) {
        let d = insn.decoded
        if !Self.isNative(d.op) {
            if Self.isNativeFloat(d) {
                emitFloat(insn)
            } else if Self.isNativeAtomic(d) {
                emitAtomic(insn)
            } else {
                emitInterpreted(insn)
            }
            return
        }
        let imm = d.imm
        let next = insn.pc &+ UInt64(d.length)
        switch d.op {
        case .lui:
            storeConstantPart(d.rd, UInt64(bitPattern: imm))
        case .auipc:
            storeConstantPart(d.rd, insn.pc &+ UInt64(bitPattern: imm))
        case .addi where d.rs1 == 0 || constants[d.rs1] != nil:
            // li, or an address built by lui/auipc + addi: still a constant.
            storeConstantPart(d.rd, (d.rs1 == 0 ? 0 : constants[d.rs1]!) &+ UInt64(bitPattern: imm))
        case .jal:
            storeConstant(d.rd, next)
            exit(to: insn.pc &+ UInt64(bitPattern: imm))
        case .jalr where d.rs1 == 0 || constants[d.rs1] != nil:
            // A jump to an address known here (auipc+jalr: calls and tail calls): direct, so
            // chained like jal when it stays on this page.
            let target = ((d.rs1 == 0 ? 0 : constants[d.rs1]!) &+ UInt64(bitPattern: imm)) & ~1
            if d.rd != 0 { storeConstant(d.rd, next) }
            exit(to: target)
        case .jalr:
            accrueFloatFlags()
            loadX(.rax, d.rs1)
            if imm != 0 { a.alu(.add, .rax, imm: Int32(imm)) }
            a.alu(.and, .rax, imm: -2)
            storeConstant(d.rd, next)
            writeBack()
            a.store(pcField, .rax)
            emitLookupAndJump()
        case .beq, .bne, .blt, .bge, .bltu, .bgeu:
            let lhs = source(d.rs1), rhs = source(d.rs2)
            switch (lhs, rhs) {
            case let (l?, r?): a.alu(.cmp, l, r)
            case let (l?, nil): a.test(l, l)  // against x0: the flags of l - 0
            case let (nil, r?):
                a.mov(.rax, imm: 0)
                a.alu(.cmp, .rax, r)
            case (nil, nil): a.alu(.cmp, .rax, .rax)
            }
            let cond: Cond
            switch d.op {
            case .beq: cond = .e
            case .bne: cond = .ne
            case .blt: cond = .l
            case .bge: cond = .ge
            case .bltu: cond = .b
            default: cond = .ae
            }
            let taken = a.newLabel()
            a.jcc(cond, taken)
            if Int(index) < instructions.count - 1 {
                // A loop's early exit, inside the block (`JITEngine.loopBlockLength`): the
                // taken path leaves out of line, from the state here; the block goes on.
                sideExits.append(SideExit(label: taken, target: insn.pc &+ UInt64(bitPattern: imm), index: index,
                                          state: branchState))
                return
            }
            // Each exit writes back what is dirty on its own path (stores keep no flags to
            // care about: the jcc is already taken or not).
            let atBranch = branchState
            exit(to: next)
            branchState = atBranch
            a.bind(taken)
            exit(to: insn.pc &+ UInt64(bitPattern: imm))
        case .lb, .lh, .lw, .ld, .lbu, .lhu, .lwu:
            emitLoad(insn)
        case .sb, .sh, .sw, .sd:
            emitStore(insn)
        case .fence:
            a.mfence()
        default:
            emitALU(d)
        }
    }

    /// The common register-register and register-immediate forms, emitted two-operand on the
    /// cached registers themselves (`op rd, rs2` after `mov rd, rs1`, or `lea`); false for the
    /// others, which `emitALU` stages through rax and rcx.
    private mutating func emitALUInPlace(_ d: DecodedInstruction) -> Bool {
        let imm32 = Int32(truncatingIfNeeded: d.imm)
        if emitWithMemoryOperand(d) { return true }
        switch d.op {
        case .slt, .sltu, .slti, .sltiu:
            // The comparison on the cached registers themselves and its flag into rd (cmp,
            // setcc, movzx), not through rax and rcx: sltu after add is how multi-word
            // arithmetic carries (Linux's vli_* and mpihelp_*, which check module signatures).
            let signed = d.op == .slt || d.op == .slti
            let immediate = d.op == .slti || d.op == .sltiu
            let lhs = source(d.rs1), rhs = immediate ? nil : source(d.rs2)
            guard let rd = destination(d.rd) else { return true }
            switch (lhs, rhs) {
            case (let l?, _) where immediate: a.alu(.cmp, l, imm: imm32)
            case let (l?, r?): a.alu(.cmp, l, r)
            case (let l?, nil): a.alu(.cmp, l, imm: 0)
            case (nil, let r?):
                // 0 < rs2: snez (sltu) or rs2 > 0 (slt).
                a.test(r, r)
                a.set(signed ? .g : .ne, rd)
                written32(d.rd, lazy: false)
                return true
            case (nil, nil):
                a.mov(rd, imm: immediate && (signed ? 0 < imm32 : imm32 != 0) ? 1 : 0)
                written32(d.rd, lazy: false)
                return true
            }
            a.set(signed ? .l : .b, rd)
            written32(d.rd, lazy: false)
        case .add, .sub, .and, .or, .xor, .mul, .addw, .subw, .mulw:
            let wide = d.op != .addw && d.op != .subw && d.op != .mulw
            // W instructions read 32 bits; and/or/xor of two 32-bit values (lazy or not) is
            // one, its low 32 bits those of the operation on the low 32 bits.
            let bitwise = d.op == .and || d.op == .or || d.op == .xor
            let narrow = !wide || (bitwise && is32(d.rs1) && is32(d.rs2))
            let resultLazy = !wide || (lazy & (1 << UInt32(d.rs1) | 1 << UInt32(d.rs2))) & ~1 != 0
            let sources = narrow ? (source32(d.rs1), source32(d.rs2)) : (source(d.rs1), source(d.rs2))
            guard let rd = destination(d.rd) else { return true }  // to x0: nothing to do
            defer { if narrow { written32(d.rd, lazy: resultLazy) } }
            guard let s1 = sources.0, let s2 = sources.1 else {
                // An operand is x0: mv (c.mv is add rd, x0, rs2), neg (sub rd, x0, rs2),
                // sext.w-like addw/subw, or a zero.
                switch (d.op, sources.0, sources.1) {
                case (.add, let r?, nil), (.add, nil, let r?), (.or, let r?, nil), (.or, nil, let r?),
                     (.xor, let r?, nil), (.xor, nil, let r?), (.sub, let r?, nil):
                    if rd != r { a.mov(rd, r) }
                case (.addw, let r?, nil), (.addw, nil, let r?), (.subw, let r?, nil):
                    if rd != r { a.mov(rd, r) }
                case (.sub, nil, let r?):
                    if rd != r { a.mov(rd, r) }
                    a.neg(rd)
                case (.subw, nil, let r?):
                    if rd != r { a.mov(rd, r) }
                    a.neg(rd, w: false)
                default:
                    a.mov(rd, imm: 0)  // and/mul by x0, or both operands x0
                }
                return true
            }
            func apply(_ a: inout X86Assembler, _ dst: Reg, _ src: Reg) {
                switch d.op {
                case .add, .addw: a.alu(.add, dst, src, w: wide)
                case .sub, .subw: a.alu(.sub, dst, src, w: wide)
                case .and: a.alu(.and, dst, src)
                case .or: a.alu(.or, dst, src)
                case .xor: a.alu(.xor, dst, src)
                default: a.imul(dst, src, w: wide)
                }
            }
            if rd == s1 {
                apply(&a, rd, s2)
            } else if rd == s2 && d.op != .sub && d.op != .subw {
                apply(&a, rd, s1)  // commutative
            } else if rd == s2 {
                a.mov(.rax, s1)
                apply(&a, .rax, s2)
                a.mov(rd, .rax)
            } else {
                a.mov(rd, s1)
                apply(&a, rd, s2)
            }
        case .addi, .andi, .ori, .xori, .slli, .srli, .srai, .rori, .addiw, .slliw, .srliw, .sraiw, .roriw:
            // As above: W instructions read 32 bits and leave rd lazy; a bit operation with
            // an immediate (a 12-bit sign-extended one: 32-bit) keeps rs1's width.
            let word = Self.isWordImmediate(d.op)
            let narrow = word || ((d.op == .andi || d.op == .ori || d.op == .xori) && is32(d.rs1))
            let resultLazy = word || lazy & (1 << UInt32(d.rs1)) & ~1 != 0
            guard let s1 = narrow ? source32(d.rs1) : source(d.rs1) else { return false }
            guard let rd = destination(d.rd) else { return true }
            defer { if narrow { written32(d.rd, lazy: resultLazy) } }
            switch d.op {
            case .addi where rd == s1:
                if imm32 != 0 { a.alu(.add, rd, imm: imm32) }
            case .addi:
                if imm32 == 0 { a.mov(rd, s1) } else { a.lea(rd, Mem(s1, imm32)) }
            case .addiw where imm32 == 0:
                if rd != s1 { a.mov(rd, s1) }  // sext.w: rd lazy, as every W result
            default:
                if rd != s1 { a.mov(rd, s1) }
                emitImmediateOperation(d, on: rd)
            }
        default:
            return false
        }
        return true
    }

    /// addiw, slliw, srliw, sraiw, roriw: the immediate operations on 32 bits.
    static func isWordImmediate(_ op: Op) -> Bool {
        op == .addiw || op == .slliw || op == .srliw || op == .sraiw || op == .roriw
    }

    /// The immediate operation `d` (addi, andi, ori, xori, slli, srli, srai, rori or a W
    /// form) on host register `reg`, which holds rs1: 32 bits wide for the W forms, whose
    /// result is then lazy (its upper half is not the sign extension).
    private mutating func emitImmediateOperation(_ d: DecodedInstruction, on reg: Reg) {
        let word = Self.isWordImmediate(d.op)
        let imm32 = Int32(truncatingIfNeeded: d.imm)
        let shamt = UInt8(truncatingIfNeeded: d.imm) & (word ? 31 : 63)
        switch d.op {
        case .addi, .addiw: if imm32 != 0 { a.alu(.add, reg, imm: imm32, w: !word) }
        case .andi: a.alu(.and, reg, imm: imm32)
        case .ori: a.alu(.or, reg, imm: imm32)
        case .xori: a.alu(.xor, reg, imm: imm32)
        case .slli, .slliw: a.shift(.shl, reg, imm: shamt, w: !word)
        case .srli, .srliw: a.shift(.shr, reg, imm: shamt, w: !word)
        case .srai, .sraiw: a.shift(.sar, reg, imm: shamt, w: !word)
        case .rori, .roriw: a.shift(.ror, reg, imm: shamt, w: !word)
        default: preconditionFailure("\(d.op) is not an immediate operation")
        }
    }

    /// Whether guest register `r` (not x0) is better read from memory by the instruction
    /// being emitted than loaded into the cache: it is not cached, no slot is free, and every
    /// cached register is read again before `r` is, or `r` never is (Belady's choice with
    /// bypass: `r` would be the next victim). Saves the load of a value read once and the
    /// store or reload of the register it would have evicted.
    private func bypasses(_ r: UInt8) -> Bool {
        guard r != 0 && slot(of: r) == nil else { return false }
        for i in 0..<Self.poolSize where slotGuest[i] == 0 { return false }
        let bit: UInt32 = 1 << UInt32(r)
        var next = Int.max
        for j in (Int(index) + 1)..<Int(count) {
            if readMasks[j] & bit != 0 {
                next = j
                break
            }
            if writeMasks[j] & bit != 0 { break }
        }
        let cached = nextReads()
        for i in 0..<Self.poolSize where cached[i] > next { return false }
        return true
    }

    /// Register-register and immediate arithmetic with one source read from memory, when it
    /// `bypasses` the cache: `op rd, [x(rs)]` after `mov rd, other` (add, sub, and, or, xor
    /// and their W forms), or `mov rd, [x(rs1)]` then the immediate operation. False for
    /// the others, emitted as usual.
    private mutating func emitWithMemoryOperand(_ d: DecodedInstruction) -> Bool {
        guard d.rd != 0 else { return false }
        let kind: ALU
        switch d.op {
        case .add, .addw: kind = .add
        case .sub, .subw: kind = .sub
        case .and: kind = .and
        case .or: kind = .or
        case .xor: kind = .xor
        case .addi, .andi, .ori, .xori, .slli, .srli, .srai, .rori, .addiw, .slliw, .srliw, .sraiw, .roriw:
            guard d.rs1 != d.rd && bypasses(d.rs1), let rd = destination(d.rd) else { return false }
            a.load(rd, x(d.rs1))
            if Self.isWordImmediate(d.op) { written32(d.rd, lazy: true) }
            emitImmediateOperation(d, on: rd)
            return true
        default:
            return false
        }
        // Register-register: the other operand in a register (x0 forms go the usual way).
        guard d.rs1 != 0 && d.rs2 != 0 && d.rs1 != d.rs2 else { return false }
        let word = d.op == .addw || d.op == .subw
        let operands: (kept: UInt8, memory: UInt8)
        if d.rs2 != d.rd && bypasses(d.rs2) {
            operands = (d.rs1, d.rs2)
        } else if kind != .sub && d.rs1 != d.rd && bypasses(d.rs1) {
            operands = (d.rs2, d.rs1)
        } else {
            return false
        }
        guard let kept = word ? source32(operands.kept) : source(operands.kept), let rd = destination(d.rd) else { return false }
        if rd != kept { a.mov(rd, kept) }
        a.alu(kind, rd, x(operands.memory), w: !word)
        if word { written32(d.rd, lazy: true) }
        return true
    }

    /// Register-to-register and immediate arithmetic: result in rax, then into rd.
    private mutating func emitALU(_ d: DecodedInstruction) {
        if emitALUInPlace(d) { return }
        let imm32 = Int32(truncatingIfNeeded: d.imm)
        let shamt = UInt8(truncatingIfNeeded: d.imm)
        // Sources: rax = rs1, rcx = rs2 (only for the R-type forms).
        loadX(.rax, d.rs1)
        if Self.readsRS2(d.op) { loadX(.rcx, d.rs2) }
        switch d.op {
        case .addi: if imm32 != 0 { a.alu(.add, .rax, imm: imm32) }
        case .add where d.rs1 == 0, .or where d.rs1 == 0: a.mov(.rax, .rcx)  // mv (c.mv is add rd, x0, rs2)
        case .xori: a.alu(.xor, .rax, imm: imm32)
        case .ori: a.alu(.or, .rax, imm: imm32)
        case .andi: a.alu(.and, .rax, imm: imm32)
        case .slli: a.shift(.shl, .rax, imm: shamt & 63)
        case .srli: a.shift(.shr, .rax, imm: shamt & 63)
        case .srai: a.shift(.sar, .rax, imm: shamt & 63)
        case .add: a.alu(.add, .rax, .rcx)
        case .sub: a.alu(.sub, .rax, .rcx)
        case .xor: a.alu(.xor, .rax, .rcx)
        case .or: a.alu(.or, .rax, .rcx)
        case .and: a.alu(.and, .rax, .rcx)
        case .sll: a.shiftByCL(.shl, .rax)
        case .srl: a.shiftByCL(.shr, .rax)
        case .sra: a.shiftByCL(.sar, .rax)
        case .addiw:
            a.alu(.add, .rax, imm: imm32, w: false)
            a.movsxd(.rax, .rax)
        case .slliw:
            a.shift(.shl, .rax, imm: shamt & 31, w: false)
            a.movsxd(.rax, .rax)
        case .srliw:
            a.shift(.shr, .rax, imm: shamt & 31, w: false)
            a.movsxd(.rax, .rax)
        case .sraiw:
            a.shift(.sar, .rax, imm: shamt & 31, w: false)
            a.movsxd(.rax, .rax)
        case .addw:
            a.alu(.add, .rax, .rcx, w: false)
            a.movsxd(.rax, .rax)
        case .subw:
            a.alu(.sub, .rax, .rcx, w: false)
            a.movsxd(.rax, .rax)
        case .sllw:
            a.shiftByCL(.shl, .rax, w: false)
            a.movsxd(.rax, .rax)
        case .srlw:
            a.shiftByCL(.shr, .rax, w: false)
            a.movsxd(.rax, .rax)
        case .sraw:
            a.shiftByCL(.sar, .rax, w: false)
            a.movsxd(.rax, .rax)
        case .mul: a.imul(.rax, .rcx)
        case .mulw:
            a.imul(.rax, .rcx, w: false)
            a.movsxd(.rax, .rax)
        case .mulh:
            a.mulWide(.rcx, signed: true)
            a.mov(.rax, .rdx)
        case .mulhu:
            a.mulWide(.rcx, signed: false)
            a.mov(.rax, .rdx)
        case .mulhsu:
            // high(a_signed * b_unsigned) = high(a_unsigned * b) - (a < 0 ? b : 0); rs1 is
            // still in its cache register after mul (x0: no correction).
            a.mulWide(.rcx, signed: false)
            if let s1 = slot(of: d.rs1) {
                a.mov(.rax, Self.pool[s1])
                a.shift(.sar, .rax, imm: 63)
                a.alu(.and, .rax, .rcx)
                a.alu(.sub, .rdx, .rax)
            }
            a.mov(.rax, .rdx)
        case .div, .divu, .rem, .remu, .divw, .divuw, .remw, .remuw:
            emitDivision(d.op)
        case .add_uw:
            a.mov(.rax, .rax, w: false)
            a.alu(.add, .rax, .rcx)
        case .sh1add, .sh2add, .sh3add:
            a.lea(.rax, Mem(.rcx, index: .rax, scale: d.op == .sh1add ? 2 : d.op == .sh2add ? 4 : 8))
        case .sh1add_uw, .sh2add_uw, .sh3add_uw:
            a.mov(.rax, .rax, w: false)
            a.lea(.rax, Mem(.rcx, index: .rax, scale: d.op == .sh1add_uw ? 2 : d.op == .sh2add_uw ? 4 : 8))
        case .slli_uw:
            a.mov(.rax, .rax, w: false)
            a.shift(.shl, .rax, imm: shamt & 63)
        case .andn:
            a.not(.rcx)
            a.alu(.and, .rax, .rcx)
        case .orn:
            a.not(.rcx)
            a.alu(.or, .rax, .rcx)
        case .xnor:
            a.alu(.xor, .rax, .rcx)
            a.not(.rax)
        case .max, .min, .maxu, .minu:
            a.alu(.cmp, .rax, .rcx)
            // Replace rs1 by rs2 when rs1 is the wrong side.
            a.cmov(d.op == .max ? .l : d.op == .min ? .g : d.op == .maxu ? .b : .a, .rax, .rcx)
        case .sext_b: a.extend(.rax, .rax, bits: 8, signed: true)
        case .sext_h: a.extend(.rax, .rax, bits: 16, signed: true)
        case .zext_h: a.extend(.rax, .rax, bits: 16, signed: false)
        case .rev8: a.bswap(.rax)
        // Each counts 64 (or 32) for zero, as RISC-V's do (Zbb §2.2).
        case .clz: a.count(.lzcnt, .rax, .rax)
        case .clzw: a.count(.lzcnt, .rax, .rax, w: false)
        case .ctz: a.count(.tzcnt, .rax, .rax)
        case .ctzw: a.count(.tzcnt, .rax, .rax, w: false)
        case .cpop: a.count(.popcnt, .rax, .rax)
        case .cpopw: a.count(.popcnt, .rax, .rax, w: false)
        case .orc_b:
            // m (rdx) has a byte's top bit set when the byte is not zero: its low 7 bits plus
            // 0x7f reach 0x80 (and stay below 0x100: nothing carries into the next byte), or
            // its own top bit was set. Then m | (m - (m >> 7)) turns each 0x80 into 0xff
            // (0x80 - 0x01 borrows from no other byte).
            a.mov(.rcx, imm: 0x7f7f_7f7f_7f7f_7f7f)
            a.mov(.rdx, .rax)
            a.alu(.and, .rdx, .rcx)
            a.alu(.add, .rdx, .rcx)
            a.alu(.or, .rdx, .rax)
            a.not(.rcx)
            a.alu(.and, .rdx, .rcx)
            a.mov(.rax, .rdx)
            a.shift(.shr, .rax, imm: 7)
            a.mov(.rcx, .rdx)
            a.alu(.sub, .rcx, .rax)
            a.alu(.or, .rdx, .rcx)
            a.mov(.rax, .rdx)
        case .rol: a.shiftByCL(.rol, .rax)
        case .ror: a.shiftByCL(.ror, .rax)
        case .rori: a.shift(.ror, .rax, imm: shamt & 63)
        case .rolw:
            a.shiftByCL(.rol, .rax, w: false)
            a.movsxd(.rax, .rax)
        case .rorw:
            a.shiftByCL(.ror, .rax, w: false)
            a.movsxd(.rax, .rax)
        case .roriw:
            a.shift(.ror, .rax, imm: shamt & 31, w: false)
            a.movsxd(.rax, .rax)
        case .bclr: a.bitTest(.btr, .rax, .rcx)
        case .bset: a.bitTest(.bts, .rax, .rcx)
        case .binv: a.bitTest(.btc, .rax, .rcx)
        case .bext:
            a.bitTest(.bt, .rax, .rcx)
            a.set(.b, .rax)
        case .bclri: a.bitTest(.btr, .rax, imm: shamt)
        case .bseti: a.bitTest(.bts, .rax, imm: shamt)
        case .binvi: a.bitTest(.btc, .rax, imm: shamt)
        case .bexti:
            a.bitTest(.bt, .rax, imm: shamt)
            a.set(.b, .rax)
        default:
            preconditionFailure("\(d.op) is not translated")
        }
        storeX(d.rd, .rax)
    }

    /// Division and remainder with RISC-V's results where x86's div/idiv would fault (M spec
    /// §7.2, table 7.1): by zero, quotient all ones and remainder the dividend; signed
    /// overflow (MIN / -1), quotient the dividend and remainder 0. rax = rs1, rcx = rs2.
    private mutating func emitDivision(_ op: Op) {
        var wide = true, signed = false, remainder = false
        switch op {
        case .div: signed = true
        case .divu: break
        case .rem: (signed, remainder) = (true, true)
        case .remu: remainder = true
        case .divw: (wide, signed) = (false, true)
        case .divuw: wide = false
        case .remw: (wide, signed, remainder) = (false, true, true)
        default: (wide, remainder) = (false, true)  // remuw
        }
        let byZero = a.newLabel(), done = a.newLabel()
        a.test(.rcx, .rcx, w: wide)
        a.jcc(.e, byZero)
        if signed {
            let divide = a.newLabel()
            a.alu(.cmp, .rcx, imm: -1, w: wide)
            a.jcc(.ne, divide)
            if wide {
                a.mov(.rdx, imm: 1 << 63)
                a.alu(.cmp, .rax, .rdx)
            } else {
                a.alu(.cmp, .rax, imm: Int32.min, w: false)
            }
            a.jcc(.ne, divide)
            if remainder { a.mov(.rax, imm: 0) }  // the quotient is the dividend, already in rax
            a.jmp(done)
            a.bind(divide)
            if wide { a.cqo() } else { a.cdq() }
            a.divide(.rcx, signed: true, w: wide)
        } else {
            a.mov(.rdx, imm: 0)
            a.divide(.rcx, signed: false, w: wide)
        }
        if remainder { a.mov(.rax, .rdx) }
        a.jmp(done)
        a.bind(byZero)
        if !remainder { a.mov(.rax, imm: .max) }  // the remainder is the dividend, in rax
        a.bind(done)
        if !wide { a.movsxd(.rax, .rax) }
    }

    // MARK: - Memory

    /// Size and extension of a load; also used by the TLB-miss helper (`JITEngine.loadSlow`).
    static func loadShape(_ op: Op) -> (size: Int, signed: Bool) {
        switch op {
        case .lb: return (1, true)
        case .lbu: return (1, false)
        case .lh: return (2, true)
        case .lhu: return (2, false)
        case .lw: return (4, true)
        case .lwu: return (4, false)
        default: return (8, false)
        }
    }

    static func storeSize(_ op: Op) -> Int {
        switch op {
        case .sb: return 1
        case .sh: return 2
        case .sw: return 4
        default: return 8
        }
    }

    /// The software-TLB hit path (DESIGN.md §7): rax = vaddr; on a hit rdx = host addend and
    /// execution falls through; a miss, a misaligned address or a page without the right
    /// (RAM, permission) entry jumps to `slow` with rax intact.
    private mutating func emitTLBLookup(access: AccessType, size: Int, slow: Label) {
        let base = layout.tlb + Int32(access.rawValue * Hart.tlbSize) * layout.tlbStride
        // rcx = the tag the entry must hold, `vpn << 2 | key`: the address without its page
        // offset, rotated right by 10, is vpn << 2, and a misaligned address keeps its low
        // bits, which land in bits 54-56, where no tag (vpn < 2^52) has any: it misses, and
        // the slow path does the misaligned access. (QEMU folds alignment into its TLB compare
        // the same way.) Bits 2-11 are the vpn's low bits: rdx = the entry's index * 4.
        precondition(Hart.tlbSize <= 1024)
        a.mov(.rcx, .rax)
        a.alu(.and, .rcx, imm: -4096 | Int32(size - 1))
        a.shift(.ror, .rcx, imm: 10)
        a.mov(.rdx, .rcx, w: false)
        a.alu(.and, .rdx, imm: Int32(Hart.tlbSize - 1) << 2, w: false)
        a.alu(.or, .rcx, Mem(.r15, layout.dataKey))
        // rdx * 4 = index * stride (16: tag and addend; the physical page is elsewhere).
        precondition(layout.tlbStride == 16)
        a.alu(.cmp, .rcx, Mem(.r15, index: .rdx, scale: 4, base + layout.tlbTag))
        a.jcc(.ne, slow)
        a.load(.rdx, Mem(.r15, index: .rdx, scale: 4, base + layout.tlbAddend))
    }

    /// rax = rs1 + imm, the effective address.
    private mutating func emitAddress(_ d: DecodedInstruction) {
        let imm32 = Int32(truncatingIfNeeded: d.imm)
        if let base = source(d.rs1) {
            if imm32 == 0 { a.mov(.rax, base) } else { a.lea(.rax, Mem(base, imm32)) }
        } else {
            a.mov(.rax, imm: UInt64(bitPattern: d.imm))
        }
    }

    // Every register allocation of a load or store happens before its fast path branches
    // off, so both paths meet at `done` with the same cache state.

    /// The slot guest register `r` gets (not marked written yet: if the access traps, its old
    /// value is the architectural one), for an instruction whose slow path writes `r` in
    /// memory, to be reloaded from there; nil for x0.
    private mutating func reserve(_ r: UInt8) -> (guest: UInt8, slot: Int)? {
        guard r != 0 else { return nil }
        let s = slot(of: r) ?? allocate(r)
        touch(s)
        return (r, s)
    }

    private mutating func emitLoad(_ insn: Instruction) {
        let d = insn.decoded
        let (size, signed) = Self.loadShape(d.op)
        let slow = a.newLabel(), done = a.newLabel()
        emitAddress(d)
        // The destination's slot, not marked dirty yet: if the access traps, its old value
        // is the architectural one (the slow path writes back only what was dirty before).
        let reload = reserve(d.rd)
        let target = reload.map { Self.pool[$0.slot] } ?? .rax
        let dirtyAtBranch = cacheState
        emitTLBLookup(access: .read, size: size, slow: slow)
        a.load(target, Mem(.rax, index: .rdx), size: size, signed: signed)
        if d.rd != 0 {
            written(d.rd)
            // 32 bits sign-extended, or fewer bits either way: a 32-bit value.
            if size < 4 || (size == 4 && signed) { written32(d.rd, lazy: false) }
        }
        a.bind(done)
        let info = UInt64(d.op.rawValue) | UInt64(d.rd) << 8
        slowPaths.append(SlowPath(label: slow, thunk: helpers.loadThunk, pc: insn.pc, info: info, unretired: unretired,
                                  done: done, dirty: dirtyAtBranch, reload: reload, accrue: mxcsrPending, reclean: mxcsrClean,
                                  materialize: unmaterialized))
    }

    private mutating func emitStore(_ insn: Instruction) {
        let d = insn.decoded
        let size = Self.storeSize(d.op)
        let slow = a.newLabel(), done = a.newLabel()
        // The value's register first (the address's cannot evict it then); x0 is stored from
        // rcx, free once the TLB lookup is done with it.
        let value = size < 8 ? source32(d.rs2) : source(d.rs2)
        emitAddress(d)
        let dirtyAtBranch = cacheState
        emitTLBLookup(access: .write, size: size, slow: slow)
        if value == nil { a.mov(.rcx, imm: 0) }
        a.store(Mem(.rax, index: .rdx), value ?? .rcx, size: size)
        a.bind(done)
        let info = UInt64(d.op.rawValue) | UInt64(d.rs2) << 8 | UInt64(d.length) << 16
        slowPaths.append(SlowPath(label: slow, thunk: helpers.storeThunk, pc: insn.pc, info: info, unretired: unretired,
                                  done: done, dirty: dirtyAtBranch, reload: nil, accrue: mxcsrPending, reclean: mxcsrClean,
                                  materialize: unmaterialized))
    }

    /// Out of line: writes back the registers that were dirty where the fast path branched
    /// (the helper reads guest registers, a trap handler will), calls the thunk with
    /// vaddr = rax, pc, info; 0 goes back to `done` (a load reloads its destination, which the
    /// helper wrote), anything else (a trap taken, a watchpoint) leaves with the counters of
    /// the instructions before.
    private mutating func callSlowPath(_ path: SlowPath) {
        writeBack(path.dirty)
        // Each dropped shift from its source, which holds what the shift read (`onlyReadBy`)
        // and is in memory now; in rcx (rax holds the access's address).
        for shift in path.materialize {
            a.load(.rcx, x(shift.rs1))
            emitImmediateOperation(shift, on: .rcx)
            if Self.isWordImmediate(shift.op) { a.movsxd(.rcx, .rcx) }
            a.store(x(shift.rd), .rcx)
        }
        if path.accrue { emitAccrual() }
        if let slot = path.interpretedSlot { a.mov(.rax, imm: slot) }
        a.mov(.rdx, imm: path.pc)
        a.mov(.rcx, imm: path.info)
        a.call(absolute: path.thunk)
        a.test(.rax, .rax)
        let failed = a.newLabel()
        a.jcc(.ne, failed)
        if path.reclean { cleanMXCSR() }
        if let (r, slot) = path.reload { a.load(Self.pool[slot], x(r)) }
        a.jmp(path.done)
        a.bind(failed)
        if path.interpretedSlot == nil { giveBackBudget(path.unretired) }
        a.jmp(absolute: helpers.epilogue)
    }

    // MARK: - AMOs

    /// The AMOs translated natively (A extension, Unprivileged §8.4), all but LR/SC, whose
    /// reservation the interpreter keeps. The x0 forms of the compare-and-swap ones (rare)
    /// are left to it too.
    static func isNativeAtomic(_ d: DecodedInstruction) -> Bool {
        switch d.op {
        case .amoswap_w, .amoadd_w, .amoswap_d, .amoadd_d:
            return true
        case .amoxor_w, .amoand_w, .amoor_w, .amomin_w, .amomax_w, .amominu_w, .amomaxu_w,
             .amoxor_d, .amoand_d, .amoor_d, .amomin_d, .amomax_d, .amominu_d, .amomaxu_d:
            return d.rs2 != 0
        default:
            return false
        }
    }

    /// An AMO on a write-TLB hit (a RAM page already counted dirty and holding no code, as
    /// for a store): swap and add are one locked host instruction (xchg, lock xadd), the
    /// others a lock cmpxchg loop. x86's locked instructions are full barriers, as strong as
    /// aq and rl together (RVWMO on TSO). Anything else (a miss, a misaligned address, which
    /// traps) goes to the interpreter, which does the whole instruction.
    private mutating func emitAtomic(_ insn: Instruction) {
        let d = insn.decoded
        guard let slot = insn.slot else { preconditionFailure("AMO without a slot") }
        let word = d.op.rawValue <= Op.amomaxu_w.rawValue  // `Op` lists the .w forms first
        let size = word ? 4 : 8
        let slow = a.newLabel(), done = a.newLabel()
        // Registers first, as for loads: both paths meet at `done` with one cache state.
        let value = word ? source32(d.rs2) : source(d.rs2)
        loadX(.rax, d.rs1)
        let reload = reserve(d.rd)
        let target = reload.map { Self.pool[$0.slot] }
        let atBranch = cacheState, pendingAtBranch = mxcsrPending
        emitTLBLookup(access: .write, size: size, slow: slow)
        a.lea(.rdx, Mem(.rax, index: .rdx))
        let memory = Mem(.rdx)
        switch d.op {
        case .amoswap_w, .amoswap_d, .amoadd_w, .amoadd_d:
            if let value { a.mov(.rcx, value) } else { a.mov(.rcx, imm: 0) }
            if d.op == .amoswap_w || d.op == .amoswap_d {
                a.xchg(memory, .rcx, w: !word)
            } else {
                a.lockXadd(memory, .rcx, w: !word)
            }
        default:
            // rax = the old value, rcx = the new one, until memory still holds the old one.
            guard let value else { preconditionFailure("isNativeAtomic leaves x0 operands to the interpreter") }
            a.load(.rax, memory, size: size, signed: false)
            let retry = a.newLabel()
            a.bind(retry)
            a.mov(.rcx, .rax)
            switch d.op {
            case .amoxor_w, .amoxor_d: a.alu(.xor, .rcx, value, w: !word)
            case .amoand_w, .amoand_d: a.alu(.and, .rcx, value, w: !word)
            case .amoor_w, .amoor_d: a.alu(.or, .rcx, value, w: !word)
            default:
                // min/max: the value when the old one is on its wrong side.
                a.alu(.cmp, .rcx, value, w: !word)
                let cond: Cond
                switch d.op {
                case .amomin_w, .amomin_d: cond = .g
                case .amomax_w, .amomax_d: cond = .l
                case .amominu_w, .amominu_d: cond = .a
                default: cond = .b  // amomaxu
                }
                a.cmov(cond, .rcx, value, w: !word)
            }
            a.lockCmpxchg(memory, .rcx, w: !word)
            a.jcc(.ne, retry)
            a.mov(.rcx, .rax)
        }
        if let target {
            if word { a.movsxd(target, .rcx) } else { a.mov(target, .rcx) }
            written(d.rd)
            if word { written32(d.rd, lazy: false) }
        }
        a.bind(done)
        addInterpreterPath(from: slow, to: done, insn, slot: slot, dirty: atBranch, reload: reload, accrue: pendingAtBranch)
    }

    /// A slow path on which the interpreter does the whole of `insn` (whose decoded slot is
    /// `slot`), then back to `done`. As for loads, FP flags not accrued where the fast path
    /// branched go to fflags first (a trap handler may read them), and MXCSR is cleaned
    /// again afterwards if the fast path reaches `done` with it clean.
    private mutating func addInterpreterPath(from label: Label, to done: Label, _ insn: Instruction,
                                             slot: UnsafePointer<DecodedInstruction>, dirty: CacheState,
                                             reload: (guest: UInt8, slot: Int)?, accrue: Bool) {
        var path = SlowPath(label: label, thunk: helpers.interpretThunk, pc: insn.pc, info: UInt64(unretired), unretired: unretired,
                            done: done, dirty: dirty, reload: reload)
        path.interpretedSlot = UInt64(UInt(bitPattern: slot))
        path.accrue = accrue
        path.reclean = mxcsrClean
        slowPaths.append(path)
    }

    // MARK: - Interpreted instructions

    /// Hands the instruction to the interpreter: `interpret(engine, slot, pc, unretired)`
    /// (the helper gives back the budget of the instructions not run yet and brings the
    /// counters up to date first: the instruction may read them); anything but "next"
    /// leaves with its status.
    private mutating func emitInterpreted(_ insn: Instruction) {
        // The slot's address becomes an immediate: the engine's slot arena keeps it until the
        // next whole flush, which drops this code too.
        guard let slot = insn.slot else { preconditionFailure("interpreted instruction without a slot") }
        // The interpreter reads and writes guest registers in memory: write back what is
        // dirty, and afterwards forget the cached copy of rd, the one integer register an
        // instruction can write (for FP ones rd names an f register: forgetting is harmless).
        // The rest stay cached: the thunk keeps the pool's registers.
        writeBack()
        accrueFloatFlags()
        a.mov(.rax, imm: UInt64(UInt(bitPattern: slot)))
        a.mov(.rdx, imm: insn.pc)
        a.mov(.rcx, imm: UInt64(unretired))
        a.call(absolute: helpers.interpretThunk)
        mxcsr = .unknown
        a.test(.rax, .rax)
        a.jcc(.ne, absolute: helpers.epilogue)
        forget(insn.decoded.rd)
        if Self.endsBlock(insn.decoded.op) {
            // Still on the straight path (a CSR read with no side effect that asked to leave
            // would have left): go on at the next instruction through the dispatcher.
            exit(to: insn.pc &+ UInt64(insn.decoded.length))
        }
    }

    // MARK: - The D extension on SSE2

    /// The double-precision instructions translated natively: loads and stores, moves and
    /// sign injection (bit operations), and add, subtract, multiply, divide and square root
    /// rounded to nearest (rm = RNE, or dynamic with frm checked at run time). SSE2 rounds
    /// these exactly as IEEE 754 requires, detects tininess after rounding as RISC-V does,
    /// and raises the same five exceptions; NaN results are made canonical. The fused
    /// multiply-adds too where the host has FMA3 (a NaN result goes to the interpreter:
    /// RISC-V also raises NV for ∞ × 0 + qNaN). Everything else of F/D (conversions,
    /// compares, min/max, singles) is interpreted.
    static func isNativeFloat(_ d: DecodedInstruction) -> Bool {
        switch d.op {
        case .fld, .fsd, .fsgnj_d, .fsgnjn_d, .fsgnjx_d, .fmv_x_d, .fmv_d_x: return true
        case .fadd_d, .fsub_d, .fmul_d, .fdiv_d, .fsqrt_d: return d.rm == 0 || d.rm == 7
        case .fmadd_d, .fmsub_d, .fnmsub_d, .fnmadd_d: return hostHasFMA && (d.rm == 0 || d.rm == 7)
        default: return false
        }
    }

    static let hostHasFMA = clx_cpu_has_fma() != 0

    /// The natively translated F/D instructions that raise exceptions (through MXCSR).
    static func usesMXCSR(_ op: Op) -> Bool {
        switch op {
        case .fadd_d, .fsub_d, .fmul_d, .fdiv_d, .fsqrt_d, .fmadd_d, .fmsub_d, .fnmsub_d, .fnmadd_d: return true
        default: return false
        }
    }

    /// The integer registers a natively translated F/D instruction reads and writes.
    static func floatRegisterMasks(_ d: DecodedInstruction) -> (reads: UInt32, writes: UInt32) {
        switch d.op {
        case .fld, .fsd, .fmv_d_x: return (1 << UInt32(d.rs1) & ~1, 0)
        case .fmv_x_d: return (0, 1 << UInt32(d.rd) & ~1)
        default: return (0, 0)
        }
    }

    /// RISC-V's fflags for MXCSR's exception flags (bits 0-5: IE DE ZE OE UE PE; DE, a
    /// denormal operand, has no RISC-V counterpart).
    static func riscvFlags(mxcsr: UInt32) -> UInt8 {
        var flags: UInt8 = 0
        if mxcsr & 0x01 != 0 { flags |= 0x10 }  // IE -> NV
        if mxcsr & 0x04 != 0 { flags |= 0x08 }  // ZE -> DZ
        if mxcsr & 0x08 != 0 { flags |= 0x04 }  // OE -> OF
        if mxcsr & 0x10 != 0 { flags |= 0x02 }  // UE -> UF
        if mxcsr & 0x20 != 0 { flags |= 0x01 }  // PE -> NX
        return flags
    }

    @inline(__always)
    private func f(_ r: UInt8) -> Mem { Mem(.r15, layout.f + Int32(r) * 8) }

    /// Loads MXCSR's clean value: no flags, round to nearest (uses rcx).
    private mutating func cleanMXCSR() {
        a.mov(.rcx, imm: helpers.mxcsrClean)
        a.ldmxcsr(Mem(.rcx))
    }

    /// ORs MXCSR's exception flags into fflags (uses rcx and rdx and the red zone below rsp;
    /// keeps rax). MXCSR keeps them: accruing them again is harmless, and MXCSR is cleaned
    /// again before any native operation that follows host code.
    private mutating func emitAccrual() {
        let none = a.newLabel()
        a.stmxcsr(Mem(.rsp, -8))
        a.load(.rcx, Mem(.rsp, -8), size: 4, signed: false)
        a.alu(.and, .rcx, imm: 0x3d, w: false)
        a.jcc(.e, none)
        a.mov(.rdx, imm: helpers.flagTable)
        a.load(.rcx, Mem(.rdx, index: .rcx), size: 1, signed: false)
        a.load(.rdx, Mem(.r15, layout.fflags), size: 1, signed: false)
        a.alu(.or, .rdx, .rcx, w: false)
        a.store(Mem(.r15, layout.fflags), .rdx, size: 1)
        a.bind(none)
    }

    /// Before anything that leaves the block or runs host code: fflags must be current.
    private mutating func accrueFloatFlags() {
        if mxcsrPending {
            emitAccrual()
            mxcsr = .clean(pending: false)
        }
    }

    /// A natively translated F/D instruction. Its slow path is the interpreter, which does
    /// the instruction whole: with FS = Off (an illegal instruction), a dynamic rounding mode
    /// other than RNE, or a TLB miss for loads and stores.
    private mutating func emitFloat(_ insn: Instruction) {
        let d = insn.decoded
        guard let slot = insn.slot else { preconditionFailure("F/D instruction without a slot") }
        let slow = a.newLabel(), done = a.newLabel()
        // Register allocation first, as for loads and stores: both paths meet at `done`
        // with one cache state.
        var value: Reg?
        var reload: (guest: UInt8, slot: Int)?
        switch d.op {
        case .fld, .fsd: emitAddress(d)
        case .fmv_d_x: value = source(d.rs1)
        case .fmv_x_d:
            reload = reserve(d.rd)
        default: break
        }
        let atBranch = cacheState
        let pendingAtBranch = mxcsrPending
        if !fsChecked {
            // FS = Off makes every F/D instruction illegal (Privileged §3.1.6.6).
            a.test32(Mem(.r15, layout.mstatus), imm: UInt32(truncatingIfNeeded: MStatus.fs))
            a.jcc(.e, slow)
            fsChecked = true
        }
        var writesF = true
        switch d.op {
        case .fld:
            emitTLBLookup(access: .read, size: 8, slow: slow)
            a.load(.rcx, Mem(.rax, index: .rdx))
            a.store(f(d.rd), .rcx)
        case .fsd:
            emitTLBLookup(access: .write, size: 8, slow: slow)
            a.load(.rcx, f(d.rs2))
            a.store(Mem(.rax, index: .rdx), .rcx)
            writesF = false
        case .fmv_d_x:
            if let value { a.store(f(d.rd), value) } else { a.store(f(d.rd), imm: 0) }
        case .fmv_x_d:
            writesF = false
            if let (r, s) = reload {
                a.load(Self.pool[s], f(d.rs1))
                written(r)
            }
        case .fsgnj_d, .fsgnjn_d, .fsgnjx_d:
            // rd = rs1 with its sign from rs2, from not rs2, or xored with rs2's.
            a.load(.rax, f(d.rs1))
            a.load(.rcx, f(d.rs2))
            if d.op == .fsgnjn_d { a.not(.rcx) }
            a.shift(.shr, .rcx, imm: 63)
            a.shift(.shl, .rcx, imm: 63)
            if d.op != .fsgnjx_d { a.bitTest(.btr, .rax, imm: 63) }
            a.alu(d.op == .fsgnjx_d ? .xor : .or, .rax, .rcx)
            a.store(f(d.rd), .rax)
        default:
            if d.rm == 7 {
                // Dynamic rounding: native only while frm is RNE (0).
                a.cmp8(Mem(.r15, layout.frm), imm: 0)
                a.jcc(.ne, slow)
            }
            if case .unknown = mxcsr { cleanMXCSR() }
            switch d.op {
            case .fsqrt_d: a.scalarDouble(.sqrt, .xmm0, f(d.rs1))
            case .fmadd_d, .fmsub_d, .fnmsub_d, .fnmadd_d:
                // xmm0 = ±(rs1 × rs2) ± rs3, one rounding. RISC-V's fnmsub is -(a×b)+c, x86's
                // vfnmadd; its fnmadd is -(a×b)-c, x86's vfnmsub.
                a.movsd(.xmm0, f(d.rs3))
                a.movsd(.xmm1, f(d.rs1))
                let kind: FusedMultiplyAdd = d.op == .fmadd_d ? .madd : d.op == .fmsub_d ? .msub : d.op == .fnmsub_d ? .nmadd : .nmsub
                a.fusedMultiplyAdd(kind, .xmm0, .xmm1, f(d.rs2))
                // A NaN result: the interpreter does the instruction again from its sources
                // (rd is not written yet); the flags this try raised are a subset of its own.
                let nanSlow = a.newLabel()
                a.ucomisd(.xmm0, .xmm0)
                a.jcc(.p, nanSlow)
                a.movsd(f(d.rd), .xmm0)
                mxcsr = .clean(pending: true)
                if !fsDirty {
                    a.alu(.or, Mem(.r15, layout.mstatus), imm: Int32(truncatingIfNeeded: MStatus.fs))
                    fsDirty = true
                }
                a.bind(done)
                var path = SlowPath(label: nanSlow, thunk: helpers.interpretThunk, pc: insn.pc, info: UInt64(unretired),
                                    unretired: unretired, done: done, dirty: atBranch, reload: nil)
                path.interpretedSlot = UInt64(UInt(bitPattern: slot))
                path.accrue = true
                path.reclean = true
                slowPaths.append(path)
                path.label = slow
                path.accrue = pendingAtBranch
                slowPaths.append(path)
                return
            default:
                a.movsd(.xmm0, f(d.rs1))
                let kind: ScalarDouble = d.op == .fadd_d ? .add : d.op == .fsub_d ? .sub : d.op == .fmul_d ? .mul : .div
                a.scalarDouble(kind, .xmm0, f(d.rs2))
            }
            let fix = a.newLabel(), back = a.newLabel()
            a.ucomisd(.xmm0, .xmm0)
            a.jcc(.p, fix)
            a.bind(back)
            nanFixes.append((fix, back))
            a.movsd(f(d.rd), .xmm0)
            mxcsr = .clean(pending: true)
        }
        if writesF && !fsDirty {
            a.alu(.or, Mem(.r15, layout.mstatus), imm: Int32(truncatingIfNeeded: MStatus.fs))
            fsDirty = true
        }
        a.bind(done)
        addInterpreterPath(from: slow, to: done, insn, slot: slot, dirty: atBranch, reload: reload, accrue: pendingAtBranch)
    }
}
