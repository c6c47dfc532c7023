import DeviceModel
import Synchronization
import SystemSupport

/// The RISC-V Platform-Level Interrupt Controller (RISC-V PLIC specification 1.0.0), with the
/// register layout and parameters of QEMU's `hw/intc/sifive_plic.c` as `hw/riscv/virt.c`
/// configures it: 7 priority levels, 32-bit registers only, contexts numbered in the order the
/// board lists its output lines (on `virt`: context 2h is hart h's machine-mode external
/// interrupt, MEIP, and 2h+1 its supervisor-mode one, SEIP).
///
/// Section names below are the specification's.
///
/// **Interrupt gateways** ("Interrupt Gateways", "Interrupt Flow"). Every source is
/// level-triggered: a device holds its `sourceLine` high while it wants service. The gateway
/// turns the first assertion into a request, which sets the source's pending (IP) bit, and
/// forwards nothing more for that source until the completion message arrives. A claim
/// clears IP and puts the source in service; the completion ends service, and if the line is
/// still high then, the gateway forwards a new request at once (IP set again). A request is
/// never retracted: a line that drops while IP is set leaves IP set, and the handler finds
/// nothing to do (the specification's words). So, per source, IP and "in service" are never
/// both set, and a high line always has one of them set. This is where the device differs
/// from QEMU, whose pending bit follows the line while it is not claimed.
///
/// **Claims and the threshold** ("Interrupt Claim Process", "Priority Thresholds"). A claim
/// returns the enabled pending source of highest priority, lowest ID among equals, whose
/// priority exceeds the context's threshold, as QEMU does. (The specification says a claim
/// is "not affected by the setting of the priority threshold register"; no guest we run
/// claims with a threshold that masks what it claims, and matching QEMU keeps guests that
/// were tested there working.) Priority 0 means "never interrupt": such a source is never
/// claimed. A completion is ignored unless the ID is enabled for the completing context
/// ("Interrupt Completion") and in service; Linux relies on the first rule and briefly
/// enables a masked source to complete it.
///
/// **Outputs.** Context i's line is high while some enabled pending source has a priority
/// above the context's threshold. Levels are recomputed after every change and driven only
/// when they change.
///
/// **Threads.** Devices set source lines from vCPU and I/O threads, vCPU threads access the
/// registers: all state is in one struct behind a `Mutex`. Output levels are computed under
/// the lock and driven after it is released, so a line whose handler reads the PLIC (a hart
/// that claims at once) cannot deadlock.
package final class PLIC: BusDevice, Snapshottable {
    // MARK: Layout (specification "Memory Map"; QEMU virt's VIRT_PLIC_* constants)

    package static let priorityBase: UInt64 = 0x0
    package static let pendingBase: UInt64 = 0x1000
    package static let enableBase: UInt64 = 0x2000
    /// Bytes of enable bits per context: room for 1024 sources.
    package static let enableStride: UInt64 = 0x80
    package static let contextBase: UInt64 = 0x20_0000
    /// Bytes per context's threshold/claim block.
    package static let contextStride: UInt64 = 0x1000
    /// Offsets inside a context's block.
    package static let thresholdOffset: UInt64 = 0
    package static let claimOffset: UInt64 = 4

    /// The largest priority and threshold: 3 bits, 7 levels above "never" (QEMU virt's
    /// VIRT_IRQCHIP_NUM_PRIO_BITS). Both registers are WARL: other bits read as 0.
    package static let maxPriority: UInt32 = 7
    /// Interrupt IDs are 10 bits: sources 0...1023, source 0 does not exist.
    package static let maxSources = 1024
    /// Enable blocks end at 0x1F1FFF: 15872 contexts.
    package static let maxContexts = 15872
    /// QEMU virt's source count (VIRT_IRQCHIP_NUM_SOURCES): source 0 and sources 1...95.
    package static let virtSourceCount = 96
    /// The window QEMU's virt maps at 0xc000000, whatever the hart count:
    /// `windowSize(contexts:)` for its 512 harts × 2 contexts.
    package static let virtWindowSize: UInt64 = 0x60_0000

    /// Device-tree `compatible` strings, most specific first (Linux's irq-sifive-plic and
    /// OpenSBI match either).
    package static let compatible = ["sifive,plic-1.0.0", "riscv,plic0"]

    /// The register window needed for `contexts` contexts: through the last context's block.
    package static func windowSize(contexts: Int) -> UInt64 {
        contextBase + contextStride * UInt64(max(contexts, 0))
    }

    // MARK: State

    /// The snapshot of a PLIC (DESIGN.md §5). Bit arrays are 32-bit words as the registers
    /// show them: bit (n mod 32) of word (n / 32) is source n.
    package struct State: Codable, Sendable, Equatable {
        package static let currentVersion: UInt32 = 1

        package var version: UInt32
        /// Per source, source 0 included (always 0).
        package var priorities: [UInt32]
        /// IP bits: a request forwarded by the gateway and not yet claimed.
        package var pending: [UInt32]
        /// Claimed and not yet completed (the gateway waits for the completion).
        package var inService: [UInt32]
        /// The level each source line was last driven to.
        package var levels: [UInt32]
        /// Per context, its enable words.
        package var enables: [[UInt32]]
        /// Per context.
        package var thresholds: [UInt32]

        package init(
            version: UInt32 = State.currentVersion, priorities: [UInt32], pending: [UInt32], inService: [UInt32],
            levels: [UInt32], enables: [[UInt32]], thresholds: [UInt32]
        ) {
            self.version = version
            self.priorities = priorities
            self.pending = pending
            self.inService = inService
            self.levels = levels
            self.enables = enables
            self.thresholds = thresholds
        }

        /// The reset state of a PLIC with `sources` sources (source 0 included) and
        /// `contexts` contexts: everything 0.
        package init(sources: Int, contexts: Int) {
            let words = PLICCore.wordCount(sources: sources)
            self.init(
                priorities: Array(repeating: 0, count: sources), pending: Array(repeating: 0, count: words),
                inService: Array(repeating: 0, count: words), levels: Array(repeating: 0, count: words),
                enables: Array(repeating: Array(repeating: 0, count: words), count: contexts),
                thresholds: Array(repeating: 0, count: contexts))
        }
    }

    /// A source's input wire: what the board hands a device as its `InterruptLine`.
    package final class SourceLine: InterruptLine {
        package let plic: PLIC
        package let source: Int

        fileprivate init(plic: PLIC, source: Int) {
            self.plic = plic
            self.source = source
        }

        package func set(level: Bool) { plic.setSourceLevel(source, level: level) }
    }

    package let name = "riscv.sifive.plic"
    /// Sources including the non-existent source 0: valid IDs are 1..<sourceCount.
    package let sourceCount: Int
    private let contexts: [any InterruptLine]
    private let core: Mutex<PLICCore>

    /// - Parameters:
    ///   - sources: the number of interrupt sources counting source 0 (QEMU's `num-sources`),
    ///     2...1024. The device tree's `riscv,ndev` is `sourceCount - 1`.
    ///   - contexts: context i's output (a hart's MEIP or SEIP), 1...15872 of them.
    package init(sources: Int = PLIC.virtSourceCount, contexts: [any InterruptLine]) {
        precondition((2...PLIC.maxSources).contains(sources), "PLIC: \(sources) sources is not in 2...\(PLIC.maxSources)")
        precondition((1...PLIC.maxContexts).contains(contexts.count),
                     "PLIC: \(contexts.count) contexts is not in 1...\(PLIC.maxContexts)")
        sourceCount = sources
        self.contexts = contexts
        core = Mutex(PLICCore(sources: sources, contexts: contexts.count))
        // The wires start where `PLICCore.driven` says they are.
        for line in contexts { line.set(level: false) }
    }

    /// The number of contexts (output lines).
    package var contextCount: Int { contexts.count }

    /// The highest source ID: the device tree's `riscv,ndev`.
    package var highestSourceID: Int { sourceCount - 1 }

    /// The window the board should map for this PLIC's contexts (at least; QEMU's virt maps
    /// `virtWindowSize`).
    package var windowSize: UInt64 { PLIC.windowSize(contexts: contexts.count) }

    /// Source `n`'s input wire, 1..<sourceCount. Board wiring: another `n` is a programming error.
    package func sourceLine(_ n: Int) -> any InterruptLine {
        precondition((1..<sourceCount).contains(n), "PLIC: source \(n) is not in 1..<\(sourceCount)")
        return SourceLine(plic: self, source: n)
    }

    /// Drives source `n`'s input (what `sourceLine(n).set(level:)` does). Out-of-range
    /// sources are ignored.
    package func setSourceLevel(_ n: Int, level: Bool) {
        guard (1..<sourceCount).contains(n) else {
            DebugLog.log(.guestErrors, "\(name): interrupt on non-existent source \(n)")
            return
        }
        let changes = core.withLock { c -> [OutputChange] in
            guard c.setLevel(source: n, level: level) else { return [] }
            return c.settle()
        }
        drive(changes)
    }

    // MARK: BusDevice

    package func read(offset: UInt64, size: Int) -> UInt64 {
        guard let register = decode(offset: offset, size: size, write: false) else { return 0 }
        let (value, changes) = core.withLock { c -> (UInt32, [OutputChange]) in
            switch register {
            case .priority(let source):
                return (c.priority[source], [])
            case .pending(let word):
                return (c.pending[word], [])
            case .enable(let context, let word):
                return (c.enable[context * c.words + word], [])
            case .threshold(let context):
                return (c.threshold[context], [])
            case .claim(let context):
                let id = c.claim(context: context)
                return (UInt32(id), id == 0 ? [] : c.settle())
            }
        }
        drive(changes)
        return UInt64(value)
    }

    package func write(offset: UInt64, value: UInt64, size: Int) {
        guard let register = decode(offset: offset, size: size, write: true) else { return }
        let value = UInt32(truncatingIfNeeded: value)
        let changes = core.withLock { c -> [OutputChange] in
            switch register {
            case .priority(let source):
                guard source != 0 else {
                    DebugLog.log(.guestErrors, "\(name): write to the priority of source 0, which does not exist")
                    return []
                }
                // WARL: the unimplemented high bits are dropped (QEMU does the same).
                c.priority[source] = value & PLIC.maxPriority
            case .pending:
                DebugLog.log(.guestErrors, "\(name): write to the read-only pending bits at offset \(plicHex(offset))")
                return []
            case .enable(let context, let word):
                // Bit 0 of word 0 (source 0) and bits of sources past the last are hardwired to 0.
                c.enable[context * c.words + word] = value & c.validMask[word]
            case .threshold(let context):
                c.threshold[context] = value & PLIC.maxPriority
            case .claim(let context):
                guard c.complete(context: context, id: value) else {
                    DebugLog.log(.guestErrors,
                                 "\(name): context \(context) completed ID \(value), which is not enabled for it or not in service")
                    return []
                }
            }
            return c.settle()
        }
        drive(changes)
    }

    private enum Register {
        case priority(source: Int)
        case pending(word: Int)
        case enable(context: Int, word: Int)
        case threshold(context: Int)
        case claim(context: Int)
    }

    /// Maps an access to a register, or logs why nothing is there. Memory Map: "registers ...
    /// have a width of 32-bits", accessed with LW and SW; QEMU rejects other sizes.
    private func decode(offset: UInt64, size: Int, write: Bool) -> Register? {
        let access = write ? "write" : "read"
        guard size == 4, offset % 4 == 0 else {
            DebugLog.log(.guestErrors, "\(name): \(size)-byte \(access) at offset \(plicHex(offset)): registers are 32-bit and aligned")
            return nil
        }
        let words = PLICCore.wordCount(sources: sourceCount)
        let contextCount = UInt64(contexts.count)
        switch offset {
        case PLIC.priorityBase..<PLIC.pendingBase where offset / 4 < UInt64(sourceCount):
            return .priority(source: Int(offset / 4))
        case PLIC.pendingBase..<(PLIC.pendingBase + 4 * UInt64(words)):
            return .pending(word: Int((offset - PLIC.pendingBase) / 4))
        case PLIC.enableBase..<(PLIC.enableBase + PLIC.enableStride * contextCount):
            let relative = offset - PLIC.enableBase
            let word = Int(relative % PLIC.enableStride / 4)
            if word < words { return .enable(context: Int(relative / PLIC.enableStride), word: word) }
        case PLIC.contextBase..<(PLIC.contextBase + PLIC.contextStride * contextCount):
            let relative = offset - PLIC.contextBase
            let context = Int(relative / PLIC.contextStride)
            switch relative % PLIC.contextStride {
            case PLIC.thresholdOffset: return .threshold(context: context)
            case PLIC.claimOffset: return .claim(context: context)
            default: break
            }
        default:
            break
        }
        DebugLog.log(.guestErrors, "\(name): \(access) of a register that does not exist at offset \(plicHex(offset))")
        return nil
    }

    // MARK: Reset and snapshots

    /// Hardware reset: priorities, enables, thresholds, pending and in-service bits to 0.
    /// The source wires keep their levels (the devices reset on their own), so a line that is
    /// still high becomes pending again.
    package func reset() {
        let changes = core.withLock { c -> [OutputChange] in
            var fresh = PLICCore(sources: c.sourceCount, contexts: c.contextCount)
            fresh.driven = c.driven
            fresh.level = c.level
            fresh.pending = c.level
            c = fresh
            return c.settle()
        }
        drive(changes)
    }

    package func saveState() -> State {
        core.withLock { c in
            State(
                priorities: c.priority, pending: c.pending, inService: c.inService, levels: c.level,
                enables: (0..<c.contextCount).map { Array(c.enable[$0 * c.words..<($0 + 1) * c.words]) },
                thresholds: c.threshold)
        }
    }

    /// Loads a saved state. The state is untrusted (it may come from a migration stream): it
    /// must fit this PLIC's sources and contexts and be one the device can reach, or nothing
    /// changes.
    package func restore(_ state: State) throws(SystemError) {
        let restored = try PLICCore(validating: state, sources: sourceCount, contexts: contexts.count, device: name)
        let changes = core.withLock { c -> [OutputChange] in
            var new = restored
            new.driven = c.driven
            c = new
            return c.settle()
        }
        drive(changes)
    }

    // MARK: Outputs, outside the lock

    /// Sets each changed line, then checks that nobody changed the wanted level in between
    /// (another thread may have settled the PLIC before our now stale `set` landed): whoever
    /// sets last re-reads the wanted level after its own `set`, so every wire ends at the level
    /// of the latest state.
    private func drive(_ changes: [OutputChange]) {
        for change in changes {
            var level = change.level
            while true {
                contexts[change.context].set(level: level)
                let wanted = core.withLock { $0.driven[change.context] }
                if wanted == level { break }
                level = wanted
            }
        }
    }
}

/// A context line to drive after the lock is released.
private struct OutputChange {
    var context: Int
    var level: Bool
}

/// Everything the PLIC holds, guarded by its mutex.
private struct PLICCore {
    let sourceCount: Int
    let contextCount: Int
    /// 32-bit words per bit array.
    let words: Int
    /// Per word, the bits of sources that exist (not source 0, not past the last).
    let validMask: [UInt32]

    var priority: [UInt32]
    var pending: [UInt32]
    var inService: [UInt32]
    var level: [UInt32]
    /// contextCount × words, context-major.
    var enable: [UInt32]
    var threshold: [UInt32]
    /// The level each context line was last told to take. Not device state.
    var driven: [Bool]

    static func wordCount(sources: Int) -> Int { (sources + 31) / 32 }

    static func validMask(sources: Int) -> [UInt32] {
        (0..<wordCount(sources: sources)).map { w in
            let first = w * 32
            let count = min(32, sources - first)
            var mask: UInt32 = count == 32 ? .max : (1 << UInt32(count)) - 1
            if w == 0 { mask &= ~1 }
            return mask
        }
    }

    init(sources: Int, contexts: Int) {
        sourceCount = sources
        contextCount = contexts
        words = PLICCore.wordCount(sources: sources)
        validMask = PLICCore.validMask(sources: sources)
        priority = Array(repeating: 0, count: sources)
        pending = Array(repeating: 0, count: words)
        inService = Array(repeating: 0, count: words)
        level = Array(repeating: 0, count: words)
        enable = Array(repeating: 0, count: contexts * words)
        threshold = Array(repeating: 0, count: contexts)
        driven = Array(repeating: false, count: contexts)
    }

    /// The gateway sees a new level. Returns whether the pending bits changed.
    mutating func setLevel(source: Int, level high: Bool) -> Bool {
        let word = source / 32
        let bit: UInt32 = 1 << UInt32(source % 32)
        guard high else {
            // A forwarded request is never retracted.
            level[word] &= ~bit
            return false
        }
        level[word] |= bit
        // Forward a request unless one is pending or being serviced.
        guard (pending[word] | inService[word]) & bit == 0 else { return false }
        pending[word] |= bit
        return true
    }

    /// The source a claim by `context` would return: enabled, pending, priority above the
    /// threshold, highest priority and then lowest ID; 0 if none.
    func candidate(context: Int) -> Int {
        var best = 0
        var bestPriority = threshold[context]
        let base = context * words
        for w in 0..<words {
            var bits = pending[w] & enable[base + w]
            while bits != 0 {
                let source = w * 32 + bits.trailingZeroBitCount
                bits &= bits - 1
                // Strictly greater: an equal priority at a higher ID loses the tie.
                if priority[source] > bestPriority {
                    best = source
                    bestPriority = priority[source]
                }
            }
        }
        return best
    }

    /// "Interrupt Claim Process": returns the ID, clears its IP bit, puts it in service.
    mutating func claim(context: Int) -> Int {
        let source = candidate(context: context)
        guard source != 0 else { return 0 }
        let bit: UInt32 = 1 << UInt32(source % 32)
        pending[source / 32] &= ~bit
        inService[source / 32] |= bit
        return source
    }

    /// "Interrupt Completion": ends service of `id` if it is enabled for `context` and in
    /// service; a line still high makes a new request at once (level-triggered gateway).
    /// Returns false when the completion is ignored.
    mutating func complete(context: Int, id: UInt32) -> Bool {
        guard id > 0, id < UInt32(sourceCount) else { return false }
        let source = Int(id)
        let word = source / 32
        let bit: UInt32 = 1 << UInt32(source % 32)
        guard enable[context * words + word] & bit != 0, inService[word] & bit != 0 else { return false }
        inService[word] &= ~bit
        if level[word] & bit != 0 { pending[word] |= bit }
        return true
    }

    /// The context lines whose level must change.
    mutating func settle() -> [OutputChange] {
        var changes: [OutputChange] = []
        for context in 0..<contextCount {
            let level = candidate(context: context) != 0
            if level != driven[context] {
                driven[context] = level
                changes.append(OutputChange(context: context, level: level))
            }
        }
        return changes
    }

    /// Builds the core from an untrusted state, or says what is wrong with it.
    init(validating state: PLIC.State, sources: Int, contexts: Int, device: String) throws(SystemError) {
        func bad(_ what: String) -> SystemError {
            .badInput("PLIC '\(device)' snapshot: \(what)")
        }
        guard state.version == PLIC.State.currentVersion else {
            throw bad("state version \(state.version) is not supported (this build reads version \(PLIC.State.currentVersion))")
        }
        let words = PLICCore.wordCount(sources: sources)
        let valid = PLICCore.validMask(sources: sources)
        guard state.priorities.count == sources else {
            throw bad("\(state.priorities.count) source priorities for a PLIC with \(sources) sources")
        }
        guard state.priorities[0] == 0 else {
            throw bad("source 0, which does not exist, has priority \(state.priorities[0])")
        }
        if let source = state.priorities.firstIndex(where: { $0 > PLIC.maxPriority }) {
            throw bad("source \(source) has priority \(state.priorities[source]) (at most \(PLIC.maxPriority))")
        }
        func checkBits(_ array: [UInt32], _ what: String) throws(SystemError) {
            guard array.count == words else {
                throw bad("\(array.count) words of \(what) bits for \(sources) sources (\(words) words)")
            }
            for (w, value) in array.enumerated() where value & ~valid[w] != 0 {
                throw bad("\(what) word \(w) = \(plicHex(UInt64(value))) has bits of source 0 or of sources that do not exist")
            }
        }
        try checkBits(state.pending, "pending")
        try checkBits(state.inService, "in-service")
        try checkBits(state.levels, "level")
        for w in 0..<words {
            if state.pending[w] & state.inService[w] != 0 {
                throw bad("word \(w): sources both pending and in service (the gateway holds one request per source)")
            }
            if state.levels[w] & ~(state.pending[w] | state.inService[w]) != 0 {
                throw bad("word \(w): a source line is high with no request pending or in service")
            }
        }
        guard state.enables.count == contexts else {
            throw bad("enable bits for \(state.enables.count) contexts on a PLIC with \(contexts) contexts")
        }
        for (context, enables) in state.enables.enumerated() {
            try checkBits(enables, "context \(context) enable")
        }
        guard state.thresholds.count == contexts else {
            throw bad("\(state.thresholds.count) thresholds for a PLIC with \(contexts) contexts")
        }
        if let context = state.thresholds.firstIndex(where: { $0 > PLIC.maxPriority }) {
            throw bad("context \(context) has threshold \(state.thresholds[context]) (at most \(PLIC.maxPriority))")
        }
        self.init(sources: sources, contexts: contexts)
        priority = state.priorities
        pending = state.pending
        inService = state.inService
        level = state.levels
        enable = state.enables.flatMap { $0 }
        threshold = state.thresholds
    }
}

private func plicHex(_ value: UInt64) -> String {
    "0x" + String(value, radix: 16)
}
