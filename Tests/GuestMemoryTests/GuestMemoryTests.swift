import Glibc
import Testing
@testable import GuestMemory

@Suite struct AddressRangeTests {
    @Test func rejectsEmptyAndWrapping() {
        #expect(AddressRange(base: GuestAddress(0x1000), size: 0) == nil)
        #expect(AddressRange(base: GuestAddress(UInt64.max), size: 2) == nil)
        // A range may end exactly at the top of the address space.
        let top = AddressRange(base: GuestAddress(UInt64.max - 0xfff), size: 0x1000)
        #expect(top?.last == GuestAddress(UInt64.max))
    }

    @Test func containsIsHalfOpen() throws {
        let r = try #require(AddressRange(base: GuestAddress(0x8000_0000), size: 0x1000))
        #expect(r.contains(GuestAddress(0x8000_0000)))
        #expect(r.contains(GuestAddress(0x8000_0fff)))
        #expect(!r.contains(GuestAddress(0x8000_1000)))
        #expect(!r.contains(GuestAddress(0x7fff_ffff)))
        #expect(r.contains(GuestAddress(0x8000_0ff8), count: 8))
        #expect(!r.contains(GuestAddress(0x8000_0ff9), count: 8))
        // A huge count must not wrap around and pass the check.
        #expect(!r.contains(GuestAddress(0x8000_0000), count: UInt64.max))
    }

    @Test func overlaps() throws {
        let a = try #require(AddressRange(base: GuestAddress(0x1000), size: 0x1000))
        let b = try #require(AddressRange(base: GuestAddress(0x1fff), size: 1))
        let c = try #require(AddressRange(base: GuestAddress(0x2000), size: 0x10))
        #expect(a.overlaps(b) && b.overlaps(a))
        #expect(!a.overlaps(c) && !c.overlaps(a))
    }
}

@Suite struct GuestMemoryTests {
    let base = GuestAddress(0x8000_0000)

    @Test func readsAndWritesLittleEndian() throws {
        let mem = try GuestMemory(base: base, size: 1 << 20)
        try mem.write(UInt64(0x1122_3344_5566_7788), at: base)
        #expect(try mem.read(UInt8.self, at: base) == 0x88)
        #expect(try mem.read(UInt16.self, at: GuestAddress(base.rawValue + 6)) == 0x1122)
        #expect(try mem.read(UInt32.self, at: GuestAddress(base.rawValue + 1)) == 0x4455_6677)  // unaligned
        try mem.writeBytes([1, 2, 3], at: GuestAddress(base.rawValue + 0x100))
        #expect(try mem.readBytes(at: GuestAddress(base.rawValue + 0x100), count: 3) == [1, 2, 3])
    }

    @Test func freshRAMIsZero() throws {
        let mem = try GuestMemory(base: base, size: 2 << 20)
        #expect(try mem.readBytes(at: GuestAddress(base.rawValue + (1 << 20)), count: 16) == Array(repeating: 0, count: 16))
    }

    @Test func outOfBoundsIsAnErrorValue() throws {
        let mem = try GuestMemory(base: base, size: 0x10000)
        let end = GuestAddress(base.rawValue + 0x10000)
        #expect(throws: GuestMemoryError.outOfRange(address: end, count: 1)) { try mem.read(UInt8.self, at: end) }
        // Straddling the end is refused whole, not partly done.
        let straddle = GuestAddress(base.rawValue + 0xfffc)
        #expect(throws: GuestMemoryError.outOfRange(address: straddle, count: 8)) { try mem.write(UInt64.max, at: straddle) }
        #expect(try mem.read(UInt32.self, at: straddle) == 0)
        #expect(throws: GuestMemoryError.self) { try mem.read(UInt8.self, at: GuestAddress(base.rawValue - 1)) }
        #expect(throws: GuestMemoryError.self) { try mem.read(UInt64.self, at: GuestAddress(UInt64.max - 3)) }
        #expect(throws: GuestMemoryError.self) { try mem.readBytes(at: base, count: -1) }
        #expect(throws: GuestMemoryError.self) { try mem.readBytes(at: base, count: 0x10001) }
        #expect(throws: GuestMemoryError.self) {
            try mem.withHostBytes(at: straddle, count: 8) { _ in Issue.record("body must not run") }
        }
        #expect(!mem.isRAM(end))
        #expect(mem.isRAM(straddle, count: 4))
    }

    @Test func severalRegionsStaySeparate() throws {
        let low = try GuestRAM(base: GuestAddress(0), size: 0x10000)
        let high = try GuestRAM(base: GuestAddress(0x1_0000_0000), size: 0x10000)
        let mem = try GuestMemory(regions: [high, low])
        #expect(mem.regions.map(\.range.base) == [GuestAddress(0), GuestAddress(0x1_0000_0000)])
        #expect(mem.totalSize == 0x20000)
        try mem.write(UInt32(7), at: GuestAddress(0x1_0000_0000))
        #expect(try mem.read(UInt32.self, at: GuestAddress(0)) == 0)
        #expect(try mem.read(UInt32.self, at: GuestAddress(0x1_0000_0000)) == 7)
        // The hole between the regions is not RAM, and an access may not span two regions.
        #expect(throws: GuestMemoryError.self) { try mem.read(UInt8.self, at: GuestAddress(0x10000)) }
    }

    @Test func overlappingRegionsAreAConfigurationError() throws {
        let a = try GuestRAM(base: GuestAddress(0), size: 0x2000)
        let b = try GuestRAM(base: GuestAddress(0x1000), size: 0x2000)
        #expect(throws: (any Error).self) { try GuestMemory(regions: [a, b]) }
    }

    @Test func badSizesAreRefused() {
        #expect(throws: (any Error).self) { try GuestRAM(base: base, size: 0) }
        #expect(throws: (any Error).self) { try GuestRAM(base: base, size: 100) }
        #expect(throws: (any Error).self) { try GuestRAM(base: GuestAddress(UInt64.max - 0xfff), size: 0x2000) }
    }

    @Test func hostMappingIsHugePageAligned() throws {
        let ram = try GuestRAM(base: base, size: 4 << 20)
        let p = try #require(ram.hostPointer(at: base, count: 1))
        #expect(Int(bitPattern: p) % GuestRAM.hostAlignment == 0)
    }
}

@Suite struct GuestRAMBackingTests {
    /// Guest RAM is a memfd mapped shared: what the guest writes is in the file.
    @Test func ramIsAMemfd() throws {
        let memory = try GuestMemory(base: GuestAddress(0x8000_0000), size: 1 << 20)
        let region = try #require(memory.regions.first)
        #expect(region.memfd >= 0)
        try memory.write(UInt64(0x1122_3344_5566_7788), at: GuestAddress(0x8000_1008))
        var value: UInt64 = 0
        #expect(pread(region.memfd, &value, 8, 0x1008) == 8)
        #expect(value == 0x1122_3344_5566_7788)
        var st = stat()
        #expect(fstat(region.memfd, &st) == 0 && st.st_size == 1 << 20)
    }
}

