import CLinux
import Synchronization
import SystemSupport

/// Which pages of a RAM region hold code that a hart has decoded or translated, and how
/// often each such page has been written since (the speed issue, part 3: invalidation that
/// stays fast).
///
/// Zifencei (Unprivileged §3.1) lets a hart keep running old code until it executes FENCE.I,
/// and Linux executes FENCE.I on every text patch (tens of thousands at boot with ftrace),
/// module load and executable page fault. Dropping every decoded or translated instruction
/// each time is ruinous; instead each hart remembers, per code page, the write generation it
/// saw, and FENCE.I drops only the pages whose generation moved.
///
/// Writers: the harts' stores and atomics that miss their TLB (a hart never caches a write
/// translation for a code page, see `Hart.resolve`), device DMA and loaders through
/// `GuestMemory`'s accessors, debuggers. Each calls `noteWrite` after writing. A page becomes
/// code when the first hart registers it; before the registering hart reads it, every hart
/// drops the write translations it cached for the page (`GuestMemory`'s code-page
/// listeners), so their next store there is noted. Only a store already past its TLB check
/// at that moment can go unnoted, as in QEMU's TCG (tlb_protect_code).
///
/// The tables are lazily committed anonymous memory (12 bytes per 4 KiB page, touched only
/// for pages that ever hold code), so a large KVM guest that never uses them pays nothing.
final class CodePages: @unchecked Sendable {
    // SAFETY: `holders` and `generations` point into `table`, which is mapped in init for
    // `pages` entries of each and unmapped only when this object ends; every access is
    // bounds-checked against `pages` and goes through the C atomics, since any vCPU thread
    // and device thread may touch them at once.
    private let table: MappedRegion
    private let holders: UnsafeMutableRawPointer
    private let generations: UnsafeMutableRawPointer
    let pages: Int

    init(size: UInt64) throws(SystemError) {
        pages = Int(size / 4096)
        let bytes = (pages * 12 + 4095) / 4096 * 4096
        table = try MappedRegion(count: max(bytes, 4096))
        holders = table.base
        generations = table.base + pages * 8
    }

    /// Bit `hart` is set in a page's holder mask while that hart holds code from it.
    func holderMask(page: Int) -> UInt64 {
        guard page >= 0 && page < pages else { return 0 }
        return clx_atomic_load_u64(holders + page * 8)
    }

    /// Registers `hart` as holding code from `page`; returns the page's write generation and
    /// whether the page just became code (no hart held it before).
    func register(page: Int, hart: Int) -> (generation: UInt32, becameCode: Bool) {
        precondition(page >= 0 && page < pages && hart >= 0 && hart < 64, "code page registration out of range")
        let before = clx_atomic_fetch_or_u64(holders + page * 8, 1 << UInt64(hart))
        return (clx_atomic_load_u32(generations + page * 4), before == 0)
    }

    func unregister(page: Int, hart: Int) {
        guard page >= 0 && page < pages && hart >= 0 && hart < 64 else { return }
        _ = clx_atomic_fetch_and_u64(holders + page * 8, ~(1 << UInt64(hart)))
    }

    /// Where page `page`'s write generation lives, for a hart's code-page write cache.
    func generationPointer(page: Int) -> UnsafeMutableRawPointer? {
        guard page >= 0 && page < pages else { return nil }
        return generations + page * 4
    }

    /// After a write to pages `first...last`: moves the generation of those that hold code.
    func noteWrite(firstPage first: Int, lastPage last: Int) {
        var page = max(first, 0)
        while page <= min(last, pages - 1) {
            if clx_atomic_load_u64(holders + page * 8) != 0 {
                _ = clx_atomic_fetch_add_u32(generations + page * 4, 1)
            }
            page += 1
        }
    }
}
