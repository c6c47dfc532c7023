import Glibc
import SystemSupport
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
        #expect(region.backend.fd >= 0)
        try memory.write(UInt64(0x1122_3344_5566_7788), at: GuestAddress(0x8000_1008))
        var value: UInt64 = 0
        #expect(pread(region.backend.fd, &value, 8, 0x1008) == 8)
        #expect(value == 0x1122_3344_5566_7788)
        var st = stat()
        #expect(fstat(region.backend.fd, &st) == 0 && st.st_size == 1 << 20)
    }
}


/// Memory backends (`-object memory-backend-*`): where the RAM's bytes live on the host.
@Suite struct RAMBackendTests {
    func scratchFile(_ bytes: Int) throws -> String {
        var template = Array("/tmp/swemu-ram-test.XXXXXX".utf8CString)
        let fd = mkstemp(&template)
        try #require(fd >= 0)
        defer { close(fd) }
        try #require(ftruncate(fd, off_t(bytes)) == 0)
        return template.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
    }

    func fileByte(_ path: String, at offset: Int) -> UInt8 {
        let fd = open(path, O_RDONLY)
        defer { close(fd) }
        var byte: UInt8 = 0
        _ = pread(fd, &byte, 1, off_t(offset))
        return byte
    }

    /// share=on: the guest's writes are the file's; two regions (the x86 board's RAM below
    /// and above its MMIO hole) are two slices of one backend.
    @Test func sharedFileHoldsTheGuestsWrites() throws {
        let path = try scratchFile(1 << 20)
        defer { unlink(path) }
        let backend = try RAMBackend(RAMBackendSpec(storage: .file(path: path, shared: true)), size: 2 << 20, name: "test")
        let low = try GuestRAM(base: GuestAddress(0), size: 1 << 20, backend: backend, offset: 0)
        let high = try GuestRAM(base: GuestAddress(1 << 32), size: 1 << 20, backend: backend, offset: 1 << 20)
        let memory = try GuestMemory(regions: [low, high])
        try memory.write(UInt8(0xa5), at: GuestAddress(0x10))
        try memory.write(UInt8(0x5a), at: GuestAddress((1 << 32) + 0x20))
        #expect(fileByte(path, at: 0x10) == 0xa5)
        #expect(fileByte(path, at: (1 << 20) + 0x20) == 0x5a, "the high region is the file's second MiB (grown to the RAM size)")
    }

    /// share=off: the guest sees the file's bytes but writes private copies.
    @Test func privateFileIsOnlyRead() throws {
        let path = try scratchFile(1 << 20)
        defer { unlink(path) }
        let fd = open(path, O_WRONLY)
        var seed: UInt8 = 0x33
        _ = pwrite(fd, &seed, 1, 0x40)
        close(fd)
        let backend = try RAMBackend(RAMBackendSpec(storage: .file(path: path, shared: false)), size: 1 << 20, name: "test")
        let memory = try GuestMemory(regions: [GuestRAM(base: GuestAddress(0), size: 1 << 20, backend: backend, offset: 0)])
        #expect(try memory.read(UInt8.self, at: GuestAddress(0x40)) == 0x33)
        try memory.write(UInt8(0x77), at: GuestAddress(0x40))
        #expect(try memory.read(UInt8.self, at: GuestAddress(0x40)) == 0x77)
        #expect(fileByte(path, at: 0x40) == 0x33)
        // A private file shorter than the RAM would fault past its end: refused.
        #expect(throws: SystemError.self) {
            _ = try RAMBackend(RAMBackendSpec(storage: .file(path: path, shared: false)), size: 2 << 20, name: "test")
        }
    }

    /// A directory gets a new file of its own, gone once the backend is.
    @Test func directoryGetsAnUnlinkedFile() throws {
        var spec = RAMBackendSpec(storage: .file(path: "/tmp", shared: true))
        spec.prealloc = true
        let backend = try RAMBackend(spec, size: 1 << 20, name: "test")
        let memory = try GuestMemory(regions: [GuestRAM(base: GuestAddress(0), size: 1 << 20, backend: backend, offset: 0)])
        try memory.write(UInt32(0xdead_beef), at: GuestAddress(0xff0))
        #expect(try memory.read(UInt32.self, at: GuestAddress(0xff0)) == 0xdead_beef)
        var info = stat()
        #expect(fstat(backend.fd, &info) == 0 && info.st_nlink == 0 && info.st_size == 1 << 20)
        #expect(throws: SystemError.self) {
            _ = try RAMBackend(RAMBackendSpec(storage: .file(path: "/nonexistent-dir/ram", shared: true)), size: 1 << 20, name: "test")
        }
    }

    /// A sealed memfd cannot be resized (memory-backend-memfd's default seal=on).
    @Test func sealedMemfdKeepsItsSize() throws {
        let sealed = try RAMBackend(RAMBackendSpec(storage: .memfd(seal: true)), size: 1 << 20, name: "test")
        #expect(ftruncate(sealed.fd, 2 << 20) != 0)
        let open = try RAMBackend(size: 1 << 20, name: "test")
        #expect(ftruncate(open.fd, 2 << 20) == 0)
    }
}

/// `discard` (virtio-balloon inflate): the host gets the pages back, the guest reads what the
/// backend holds, and the pages count as written.
@Suite struct DiscardTests {
    /// A memfd loses the pages (a hole in the file): they read as zero; others keep their bytes.
    @Test func memfdPagesReadAsZero() throws {
        let memory = try GuestMemory(base: GuestAddress(0x8000_0000), size: 1 << 20)
        for page in 0..<4 { try memory.writeBytes([UInt8](repeating: 0xab, count: 4096), at: GuestAddress(0x8000_0000 + UInt64(page) * 4096)) }
        memory.setDirtyTracking(true)
        _ = memory.takeDirtyPages()
        try memory.discard(at: GuestAddress(0x8000_1000), count: 8192)
        // The file has a hole there: its blocks went back to the host (checked before the
        // reads below, which fault the pages in again).
        let region = try #require(memory.regions.first)
        let seekHole: Int32 = 4  // SEEK_HOLE (<unistd.h> with _GNU_SOURCE; not in the Glibc module)
        #expect(lseek(region.backend.fd, 0x1000, seekHole) == 0x1000)
        #expect(try memory.readBytes(at: GuestAddress(0x8000_1000), count: 8192).allSatisfy { $0 == 0 })
        #expect(try memory.readBytes(at: GuestAddress(0x8000_0000), count: 4096).allSatisfy { $0 == 0xab })
        #expect(try memory.readBytes(at: GuestAddress(0x8000_3000), count: 4096).allSatisfy { $0 == 0xab })
        #expect(memory.takeDirtyPages() == [GuestAddress(0x8000_1000), GuestAddress(0x8000_2000)])
    }

    /// share=off: the private copies go, and the page reads as the file's bytes again.
    @Test func privateFilePagesReadAsTheFile() throws {
        let backend = try RAMBackend(RAMBackendSpec(storage: .file(path: "/tmp", shared: false)), size: 1 << 20, name: "test")
        let memory = try GuestMemory(regions: [GuestRAM(base: GuestAddress(0), size: 1 << 20, backend: backend, offset: 0)])
        try memory.write(UInt64.max, at: GuestAddress(0x2008))
        try memory.discard(at: GuestAddress(0x2000), count: 4096)
        #expect(try memory.read(UInt64.self, at: GuestAddress(0x2008)) == 0)
    }

    @Test func refusesPartialPagesAndNonRAM() throws {
        let memory = try GuestMemory(base: GuestAddress(0x8000_0000), size: 1 << 20)
        #expect(throws: SystemError.self) { try memory.discard(at: GuestAddress(0x8000_0800), count: 4096) }
        #expect(throws: SystemError.self) { try memory.discard(at: GuestAddress(0x8000_0000), count: 100) }
        #expect(throws: SystemError.self) { try memory.discard(at: GuestAddress(0x8000_0000), count: 0) }
        #expect(throws: SystemError.self) { try memory.discard(at: GuestAddress(0x8010_0000), count: 4096) }
        #expect(throws: SystemError.self) { try memory.discard(at: GuestAddress(0x800f_f000), count: 8192) }
    }
}
