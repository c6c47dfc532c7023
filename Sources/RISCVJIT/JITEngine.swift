import Glibc
import GuestMemory
import RISCV
import SystemSupport

/// The dynamic binary translator: an `ExecutionEngine` that runs a hart by translating its
/// code, a block at a time (a basic block, or a loop with early exits), into x86-64 (the
/// speed issue; JIT.md).
///
/// - Blocks are keyed by guest virtual and physical pc (generated code bakes in virtual pcs:
///   `auipc`, links, branch targets), looked up through the hart's own execute TLB, and never
///   cross a page. They do not depend on privilege or MMU mode: loads and stores check the
///   TLB with the current data key at run time, and privileged instructions go to the
///   interpreter, which checks them.
/// - Direct branches and jumps to the same page are chained (a patched `jmp rel32`); every
///   block subtracts its length from `HartState.jitBudget` on entry and leaves when it is
///   spent, so a chained loop still returns within a chunk.
/// - Instructions it does not translate run in the interpreter (`Hart.interpret`), called
///   from generated code, so their semantics are the interpreter's by construction.
/// - Translations are dropped whole when the hart drops decoded code (FENCE.I, a debugger's
///   write, reset: `Hart.codeGeneration`), when the code buffer is full, or its slot arena is.
///
/// Debugger breakpoints/watchpoints and instruction traces hand the run to the interpreter
/// (`Hart.needsInterpreter`).
public final class JITEngine: ExecutionEngine, @unchecked Sendable {
    // SAFETY: an engine is created for one hart and used only by the thread that runs that
    // hart (DESIGN.md §4), like the hart's own state; nothing here is shared.
    public let hart: Hart
    private let buffer: CodeBuffer
    private var helpers: HelperAddresses
    private var enter: EnterFunction

    typealias EnterFunction = @convention(c) (UnsafeMutableRawPointer, UnsafeMutableRawPointer, UnsafeRawPointer) -> UInt64

    /// A translation depends on its virtual pc (baked into links, branch targets, helper
    /// arguments) and its physical pc (the bytes).
    private struct BlockKey: Hashable {
        let virtual: UInt64
        let physical: UInt64
    }
    private var blocks: [BlockKey: UnsafeRawPointer] = [:]
    /// The blocks translated from each physical page, dropped together when FENCE.I finds
    /// the page written (chains only join blocks of one page, so none survives into them).
    private var pageBlocks: [UInt64: [BlockKey]] = [:]

    /// A direct-mapped cache in front of `blocks`, indexed by virtual pc (`cacheIndex`);
    /// generated code looks indirect jumps up in it too (`Translator.emitLookupAndJump`).
    /// 16 Ki entries (384 KiB): with 4 Ki, a Linux boot and four module loads looked up a
    /// million blocks in `blocks` after a miss here, with 16 Ki 465 000. (Mixing the page
    /// number into the index, as QEMU does, missed more: hot code is contiguous.)
    static let cacheSize = 1 << 14
    private let cache: UnsafeMutablePointer<CacheEntry>

    /// The jump-cache entry of virtual pc `pc`; `Translator.emitLookupAndJump` computes the same.
    @inline(__always)
    static func cacheIndex(_ pc: UInt64) -> Int {
        Int((pc >> 1) & UInt64(cacheSize - 1))
    }

    /// Decoded instructions that generated code hands to the interpreter, by address.
    private static let slotCapacity = 1 << 16
    private let slots: UnsafeMutablePointer<DecodedInstruction>
    private var slotsUsed = 0

    /// A chainable exit the last block left through; patched once its target is known.
    private var pendingSite: UnsafeRawPointer?
    /// `Hart.codeGeneration` and `codeResets` as this engine last acted on them.
    private var generation: UInt64
    private var resets: UInt64

    /// Instructions between interrupt checks, each of which reads the host clock for the
    /// timers: 5-15 microseconds of translated code. At 4096, the clock (`clock_gettime`
    /// and the timer update) was 3 % of a bare-metal benchmark's samples; at 16384,
    /// bare-metal sha256, intbench and mixed run 2-3 % faster (min of 11 interleaved runs).
    static let chunk = 16384

    /// Whether this host runs the code the JIT emits.
    public static var hostSupported: Bool {
        #if arch(x86_64)
        return true
        #else
        return false
        #endif
    }

    /// What the translator has done, for `info jit`-style reports and benchmarks.
    public struct Statistics: Sendable {
        /// Blocks and guest instructions translated since the engine started.
        public var blocks = 0
        public var instructions = 0
        /// Host code bytes emitted since the engine started.
        public var emittedBytes = 0
        /// Bytes of the code buffer in use now, and its size.
        public var codeBytes = 0
        public var bufferSize = 0
        public var flushes = 0
        public var chains = 0
        /// Blocks dropped because FENCE.I found their page written.
        public var invalidatedBlocks = 0
        /// Rotations written as two shifts and an or, translated as one rotation
        /// (`Translator.fuseRotations`).
        public var fusedRotations = 0
        /// Time spent translating (decoding, emitting, copying into the buffer), for the
        /// translation cost: guest instructions translated per second.
        public var translationNanoseconds: UInt64 = 0
    }
    public private(set) var statistics = Statistics()

    /// `codeBufferSize`: bytes of host code kept before the buffer is flushed (`tb-size`).
    public init(hart: Hart, codeBufferSize: Int = 128 << 20) throws(SystemError) {
        guard Self.hostSupported else {
            throw .unsupported("the JIT emits x86-64 code and this host is not x86-64; use -accel tcg,jit=off")
        }
        guard codeBufferSize >= 1 << 20 else { throw .configuration("tb-size must be at least 1 MiB") }
        self.hart = hart
        buffer = try CodeBuffer(size: codeBufferSize)
        cache = .allocate(capacity: Self.cacheSize)
        cache.initialize(repeating: CacheEntry(), count: Self.cacheSize)
        slots = .allocate(capacity: Self.slotCapacity)
        generation = hart.codeGeneration
        resets = hart.codeResets
        (enter, helpers) = Self.emitRuntime(into: buffer, cache: cache)
        hart.collectsDroppedCodePages = true
        statistics.bufferSize = buffer.size
    }

    deinit {
        cache.deinitialize(count: Self.cacheSize)
        cache.deallocate()
        slots.deallocate()
    }

    // MARK: - Runtime code

    /// Emits the entry trampoline and the shared epilogue at the start of an empty buffer.
    /// `enter(state, engine, code)` saves the callee-saved registers (SysV), pins r15, pushes
    /// the engine (which also aligns the stack to 16 bytes for helper calls) and jumps to
    /// `code`; every exit jumps to the epilogue with the status in rax.
    private static func emitRuntime(into buffer: CodeBuffer, cache: UnsafeMutablePointer<CacheEntry>) -> (EnterFunction, HelperAddresses) {
        var a = X86Assembler(origin: buffer.nextAddress)
        for r in [Reg.rbx, .rbp, .r12, .r13, .r14, .r15] { a.push(r) }
        a.push(.rsi)
        a.lea(.r15, Mem(.rdi, StateLayout.bias))
        let budget = Mem(.r15, StateLayout.shared.budget)
        a.load(Translator.budget, budget)
        a.jmp(.rdx)
        let epilogueOffset = a.count
        a.store(budget, Translator.budget)
        a.alu(.add, .rsp, imm: 8)
        for r in [Reg.r15, .r14, .r13, .r12, .rbp, .rbx] { a.pop(r) }
        a.ret()
        // The TLB-miss thunks: called (stack 8 off alignment) with vaddr in rax, pc in rdx,
        // info in ecx; save the caller-saved registers of the translator's pool (the stack is
        // aligned again after an odd number of pushes, else after 8 more bytes), call
        // helper(engine, vaddr, pc, info), return its status zero-extended in rax. The engine
        // is where the trampoline pushed it: above the return address and those pushes.
        let pad = Translator.callerSavedPool.count % 2 == 0
        let engineSlot = Int32(8 * Translator.callerSavedPool.count + (pad ? 8 : 0) + 8)
        func thunk(_ helper: UInt64) -> Int {
            let offset = a.count
            for r in Translator.callerSavedPool { a.push(r) }
            if pad { a.alu(.sub, .rsp, imm: 8) }
            a.store(budget, Translator.budget)
            a.load(.rdi, Mem(.rsp, engineSlot))
            a.mov(.rsi, .rax)
            a.mov(.rax, imm: helper)
            a.call(.rax)
            a.load(Translator.budget, budget)
            if pad { a.alu(.add, .rsp, imm: 8) }
            for r in Translator.callerSavedPool.reversed() { a.pop(r) }
            a.mov(.rax, .rax, w: false)
            a.ret()
            return offset
        }
        // The helpers reach the engine through the opaque pointer `run` passes to `enter`; the
        // engine is alive for the whole call (run holds it), so no reference count is taken.
        let loadSlow: @convention(c) (UnsafeMutableRawPointer, UInt64, UInt64, UInt64) -> UInt32 = { engine, vaddr, pc, info in
            Unmanaged<JITEngine>.fromOpaque(engine)._withUnsafeGuaranteedRef { $0.loadSlow(vaddr, pc: pc, info: info) }
        }
        let storeSlow: @convention(c) (UnsafeMutableRawPointer, UInt64, UInt64, UInt64) -> UInt32 = { engine, vaddr, pc, info in
            Unmanaged<JITEngine>.fromOpaque(engine)._withUnsafeGuaranteedRef { $0.storeSlow(vaddr, pc: pc, info: info) }
        }
        let interpret: @convention(c) (UnsafeMutableRawPointer, UnsafeRawPointer, UInt64, Int64) -> UInt32 = { engine, slot, pc, unretired in
            Unmanaged<JITEngine>.fromOpaque(engine)._withUnsafeGuaranteedRef {
                $0.interpret(slot.load(as: DecodedInstruction.self), pc: pc, unretired: unretired)
            }
        }
        let loadThunk = thunk(unsafeBitCast(loadSlow, to: UInt64.self))
        let storeThunk = thunk(unsafeBitCast(storeSlow, to: UInt64.self))
        let interpretThunk = thunk(unsafeBitCast(interpret, to: UInt64.self))
        // Data for the D extension's translation (read through the executable view).
        while a.count % 4 != 0 { a.int3() }
        let mxcsrClean = a.count
        a.data([0x80, 0x1f, 0, 0])  // 0x1f80
        let flagTable = a.count
        a.data((0..<64).map { Translator.riscvFlags(mxcsr: UInt32($0)) })
        let runtime = a.finish()
        guard let start = buffer.append(runtime) else { preconditionFailure("code buffer smaller than its runtime") }
        if PerfMap.isEnabled { PerfMap.record(start: UInt(bitPattern: start), size: runtime.count, name: "jit_runtime") }
        let helpers = HelperAddresses(loadThunk: UInt(bitPattern: start + loadThunk),
                                      storeThunk: UInt(bitPattern: start + storeThunk),
                                      interpretThunk: UInt(bitPattern: start + interpretThunk),
                                      epilogue: UInt(bitPattern: start + epilogueOffset),
                                      mxcsrClean: UInt64(UInt(bitPattern: start + mxcsrClean)),
                                      flagTable: UInt64(UInt(bitPattern: start + flagTable)),
                                      jumpCache: UInt64(UInt(bitPattern: cache)))
        // SAFETY: `start` is the trampoline just emitted, in the buffer's executable view; it
        // follows the SysV convention `EnterFunction` declares (saves and restores every
        // callee-saved register, returns a 64-bit status), checked by every test that runs
        // the JIT. The helpers' addresses are C-convention closures with no context, valid
        // for the whole process.
        return (unsafeBitCast(start, to: EnterFunction.self), helpers)
    }

    /// Drops every translation (the code buffer or the slot arena is full, or the hart reset).
    private func flush() {
        buffer.reset()
        (enter, helpers) = Self.emitRuntime(into: buffer, cache: cache)
        blocks.removeAll(keepingCapacity: true)
        pageBlocks.removeAll(keepingCapacity: true)
        for i in 0..<Self.cacheSize { cache[i] = CacheEntry() }
        slotsUsed = 0
        pendingSite = nil
        _ = hart.takeDroppedCodePages()
        generation = hart.codeGeneration
        resets = hart.codeResets
        statistics.flushes += 1
    }

    /// After FENCE.I: drops the blocks of the pages written since they were translated. Their
    /// host code stays in the buffer, unreachable, until the next whole flush.
    private func dropWrittenPages() {
        if resets != hart.codeResets { return flush() }
        generation = hart.codeGeneration
        for page in hart.takeDroppedCodePages() {
            guard let keys = pageBlocks.removeValue(forKey: page) else { continue }
            for key in keys {
                blocks[key] = nil
                let c = cache + Self.cacheIndex(key.virtual)
                if c.pointee.virtual == key.virtual && c.pointee.physical == key.physical {
                    c.pointee = CacheEntry()
                }
            }
            statistics.invalidatedBlocks += keys.count
        }
        pendingSite = nil
    }

    // MARK: - Dispatcher

    public func run(budget: Int) -> StopReason {
        let s = hart.state
        let context = Unmanaged.passUnretained(self).toOpaque()
        var remaining = budget
        while remaining > 0 {
            if hart.needsInterpreter { return hart.run(budget: remaining) }
            if hart.stopRequestFlag.exchange(false, ordering: .acquiring) { return .stopRequested }
            hart.updateTimerInterrupts()
            if hart.isAsleep() { return .waitingForInterrupt }
            if let irq = hart.interruptToTake() {
                hart.takeTrap(Trap(interrupt: irq), pc: s.pointee.pc)
            }
            if generation != hart.codeGeneration { dropWrittenPages() }
            let chunk = min(remaining, Self.chunk)
            // The last exit's target may no longer be where the hart goes (an interrupt).
            pendingSite = nil
            s.pointee.endChunk = false
            s.pointee.jitBudget = Int64(chunk)
            countedBudget = Int64(chunk)
            // Every way out of the chunk counts what it retired first.
            defer { syncCounters() }
            while s.pointee.jitBudget > 0 && !s.pointee.endChunk {
                let code: UnsafeRawPointer
                switch block(at: s.pointee.pc) {
                case .code(let found): code = found
                case .handled: continue
                case .stop(let reason): return reason
                }
                if let site = pendingSite, chaining {
                    buffer.patchRel32(at: site, to: code)
                    statistics.chains += 1
                    pendingSite = nil
                }
                // SAFETY: `code` is a block of this engine's buffer, translated since the last
                // flush, and `s`, `self` and the TLB outlive the call; generated code touches
                // only them, guest RAM through TLB entries, and the helpers, and returns here.
                let status = enter(UnsafeMutableRawPointer(s), context, code)
                if status >= ExitStatus.firstChainSite {
                    pendingSite = UnsafeRawPointer(bitPattern: UInt(status))
                } else if status == ExitStatus.debugStop.rawValue {
                    return .debugStop
                }
            }
            remaining -= chunk - Int(s.pointee.jitBudget)
            if s.pointee.waiting { return .waitingForInterrupt }
        }
        return .budgetExhausted
    }

    private enum Lookup {
        case code(UnsafeRawPointer)
        /// The dispatcher did the work itself (took a fetch trap, interpreted one instruction).
        case handled
        case stop(StopReason)
    }

    /// The translated block at virtual `pc`, translating it if needed. Instruction fetch
    /// goes through the hart's execute TLB, filled (with its page fault or access fault) by
    /// the same `resolve` the interpreter uses.
    private func block(at pc: UInt64) -> Lookup {
        let s = hart.state
        let vpn = pc >> 12
        let entry = hart.tlb + AccessType.execute.rawValue * Hart.tlbSize + Int(vpn & UInt64(Hart.tlbSize - 1))
        let key = vpn << 2 | s.pointee.fetchKey
        if entry.pointee.tag != key {
            do throws(Trap) {
                let (_, host) = try hart.resolve(pc, size: 2, .execute, key: s.pointee.fetchKey)
                guard host != nil else { throw Trap(.instructionAccessFault, tval: pc) }
            } catch {
                // Charged to the budget like the instruction it stands for: a handler whose own
                // fetch faults (a bad mtvec) traps forever, and the chunk must still end so that
                // stop requests and the budget are seen (the interpreter counts it the same way).
                // It retired nothing.
                chargeUncounted()
                hart.takeTrap(error, pc: pc)
                pendingSite = nil
                return .handled
            }
            // PMP does not treat the whole page alike: no translation, the interpreter
            // checks every fetch.
            guard entry.pointee.tag == key else { return interpretOne() }
        }
        let physical = hart.physicalPage(of: entry).pointee | (pc & (Hart.pageSize - 1))
        let c = cache + Self.cacheIndex(pc)
        if c.pointee.virtual == pc && c.pointee.physical == physical, let code = c.pointee.code {
            return .code(code)
        }
        let blockKey = BlockKey(virtual: pc, physical: physical)
        let code: UnsafeRawPointer
        if let known = blocks[blockKey] {
            code = known
        } else {
            // SAFETY: a TLB entry's addend maps its whole virtual page onto a page of guest RAM
            // (`Hart.resolve` fills entries only for RAM pages), which stays mapped while the
            // board exists; only the page's bytes are read.
            guard let hostPage = UnsafeRawPointer(bitPattern: Int(bitPattern: UInt(pc & ~(Hart.pageSize - 1))) &+ entry.pointee.addend) else {
                return interpretOne()
            }
            let page = physical & ~(Hart.pageSize - 1)
            // Registered before its bytes are read: a write from now on moves its generation.
            hart.registerCodePage(page)
            guard let translated = translate(pc: pc, hostPage: hostPage) else { return interpretOne() }
            code = translated
            blocks[blockKey] = translated
            pageBlocks[page, default: []].append(blockKey)
        }
        c.pointee = CacheEntry(virtual: pc, physical: physical, code: code)
        return .code(code)
    }

    /// Runs one instruction in the interpreter (one that crosses into the next page, or sits
    /// on a page PMP splits).
    private func interpretOne() -> Lookup {
        pendingSite = nil
        syncCounters()
        chargeUncounted()  // the interpreter counts it
        let reason = hart.run(budget: 1)
        return reason == .budgetExhausted ? .handled : .stop(reason)
    }

    // MARK: - Translation

    /// Decodes the block at `pc` (host bytes of its page at `hostPage`) and emits it; nil when
    /// its first instruction cannot be translated here (it continues on the next page).
    private func translate(pc: UInt64, hostPage: UnsafeRawPointer) -> UnsafeRawPointer? {
        for attempt in 0..<2 {
            switch emitBlock(pc: pc, hostPage: hostPage) {
            case .done(let code): return code
            case .untranslatable: return nil
            case .full:
                // Flush and try once more in an empty buffer; a block that does not fit in an
                // empty buffer (never with the sizes allowed) is interpreted.
                if attempt == 0 { flush() }
            }
        }
        return nil
    }

    private enum EmitResult {
        case done(UnsafeRawPointer)
        case untranslatable
        case full
    }

    private func emitBlock(pc: UInt64, hostPage: UnsafeRawPointer) -> EmitResult {
        let started = Self.monotonicNanoseconds()
        defer { statistics.translationNanoseconds &+= Self.monotonicNanoseconds() &- started }
        var decoded: [(pc: UInt64, instruction: DecodedInstruction)] = []
        decoded.reserveCapacity(16)
        var current = pc
        var firstBranch: Int?
        while decoded.count < (firstBranch == nil ? Translator.maxInstructions : Self.loopScan) {
            let offset = Int(current & (Hart.pageSize - 1))
            let low = hostPage.load(fromByteOffset: offset, as: UInt16.self)
            if low & 3 == 3 && offset + 4 > Int(Hart.pageSize) { break }  // its upper half is on the next page
            let d = hart.decoder.decode(low: low) { () -> UInt16 in hostPage.load(fromByteOffset: offset + 2, as: UInt16.self) }
            decoded.append((current, d))
            current &+= UInt64(d.length)
            if Translator.isConditionalBranch(d.op) {
                if firstBranch == nil { firstBranch = decoded.count - 1 }
            } else if Translator.endsBlock(d.op) {
                break
            }
            if current & (Hart.pageSize - 1) == 0 { break }
        }
        // A block ends at its first conditional branch, unless a later one (or a j) goes back
        // to its start: then it is that whole loop, its earlier branches exits from it.
        let length = Self.loopBlockLength(decoded, start: pc) ?? firstBranch.map { $0 + 1 } ?? decoded.count
        var instructions: [Translator.Instruction] = []
        instructions.reserveCapacity(length)
        for (at, d) in decoded.prefix(length) {
            var slot: UnsafePointer<DecodedInstruction>?
            if !Translator.isNative(d.op) {
                guard slotsUsed < Self.slotCapacity else { return .full }
                (slots + slotsUsed).initialize(to: d)
                slot = UnsafePointer(slots + slotsUsed)
                slotsUsed += 1
            }
            instructions.append(Translator.Instruction(pc: at, decoded: d, slot: slot))
        }
        guard !instructions.isEmpty else { return .untranslatable }
        var translator = Translator(origin: buffer.nextAddress, blockPC: pc, chaining: chaining, helpers: helpers)
        let result = translator.translate(instructions)
        guard let code = buffer.append(result.code) else { return .full }
        statistics.blocks += 1
        statistics.instructions += result.instructions
        statistics.fusedRotations += result.fusedRotations
        statistics.emittedBytes += result.code.count
        statistics.codeBytes = buffer.used
        traceTranslation(instructions, code: code, count: result.code.count)
        return .done(code)
    }

    /// Once decoding has met a conditional branch, it stops at this many instructions in all
    /// (or just after that branch, when it is further): a jump back to the block's start
    /// among them makes the block a loop (`loopBlockLength`).
    static let loopScan = 32

    /// The length of the loop that `decoded` (from `start`) is, when one of its
    /// instructions after the first conditional branch jumps back to `start` (a conditional
    /// branch, or a j): up to the last such one. Then the whole loop is one block, which
    /// keeps its registers in host registers across iterations (a self-loop) and leaves at
    /// its other branches; without this, a loop with an early exit (a search, an insertion
    /// sort's inner loop) was two blocks, storing and reloading its registers at each.
    static func loopBlockLength(_ decoded: [(pc: UInt64, instruction: DecodedInstruction)], start: UInt64) -> Int? {
        guard let first = decoded.firstIndex(where: { Translator.isConditionalBranch($0.instruction.op) }) else { return nil }
        for i in stride(from: decoded.count - 1, to: first, by: -1) {
            let (at, d) = decoded[i]
            let loops = Translator.isConditionalBranch(d.op) || (d.op == .jal && d.rd == 0)
            if loops && at &+ UInt64(bitPattern: d.imm) == start { return i + 1 }
        }
        return nil
    }

    /// `-d in_asm` and `-d out_asm`: the guest code of each block once, when it is translated,
    /// and the host code emitted for it (QEMU's layout).
    private func traceTranslation(_ instructions: [Translator.Instruction], code: UnsafeRawPointer, count: Int) {
        if PerfMap.isEnabled, let first = instructions.first {
            PerfMap.record(start: UInt(bitPattern: code), size: count,
                           name: "guest_0x\(String(first.pc, radix: 16))_\(instructions.count)")
        }
        if DebugLog.isEnabled(.instructions) {
            var text = "----------------\nIN: \nPriv: \(hart.state.pointee.privilege.rawValue); Virt: 0\n"
            for insn in instructions { text += Hart.traceLine(insn.decoded, pc: insn.pc) + "\n" }
            DebugLog.log(.instructions, text)
        }
        if DebugLog.isEnabled(.hostCode) {
            let pc = instructions.first?.pc ?? 0
            let lines = HostDisassembler.lines(code, count: count)
            DebugLog.log(.hostCode, "OUT: [guest pc 0x\(String(pc, radix: 16)), size=\(count)]\n" + lines.joined(separator: "\n") + "\n")
        }
    }

    /// `-d nochain`: every block returns to the dispatcher (no chains, no lookups in generated code).
    private var chaining: Bool { !DebugLog.isEnabled(.noChain) }

    private static func monotonicNanoseconds() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) &* 1_000_000_000 &+ UInt64(ts.tv_nsec)
    }

    // MARK: - Counters

    /// `jitBudget` when minstret and mcycle were last brought up to date. Translated code
    /// retires instructions only by lowering the budget (a block takes its length on entry
    /// and gives back what did not retire), so the counters lag by `countedBudget - jitBudget`.
    private var countedBudget: Int64 = 0

    /// Adds the instructions retired since the last call to mcycle and minstret, as
    /// mcountinhibit allows (Privileged §3.1.12; our mcycle counts instructions, one cycle
    /// each, like the interpreter's `retire`). mcountinhibit changes only through an
    /// interpreted instruction, which calls this first, so the bits read here held for all of
    /// them.
    private func syncCounters() {
        let s = hart.state
        let retired = UInt64(bitPattern: countedBudget &- s.pointee.jitBudget)
        countedBudget = s.pointee.jitBudget
        guard retired != 0 else { return }
        if s.pointee.mcountinhibit & 1 == 0 { s.pointee.mcycle &+= retired }
        if s.pointee.mcountinhibit & 4 == 0 { s.pointee.minstret &+= retired }
    }

    /// Charges one instruction to the budget without counting it: a fetch trap (nothing
    /// retired), or one the interpreter runs and counts itself.
    private func chargeUncounted() {
        hart.state.pointee.jitBudget -= 1
        countedBudget -= 1
    }

    // MARK: - Helpers called from generated code

    /// An instruction translated code hands to the interpreter, at index `count - unretired`
    /// of its block: the block took `unretired` for it and those after it from the budget.
    /// Most (FP, atomics, system instructions) are counted like translated ones, by the
    /// budget: if one does not retire, or the block ends after it, the budget of what did not
    /// run goes back. A CSR instruction may read or write the counters or mcountinhibit, so
    /// for it the budget goes back first, what retired before it is counted, and the
    /// interpreter counts it (taking back the rest's share if the block goes on).
    func interpret(_ d: DecodedInstruction, pc: UInt64, unretired: Int64) -> UInt32 {
        let s = hart.state
        switch d.op {
        case .csrrw, .csrrs, .csrrc, .csrrwi, .csrrsi, .csrrci:
            s.pointee.jitBudget += unretired
            syncCounters()
            chargeUncounted()
            let status = hart.interpret(d, pc: pc)
            if case .next = status { s.pointee.jitBudget -= unretired - 1 }
            return status.rawValue
        default:
            let status = hart.interpret(d, pc: pc, retiring: false)
            switch status {
            case .next: break
            case .leave: s.pointee.jitBudget += unretired - 1
            case .trapped, .debugStop: s.pointee.jitBudget += unretired
            }
            return status.rawValue
        }
    }

    /// The TLB-miss path of a translated load (`info` = op | rd << 8): exactly the
    /// interpreter's `loadSlow` (page walk, PMP, MMIO, misaligned, watchpoints).
    func loadSlow(_ vaddr: UInt64, pc: UInt64, info: UInt64) -> UInt32 {
        let s = hart.state
        guard let op = Op(rawValue: UInt8(truncatingIfNeeded: info)) else { preconditionFailure("bad load helper info") }
        let rd = Int((info >> 8) & 31)
        let (size, signed) = Translator.loadShape(op)
        do throws(Trap) {
            var value = try hart.loadSlow(vaddr, size: size, key: s.pointee.dataKey)
            if signed && size < 8 {
                let shift = UInt64(64 - 8 * size)
                value = UInt64(bitPattern: Int64(bitPattern: value << shift) >> shift)
            }
            if rd != 0 { s.pointee.x[rd] = value }
            return 0
        } catch {
            return trapped(error, pc: pc)
        }
    }

    /// The TLB-miss path of a translated store (`info` = op | rs2 << 8 | length << 16).
    func storeSlow(_ vaddr: UInt64, pc: UInt64, info: UInt64) -> UInt32 {
        let s = hart.state
        guard let op = Op(rawValue: UInt8(truncatingIfNeeded: info)) else { preconditionFailure("bad store helper info") }
        let size = Translator.storeSize(op)
        do throws(Trap) {
            try hart.storeSlow(vaddr, s.pointee.x[Int((info >> 8) & 31)], size: size, key: s.pointee.dataKey)
            if s.pointee.endChunk {
                // A device store (`Hart.storeSlow`): leave after it, retired, so that the
                // dispatcher ends the chunk and an interrupt it raised is taken now. The slow
                // path gives back the budget of the store and what follows it: keep the store's.
                s.pointee.pc = pc &+ ((info >> 16) & 0xff)
                s.pointee.jitBudget -= 1
                return UInt32(ExitStatus.leave.rawValue)
            }
            return 0
        } catch {
            return trapped(error, pc: pc)
        }
    }

    /// A helper's access trapped at `pc`: take the trap (or stop for the debugger).
    private func trapped(_ error: Trap, pc: UInt64) -> UInt32 {
        if error.cause == Trap.debugStopCause {
            hart.state.pointee.pc = pc
            return UInt32(ExitStatus.debugStop.rawValue)
        }
        hart.takeTrap(error, pc: pc)
        return UInt32(ExitStatus.trapped.rawValue)
    }
}

/// One entry of the engine's jump cache. Generated code reads it (offsets from
/// `StateLayout`): the virtual and physical pc of a translated block, and its code.
struct CacheEntry {
    var virtual: UInt64 = .max
    var physical: UInt64 = .max
    var code: UnsafeRawPointer?
}
