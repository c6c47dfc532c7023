import CLinux
import Synchronization
import SystemSupport

/// Which pages of a RAM region were written since the last look (DESIGN.md §3, §5): the
/// pre-copy rounds of live migration send only these.
///
/// Tracking is off until a migration turns it on, so a machine nobody migrates pays one
/// relaxed load per noted write. While it is on, every writer marks the pages it writes:
/// device DMA, loaders and debuggers through `GuestMemory`'s accessors, the harts' slow-path
/// stores, atomics and page-table A/D updates through `noteWrite`, and the harts' fast-path
/// stores when their TLB takes the page for writing (`markDirty` in `Hart.resolve`). The
/// reader takes the bits with every vCPU parked and makes each hart drop its write
/// translations before it runs again, so a page written after the look is marked again.
/// (QEMU's TCG does the same with TLB_NOTDIRTY.)
package final class DirtyBitmap: @unchecked Sendable {
    // SAFETY: `words` points into `table`, mapped in init for `pages` bits and unmapped only
    // when this object ends; every access is bounds-checked against `pages` and atomic, since
    // vCPU threads, device threads and the migration thread touch the bits at once.
    private let table: MappedRegion
    private let words: UnsafeMutableRawPointer
    package let pages: Int
    private let tracking = Atomic<Bool>(false)

    init(pages: Int) throws(SystemError) {
        self.pages = pages
        let bytes = ((pages + 63) / 64 * 8 + 4095) / 4096 * 4096
        table = try MappedRegion(count: max(bytes, 4096))
        words = table.base
    }

    /// Whether writes are being recorded.
    @inline(__always)
    package var isTracking: Bool { tracking.load(ordering: .relaxed) }

    /// Starts recording with every page marked dirty (nothing has been sent yet), or stops.
    package func setTracking(_ on: Bool) {
        for word in 0..<((pages + 63) / 64) {
            let bits: UInt64 = on ? (word == (pages - 1) / 64 && pages % 64 != 0 ? (1 << UInt64(pages % 64)) - 1 : .max) : 0
            clx_atomic_store_u64(words + word * 8, bits)
        }
        tracking.store(on, ordering: .sequentiallyConsistent)
    }

    @inline(__always)
    package func mark(page: Int) {
        guard page >= 0 && page < pages else { return }
        let word = words + (page / 64) * 8
        let bit: UInt64 = 1 << UInt64(page % 64)
        if clx_atomic_load_u64(word) & bit == 0 { _ = clx_atomic_fetch_or_u64(word, bit) }
    }

    package func mark(firstPage first: Int, lastPage last: Int) {
        var page = max(first, 0)
        while page <= min(last, pages - 1) {
            mark(page: page)
            page += 1
        }
    }

    /// The dirty pages, in order, each cleared as it is taken.
    package func takeDirtyPages() -> [Int] {
        var result: [Int] = []
        for word in 0..<((pages + 63) / 64) {
            let p = words + word * 8
            guard clx_atomic_load_u64(p) != 0 else { continue }
            var bits = clx_atomic_fetch_and_u64(p, 0)
            while bits != 0 {
                let bit = bits.trailingZeroBitCount
                result.append(word * 64 + bit)
                bits &= bits - 1
            }
        }
        return result
    }

    /// How many pages are dirty now (for the migration's estimate of what remains).
    package var dirtyCount: Int {
        var count = 0
        for word in 0..<((pages + 63) / 64) { count += clx_atomic_load_u64(words + word * 8).nonzeroBitCount }
        return count
    }
}
