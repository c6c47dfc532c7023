import CLinux
import SystemSupport

/// KVM's dirty page log (api.rst 4.8 KVM_GET_DIRTY_LOG, 4.35 KVM_MEM_LOG_DIRTY_PAGES), which
/// live migration reads to learn which pages the vCPUs wrote: guest stores never pass through
/// this process, so no software bitmap can see them.
///
/// While a slot has KVM_MEM_LOG_DIRTY_PAGES, KVM write-protects its pages and sets a page's
/// bit on the first guest write after each look (and on its own writes into guest memory:
/// kvmclock, steal time). KVM_GET_DIRTY_LOG hands the bits over, clears them and protects the
/// pages again (without KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 enabled, which swemu leaves off), so
/// each call returns the pages written since the one before. Writes by this process (device
/// DMA, loaders) are not in it: `GuestMemory` marks those itself.
extension KVMVirtualMachine {
    /// KVM_GET_DIRTY_LOG for `slot`, whose size is `pages` 4 KiB pages: one bit per page,
    /// page 0 in bit 0 of word 0. Callable while vCPUs run (a page written during the call is
    /// in this result or the next one), but a last look that must miss nothing is taken with
    /// every vCPU outside KVM_RUN.
    package func dirtyLog(slot: UInt32, pages: Int) throws(SystemError) -> [UInt64] {
        // The kernel writes ALIGN(pages, 64) / 8 bytes (kvm_dirty_bitmap_bytes).
        var words = [UInt64](repeating: 0, count: max(1, (pages + 63) / 64))
        let result = words.withUnsafeMutableBytes { buffer in
            var log = kvm_dirty_log()
            log.slot = slot
            // SAFETY: the buffer holds (pages + 63) / 64 words, as many as the kernel writes for
            // a slot of `pages` pages, and lives until the ioctl returns.
            log.dirty_bitmap = buffer.baseAddress
            return Result { () throws(SystemError) in try ioctl(clx_KVM_GET_DIRTY_LOG, "KVM_GET_DIRTY_LOG slot \(slot)", &log) }
        }
        try result.get()
        return words
    }
}
