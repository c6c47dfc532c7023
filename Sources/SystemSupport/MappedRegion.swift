import CLinux
import Glibc

/// An owned anonymous memory mapping, unmapped when its owner ends (DESIGN.md §9.4).
///
/// Guest RAM lives in one of these: host pages are committed lazily by the kernel, so a
/// large `-m` costs nothing until the guest touches it.
public struct MappedRegion: ~Copyable, @unchecked Sendable {
    // SAFETY: `base` points to `count` bytes mapped by init and unmapped only by deinit; the
    // region is never remapped, so the pointer stays valid for the owner's whole life. Sendable
    // because the mapping is plain memory; synchronising access to its bytes is the user's job.
    public let base: UnsafeMutableRawPointer
    public let count: Int

    /// Maps `count` bytes of zeroed memory whose start is aligned to `alignment` (a power of
    /// two, at least the page size). Over-maps by `alignment` and trims the excess, because
    /// mmap only promises page alignment; 2 MiB alignment lets the kernel back guest RAM with
    /// transparent huge pages.
    /// The memfd behind the mapping, when made with `memfd:` (-1 otherwise): guest RAM is one,
    /// so it can be shared, dumped or sent without copies (DESIGN.md §3).
    public let memfd: Int32

    public init(count: Int, alignment: Int = 4096, memfd name: String? = nil) throws(SystemError) {
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        guard count > 0, count % page == 0 else {
            throw SystemError(.configuration, "mapping size \(count) is not a positive multiple of the page size \(page)")
        }
        guard alignment >= page, alignment & (alignment - 1) == 0 else {
            throw SystemError(.configuration, "mapping alignment \(alignment) is not a power of two of at least \(page)")
        }
        let (total, overflow) = count.addingReportingOverflow(alignment)
        guard !overflow else { throw SystemError(.configuration, "mapping size \(count) is too large") }
        // Reserve an aligned range, then (for a memfd) map the file over its aligned part.
        let raw = mmap(nil, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0)
        guard let raw, clx_is_map_failed(raw) == 0 else {
            throw SystemError(.syscall, "cannot map \(count) bytes of memory", errno: .current)
        }
        var fd: Int32 = -1
        if let name {
            fd = clx_memfd_create(name)
            guard fd >= 0, ftruncate(fd, off_t(count)) == 0 else {
                let error = Errno.current
                if fd >= 0 { close(fd) }
                munmap(raw, total)
                throw SystemError(.syscall, "cannot create \(count) bytes of memfd memory", errno: error)
            }
        }
        let start = (Int(bitPattern: raw) + alignment - 1) & ~(alignment - 1)
        let head = start - Int(bitPattern: raw)
        let tail = total - head - count
        if head > 0 { munmap(raw, head) }
        if tail > 0 { munmap(UnsafeMutableRawPointer(bitPattern: start + count), tail) }
        let aligned = UnsafeMutableRawPointer(bitPattern: start)!  // start is inside a successful mapping, never 0
        if fd >= 0 {
            let mapped = mmap(aligned, count, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED | MAP_NORESERVE, fd, 0)
            guard let mapped, clx_is_map_failed(mapped) == 0 else {
                let error = Errno.current
                close(fd)
                munmap(aligned, count)
                throw SystemError(.syscall, "cannot map \(count) bytes of memfd memory", errno: error)
            }
        }
        base = aligned
        self.count = count
        memfd = fd
        if alignment >= 2 << 20 { _ = madvise(base, count, MADV_HUGEPAGE) }
    }

    deinit {
        munmap(base, count)
        if memfd >= 0 { close(memfd) }
    }
}
