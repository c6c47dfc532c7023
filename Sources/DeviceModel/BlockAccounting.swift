import Glibc
import Synchronization

/// What a disk's device did, for QMP `query-blockstats` and libvirt's `domblkstat` (QEMU's
/// BlockAcctStats, block/accounting.c): requests, bytes and time spent, by kind, and the
/// failed ones. One per disk, made with the machine's configuration, so the counters live
/// across resets as QEMU's (which belong to the BlockBackend, not to the device).
public final class BlockAccounting: Sendable {
    public enum Kind: Sendable {
        case read, write, flush, unmap
    }

    /// The counters at one moment.
    public struct Snapshot: Sendable, Equatable {
        public var readBytes: UInt64 = 0, writtenBytes: UInt64 = 0, unmapBytes: UInt64 = 0
        public var readOperations: UInt64 = 0, writeOperations: UInt64 = 0, flushOperations: UInt64 = 0, unmapOperations: UInt64 = 0
        public var readNanoseconds: UInt64 = 0, writeNanoseconds: UInt64 = 0, flushNanoseconds: UInt64 = 0, unmapNanoseconds: UInt64 = 0
        public var failedReads: UInt64 = 0, failedWrites: UInt64 = 0, failedFlushes: UInt64 = 0, failedUnmaps: UInt64 = 0
        /// The byte just past the highest write (wr_highest_offset).
        public var writeHighestOffset: UInt64 = 0
        public init() {}
    }

    private let counters = Mutex(Snapshot())

    public init() {}

    public var snapshot: Snapshot { counters.withLock { $0 } }

    /// Monotonic nanoseconds, for the time a request took.
    public static func now() -> UInt64 {
        var t = timespec()
        clock_gettime(CLOCK_MONOTONIC, &t)
        return UInt64(t.tv_sec) * 1_000_000_000 + UInt64(t.tv_nsec)
    }

    /// One request of `kind` on `bytes` bytes at `offset`, begun at `start` (`now()`), done.
    public func record(_ kind: Kind, offset: UInt64 = 0, bytes: UInt64 = 0, start: UInt64, failed: Bool) {
        let elapsed = Self.now() &- start
        counters.withLock { c in
            // As QEMU's block_acct_failed: a failed request counts only as failed.
            switch (kind, failed) {
            case (.read, false): c.readOperations += 1; c.readBytes += bytes; c.readNanoseconds += elapsed
            case (.write, false):
                c.writeOperations += 1; c.writtenBytes += bytes; c.writeNanoseconds += elapsed
                c.writeHighestOffset = max(c.writeHighestOffset, offset + bytes)
            case (.flush, false): c.flushOperations += 1; c.flushNanoseconds += elapsed
            case (.unmap, false): c.unmapOperations += 1; c.unmapBytes += bytes; c.unmapNanoseconds += elapsed
            case (.read, true): c.failedReads += 1
            case (.write, true): c.failedWrites += 1
            case (.flush, true): c.failedFlushes += 1
            case (.unmap, true): c.failedUnmaps += 1
            }
        }
    }
}
