import DeviceModel
import GuestMemory
import RISCV
import RISCVJIT
import SystemSupport
import Testing

/// Migration's dirty-page tracking under both engines (DirtyBitmap): stores through a write
/// translation a hart cached are not seen one by one, so a page counts as written when its
/// translation is cached; taking the bits and dropping the harts' write translations makes the
/// next store to each page mark it again. A page missed here is a page the destination of a
/// live migration never receives.
@Suite struct DirtyTrackingTests {
    static let pageA: UInt64 = 0x8010_0000
    static let pageB: UInt64 = 0x8010_3000
    static let code: UInt64 = 0x8000_0000

    /// Stores to page A and B (one of them misaligned across into the next page), an AMO to the
    /// page after that, a failing SC (it caches a write translation, writing nothing) followed by
    /// a store that hits that translation, then a self-loop.
    static func program() -> [UInt32] {
        Asm.li(5, pageA) + Asm.li(6, pageB + 0x800) + Asm.li(7, 0x1234) + [
            Asm.sd(7, base: 5, offset: 16),
            Asm.sd(7, base: 6, offset: 0x7fc),  // pageB + 0xffc: crosses into pageB + 0x1000
            Asm.encode(.amoadd_d, rd: 0, rs1: 28, rs2: 7),
            Asm.encode(.sc_d, rd: 30, rs1: 29, rs2: 7),
            Asm.sd(7, base: 29, offset: 8),
            Asm.encode(.jal, imm: 0),
        ]
    }

    static func run(jit: Bool) throws {
        let memory = try GuestMemory(base: GuestAddress(0x8000_0000), size: 4 << 20)
        let hart = try Hart(hartID: 0, memory: PhysicalMemory(ram: memory, mmio: AddressSpace(name: "memory")),
                            timeBase: TimeBase(clock: VirtualClock()))
        let engine: any ExecutionEngine = jit ? try JITEngine(hart: hart) : hart
        var words = program()
        words.insert(contentsOf: Asm.li(28, pageB + 0x2000) + Asm.li(29, pageB + 0x3000), at: 0)
        try memory.writeBytes(words.flatMap { word in withUnsafeBytes(of: word.littleEndian) { Array($0) } }, at: GuestAddress(Self.code))
        let expected = [Self.pageA, Self.pageB, Self.pageB + 0x1000, Self.pageB + 0x2000, Self.pageB + 0x3000].map { GuestAddress($0) }
        func runProgram() {
            hart.reset(pc: Self.code)
            _ = engine.run(budget: 200)
        }

        // Warm up: every translation cached before tracking starts.
        runProgram()
        memory.setDirtyTracking(true)
        #expect(memory.takeDirtyPages().count == (4 << 20) / 4096, "tracking starts with every page dirty")
        hart.dropWriteTranslations()
        #expect(memory.takeDirtyPages().isEmpty)

        runProgram()
        let codePage = GuestAddress(Self.code)
        #expect(memory.takeDirtyPages().filter { $0 != codePage } == expected, "the first pass marks every page written")
        hart.dropWriteTranslations()
        runProgram()
        #expect(memory.takeDirtyPages().filter { $0 != codePage } == expected, "after the bits are taken, the next stores mark again")

        // A device's DMA (GuestMemory's accessors) marks the pages it writes.
        hart.dropWriteTranslations()
        try memory.writeBytes([UInt8](repeating: 1, count: 5000), at: GuestAddress(0x8020_0ff0))
        #expect(memory.takeDirtyPages() == [0x8020_0000, 0x8020_1000, 0x8020_2000].map { GuestAddress($0) })

        memory.setDirtyTracking(false)
        runProgram()
        try memory.write(UInt64(7), at: GuestAddress(Self.pageA))
        #expect(memory.takeDirtyPages().isEmpty, "nothing is recorded while tracking is off")
    }

    @Test func interpreterStoresAreTracked() throws { try Self.run(jit: false) }
    @Test func jitStoresAreTracked() throws { try Self.run(jit: true) }
}
