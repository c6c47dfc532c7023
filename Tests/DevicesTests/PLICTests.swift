import DeviceModel
import Devices
import Foundation
import Synchronization
import SystemSupport
import Testing

/// A PLIC with observable context lines. Offsets are written out from the specification's
/// memory map, not taken from the device, so a wrong layout constant fails here.
private struct PLICHarness {
    let plic: PLIC
    let lines: [LevelInterruptLine]

    init(sources: Int = 96, contexts: Int = 2) {
        lines = (0..<contexts).map { _ in LevelInterruptLine() }
        plic = PLIC(sources: sources, contexts: lines)
    }

    static func priority(_ source: Int) -> UInt64 { UInt64(4 * source) }
    static func pending(word: Int) -> UInt64 { 0x1000 + UInt64(4 * word) }
    static func enable(context: Int, word: Int) -> UInt64 { 0x2000 + 0x80 * UInt64(context) + UInt64(4 * word) }
    static func threshold(_ context: Int) -> UInt64 { 0x20_0000 + 0x1000 * UInt64(context) }
    static func claim(_ context: Int) -> UInt64 { 0x20_0004 + 0x1000 * UInt64(context) }

    /// A 32-bit read; a value wider than 32 bits is reported as 0xDEAD_BEEF so the caller's
    /// expectation fails instead of the conversion trapping.
    func read(_ offset: UInt64) -> UInt32 {
        UInt32(exactly: plic.read(offset: offset, size: 4)) ?? 0xDEAD_BEEF
    }

    func write(_ offset: UInt64, _ value: UInt32) {
        plic.write(offset: offset, value: UInt64(value), size: 4)
    }

    func setPriority(_ source: Int, _ priority: UInt32) { write(Self.priority(source), priority) }
    func setThreshold(_ context: Int, _ threshold: UInt32) { write(Self.threshold(context), threshold) }

    /// Sets exactly `sources` enabled for `context`.
    func enable(_ context: Int, _ sources: [Int]) {
        let words = (plic.sourceCount + 31) / 32
        for word in 0..<words {
            var bits: UInt32 = 0
            for s in sources where s / 32 == word { bits |= 1 << UInt32(s % 32) }
            write(Self.enable(context: context, word: word), bits)
        }
    }

    func claim(_ context: Int) -> UInt32 { read(Self.claim(context)) }
    func complete(_ context: Int, _ id: UInt32) { write(Self.claim(context), id) }

    func raise(_ source: Int) { plic.sourceLine(source).set(level: true) }
    func lower(_ source: Int) { plic.sourceLine(source).set(level: false) }

    /// The pending bits as a set of source IDs.
    var pending: Set<Int> {
        var result: Set<Int> = []
        for word in 0..<((plic.sourceCount + 31) / 32) {
            let bits = read(Self.pending(word: word))
            for bit in 0..<32 where bits & (1 << UInt32(bit)) != 0 { result.insert(word * 32 + bit) }
        }
        return result
    }

    var levels: [Bool] { lines.map(\.level) }

    /// Everything the guest can see without side effects, for before/after comparisons.
    var visibleRegisters: [UInt32] {
        var values: [UInt32] = []
        for s in 0..<plic.sourceCount { values.append(read(Self.priority(s))) }
        let words = (plic.sourceCount + 31) / 32
        for w in 0..<words { values.append(read(Self.pending(word: w))) }
        for c in 0..<lines.count {
            for w in 0..<words { values.append(read(Self.enable(context: c, word: w))) }
            values.append(read(Self.threshold(c)))
        }
        return values
    }
}

/// A line that records every `set`, changed or not.
private final class RecordingLine: InterruptLine {
    let calls = Mutex<[Bool]>([])
    func set(level: Bool) { calls.withLock { $0.append(level) } }
}

/// A late-bound reference, for a context line whose handler claims from the PLIC it observes.
private final class PLICBox: Sendable {
    let plic = Mutex<PLIC?>(nil)
    let claimed = Mutex<[UInt32]>([])
}

@Suite struct PLICTests {
    // MARK: Layout and reset

    @Test func resetStateAndLayout() {
        let h = PLICHarness()
        #expect(h.plic.name == "riscv.sifive.plic")
        #expect(h.plic.sourceCount == 96)
        #expect(h.plic.highestSourceID == 95)
        #expect(h.plic.contextCount == 2)
        #expect(PLIC.compatible == ["sifive,plic-1.0.0", "riscv,plic0"])
        // QEMU virt: VIRT_PLIC_SIZE(512 harts * 2 contexts) = 0x600000.
        #expect(PLIC.windowSize(contexts: 1024) == 0x60_0000)
        #expect(PLIC.virtWindowSize == 0x60_0000)
        #expect(h.plic.windowSize == 0x20_2000)
        #expect(h.visibleRegisters.allSatisfy { $0 == 0 })
        #expect(h.claim(0) == 0)
        #expect(h.levels == [false, false])
        #expect(h.plic.saveState() == PLIC.State(sources: 96, contexts: 2))
    }

    @Test func priorityAndThresholdAreThreeBitWARL() {
        let h = PLICHarness()
        for (written, expected): (UInt32, UInt32) in [(5, 5), (7, 7), (8, 0), (0xFFFF_FFFF, 7), (0x1_0003, 3)] {
            h.setPriority(95, written)
            #expect(h.read(PLICHarness.priority(95)) == expected)
            h.setThreshold(1, written)
            #expect(h.read(PLICHarness.threshold(1)) == expected)
        }
        // Sources are independent.
        h.setPriority(1, 2)
        h.setPriority(2, 6)
        #expect(h.read(PLICHarness.priority(1)) == 2)
        #expect(h.read(PLICHarness.priority(2)) == 6)
    }

    // MARK: Priority, threshold, enables

    @Test func thresholdMasksPrioritiesAtOrBelowIt() {
        let h = PLICHarness()
        h.setPriority(3, 2)
        h.enable(0, [3])
        h.raise(3)
        #expect(h.levels == [true, false])
        // Spec "Priority Thresholds": interrupts of priority <= threshold are masked.
        h.setThreshold(0, 2)
        #expect(h.levels == [false, false])
        #expect(h.claim(0) == 0)
        #expect(h.pending == [3])
        h.setThreshold(0, 1)
        #expect(h.levels == [true, false])
        // Priority 0 means "never interrupt", whatever the threshold.
        h.setThreshold(0, 0)
        h.setPriority(3, 0)
        #expect(h.levels == [false, false])
        #expect(h.claim(0) == 0)
        #expect(h.pending == [3])
        h.setPriority(3, 7)
        h.setThreshold(0, 7)
        #expect(!h.lines[0].level)
        h.setThreshold(0, 6)
        #expect(h.lines[0].level)
        #expect(h.claim(0) == 3)
        #expect(!h.lines[0].level)
    }

    @Test func enablesArePerContext() {
        let h = PLICHarness()
        h.setPriority(10, 1)
        h.setPriority(20, 1)
        h.enable(1, [10])
        h.raise(10)
        #expect(h.levels == [false, true])
        #expect(h.claim(0) == 0)
        #expect(h.pending == [10])
        h.enable(0, [20])
        h.raise(20)
        #expect(h.levels == [true, true])
        #expect(h.claim(0) == 20)
        #expect(h.levels == [false, true])
        #expect(h.claim(1) == 10)
        #expect(h.levels == [false, false])
        // Disabling a pending source lowers the line without touching IP.
        h.lower(10)
        h.complete(1, 10)
        h.raise(10)
        #expect(h.levels == [false, true])
        h.enable(1, [])
        #expect(h.levels == [false, false])
        #expect(h.pending == [10])
        #expect(h.read(PLICHarness.enable(context: 1, word: 0)) == 0)
    }

    @Test func enableBitsOfSourceZeroAndMissingSourcesAreHardwiredToZero() {
        let h = PLICHarness(sources: 40, contexts: 1)
        h.write(PLICHarness.enable(context: 0, word: 0), 0xFFFF_FFFF)
        h.write(PLICHarness.enable(context: 0, word: 1), 0xFFFF_FFFF)
        #expect(h.read(PLICHarness.enable(context: 0, word: 0)) == 0xFFFF_FFFE)
        // Sources 32...39 exist, 40...63 do not.
        #expect(h.read(PLICHarness.enable(context: 0, word: 1)) == 0xFF)
        // Word 2 is past the sources: a reserved register.
        h.write(PLICHarness.enable(context: 0, word: 2), 0xFFFF_FFFF)
        #expect(h.read(PLICHarness.enable(context: 0, word: 2)) == 0)
    }

    // MARK: Claim and complete

    @Test func claimReturnsHighestPriorityThenLowestID() {
        let h = PLICHarness()
        let priorities: [Int: UInt32] = [5: 3, 7: 5, 9: 5, 40: 5, 33: 6, 60: 1]
        for (source, priority) in priorities { h.setPriority(source, priority) }
        h.enable(0, Array(priorities.keys))
        for source in [60, 40, 9, 7, 5, 33] { h.raise(source) }
        #expect(h.pending == Set(priorities.keys))
        var order: [UInt32] = []
        while true {
            let id = h.claim(0)
            if id == 0 { break }
            order.append(id)
            if order.count > 10 { break }
        }
        #expect(order == [33, 7, 9, 40, 5, 60])
        #expect(h.pending.isEmpty)
        #expect(!h.lines[0].level)
    }

    @Test func claimClearsPendingLowersTheLineAndHoldsTheSourceUntilComplete() {
        let h = PLICHarness()
        h.setPriority(11, 1)
        h.enable(0, [11])
        h.raise(11)
        #expect(h.pending == [11])
        #expect(h.lines[0].level)
        #expect(h.claim(0) == 11)
        #expect(h.pending.isEmpty)
        #expect(!h.lines[0].level)
        // In service: the gateway forwards nothing more, whatever the line does.
        h.lower(11)
        h.raise(11)
        #expect(h.pending.isEmpty)
        #expect(!h.lines[0].level)
        #expect(h.claim(0) == 0)
        // Level-triggered: completing with the line still high is a new request at once.
        h.complete(0, 11)
        #expect(h.pending == [11])
        #expect(h.lines[0].level)
        #expect(h.lines[0].risingEdges == 2)
        #expect(h.claim(0) == 11)
        // The device was serviced: the line drops before the completion.
        h.lower(11)
        h.complete(0, 11)
        #expect(h.pending.isEmpty)
        #expect(!h.lines[0].level)
        #expect(h.claim(0) == 0)
    }

    @Test func aForwardedRequestIsNotRetractedWhenTheLineDrops() {
        let h = PLICHarness()
        h.setPriority(4, 1)
        h.enable(0, [4])
        h.raise(4)
        h.lower(4)
        // Spec "Interrupt Gateways": the request stays in IP and is serviced.
        #expect(h.pending == [4])
        #expect(h.lines[0].level)
        #expect(h.claim(0) == 4)
        h.complete(0, 4)
        #expect(h.pending.isEmpty)
        #expect(!h.lines[0].level)
    }

    @Test func completeOfAnIDNotEnabledForTheContextIsIgnored() {
        let h = PLICHarness()
        h.setPriority(8, 1)
        h.enable(0, [8])
        h.raise(8)
        #expect(h.claim(0) == 8)
        // Context 1 does not have source 8 enabled: its completion is ignored.
        h.complete(1, 8)
        #expect(h.pending.isEmpty)
        // Disabled on context 0 too: ignored.
        h.enable(0, [])
        h.complete(0, 8)
        h.enable(0, [8])
        #expect(h.pending.isEmpty)
        #expect(!h.lines[0].level)
        // Linux's plic_irq_eoi for a masked source: enable, complete, disable.
        h.enable(0, [8])
        h.complete(0, 8)
        h.enable(0, [])
        #expect(h.pending == [8])
        // IDs that are not in service, out of range or 0 change nothing.
        for id: UInt32 in [0, 9, 95, 96, 1023, 0xFFFF_FFFF] { h.complete(0, id) }
        #expect(h.pending == [8])
        h.enable(0, [8])
        #expect(h.claim(0) == 8)
    }

    @Test func sourceZeroIsInert() {
        let h = PLICHarness()
        h.setPriority(0, 7)
        #expect(h.read(PLICHarness.priority(0)) == 0)
        h.enable(0, [0])
        #expect(h.read(PLICHarness.enable(context: 0, word: 0)) == 0)
        h.plic.setSourceLevel(0, level: true)
        h.plic.setSourceLevel(96, level: true)
        h.plic.setSourceLevel(-1, level: true)
        #expect(h.pending.isEmpty)
        h.write(PLICHarness.enable(context: 0, word: 0), 0xFFFF_FFFF)
        #expect(h.claim(0) == 0)
        h.complete(0, 0)
        #expect(h.levels == [false, false])
        var expected = PLIC.State(sources: 96, contexts: 2)
        expected.enables[0][0] = 0xFFFF_FFFE
        #expect(h.plic.saveState() == expected)
    }

    @Test func pendingRegisterShowsOneBitPerSourceAndIsReadOnly() {
        let h = PLICHarness()
        for source in [1, 31, 32, 63, 64, 95] { h.raise(source) }
        #expect(h.read(PLICHarness.pending(word: 0)) == 0x8000_0002)
        #expect(h.read(PLICHarness.pending(word: 1)) == 0x8000_0001)
        #expect(h.read(PLICHarness.pending(word: 2)) == 0x8000_0001)
        // Priority 0 and nothing enabled: pending, but no line.
        #expect(h.levels == [false, false])
        h.write(PLICHarness.pending(word: 0), 0)
        h.write(PLICHarness.pending(word: 2), 0xFFFF_FFFF)
        #expect(h.pending == [1, 31, 32, 63, 64, 95])
        // Word 3 would be sources 96...127: reserved.
        #expect(h.read(PLICHarness.pending(word: 3)) == 0)
    }

    @Test func machineAndSupervisorContextsAreIndependent() {
        // virt: context 0 = hart 0 M-mode (MEIP), context 1 = hart 0 S-mode (SEIP).
        let h = PLICHarness(contexts: 4)
        h.setPriority(1, 1)  // M-mode timer-ish device
        h.setPriority(10, 4)  // S-mode UART
        h.enable(0, [1])
        h.enable(1, [10])
        h.setThreshold(1, 3)
        h.raise(10)
        #expect(h.levels == [false, true, false, false])
        h.raise(1)
        #expect(h.levels == [true, true, false, false])
        // Raising the S-mode threshold affects only S-mode.
        h.setThreshold(1, 4)
        #expect(h.levels == [true, false, false, false])
        #expect(h.claim(1) == 0)
        h.setThreshold(1, 0)
        #expect(h.claim(1) == 10)
        #expect(h.levels == [true, false, false, false])
        #expect(h.claim(0) == 1)
        #expect(h.levels == [false, false, false, false])
        // Hart 1's contexts saw nothing, and have their own registers.
        #expect(h.read(PLICHarness.threshold(3)) == 0)
        #expect(h.read(PLICHarness.enable(context: 2, word: 0)) == 0)
        #expect(h.lines[2].risingEdges == 0 && h.lines[3].risingEdges == 0)
    }

    @Test func aSourceEnabledInTwoContextsIsClaimedOnce() {
        let h = PLICHarness()
        h.setPriority(12, 2)
        h.enable(0, [12])
        h.enable(1, [12])
        h.raise(12)
        #expect(h.levels == [true, true])
        #expect(h.claim(1) == 12)
        #expect(h.levels == [false, false])
        #expect(h.claim(0) == 0)
        // Either context with the source enabled may complete it.
        h.complete(0, 12)
        #expect(h.levels == [true, true])
    }

    @Test func linesAreDrivenOnlyWhenTheirLevelChanges() {
        let m = RecordingLine()
        let s = RecordingLine()
        let plic = PLIC(contexts: [m, s])
        // init puts every wire at its starting level once.
        #expect(m.calls.withLock { $0 } == [false])
        #expect(s.calls.withLock { $0 } == [false])
        plic.write(offset: 4 * 9, value: 3, size: 4)
        plic.write(offset: 4 * 10, value: 3, size: 4)
        plic.write(offset: 0x2000, value: 1 << 9 | 1 << 10, size: 4)
        plic.sourceLine(9).set(level: true)
        plic.sourceLine(10).set(level: true)  // a second pending source: still high
        plic.write(offset: 4 * 9, value: 5, size: 4)
        plic.write(offset: 0x20_0000, value: 1, size: 4)
        plic.sourceLine(20).set(level: true)  // not enabled
        #expect(m.calls.withLock { $0 } == [false, true])
        #expect(plic.read(offset: 0x20_0004, size: 4) == 9)  // 10 still pending: still high
        #expect(plic.read(offset: 0x20_0004, size: 4) == 10)
        #expect(plic.read(offset: 0x20_0004, size: 4) == 0)
        #expect(m.calls.withLock { $0 } == [false, true, false])
        #expect(s.calls.withLock { $0 } == [false])
    }

    // MARK: Bad accesses

    @Test func badSizesAndMissingRegistersAreHarmless() {
        let h = PLICHarness()
        h.setPriority(5, 3)
        h.enable(0, [5])
        h.raise(5)
        let before = h.plic.saveState()
        let lines = h.levels
        // Only aligned 32-bit accesses reach a register; a wrong-size claim claims nothing.
        for size in [1, 2, 8] {
            #expect(h.plic.read(offset: PLICHarness.claim(0), size: size) == 0)
            #expect(h.plic.read(offset: PLICHarness.priority(5), size: size) == 0)
            h.plic.write(offset: PLICHarness.priority(5), value: 0, size: size)
            h.plic.write(offset: PLICHarness.enable(context: 0, word: 0), value: 0, size: size)
        }
        let missing: [UInt64] = [
            PLICHarness.priority(5) + 1,  // misaligned
            PLICHarness.claim(0) + 2,  // misaligned
            PLICHarness.priority(96),  // source past the last
            0xFFC,  // source 1023
            PLICHarness.pending(word: 3),  // pending word past the sources
            0x1080, 0x1FFC,  // between pending and enables
            PLICHarness.enable(context: 0, word: 3),  // enable word past the sources
            PLICHarness.enable(context: 2, word: 0),  // context 2 does not exist
            0x1F_FFFC,  // reserved before the contexts
            0x20_0008, 0x20_0FFC,  // reserved inside context 0's block
            PLICHarness.threshold(2), PLICHarness.claim(2),  // context 2 does not exist
            0x60_0000, 0x3FF_F004, UInt64.max - 3,
        ]
        for offset in missing {
            #expect(h.plic.read(offset: offset, size: 4) == 0, "offset \(offset)")
            h.plic.write(offset: offset, value: 0xFFFF_FFFF, size: 4)
            h.plic.write(offset: offset, value: 0, size: 4)
        }
        #expect(h.plic.saveState() == before)
        #expect(h.levels == lines)
        #expect(h.claim(0) == 5)
    }

    // MARK: Source lines, threads

    @Test func sourceLinesDriveTheGateway() {
        let h = PLICHarness()
        let line = h.plic.sourceLine(2)
        h.setPriority(2, 1)
        h.enable(0, [2])
        line.set(level: true)
        #expect(h.lines[0].level)
        #expect(h.claim(0) == 2)
        line.pulse()
        #expect(h.pending.isEmpty)
        h.complete(0, 2)
        #expect(h.pending.isEmpty)
        line.pulse()
        #expect(h.pending == [2])
    }

    @Test func aHandlerThatClaimsFromInsideTheLineDoesNotDeadlock() {
        // The hart takes MEIP at once and claims while the PLIC is still driving the line.
        let box = PLICBox()
        let meip = LevelInterruptLine { level in
            guard level, let plic = box.plic.withLock({ $0 }) else { return }
            let id = UInt32(truncatingIfNeeded: plic.read(offset: 0x20_0004, size: 4))
            box.claimed.withLock { $0.append(id) }
        }
        let plic = PLIC(contexts: [meip])
        box.plic.withLock { $0 = plic }
        plic.write(offset: 4 * 6, value: 1, size: 4)
        plic.write(offset: 0x2000, value: 1 << 6, size: 4)
        let source = plic.sourceLine(6)
        source.set(level: true)
        #expect(box.claimed.withLock { $0 } == [6])
        #expect(!meip.level)
        #expect(plic.read(offset: 0x1000, size: 4) == 0)
        // The device is serviced, the handler completes: nothing more.
        source.set(level: false)
        plic.write(offset: 0x20_0004, value: 6, size: 4)
        #expect(box.claimed.withLock { $0 } == [6])
        #expect(!meip.level)
        #expect(meip.risingEdges == 1)
    }

    @Test func sourcesFromManyThreadsEndAtTheRightLevel() async {
        let h = PLICHarness()
        for source in 1...8 {
            h.setPriority(source, UInt32(source % 7 + 1))
        }
        h.enable(0, Array(1...8))
        let plic = h.plic
        await withTaskGroup(of: Void.self) { group in
            for source in 1...8 {
                group.addTask {
                    let line = plic.sourceLine(source)
                    for i in 0..<2_000 { line.set(level: i % 2 == 0) }
                    line.set(level: source % 2 == 0)
                }
            }
            group.addTask {
                for _ in 0..<2_000 {
                    let id = UInt32(truncatingIfNeeded: plic.read(offset: 0x20_0004, size: 4))
                    if id != 0 { plic.write(offset: 0x20_0004, value: UInt64(id), size: 4) }
                }
            }
        }
        // Drain what is left: every source whose line ended high is claimed once more; the
        // others at most once (a request forwarded before their line dropped).
        var claimedAtEnd: Set<UInt32> = []
        for _ in 0..<32 {
            let id = h.claim(0)
            if id == 0 { break }
            #expect(claimedAtEnd.insert(id).inserted, "source \(id) claimed twice")
            if id % 2 == 0 { h.lower(Int(id)) }
            h.complete(0, id)
        }
        #expect(Set<UInt32>([2, 4, 6, 8]).isSubset(of: claimedAtEnd))
        #expect(h.claim(0) == 0)
        #expect(h.pending.isEmpty)
        #expect(!h.lines[0].level)
    }

    // MARK: Reset and snapshots

    /// A PLIC with something in every kind of state.
    private func busyPLIC() -> PLICHarness {
        let h = PLICHarness(contexts: 2)
        h.setPriority(3, 2)
        h.setPriority(33, 5)
        h.setPriority(70, 7)
        h.setPriority(95, 1)
        h.enable(0, [3, 33, 70])
        h.enable(1, [95, 3])
        h.setThreshold(0, 1)
        h.setThreshold(1, 4)
        h.raise(70)
        h.raise(33)
        h.raise(3)
        h.raise(95)
        #expect(h.claim(0) == 70)  // in service, line still high
        h.lower(95)  // pending without a level
        return h
    }

    @Test func saveThenRestoreReproducesTheDevice() throws {
        let a = busyPLIC()
        let saved = a.plic.saveState()
        #expect(saved.version == PLIC.State.currentVersion)
        #expect(saved.priorities[70] == 7)
        #expect(saved.pending == [1 << 3, 1 << 1, 1 << 31])
        #expect(saved.inService == [0, 0, 1 << 6])
        #expect(saved.levels == [1 << 3, 1 << 1, 1 << 6])
        #expect(saved.thresholds == [1, 4])
        #expect(saved.enables[1] == [1 << 3, 0, 1 << 31])

        let b = PLICHarness(contexts: 2)
        try b.plic.restore(saved)
        #expect(b.plic.saveState() == saved)
        #expect(b.levels == a.levels)
        #expect(b.levels == [true, false])
        #expect(b.visibleRegisters == a.visibleRegisters)
        // Both go on the same way.
        for h in [a, b] {
            #expect(h.claim(0) == 33)
            #expect(h.claim(0) == 3)
            #expect(h.claim(0) == 0)
            #expect(h.claim(1) == 0)  // 95 has priority 1 <= threshold 4
            h.setThreshold(1, 0)
            #expect(h.claim(1) == 95)
            h.complete(0, 70)
            #expect(h.pending == [70])
            #expect(h.levels == [true, false])
        }
    }

    @Test func restoreDrivesTheLinesToTheRestoredLevels() throws {
        let h = busyPLIC()
        #expect(h.levels == [true, false])
        try h.plic.restore(PLIC.State(sources: 96, contexts: 2))
        #expect(h.levels == [false, false])
        #expect(h.visibleRegisters.allSatisfy { $0 == 0 })
        var s = PLIC.State(sources: 96, contexts: 2)
        s.priorities[40] = 3
        s.pending[1] = 1 << 8
        s.enables[1][1] = 1 << 8
        try h.plic.restore(s)
        #expect(h.levels == [false, true])
        #expect(h.claim(1) == 40)
    }

    @Test func resetClearsEverythingButReforwardsLinesStillHigh() {
        let h = busyPLIC()
        h.plic.reset()
        #expect(h.levels == [false, false])
        #expect(h.claim(0) == 0)
        // Lines 3, 33 and 70 are still high: the gateways forward them again.
        #expect(h.pending == [3, 33, 70])
        #expect(h.read(PLICHarness.priority(70)) == 0)
        #expect(h.read(PLICHarness.threshold(0)) == 0)
        #expect(h.read(PLICHarness.enable(context: 0, word: 0)) == 0)
    }

    static let badStates: [(String, PLIC.State)] = {
        let good = PLIC.State(sources: 96, contexts: 2)
        func with(_ change: (inout PLIC.State) -> Void) -> PLIC.State {
            var s = good
            change(&s)
            return s
        }
        return [
            ("future version", with { $0.version = 2 }),
            ("version 0", with { $0.version = 0 }),
            ("too few priorities", with { $0.priorities.removeLast() }),
            ("too many priorities", with { $0.priorities.append(0) }),
            ("priority of source 0", with { $0.priorities[0] = 1 }),
            ("priority above 7", with { $0.priorities[5] = 8 }),
            ("pending words missing", with { $0.pending.removeLast() }),
            ("in-service word extra", with { $0.inService.append(0) }),
            ("level words missing", with { $0.levels = [] }),
            ("source 0 pending", with { $0.pending[0] = 1 }),
            ("pending word extra", with { $0.pending.append(0) }),
            ("source 0 in service", with { $0.inService[0] = 1 }),
            ("source 0 level", with { $0.levels[0] = 1; $0.pending[0] = 1 }),
            ("pending and in service", with { $0.pending[1] = 4; $0.inService[1] = 4 }),
            ("level with no request", with { $0.levels[2] = 1 << 5 }),
            ("enables for 1 context", with { $0.enables.removeLast() }),
            ("enables for 3 contexts", with { $0.enables.append([0, 0, 0]) }),
            ("enable words missing", with { $0.enables[1] = [0, 0] }),
            ("enable of source 0", with { $0.enables[1][0] = 1 }),
            ("thresholds for 1 context", with { $0.thresholds = [0] }),
            ("threshold above 7", with { $0.thresholds[1] = 8 }),
        ]
    }()

    @Test(arguments: badStates)
    func restoreRejectsAnInvalidStateAndKeepsTheOldOne(what: String, bad: PLIC.State) {
        let h = busyPLIC()
        let before = h.plic.saveState()
        let levels = h.levels
        let error = #expect(throws: SystemError.self, "\(what)") { try h.plic.restore(bad) }
        #expect(error?.code == .badInput)
        #expect(error?.message.contains("riscv.sifive.plic") == true)
        #expect(h.plic.saveState() == before)
        #expect(h.levels == levels)
    }

    @Test func restoreRejectsBitsOfSourcesThatDoNotExist() throws {
        let h = PLICHarness(sources: 40, contexts: 1)
        var s = PLIC.State(sources: 40, contexts: 1)
        #expect(s.pending.count == 2)
        s.priorities[39] = 1
        s.pending[1] = 1 << 7  // source 39: fine
        s.enables[0][1] = 1 << 7
        try h.plic.restore(s)
        #expect(h.levels == [true])
        for bad: (inout PLIC.State) -> Void in [
            { $0.pending[1] = 1 << 8 },  // source 40
            { $0.inService[1] = 1 << 31 },  // source 63
            { $0.levels[1] = 0x100 | 0x80 },
            { $0.enables[0][1] = 0xFFFF_FFFF },
        ] {
            var state = s
            bad(&state)
            #expect(throws: SystemError.self) { try h.plic.restore(state) }
        }
        #expect(h.plic.saveState() == s)
    }

    @Test func aStateSurvivesJSON() throws {
        let saved = busyPLIC().plic.saveState()
        let data = try JSONEncoder().encode(saved)
        #expect(try JSONDecoder().decode(PLIC.State.self, from: data) == saved)
    }
}
