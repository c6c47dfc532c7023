import Glibc
import Synchronization
import SystemSupport

/// Why a guest memory access could not be done. A bad guest address is an error value the
/// caller turns into a guest-visible fault (access fault, virtio NEEDS_RESET), never a crash.
public enum GuestMemoryError: Error, Equatable, Sendable, CustomStringConvertible {
    /// `[address, address + count)` is not wholly inside one RAM region.
    case outOfRange(address: GuestAddress, count: UInt64)

    public var description: String {
        switch self {
        case let .outOfRange(address, count):
            return "guest access of \(count) bytes at \(address) is outside guest RAM"
        }
    }
}

/// One contiguous block of guest RAM: a host mapping placed at a guest-physical address.
/// The mapping is owned by a `~Copyable` `MappedRegion` and lives as long as this object.
public final class GuestRAM: Sendable {
    public let range: AddressRange
    private let mapping: MappedRegion
    /// The memfd or file whose bytes these are (DESIGN.md §3): shareable with another process
    /// or dumped without a copy through the mapping.
    package let backend: RAMBackend
    /// Which pages hold code decoded by a hart, and their write generations.
    let codePages: CodePages
    /// Which pages were written while a migration tracks them.
    package let dirty: DirtyBitmap

    /// RAM is aligned to 2 MiB on the host so the kernel can use huge pages for it.
    public static let hostAlignment = 2 << 20

    /// RAM of its own (a memfd), for ROMs and tests.
    public convenience init(base: GuestAddress, size: UInt64) throws(SystemError) {
        try self.init(base: base, size: size, backend: RAMBackend(size: size, name: "swemu-ram@\(String(base.rawValue, radix: 16))"), offset: 0)
    }

    /// `size` bytes of `backend` from `offset`, at guest-physical `base`.
    public init(base: GuestAddress, size: UInt64, backend: RAMBackend, offset: UInt64) throws(SystemError) {
        guard size > 0, size % 4096 == 0, size <= UInt64(Int.max - GuestRAM.hostAlignment) else {
            throw .configuration("RAM size \(size) must be a positive multiple of 4 KiB")
        }
        guard let range = AddressRange(base: base, size: size) else {
            throw .configuration("RAM of \(size) bytes at \(base) passes the end of the address space")
        }
        self.range = range
        self.backend = backend
        mapping = try backend.map(offset: offset, size: size)
        codePages = try CodePages(size: size)
        dirty = try DirtyBitmap(pages: Int(size / 4096))
    }

    public var size: UInt64 { range.size }

    /// Host pointer to `count` bytes at `address`, or nil when they are not all in this region.
    /// Callers use it only inside a scoped accessor below or in a hot path that documents why.
    @inline(__always)
    public func hostPointer(at address: GuestAddress, count: UInt64) -> UnsafeMutableRawPointer? {
        guard range.contains(address, count: count) else { return nil }
        // SAFETY: the check above keeps offset + count within the mapping, which lives as long as self.
        return mapping.base + Int(address.rawValue - range.base.rawValue)
    }
}

extension GuestRAM {
    private func pageIndex(_ address: GuestAddress) -> Int {
        Int((address.rawValue &- range.base.rawValue) >> 12)
    }

    /// Records a write to `[address, address + count)` for code tracking (`CodePages`).
    @inline(__always)
    package func noteWrite(at address: GuestAddress, count: UInt64) {
        guard count > 0, range.contains(address, count: count) else { return }
        let first = pageIndex(address), last = pageIndex(GuestAddress(address.rawValue + count - 1))
        codePages.noteWrite(firstPage: first, lastPage: last)
        if dirty.isTracking { dirty.mark(firstPage: first, lastPage: last) }
    }
}

/// All of a machine's guest RAM: one or more `GuestRAM` regions that never overlap
/// (the x86 board splits RAM around the MMIO hole below 4 GiB). Every access is bounds-checked.
public final class GuestMemory: Sendable {
    public let regions: [GuestRAM]
    /// Told, on the registering thread and before it reads the page, that a page just became
    /// code (`CodePages`): each hart drops the write translations it cached for it, so its
    /// next store there is noted. QEMU's tlb_protect_code does the same to every vCPU's TLB.
    package typealias CodePageListener = @Sendable (_ physicalPage: UInt64) -> Void
    private let codePageListeners = Mutex<[Int: CodePageListener]>([:])
    private let nextListener = Atomic<Int>(0)

    /// Adds a listener; returns its identifier for `removeCodePageListener`.
    package func addCodePageListener(_ listener: @escaping CodePageListener) -> Int {
        let id = nextListener.add(1, ordering: .relaxed).newValue
        codePageListeners.withLock { $0[id] = listener }
        return id
    }

    /// Removes a listener; once this returns it is not running and will not run again.
    package func removeCodePageListener(_ id: Int) {
        _ = codePageListeners.withLock { $0.removeValue(forKey: id) }
    }

    public init(regions: [GuestRAM]) throws(SystemError) {
        let sorted = regions.sorted { $0.range.base < $1.range.base }
        for (a, b) in zip(sorted, sorted.dropFirst()) where a.range.overlaps(b.range) {
            throw .configuration("RAM regions \(a.range) and \(b.range) overlap")
        }
        self.regions = sorted
    }

    /// A machine with one RAM block.
    public convenience init(base: GuestAddress, size: UInt64) throws(SystemError) {
        try self.init(regions: [GuestRAM(base: base, size: size)])
    }

    public var totalSize: UInt64 { regions.reduce(0) { $0 + $1.size } }

    @inline(__always)
    func region(containing address: GuestAddress, count: UInt64) throws(GuestMemoryError) -> (GuestRAM, UnsafeMutableRawPointer) {
        for region in regions {
            if let p = region.hostPointer(at: address, count: count) { return (region, p) }
        }
        throw .outOfRange(address: address, count: count)
    }

    /// Host pointer to `count` bytes of RAM at `address`, or nil when they are not all in one
    /// RAM region. For the CPU's TLB and atomics, which use it only while this memory lives;
    /// everything else goes through the bounds-checked accessors below.
    @inline(__always)
    public func hostPointer(at address: GuestAddress, count: UInt64) -> UnsafeMutableRawPointer? {
        try? region(containing: address, count: count).1
    }

    /// Whether `[address, address + count)` is wholly RAM.
    public func isRAM(_ address: GuestAddress, count: UInt64 = 1) -> Bool {
        (try? region(containing: address, count: count)) != nil
    }

    /// Loads a little-endian integer (guests of both architectures are little-endian).
    /// Exported specializations: device code in other modules (the virtqueues) calls these per
    /// descriptor field, and the unspecialized generic looked up type metadata on every call.
    @inline(__always)
    @_specialize(exported: true, where T == UInt8)
    @_specialize(exported: true, where T == UInt16)
    @_specialize(exported: true, where T == UInt32)
    @_specialize(exported: true, where T == UInt64)
    public func read<T: FixedWidthInteger>(_: T.Type = T.self, at address: GuestAddress) throws(GuestMemoryError) -> T {
        let (_, p) = try region(containing: address, count: UInt64(MemoryLayout<T>.size))
        return T(littleEndian: p.loadUnaligned(as: T.self))
    }

    /// Stores a little-endian integer (exported specializations as `read`'s).
    @inline(__always)
    @_specialize(exported: true, where T == UInt8)
    @_specialize(exported: true, where T == UInt16)
    @_specialize(exported: true, where T == UInt32)
    @_specialize(exported: true, where T == UInt64)
    public func write<T: FixedWidthInteger>(_ value: T, at address: GuestAddress) throws(GuestMemoryError) {
        let (region, p) = try region(containing: address, count: UInt64(MemoryLayout<T>.size))
        p.storeBytes(of: value.littleEndian, as: T.self)
        region.noteWrite(at: address, count: UInt64(MemoryLayout<T>.size))
    }

    /// Runs `body` on the host bytes backing `[address, address + count)`; the buffer must not
    /// escape `body`. This is how DMA-capable devices and loaders reach guest RAM.
    /// `writing`: whether `body` may write (then the write is noted for code tracking);
    /// a device that only reads guest memory says false.
    @discardableResult
    public func withHostBytes<R>(
        at address: GuestAddress, count: Int, writing: Bool = true,
        _ body: (UnsafeMutableRawBufferPointer) throws -> R
    ) throws -> R {
        guard count >= 0 else { throw GuestMemoryError.outOfRange(address: address, count: 0) }
        let (region, p) = try region(containing: address, count: UInt64(count))
        defer { if writing { region.noteWrite(at: address, count: UInt64(count)) } }
        return try body(UnsafeMutableRawBufferPointer(start: p, count: count))
    }

    /// Copies `count` bytes out of guest RAM.
    public func readBytes(at address: GuestAddress, count: Int) throws(GuestMemoryError) -> [UInt8] {
        guard count >= 0 else { throw .outOfRange(address: address, count: 0) }
        let (_, p) = try region(containing: address, count: UInt64(count))
        return Array(UnsafeRawBufferPointer(start: p, count: count))
    }

    /// Copies `bytes` into guest RAM.
    public func writeBytes(_ bytes: some Collection<UInt8>, at address: GuestAddress) throws(GuestMemoryError) {
        let (region, p) = try region(containing: address, count: UInt64(bytes.count))
        UnsafeMutableRawBufferPointer(start: p, count: bytes.count).copyBytes(from: bytes)
        region.noteWrite(at: address, count: UInt64(bytes.count))
    }
}

// MARK: - Discarding pages (virtio-balloon)

extension GuestRAM {
    /// Gives the host memory behind `[address, address + count)` back to the host, as QEMU's
    /// `ram_block_discard_range`. A shared mapping (a memfd, a share=on file) loses the
    /// backend's pages (MADV_REMOVE punches a hole in the file), so they read as zero; a
    /// private mapping (a share=off file) loses its private copies (MADV_DONTNEED), so they
    /// read as the file's bytes again. Either way the bytes changed without a store, so the
    /// range is noted as written: migration sends it again and translated code on it is dropped.
    func discard(at address: GuestAddress, count: UInt64) throws(SystemError) {
        guard count > 0, address.rawValue % 4096 == 0, count % 4096 == 0, let p = hostPointer(at: address, count: count) else {
            throw .badInput("discard of \(count) bytes at \(address): not whole pages of \(range)")
        }
        let shared: Bool
        switch backend.spec.storage {
        case .memfd: shared = true
        case .file(_, let s): shared = s
        }
        // SAFETY: `p` and `count` lie inside this region's mapping (checked by hostPointer), page
        // aligned (RAM is mapped 2 MiB aligned and the range is whole 4 KiB pages); madvise only
        // drops the pages' contents and the mapping stays valid.
        let result = madvise(p, Int(count), shared ? MADV_REMOVE : MADV_DONTNEED)
        // Noted even if madvise failed: the kernel may have dropped part of the range.
        noteWrite(at: address, count: count)
        guard result == 0 else {
            throw SystemError(.syscall, "cannot discard \(count) bytes of guest RAM at \(address)", errno: .current)
        }
    }
}

extension GuestMemory {
    /// Discards whole 4 KiB pages of RAM (`GuestRAM.discard`): `[address, address + count)`
    /// must lie in one region.
    package func discard(at address: GuestAddress, count: UInt64) throws(SystemError) {
        guard let region = regions.first(where: { $0.range.contains(address, count: count) }) else {
            throw .badInput("discard of \(count) bytes at \(address): not guest RAM")
        }
        try region.discard(at: address, count: count)
    }
}

// MARK: - Dirty pages (DirtyBitmap.swift)

extension GuestMemory {
    /// A hart is about to cache a write translation of the RAM page at `page`: while a
    /// migration tracks writes, the page counts as written (its stores will not be seen).
    @inline(__always)
    package func markDirtyForWriteTranslation(_ page: GuestAddress) {
        for region in regions where region.dirty.isTracking && region.range.contains(page, count: 1) {
            region.dirty.mark(page: Int((page.rawValue &- region.range.base.rawValue) >> 12))
        }
    }

    /// Starts (every page dirty) or stops recording writes in every region. Call with every
    /// vCPU parked, and have each hart drop its write translations before it runs again.
    package func setDirtyTracking(_ on: Bool) {
        for region in regions { region.dirty.setTracking(on) }
    }

    /// The pages written since the last call (guest-physical addresses, ascending), cleared.
    /// Call with every vCPU parked, then have each hart drop its write translations.
    package func takeDirtyPages() -> [GuestAddress] {
        regions.flatMap { region in region.dirty.takeDirtyPages().map { GuestAddress(region.range.base.rawValue + UInt64($0) << 12) } }
    }

    /// Pages dirty now, over every region.
    package var dirtyPageCount: Int { regions.reduce(0) { $0 + $1.dirty.dirtyCount } }
}

// MARK: - Code pages (CodePages.swift)

extension GuestMemory {
    /// Registers hart `hart` as holding code from the RAM page at `page`; returns the page's
    /// write generation, or nil when it is not RAM. When the page just became code, every
    /// listener has dropped its write translations of it before this returns.
    package func registerCodePage(_ page: GuestAddress, hart: Int) -> UInt32? {
        guard let region = try? region(containing: page, count: 4096).0 else { return nil }
        let (generation, becameCode) = region.codePages.register(page: Int((page.rawValue - region.range.base.rawValue) >> 12), hart: hart)
        if becameCode {
            codePageListeners.withLock { listeners in
                for listener in listeners.values { listener(page.rawValue) }
            }
        }
        return generation
    }

    package func unregisterCodePage(_ page: GuestAddress, hart: Int) {
        guard let region = try? region(containing: page, count: 4096).0 else { return }
        region.codePages.unregister(page: Int((page.rawValue - region.range.base.rawValue) >> 12), hart: hart)
    }

    /// Whether some hart holds code from the RAM page at `page`: its writes must be noted.
    package func isCodePage(_ page: GuestAddress) -> Bool {
        guard let region = try? region(containing: page, count: 4096).0 else { return false }
        return region.codePages.holderMask(page: Int((page.rawValue - region.range.base.rawValue) >> 12)) != 0
    }

    /// The write generation counter of the RAM page at `page`, for a hart that caches where
    /// to count its stores to a code page (`Hart`'s code-page write cache) or where to read
    /// whether a page it holds code from was written (its FENCE.I). It stays valid
    /// as long as this memory; it is only ever changed with `clx_atomic_fetch_add_u32`.
    package func codePageGenerationPointer(_ page: GuestAddress) -> UnsafeMutableRawPointer? {
        guard let region = try? region(containing: page, count: 4096).0 else { return nil }
        return region.codePages.generationPointer(page: Int((page.rawValue - region.range.base.rawValue) >> 12))
    }

    /// Records a write to guest RAM made through a host pointer (a hart's store or atomic).
    package func noteWrite(at address: GuestAddress, count: UInt64) {
        for region in regions where region.range.contains(address, count: count) {
            region.noteWrite(at: address, count: count)
            return
        }
    }
}
