import CLinux
import Glibc

/// An owned memory mapping, anonymous or of a file, unmapped when its owner ends (DESIGN.md §9.4).
///
/// Guest RAM lives in one of these (mapping its memory backend's file): host pages are
/// committed lazily by the kernel, so a large `-m` costs nothing until the guest touches it.
public struct MappedRegion: ~Copyable, @unchecked Sendable {
    // SAFETY: `base` points to `count` bytes mapped by init and unmapped only by deinit; the
    // region is never remapped, so the pointer stays valid for the owner's whole life. Sendable
    // because the mapping is plain memory; synchronising access to its bytes is the user's job.
    public let base: UnsafeMutableRawPointer
    public let count: Int

    /// Maps `count` bytes of zeroed anonymous memory whose start is aligned to `alignment` (a
    /// power of two, at least the page size).
    public init(count: Int, alignment: Int = 4096) throws(SystemError) {
        base = try Self.reserve(count: count, alignment: alignment)
        self.count = count
        if alignment >= 2 << 20 { _ = madvise(base, count, MADV_HUGEPAGE) }
    }

    /// Maps `count` bytes of the file `fd` from `offset`, aligned to `alignment`: shared (the
    /// file's own pages: a memfd, or memory-backend-file share=on) or private (copy-on-write
    /// pages, share=off). `reserve` commits swap for the pages now (mmap without
    /// MAP_NORESERVE). The mapping needs `fd` only during init; its owner closes it.
    public init(count: Int, alignment: Int = 4096, file fd: Int32, offset: UInt64, shared: Bool, reserve: Bool = false) throws(SystemError) {
        let aligned = try Self.reserve(count: count, alignment: alignment)
        let flags = (shared ? MAP_SHARED : MAP_PRIVATE) | MAP_FIXED | (reserve ? 0 : MAP_NORESERVE)
        let mapped = mmap(aligned, count, PROT_READ | PROT_WRITE, flags, fd, off_t(offset))
        guard let mapped, clx_is_map_failed(mapped) == 0 else {
            let error = Errno.current
            munmap(aligned, count)
            throw SystemError(.syscall, "cannot map \(count) bytes of guest memory", errno: error)
        }
        base = aligned
        self.count = count
        if alignment >= 2 << 20 { _ = madvise(base, count, MADV_HUGEPAGE) }
    }

    /// Reserves `count` bytes of anonymous memory aligned to `alignment`. Over-maps by
    /// `alignment` and trims the excess, because mmap only promises page alignment; 2 MiB
    /// alignment lets the kernel back guest RAM with transparent huge pages.
    private static func reserve(count: Int, alignment: Int) throws(SystemError) -> UnsafeMutableRawPointer {
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        guard count > 0, count % page == 0 else {
            throw SystemError(.configuration, "mapping size \(count) is not a positive multiple of the page size \(page)")
        }
        guard alignment >= page, alignment & (alignment - 1) == 0 else {
            throw SystemError(.configuration, "mapping alignment \(alignment) is not a power of two of at least \(page)")
        }
        let (total, overflow) = count.addingReportingOverflow(alignment)
        guard !overflow else { throw SystemError(.configuration, "mapping size \(count) is too large") }
        let raw = mmap(nil, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0)
        guard let raw, clx_is_map_failed(raw) == 0 else {
            throw SystemError(.syscall, "cannot map \(count) bytes of memory", errno: .current)
        }
        let start = (Int(bitPattern: raw) + alignment - 1) & ~(alignment - 1)
        let head = start - Int(bitPattern: raw)
        let tail = total - head - count
        if head > 0 { munmap(raw, head) }
        if tail > 0 { munmap(UnsafeMutableRawPointer(bitPattern: start + count), tail) }
        return UnsafeMutableRawPointer(bitPattern: start)!  // start is inside a successful mapping, never 0
    }

    deinit {
        munmap(base, count)
    }
}
