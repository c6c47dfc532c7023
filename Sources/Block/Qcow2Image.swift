import DeviceModel
import Glibc
import Synchronization
import SystemSupport

/// A qcow2 image, versions 2 and 3 (QEMU's docs/interop/qcow2.txt), as a `BlockBackend`.
///
/// **Metadata** is written through: every change to an L1, L2 or refcount entry goes to the
/// file at once, in an order that can leak a cluster if swemu dies half way but never lets a
/// table point at a cluster whose refcount does not count it (allocate, write data, link,
/// then release what was replaced). Tables are cached (L2 tables and refcount blocks, bounded).
///
/// **Crash safety** (cache=writeback, QEMU's guarantees): a `kill -9` loses nothing the
/// kernel has; a host crash or power loss may lose, or keep in any subset, every write since
/// the last `fdatasync`. The order above must therefore hold on the disk, not only in the
/// page cache, and two barriers enforce it, as QEMU's qcow2 cache dependencies do
/// (`qcow2_cache_set_dependency`: L2 tables depend on refcount blocks; refcount decreases
/// depend on L2 tables):
/// - *before a link*: a new cluster's refcount and its contents (data, a copied or fresh
///   table) are synced before an L1/L2/refcount-table entry or header field points at it
///   (`linkBarrier`). One `fdatasync` per allocating request; overwrites in place need none.
/// - *after an unlink*: the refcount of a cluster an entry stopped pointing at is lowered
///   only once that entry's new value is durable: releases wait (`deferredReleases`) for the
///   next flush, which syncs first, or for close. Until then the cluster stays allocated, so
///   it cannot be handed out again while an old table on the disk still points at it.
/// With both, a crash leaves at worst leaked clusters (`check -r leaks` frees them), and
/// every write completed before the guest's last flush reads back.
///
/// **Locking.** One lock serialises every request on the image; the host I/O runs under it.
/// A backing image has its own lock and never calls back up the chain.
package final class Qcow2Image: BlockBackend, @unchecked Sendable {
    // SAFETY (@unchecked Sendable): every `var` below is read and written only while `lock` is
    // held (the package entry points take it; the `...Locked` helpers assume it). The image
    // tools also read `header` and `snapshots` directly, from the one thread using the image.
    private let lock = Mutex<Void>(())

    // qcow2.txt "Cluster mapping": L1/L2 entry bits.
    static let offsetMask: UInt64 = 0x00ff_ffff_ffff_fe00
    static let copiedFlag: UInt64 = 1 << 63
    static let compressedFlag: UInt64 = 1 << 62
    static let zeroFlag: UInt64 = 1 << 0
    /// qcow2.txt "Refcount table": bits 9-63 of an entry are the refcount block's offset.
    static let refcountTableMask: UInt64 = 0xffff_ffff_ffff_fe00
    /// Backing chains deeper than this are refused (each level holds a descriptor open).
    package static let maxChainDepth = 256

    package let file: ImageFile
    package let readOnly: Bool
    package internal(set) var header: Qcow2Header
    package let backing: (any BlockBackend)?
    package internal(set) var snapshots: [Qcow2Snapshot]
    /// `cache=unsafe`: flushes are ignored (QEMU's meaning: fast, and lost on a host crash).
    private let ignoreFlush: Bool
    /// Opened by `check` (see `init`): tables past the end of the file read as zeroes.
    let forCheck: Bool
    /// A new cluster's refcount or contents were written since the last sync: the next entry
    /// that points at something must wait for a sync (see "Crash safety").
    private var unsyncedAllocation = false
    /// Clusters whose refcount drops by one once the entries that stopped using them are
    /// durable (see "Crash safety"); a cluster appears once per reference dropped.
    private var deferredReleases: [(serial: UInt64, cluster: UInt64)] = []
    /// The serial number the next deferred release gets (a flush applies those before it).
    private var nextReleaseSerial: UInt64 = 0
    package let clusterSize: UInt64
    let clusterBits: UInt64
    /// Entries per L2 table (qcow2.txt: `l2_entries = cluster_size / 8`).
    let l2Entries: UInt64
    /// Entries per refcount block: `cluster_size * 8 / refcount_bits`.
    let refcountBlockEntries: UInt64
    var l1: [UInt64]
    var refcountTable: [UInt64]
    private var l2Cache = TableCache<[UInt64]>()
    private var refcountBlockCache = TableCache<[UInt8]>()
    /// Every cluster at or past this offset is free: the allocator extends the file here.
    var fileEnd: UInt64
    /// The allocator's search starts here (no free cluster lies below it).
    var freeHint: UInt64 = 0
    /// Where the next compressed cluster may be packed (0: start a new host cluster).
    private var compressedCursor: UInt64 = 0
    /// The clusters of every refcount block (for `isMetadata`).
    private var refcountBlockClusters: Set<UInt64> = []
    private var decompressed: (entry: UInt64, data: [UInt8])?
    private var closed = false
    /// Set by `signalCorruption`: writes are refused from then on.
    private var corrupt = false
    /// The file's length when opened: clusters below it may be in use.
    var openedLength: UInt64
    /// A `savevm` is writing the vmstate area (one at a time: they would share it).
    var savingVMState = false
    /// Another process owns the image's metadata now or until `activate()` (QEMU's
    /// BDRV_O_INACTIVE, for live migration): an incoming destination opens its disks inactive
    /// while the source still writes them, and the source makes them inactive before it hands
    /// the machine over. Inactive, the image writes nothing, not even its header on close.
    private var inactive = false
    /// The permissions the image takes on its file while active (see ImageLock.swift).
    private let lockRequest: LockRequest
    /// Opened inactive: no locks yet (QEMU holds none on an inactive node); `activate()` takes them.
    private var locksPending: Bool
    /// `inactivate()` gave the image's write permissions back; `activate()` takes them again.
    private var locksRelaxed = false
    /// The locks `activate()` took on an image opened inactive.
    private var lateLocks: ImageLockHolder?

    package var label: String { "qcow2:\(file.path)" }
    package var size: UInt64 { lock.withLock { _ in header.size } }
    /// The file's lock holder (nil when it holds none).
    package var locks: ImageLockHolder? { file.locks ?? lock.withLock { _ in lateLocks } }

    /// How `init` treats a backing file.
    package enum BackingMode {
        /// Open the chain, refusing loops; `chain` holds the real paths of the images above.
        case open(chain: [String])
        /// Leave it closed: unallocated clusters read as zeroes (`info`, `rebase -u`, `check`).
        case skip
    }

    /// Opens a qcow2 image. Read-write opening refuses an image marked corrupt, sets the dirty
    /// bit (v3) until `close()`, and clears the autoclear features this build does not keep up
    /// to date (qcow2.txt: "autoclear_features").
    ///
    /// `forCheck` is `check`'s tolerant open (qemu-img's BDRV_O_CHECK): tables the header
    /// points at may lie past the end of the file (a truncated image reads zeroes there, as
    /// in QEMU, and `check` reports what is missing), and a dirty image with lazy refcounts
    /// is not repaired behind `check`'s back. Everything else is validated as usual.
    package init(path: String, readOnly: Bool, backingMode: BackingMode = .open(chain: []), cache: BlockCacheMode = .writeback,
                 forRepair: Bool = false, inactive: Bool = false, forCheck: Bool = false,
                 locking: ImageLocking = .tool) throws(SystemError)
    {
        // Locks first, before anything is read: an image in use is refused as QEMU refuses it.
        lockRequest = locking.request(readOnly: readOnly, metadata: true)
        locksPending = inactive
        file = try ImageFile(path: path, readOnly: readOnly, direct: cache.direct, lock: inactive ? nil : lockRequest)
        self.readOnly = readOnly
        self.forCheck = forCheck
        ignoreFlush = cache == .unsafe
        let length = try file.length()
        let first = try file.readBytes(at: 0, count: Int(min(length, 2 << 20)))
        // A check-only open bounds the tables by the format's limits, not by the file.
        header = try Qcow2Header(parsing: first, fileLength: forCheck ? .max : length, name: path)
        clusterBits = UInt64(header.clusterBits)
        clusterSize = header.clusterSize
        l2Entries = clusterSize / 8
        refcountBlockEntries = (clusterSize * 8) >> UInt64(header.refcountOrder)
        fileEnd = (length + clusterSize - 1) / clusterSize * clusterSize
        openedLength = length
        (l1, refcountTable, refcountBlockClusters, snapshots) = try Qcow2Image.readMetadata(file, header, length: length, pastEnd: forCheck)
        if case .open(let chain) = backingMode, let name = header.backingFile {
            // The chain shares the cache mode's O_DIRECT, as in QEMU; it is only read.
            backing = try Qcow2Image.openBacking(name, format: header.backingFormat, of: path, chain: chain,
                                                 cache: cache.direct ? .none : .writeback, locking: locking.forBacking)
        } else {
            backing = nil
        }
        guard !readOnly else { return }
        if inactive {
            // The metadata is read again by `activate()`; nothing is written until then.
            self.inactive = true
            OpenImages.register(self)
            return
        }
        guard forRepair || header.incompatibleFeatures & Qcow2Header.corruptBit == 0 else {
            throw .badInput("\(path): the qcow2 image is marked corrupt; open it read-only (readonly=on) or repair it with 'swemu-img check -r all'")
        }
        if header.version == 3 {
            let lazyAndDirty = header.incompatibleFeatures & Qcow2Header.dirtyBit != 0
                && header.compatibleFeatures & Qcow2Header.lazyRefcountsBit != 0
            if lazyAndDirty && !forCheck {
                // qcow2.txt "dirty bit": with lazy refcounts the refcounts may be stale.
                _ = try checkLocked(repair: .all)
            }
            header.incompatibleFeatures |= Qcow2Header.dirtyBit
            header.autoclearFeatures = 0
            try file.writeBytes(at: Qcow2Header.incompatibleFeaturesOffset, .be64(header.incompatibleFeatures))
            try file.writeBytes(at: Qcow2Header.autoclearFeaturesOffset, .be64(0))
            try file.sync()
        }
        OpenImages.register(self)
    }

    deinit {
        try? close()
    }

    /// Makes everything durable and clears the dirty bit (a clean close). Idempotent.
    package func close() throws(SystemError) {
        try lock.withLock { (_: inout Void) throws(SystemError) in
            guard !closed else { return }
            closed = true
            // Closed: the image's locks go now (QEMU drops them at close), whatever holds the object.
            defer { (file.locks ?? lateLocks)?.release() }
            guard !readOnly, !inactive else { return }
            try applyDeferredReleasesLocked()
            // The data and metadata reach the disk before the header says the image is clean
            // (not under cache=unsafe, which promises nothing across a host crash).
            if !ignoreFlush { try file.sync() }
            if header.version == 3 && header.incompatibleFeatures & Qcow2Header.dirtyBit != 0 {
                header.incompatibleFeatures &= ~Qcow2Header.dirtyBit
                try file.writeBytes(at: Qcow2Header.incompatibleFeaturesOffset, .be64(header.incompatibleFeatures))
                if !ignoreFlush { try file.sync() }
            }
        }
    }

    /// The tables `header` points to: L1, the refcount table (and the clusters of its blocks)
    /// and the snapshot table. At open, and again when an inactive image is taken back.
    /// `pastEnd`: tables may run past the end of the file, which reads as zeroes (`check`).
    static func readMetadata(_ file: ImageFile, _ header: Qcow2Header, length: UInt64, pastEnd: Bool = false) throws(SystemError)
        -> (l1: [UInt64], refcountTable: [UInt64], refcountBlockClusters: Set<UInt64>, snapshots: [Qcow2Snapshot]) {
        let l1 = try readTable(file, at: header.l1TableOffset, count: Int(header.l1Size))
        let cs = header.clusterSize
        let refcountTable = try readTable(file, at: header.refcountTableOffset, count: Int(UInt64(header.refcountTableClusters) * cs / 8))
        let refcountBlockClusters = Set(refcountTable.lazy.map { $0 & Qcow2Image.refcountTableMask }.filter { $0 != 0 }.map { $0 / cs })
        var snapshots: [Qcow2Snapshot] = []
        if header.nbSnapshots > 0 {
            // QEMU's limit on the table (QCOW_MAX_SNAPSHOTS_SIZE): a larger one is refused by
            // the parser as truncated, never read whole.
            let limit = min(UInt64(Qcow2Snapshot.maxTableBytes(count: Int(header.nbSnapshots))), Qcow2Header.maxSnapshotTableBytes)
            let available = header.snapshotsOffset < length ? length - header.snapshotsOffset : 0
            let bytes = try file.readBytes(at: header.snapshotsOffset, count: Int(pastEnd ? limit : min(limit, available)))
            snapshots = try Qcow2Snapshot.parseTable(bytes, count: Int(header.nbSnapshots), name: file.path)
        }
        return (l1, refcountTable, refcountBlockClusters, snapshots)
    }

    static func readTable(_ file: ImageFile, at offset: UInt64, count: Int) throws(SystemError) -> [UInt64] {
        let bytes = try file.readBytes(at: offset, count: count * 8)
        return (0..<count).map { bytes.be64($0 * 8) }
    }

    /// Opens the backing file `name` of the image at `path`; a file already in `chain` is a loop.
    static func openBacking(_ name: String, format: String?, of path: String, chain: [String],
                            cache: BlockCacheMode, locking: ImageLocking = ImageLocking.tool.forBacking) throws(SystemError) -> any BlockBackend {
        let resolved = DiskImage.resolveBacking(name, relativeTo: path)
        let me = realPath(path) ?? path
        let chain = chain.isEmpty ? [me] : chain
        guard let real = realPath(resolved) else {
            throw .configuration("\(path): cannot open backing file '\(resolved)': no such file")
        }
        guard !chain.contains(real) else {
            throw .badInput("\(path): backing file loop: \((chain + [real]).joined(separator: " -> "))")
        }
        guard chain.count < maxChainDepth else {
            throw .badInput("\(path): backing chain is deeper than \(maxChainDepth) images")
        }
        do {
            return try DiskImage.open(path: resolved, format: format, readOnly: true, cache: cache, chain: chain + [real], locking: locking)
        } catch where error.code == .imageLocked {
            throw SystemError(.imageLocked, "Could not open backing file: \(error.message)")  // QEMU's words
        }
    }

    // MARK: BlockBackend

    package func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws(SystemError) {
        try checkRange(offset: offset, count: UInt64(buffer.count))
        try lock.withLock { (_: inout Void) throws(SystemError) in try readLocked(at: offset, into: buffer) }
    }

    package func write(at offset: UInt64, from buffer: UnsafeRawBufferPointer) throws(SystemError) {
        try checkWritable("write")
        try checkRange(offset: offset, count: UInt64(buffer.count))
        try lock.withLock { (_: inout Void) throws(SystemError) in
            try checkNotCorrupt()
            try writeLocked(at: offset, from: buffer)
        }
    }

    func checkNotCorrupt() throws(SystemError) {
        guard !inactive else {
            throw .badInput("\(file.path): the image is inactive (its machine migrated to another process, or has not yet been handed over); it refuses writes")
        }
        guard !corrupt else { throw .badInput("\(file.path): the image is marked corrupt and refuses writes: repair it with 'swemu-img check -r all'") }
    }

    package func flush() throws(SystemError) {
        guard !readOnly, !ignoreFlush else { return }
        // The sync runs without the lock (requests go on meanwhile); the releases noted
        // before it began have their unlinking entries on the disk once it returns.
        let (pending, before) = lock.withLock { _ in (!deferredReleases.isEmpty, nextReleaseSerial) }
        try file.sync()
        guard pending else { return }
        try lock.withLock { (_: inout Void) throws(SystemError) in
            guard !inactive, !closed else { return }
            let due = deferredReleases.prefix { $0.serial < before }
            deferredReleases.removeFirst(due.count)
            for release in due { try updateRefcount(cluster: release.cluster, by: -1) }
        }
    }

    /// Syncs the file (not under cache=unsafe): everything written so far is durable.
    func syncBarrier() throws(SystemError) {
        guard !ignoreFlush else { return }
        try file.sync()
        unsyncedAllocation = false
    }

    /// Called before writing an entry that points at something: a cluster allocated or
    /// filled since the last sync is made durable first (see "Crash safety").
    func linkBarrier() throws(SystemError) {
        if unsyncedAllocation { try syncBarrier() }
    }

    /// Notes a new cluster's refcount or contents as written (see `linkBarrier`).
    func noteAllocation() { unsyncedAllocation = true }

    /// Drops one reference to `cluster` once the entry that held it is durable: at once
    /// under cache=unsafe (no ordering is promised), otherwise after the next sync.
    func deferRelease(_ cluster: UInt64) throws(SystemError) {
        guard !ignoreFlush else { return try updateRefcount(cluster: cluster, by: -1) }
        deferredReleases.append((nextReleaseSerial, cluster))
        nextReleaseSerial += 1
        // A guest that discards a lot without flushing: sync and catch up now and then.
        if deferredReleases.count >= 4096 { try applyDeferredReleasesLocked() }
    }

    /// Makes the unlinking entries durable, then lowers the refcounts they released.
    func applyDeferredReleasesLocked() throws(SystemError) {
        guard !deferredReleases.isEmpty, !readOnly else { return }
        try syncBarrier()
        let due = deferredReleases
        deferredReleases = []
        for release in due { try updateRefcount(cluster: release.cluster, by: -1) }
    }

    /// Makes the image inactive: everything written is made durable and the cached metadata
    /// is dropped; from now on another process may own the file (a migration's destination).
    package func inactivate() throws(SystemError) {
        try lock.withLock { (_: inout Void) throws(SystemError) in
            guard !inactive, !readOnly else { return }
            try applyDeferredReleasesLocked()
            try file.sync()
            // The destination takes the image over: keep reading, share everything.
            try (file.locks ?? lateLocks)?.change(perm: .consistentRead, shared: .all)
            locksRelaxed = true
            inactive = true
            dropCachedMetadataLocked()
        }
    }

    /// Takes the image back (a migration's destination once it runs the machine, or a source
    /// whose migration failed): the header, tables and snapshot list are read again, as
    /// another process may have changed them, and the dirty bit is set as at open.
    package func activate() throws(SystemError) {
        try lock.withLock { (_: inout Void) throws(SystemError) in
            // The locks first: if another process still uses the image, nothing changes here.
            if locksPending {
                lateLocks = try ImageLocks.acquire(fd: file.descriptor, path: file.path, lockRequest)
                locksPending = false
            } else if locksRelaxed {
                try (file.locks ?? lateLocks)?.change(perm: lockRequest.perm, shared: lockRequest.shared)
                locksRelaxed = false
            }
            guard inactive else { return }
            let length = try file.length()
            let first = try file.readBytes(at: 0, count: Int(min(length, 2 << 20)))
            let fresh = try Qcow2Header(parsing: first, fileLength: length, name: file.path)
            guard fresh.clusterSize == clusterSize, fresh.refcountOrder == header.refcountOrder else {
                throw .badInput("\(file.path): the image's cluster size or refcount width changed while it was inactive")
            }
            guard fresh.incompatibleFeatures & Qcow2Header.corruptBit == 0 else {
                throw .badInput("\(file.path): the qcow2 image was marked corrupt while inactive; repair it with 'swemu-img check -r all'")
            }
            header = fresh
            (l1, refcountTable, refcountBlockClusters, snapshots) = try Qcow2Image.readMetadata(file, header, length: length)
            fileEnd = (length + clusterSize - 1) / clusterSize * clusterSize
            openedLength = length
            dropCachedMetadataLocked()
            inactive = false
            if header.version == 3 && header.incompatibleFeatures & Qcow2Header.dirtyBit == 0 {
                header.incompatibleFeatures |= Qcow2Header.dirtyBit
                try file.writeBytes(at: Qcow2Header.incompatibleFeaturesOffset, .be64(header.incompatibleFeatures))
                try file.sync()
            }
        }
    }

    /// Forgets every table and allocation hint read from the file.
    /// After the refcount structure was rebuilt (`check -r all`): new blocks, nothing cached.
    func resetRefcountCachesLocked(blockClusters: Set<UInt64>) {
        refcountBlockCache = TableCache<[UInt8]>()
        refcountBlockClusters = blockClusters
        freeHint = 0
        compressedCursor = 0
    }

    /// Whether host cluster `c` holds metadata other than an active L2 table (check's
    /// overlap test before it rewrites an L2 table).
    func isMetadataOtherThanL2(_ c: UInt64) -> Bool { isMetadata(c) }

    private func dropCachedMetadataLocked() {
        l2Cache = TableCache<[UInt64]>()
        refcountBlockCache = TableCache<[UInt8]>()
        decompressed = nil
        freeHint = 0
        compressedCursor = 0
    }

    package func discard(at offset: UInt64, count: UInt64) throws(SystemError) {
        try checkWritable("discard")
        try checkRange(offset: offset, count: count)
        try lock.withLock { (_: inout Void) throws(SystemError) in
            try checkNotCorrupt()
            try zeroLocked(at: offset, count: count, mode: .discard)
        }
    }

    package func writeZeroes(at offset: UInt64, count: UInt64, mayUnmap: Bool) throws(SystemError) {
        try checkWritable("write-zeroes")
        try checkRange(offset: offset, count: count)
        try lock.withLock { (_: inout Void) throws(SystemError) in
            try checkNotCorrupt()
            try zeroLocked(at: offset, count: count, mode: .zero(mayUnmap: mayUnmap))
        }
    }

    /// How guest cluster `cluster` is stored (map, measure, convert, commit, rebase).
    package enum ClusterStatus: Equatable, Sendable {
        /// Not in this image: the backing file's, or zeroes.
        case unallocated
        case zero
        case data(host: UInt64)
        case compressed
    }

    package func clusterStatus(_ cluster: UInt64) throws(SystemError) -> ClusterStatus {
        try locked { () throws(SystemError) in
            switch mapping(of: try l2Entry(cluster)) {
            case .unallocated: return .unallocated
            case .zero: return .zero
            case .data(let host, _): return .data(host: host)
            case .compressed: return .compressed
            }
        }
    }

    /// Whether `[offset, offset + count)` is known to read as zeroes without reading it:
    /// zero clusters, and unallocated ones over zeroes in the backing chain (convert skips them).
    package func knownZero(at offset: UInt64, count: UInt64) throws(SystemError) -> Bool {
        guard count > 0 else { return true }
        let first = offset / clusterSize, last = (offset + count - 1) / clusterSize
        var fromBacking: [UInt64] = []
        for cluster in first...last {
            switch try clusterStatus(cluster) {
            case .zero: continue
            case .unallocated: if backing != nil { fromBacking.append(cluster) }
            case .data, .compressed: return false
            }
        }
        guard let backing else { return true }
        for cluster in fromBacking {
            let start = max(offset, cluster * clusterSize), end = min(offset + count, (cluster + 1) * clusterSize)
            guard start < backing.size else { continue }
            if try !DiskImage.knownZero(backing, at: start, count: min(end, backing.size) - start) { return false }
        }
        return true
    }

    /// Runs `body` with the lock held: the image tools' way in to the `...Locked` helpers.
    /// Releases still waiting for a flush are applied first, so that the tools see (and
    /// snapshots copy) refcounts that match the tables.
    package func locked<T>(_ body: () throws(SystemError) -> T) throws(SystemError) -> T {
        try lock.withLock { (_: inout Void) throws(SystemError) in
            if !inactive { try applyDeferredReleasesLocked() }
            return try body()
        }
    }

    // MARK: Cluster mapping (qcow2.txt "Cluster mapping")

    /// What a guest cluster maps to, decoded from its L2 entry.
    enum Mapping: Equatable {
        /// No entry: the backing file's data, or zeroes.
        case unallocated
        /// Reads as zeroes (v3 zero flag); `host` is a preallocated cluster, or 0.
        case zero(host: UInt64)
        case data(host: UInt64, copied: Bool)
        case compressed(offset: UInt64, bytes: UInt64)
    }

    func mapping(of entry: UInt64) -> Mapping {
        if entry & Qcow2Image.compressedFlag != 0 {
            // "Compressed Clusters Descriptor": x = 62 - (cluster_bits - 8).
            let x = 62 - (clusterBits - 8)
            let offset = entry & ((1 << x) - 1)
            let sectors = (entry & ~(Qcow2Image.copiedFlag | Qcow2Image.compressedFlag)) >> x
            return .compressed(offset: offset, bytes: (sectors + 1) * 512 - offset % 512)
        }
        let host = entry & Qcow2Image.offsetMask
        if header.version == 3 && entry & Qcow2Image.zeroFlag != 0 { return .zero(host: host) }
        if host == 0 { return .unallocated }
        return .data(host: host, copied: entry & Qcow2Image.copiedFlag != 0)
    }

    /// Checks that a table or cluster offset read from the image is aligned, clear of the
    /// header and inside the file; `what` names it in the error.
    func validateOffset(_ offset: UInt64, _ what: String) throws(SystemError) {
        guard offset % clusterSize == 0, offset >= clusterSize, offset < fileEnd else {
            throw .badInput("\(file.path): \(what) at offset \(offset) is \(offset % clusterSize != 0 ? "not cluster-aligned" : offset < clusterSize ? "inside the header" : "past the end of the file")")
        }
    }

    func l2Table(at offset: UInt64) throws(SystemError) -> [UInt64] {
        if let table = l2Cache.get(offset) { return table }
        try validateOffset(offset, "L2 table")
        let table = try Qcow2Image.readTable(file, at: offset, count: Int(l2Entries))
        l2Cache.put(offset, table, limit: maxCachedTables)
        return table
    }

    private var maxCachedTables: Int { max(8, Int((32 << 20) / clusterSize)) }

    /// The L2 entry of guest cluster `cluster` in the active L1 table (0 when it has no L2 table).
    func l2Entry(_ cluster: UInt64) throws(SystemError) -> UInt64 {
        let l1Index = Int(cluster / l2Entries)
        guard l1Index < l1.count else { return 0 }
        let l2Offset = l1[l1Index] & Qcow2Image.offsetMask
        guard l2Offset != 0 else { return 0 }
        return try l2Table(at: l2Offset)[Int(cluster % l2Entries)]
    }

    func setL2Entry(table offset: UInt64, index: Int, _ value: UInt64) throws(SystemError) {
        try setL2Entries(table: offset, from: index, [value])
    }

    /// Sets consecutive entries of an L2 table: in the cached table in place, and in the file
    /// with one write.
    func setL2Entries(table offset: UInt64, from index: Int, _ values: [UInt64]) throws(SystemError) {
        _ = try l2Table(at: offset)  // cached from here on
        try linkBarrier()
        l2Cache.modify(offset) { table in
            for (k, v) in values.enumerated() { table[index + k] = v }
        }
        try file.writeBytes(at: offset + UInt64(index) * 8, Qcow2Image.tableBytes(values))
    }

    func setL1Entry(_ index: Int, _ value: UInt64) throws(SystemError) {
        try linkBarrier()
        l1[index] = value
        try file.writeBytes(at: header.l1TableOffset + UInt64(index) * 8, .be64(value))
    }

    /// The L2 table that maps `cluster`, ready to be written: allocated when missing, copied
    /// when shared with a snapshot (its L1 entry lacks the COPIED flag).
    func writableL2Table(for cluster: UInt64) throws(SystemError) -> UInt64 {
        let l1Index = Int(cluster / l2Entries)
        let entry = l1[l1Index]
        let old = entry & Qcow2Image.offsetMask
        if old != 0 && entry & Qcow2Image.copiedFlag != 0 { return old }
        let table = old == 0 ? [UInt64](repeating: 0, count: Int(l2Entries)) : try l2Table(at: old)
        let new = try allocateClusters(1)
        try file.writeBytes(at: new, Qcow2Image.tableBytes(table))
        l2Cache.put(new, table, limit: maxCachedTables)
        try setL1Entry(l1Index, new | Qcow2Image.copiedFlag)
        if old != 0 { try deferRelease(old / clusterSize) }
        return new
    }

    static func tableBytes(_ table: [UInt64]) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: table.count * 8)
        for (i, v) in table.enumerated() { bytes.putBE64(v, at: i * 8) }
        return bytes
    }

    // MARK: Reading

    func readLocked(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws(SystemError) {
        var done = 0
        while done < buffer.count {
            let position = offset + UInt64(done)
            let within = position % clusterSize
            var n = Int(min(clusterSize - within, UInt64(buffer.count - done)))
            let cluster = position / clusterSize
            let entry = try l2Entry(cluster)
            // Contiguous host clusters become one host read (sequential reads stay fast).
            if case .data(let host, _) = mapping(of: entry) {
                try validateOffset(host, "data cluster")
                var next = cluster + 1
                while done + n < buffer.count, next % l2Entries != 0,
                      case .data(let h, _) = mapping(of: try l2Entry(next)), h == host + (next - cluster) * clusterSize {
                    n += Int(min(clusterSize, UInt64(buffer.count - done - n)))
                    next += 1
                }
                try file.read(at: host + within, into: UnsafeMutableRawBufferPointer(rebasing: buffer[done..<(done + n)]))
            } else {
                try readCluster(entry, at: position, into: UnsafeMutableRawBufferPointer(rebasing: buffer[done..<(done + n)]))
            }
            done += n
        }
    }

    /// Reads part of one guest cluster, whose L2 entry is `entry`, at guest offset `position`.
    func readCluster(_ entry: UInt64, at position: UInt64, into part: UnsafeMutableRawBufferPointer) throws(SystemError) {
        let within = position % clusterSize
        switch mapping(of: entry) {
        case .unallocated:
            try readBacking(at: position, into: part)
        case .zero:
            part.initializeMemory(as: UInt8.self, repeating: 0)
        case .data(let host, _):
            try validateOffset(host, "data cluster")
            try file.read(at: host + within, into: part)
        case .compressed(let offset, let bytes):
            let data = try decompress(entry: entry, offset: offset, bytes: bytes)
            data.withUnsafeBytes { src in
                part.copyMemory(from: UnsafeRawBufferPointer(rebasing: src[Int(within)..<(Int(within) + part.count)]))
            }
        }
    }

    /// The backing file's bytes, zeroes past its end or without one.
    func readBacking(at position: UInt64, into part: UnsafeMutableRawBufferPointer) throws(SystemError) {
        guard let backing, position < backing.size else {
            part.initializeMemory(as: UInt8.self, repeating: 0)
            return
        }
        let n = Int(min(UInt64(part.count), backing.size - position))
        try backing.read(at: position, into: UnsafeMutableRawBufferPointer(rebasing: part[0..<n]))
        if n < part.count {
            UnsafeMutableRawBufferPointer(rebasing: part[n...]).initializeMemory(as: UInt8.self, repeating: 0)
        }
    }

    private func decompress(entry: UInt64, offset: UInt64, bytes: UInt64) throws(SystemError) -> [UInt8] {
        if let decompressed, decompressed.entry == entry { return decompressed.data }
        guard offset >= clusterSize, offset < fileEnd, bytes <= 2 * clusterSize else {
            throw .badInput("\(file.path): compressed cluster at offset \(offset) (\(bytes) bytes) lies outside the image's data")
        }
        let input = try file.readBytes(at: offset, count: Int(bytes))
        var output = [UInt8](repeating: 0, count: Int(clusterSize))
        guard Deflate.decompress(input, into: &output) else {
            throw .badInput("\(file.path): compressed cluster at offset \(offset) is corrupt (inflate failed)")
        }
        decompressed = (entry, output)
        return output
    }

    // MARK: Writing

    func writeLocked(at offset: UInt64, from buffer: UnsafeRawBufferPointer) throws(SystemError) {
        var done = 0
        while done < buffer.count {
            let position = offset + UInt64(done)
            let within = position % clusterSize
            let cluster = position / clusterSize
            let n = Int(min(clusterSize - within, UInt64(buffer.count - done)))
            if within == 0, UInt64(buffer.count - done) >= 2 * clusterSize {
                // Whole clusters that need new space get one contiguous run and one host write.
                let run = try newRun(from: cluster, max: UInt64(buffer.count - done) / clusterSize)
                if run > 1 {
                    let bytes = Int(run * clusterSize)
                    try writeNewRun(cluster, count: run, from: UnsafeRawBufferPointer(rebasing: buffer[done..<(done + bytes)]))
                    done += bytes
                    continue
                }
            }
            try writeCluster(cluster, within: within, from: UnsafeRawBufferPointer(rebasing: buffer[done..<(done + n)]))
            done += n
        }
    }

    /// How many clusters from `cluster` (at most `max`, within one L2 table) need new space.
    private func newRun(from cluster: UInt64, max: UInt64) throws(SystemError) -> UInt64 {
        var run: UInt64 = 0
        while run < max, (cluster + run) % l2Entries != 0 || run == 0 {
            switch mapping(of: try l2Entry(cluster + run)) {
            case .data(_, copied: true), .zero(host: 1...): return run
            default: run += 1
            }
        }
        return run
    }

    private func writeNewRun(_ cluster: UInt64, count: UInt64, from data: UnsafeRawBufferPointer) throws(SystemError) {
        let table = try writableL2Table(for: cluster)
        let host = try allocateClusters(count)
        try file.write(at: host, from: data)
        let index = Int(cluster % l2Entries)
        let old = Array(try l2Table(at: table)[index..<(index + Int(count))])
        try setL2Entries(table: table, from: index, (0..<count).map { (host + $0 * clusterSize) | Qcow2Image.copiedFlag })
        for entry in old { try release(entry) }
    }

    /// Writes part of one guest cluster: in place when the cluster is ours alone, otherwise
    /// into a new cluster filled with the old contents (copy-on-write: backing file, zero,
    /// compressed, or shared with a snapshot).
    func writeCluster(_ cluster: UInt64, within: UInt64, from data: UnsafeRawBufferPointer) throws(SystemError) {
        let entry = try l2Entry(cluster)
        if case .data(let host, copied: true) = mapping(of: entry) {
            try validateOffset(host, "data cluster")
            try file.write(at: host + within, from: data)
            return
        }
        var full = [UInt8](repeating: 0, count: Int(clusterSize))
        if within != 0 || UInt64(data.count) != clusterSize {
            try full.withUnsafeMutableBytes { b in
                Result { () throws(SystemError) in try readCluster(entry, at: cluster * clusterSize, into: b) }
            }.get()
        }
        full.withUnsafeMutableBytes { b in
            UnsafeMutableRawBufferPointer(rebasing: b[Int(within)..<(Int(within) + data.count)]).copyMemory(from: data)
        }
        let table = try writableL2Table(for: cluster)
        let index = Int(cluster % l2Entries)
        let current = try l2Table(at: table)[index]
        if case .zero(let host) = mapping(of: current), host != 0, current & Qcow2Image.copiedFlag != 0 {
            // A preallocated zero cluster of our own: fill it in place and drop the zero flag
            // (once the bytes are durable: until then the cluster must still read as zeroes).
            try file.writeBytes(at: host, full)
            noteAllocation()
            try setL2Entry(table: table, index: index, host | Qcow2Image.copiedFlag)
            return
        }
        let host = try allocateClusters(1)
        let readsAsZero = current == 0 && backing == nil || mapping(of: current) == .zero(host: 0)
        if readsAsZero, host >= (try file.length()) {
            // A fresh cluster past the end of the file reads as zeroes already (a hole): only
            // the new bytes need writing (a guest's 4 KiB writes into 64 KiB clusters).
            try file.write(at: host + within, from: data)
        } else {
            try file.writeBytes(at: host, full)
        }
        try setL2Entry(table: table, index: index, host | Qcow2Image.copiedFlag)
        try release(current)
    }

    /// Drops the references an L2 entry held (after the entry was replaced; deferred until
    /// the replacement is durable, see "Crash safety").
    func release(_ entry: UInt64) throws(SystemError) {
        switch mapping(of: entry) {
        case .unallocated, .zero(host: 0):
            return
        case .zero(let host), .data(let host, _):
            try deferRelease(host / clusterSize)
        case .compressed(let offset, let bytes):
            for c in compressedClusters(offset: offset, bytes: bytes) { try deferRelease(c) }
        }
    }

    /// The host clusters a compressed cluster's sectors occupy (each holds one reference).
    func compressedClusters(offset: UInt64, bytes: UInt64) -> ClosedRange<UInt64> {
        let start = offset & ~511
        return (start / clusterSize)...((start + (offset % 512) + bytes - 1) / clusterSize)
    }

    /// Stores one guest cluster compressed (`convert -c`); the cluster must be unallocated.
    /// A cluster that does not shrink is stored uncompressed, as QEMU does.
    package func writeCompressed(cluster: UInt64, _ data: [UInt8]) throws(SystemError) {
        try checkWritable("compressed write")
        guard UInt64(data.count) <= clusterSize else {
            throw .configuration("\(label): compressed write of \(data.count) bytes is larger than a cluster")
        }
        try checkRange(offset: cluster * clusterSize, count: UInt64(data.count))
        try lock.withLock { (_: inout Void) throws(SystemError) in
            try checkNotCorrupt()
            var full = data
            full += [UInt8](repeating: 0, count: Int(clusterSize) - full.count)
            guard let packed = Deflate.compress(full, limit: Int(clusterSize) - 1) else {
                try full.withUnsafeBytes { b in Result { () throws(SystemError) in try writeCluster(cluster, within: 0, from: b) } }.get()
                return
            }
            let table = try writableL2Table(for: cluster)
            let index = Int(cluster % l2Entries)
            let old = try l2Table(at: table)[index]
            let offset = try allocateBytes(UInt64(packed.count))
            try file.writeBytes(at: offset, packed)
            let x = 62 - (clusterBits - 8)
            let sectors = (offset + UInt64(packed.count) - 1) / 512 - offset / 512
            try setL2Entry(table: table, index: index, Qcow2Image.compressedFlag | sectors << x | offset)
            try release(old)
        }
    }

    /// Byte allocation for compressed clusters: packed one after another in a host cluster,
    /// each taking a reference on it (qcow2.txt: refcounts count compressed clusters sharing
    /// a host cluster).
    private func allocateBytes(_ count: UInt64) throws(SystemError) -> UInt64 {
        if compressedCursor % clusterSize != 0, count <= clusterSize - compressedCursor % clusterSize,
           try refcount(of: compressedCursor / clusterSize) > 0 {
            let offset = compressedCursor
            try updateRefcount(cluster: offset / clusterSize, by: 1)
            compressedCursor += count
            return offset
        }
        let offset = try allocateClusters(1)
        compressedCursor = offset + count
        return offset
    }

    // MARK: Zeroes and discard

    enum ZeroMode: Equatable {
        case discard
        case zero(mayUnmap: Bool)
    }

    func zeroLocked(at offset: UInt64, count: UInt64, mode: ZeroMode) throws(SystemError) {
        var position = offset
        let end = offset + count
        while position < end {
            let cluster = position / clusterSize
            let clusterEnd = min((cluster + 1) * clusterSize, header.size)
            let n = min(clusterEnd, end) - position
            if position % clusterSize == 0 && position + n == clusterEnd {
                try zeroWholeCluster(cluster, mode: mode)
            } else if mode != .discard {
                let zeroes = [UInt8](repeating: 0, count: Int(n))
                try zeroes.withUnsafeBytes { b in
                    Result { () throws(SystemError) in try writeCluster(cluster, within: position % clusterSize, from: b) }
                }.get()
            }
            position += n
        }
    }

    /// Zeroes or discards a whole guest cluster through its L2 entry (qcow2.txt: the v3 zero
    /// flag; v2 has none, so only an image without a backing file can drop a cluster there).
    private func zeroWholeCluster(_ cluster: UInt64, mode: ZeroMode) throws(SystemError) {
        let current = mapping(of: try l2Entry(cluster))
        if current == .unallocated && backing == nil { return }  // already reads as zeroes
        var new: UInt64 = backing == nil ? 0 : Qcow2Image.zeroFlag
        if header.version == 2 {
            guard backing != nil else { return try setAndRelease(cluster, 0) }
            guard mode != .discard else { return }  // advisory: the data stays
            let zeroes = [UInt8](repeating: 0, count: Int(min(clusterSize, header.size - cluster * clusterSize)))
            return try zeroes.withUnsafeBytes { b in
                Result { () throws(SystemError) in try writeCluster(cluster, within: 0, from: b) }
            }.get()
        }
        switch (mode, current) {
        case (.discard, .zero), (.zero(mayUnmap: false), .zero), (.zero, .zero(host: 0)):
            return
        case (.zero(mayUnmap: false), .data(let host, copied: true)):
            new = host | Qcow2Image.copiedFlag | Qcow2Image.zeroFlag  // keep the space allocated
        default:
            break
        }
        try setAndRelease(cluster, new)
    }

    /// Replaces the L2 entry of `cluster` with `new`, releasing the old one's clusters unless
    /// `new` keeps the same host cluster.
    private func setAndRelease(_ cluster: UInt64, _ new: UInt64) throws(SystemError) {
        let table = try writableL2Table(for: cluster)
        let index = Int(cluster % l2Entries)
        let old = try l2Table(at: table)[index]
        try setL2Entry(table: table, index: index, new)
        if new & Qcow2Image.offsetMask != old & Qcow2Image.offsetMask { try release(old) }
    }

    // MARK: Refcounts (qcow2.txt "Host cluster management")

    func refcountBlock(at offset: UInt64) throws(SystemError) -> [UInt8] {
        if let block = refcountBlockCache.get(offset) { return block }
        // check reads what the file holds, zeroes past its end (as qemu-img check does); the
        // offset must still be a cluster's own and clear of the header.
        if !(forCheck && offset % clusterSize == 0 && offset >= clusterSize) { try validateOffset(offset, "refcount block") }
        let block = try file.readBytes(at: offset, count: Int(clusterSize))
        refcountBlockCache.put(offset, block, limit: maxCachedTables)
        return block
    }

    /// The refcount of host cluster `cluster` (0 for clusters no refcount block covers).
    func refcount(of cluster: UInt64) throws(SystemError) -> UInt64 {
        let tableIndex = cluster / refcountBlockEntries
        guard tableIndex < UInt64(refcountTable.count) else { return 0 }
        let blockOffset = refcountTable[Int(tableIndex)] & Qcow2Image.refcountTableMask
        guard blockOffset != 0 else { return 0 }
        return Qcow2Image.refcountEntry(try refcountBlock(at: blockOffset), Int(cluster % refcountBlockEntries), order: header.refcountOrder)
    }

    /// Entry `index` of a refcount block: refcount_bits wide, big-endian; narrower than a
    /// byte they are packed from the least significant bit (as QEMU reads them).
    static func refcountEntry(_ block: [UInt8], _ index: Int, order: UInt32) -> UInt64 {
        switch order {
        case 0...2:
            let bits = 1 << order, perByte = 8 / bits
            return UInt64(block[index / perByte] >> ((index % perByte) * bits)) & ((1 << bits) - 1)
        case 3: return UInt64(block[index])
        case 4: return UInt64(block.be16(index * 2))
        case 5: return UInt64(block.be32(index * 4))
        default: return block.be64(index * 8)
        }
    }

    /// Sets entry `index`; returns the byte range of the block that changed.
    static func setRefcountEntry(_ block: inout [UInt8], _ index: Int, order: UInt32, _ value: UInt64) -> Range<Int> {
        switch order {
        case 0...2:
            let bits = 1 << order, perByte = 8 / bits, shift = (index % perByte) * bits
            let mask = UInt8((1 << bits) - 1) << shift
            block[index / perByte] = block[index / perByte] & ~mask | UInt8(truncatingIfNeeded: value << UInt64(shift)) & mask
            return (index / perByte)..<(index / perByte + 1)
        case 3:
            block[index] = UInt8(truncatingIfNeeded: value)
            return index..<(index + 1)
        case 4:
            block.putBE16(UInt16(truncatingIfNeeded: value), at: index * 2)
            return (index * 2)..<(index * 2 + 2)
        case 5:
            block.putBE32(UInt32(truncatingIfNeeded: value), at: index * 4)
            return (index * 4)..<(index * 4 + 4)
        default:
            block.putBE64(value, at: index * 8)
            return (index * 8)..<(index * 8 + 8)
        }
    }

    var maxRefcount: UInt64 { header.refcountOrder == 6 ? .max : (1 << (1 << UInt64(header.refcountOrder))) - 1 }

    func updateRefcount(cluster: UInt64, by delta: Int64) throws(SystemError) {
        let old = try refcount(of: cluster)
        if delta < 0 && old < UInt64(-delta) {
            throw .badInput("\(file.path): refcount of cluster \(cluster) would drop below 0 (it is \(old)): the image is corrupt")
        }
        if delta > 0 && maxRefcount - old < UInt64(delta) {
            throw .badInput("\(file.path): refcount overflow on cluster \(cluster) (\(old) + \(delta) > \(maxRefcount))")
        }
        let new = delta < 0 ? old - UInt64(-delta) : old + UInt64(delta)
        try setRefcount(cluster: cluster, new)
        if new == 0 {
            // The space may be reused for another compressed cluster with the same descriptor.
            decompressed = nil
            freeHint = min(freeHint, cluster)
            if compressedCursor / clusterSize == cluster { compressedCursor = 0 }
        }
    }

    func setRefcount(cluster: UInt64, _ value: UInt64) throws(SystemError) {
        try setRefcounts(from: cluster, count: 1, value)
    }

    /// Sets the refcounts of `count` consecutive clusters: each refcount block they span is
    /// changed in place in the cache and written with one write.
    func setRefcounts(from first: UInt64, count: UInt64, _ value: UInt64) throws(SystemError) {
        // Noted after the writes: a refcount block made on the way syncs (and clears the note)
        // before the entries below are written.
        defer { if value > 0 { noteAllocation() } }
        var cluster = first
        let end = first + count
        while cluster < end {
            let tableIndex = Int(cluster / refcountBlockEntries)
            if tableIndex >= refcountTable.count { try growRefcountTable(covering: tableIndex) }
            var blockOffset = refcountTable[tableIndex] & Qcow2Image.refcountTableMask
            if blockOffset == 0 { blockOffset = try newRefcountBlock(tableIndex: tableIndex) }
            let last = min(end, UInt64(tableIndex + 1) * refcountBlockEntries)
            _ = try refcountBlock(at: blockOffset)  // cached from here on
            let order = header.refcountOrder, entries = refcountBlockEntries
            let changed: Range<Int>? = refcountBlockCache.modify(blockOffset) { block in
                var range: Range<Int>? = nil
                for c in cluster..<last {
                    let r = Qcow2Image.setRefcountEntry(&block, Int(c % entries), order: order, value)
                    range = range.map { min($0.lowerBound, r.lowerBound)..<max($0.upperBound, r.upperBound) } ?? r
                }
                return range
            } ?? nil
            if let changed, let block = refcountBlockCache.get(blockOffset) {
                try file.writeBytes(at: blockOffset + UInt64(changed.lowerBound), Array(block[changed]))
            }
            cluster = last
        }
    }

    /// Adds the refcount block for refcount table entry `tableIndex` at the end of the file.
    /// The block counts itself when it covers its own cluster; otherwise its reference goes
    /// into the block that does (made first, recursively), before the table links it.
    private func newRefcountBlock(tableIndex: Int) throws(SystemError) -> UInt64 {
        let offset = fileEnd
        fileEnd += clusterSize
        let own = offset / clusterSize
        var block = [UInt8](repeating: 0, count: Int(clusterSize))
        let coversItself = own / refcountBlockEntries == UInt64(tableIndex)
        if coversItself { _ = Qcow2Image.setRefcountEntry(&block, Int(own % refcountBlockEntries), order: header.refcountOrder, 1) }
        try file.writeBytes(at: offset, block)
        refcountBlockCache.put(offset, block, limit: maxCachedTables)
        if !coversItself { try setRefcount(cluster: own, 1) }
        // The block (zeroes past what it counts) is durable before the table points at it.
        noteAllocation()
        try linkBarrier()
        refcountTable[tableIndex] = offset
        refcountBlockClusters.insert(own)
        try file.writeBytes(at: header.refcountTableOffset + UInt64(tableIndex) * 8, .be64(offset))
        return offset
    }

    /// Moves the refcount table to a larger one at the end of the file: the new table is
    /// written whole (with blocks for its own clusters) before the header points at it, and
    /// the old table's clusters are freed last.
    private func growRefcountTable(covering tableIndex: Int) throws(SystemError) {
        let oldOffset = header.refcountTableOffset
        let oldClusters = UInt64(header.refcountTableClusters)
        var entries = UInt64(max(tableIndex + 1, refcountTable.count)) * 3 / 2 + 2
        var clusters = (entries * 8 + clusterSize - 1) / clusterSize
        // Cover the new table's own clusters and the blocks that count them.
        entries = max(entries, (fileEnd / clusterSize + clusters + 4) / refcountBlockEntries + 2)
        clusters = (entries * 8 + clusterSize - 1) / clusterSize
        guard clusters * clusterSize <= Qcow2Header.maxRefcountTableBytes else {
            throw .badInput("\(file.path): the refcount table would grow past \(Qcow2Header.maxRefcountTableBytes) bytes")
        }
        let newOffset = fileEnd
        fileEnd += clusters * clusterSize
        refcountTable += [UInt64](repeating: 0, count: Int(clusters * clusterSize / 8) - refcountTable.count)
        header.refcountTableOffset = newOffset
        header.refcountTableClusters = UInt32(clusters)
        try file.writeBytes(at: newOffset, Qcow2Image.tableBytes(refcountTable))
        for k in 0..<clusters { try setRefcount(cluster: newOffset / clusterSize + k, 1) }
        var fields = [UInt8](repeating: 0, count: 12)
        fields.putBE64(newOffset, at: 0)
        fields.putBE32(UInt32(clusters), at: 8)
        try linkBarrier()  // the new table and its refcounts first
        try file.writeBytes(at: 48, fields)  // refcount_table_offset, refcount_table_clusters
        for k in 0..<oldClusters { try deferRelease(oldOffset / clusterSize + k) }
    }

    private func hasRefcountBlock(_ c: UInt64) -> Bool {
        let index = c / refcountBlockEntries
        return index < UInt64(refcountTable.count) && refcountTable[Int(index)] & Qcow2Image.refcountTableMask != 0
    }

    /// Metadata found inconsistent while writing: the image is marked corrupt (qcow2.txt
    /// "corrupt bit", v3) and refuses further writes, as QEMU does, so that nothing is
    /// overwritten until `check -r all` has repaired it.
    func signalCorruption(_ what: String) throws(SystemError) -> Never {
        corrupt = true
        if header.version == 3 {
            header.incompatibleFeatures |= Qcow2Header.corruptBit
            try? file.writeBytes(at: Qcow2Header.incompatibleFeaturesOffset, .be64(header.incompatibleFeatures))
        }
        throw .badInput("\(file.path): \(what); the image is marked corrupt and refuses writes: repair it with 'swemu-img check -r all'")
    }

    /// Whether host cluster `c` holds the header or a table the header points at. Such a
    /// cluster with refcount 0 means damaged refcounts; handing it out would overwrite
    /// metadata, so the allocator passes over it (QEMU's metadata overlap check, for the
    /// tables it can check cheaply).
    private func isMetadata(_ c: UInt64) -> Bool {
        func within(_ offset: UInt64, _ bytes: UInt64) -> Bool {
            bytes > 0 && c >= offset / clusterSize && c <= (offset + bytes - 1) / clusterSize
        }
        return c == 0 || within(header.l1TableOffset, UInt64(l1.count) * 8)
            || within(header.refcountTableOffset, UInt64(header.refcountTableClusters) * clusterSize)
            || (header.nbSnapshots > 0 && within(header.snapshotsOffset, UInt64(snapshots.reduce(0) { $0 + $1.serialized().count })))
            || refcountBlockClusters.contains(c)
    }

    /// Allocates `count` contiguous free clusters (refcount 1 each); returns the first's offset.
    func allocateClusters(_ count: UInt64) throws(SystemError) -> UInt64 {
        var start = freeHint
        var run: UInt64 = 0
        while run < count {
            let c = start + run
            if c * clusterSize >= fileEnd { break }  // everything from here on is free
            if c * clusterSize < openedLength && !hasRefcountBlock(c) {
                // Clusters of the file that no refcount block counts: the refcounts are damaged,
                // and whatever is there may be in use.
                try signalCorruption("cluster \(c) lies in the file but no refcount block covers it")
            }
            if try refcount(of: c) != 0 || isMetadata(c) {
                start = c + 1
                run = 0
            } else {
                run += 1
            }
        }
        if start == freeHint || count == 1 { freeHint = start + count }
        fileEnd = max(fileEnd, (start + count) * clusterSize)
        try setRefcounts(from: start, count: count, 1)
        return start * clusterSize
    }
}

/// A bounded cache of tables by file offset; the oldest entry goes first when it is full.
/// Tables are written through, so dropping one loses nothing.
struct TableCache<Table> {
    private var tables: [UInt64: Table] = [:]
    private var order: [UInt64] = []

    func get(_ offset: UInt64) -> Table? { tables[offset] }

    /// Changes a cached table in place (no copy of the table); nil when it is not cached.
    mutating func modify<R>(_ offset: UInt64, _ body: (inout Table) -> R) -> R? {
        guard tables[offset] != nil else { return nil }
        return body(&tables[offset]!)
    }

    mutating func put(_ offset: UInt64, _ table: Table, limit: Int) {
        if tables.updateValue(table, forKey: offset) == nil {
            order.append(offset)
            if order.count > limit { tables[order.removeFirst()] = nil }
        }
    }
}

/// Images open for writing, closed cleanly when the process exits (DESIGN.md §6: data is
/// durable on clean shutdown, and the dirty bit is cleared), even when no owner releases them.
enum OpenImages {
    struct Entry: Sendable {
        weak let image: Qcow2Image?
    }

    private static let images = Mutex<[Entry]>([])
    private static let installed: Bool = {
        atexit { OpenImages.closeAll() }
        return true
    }()

    static func register(_ image: Qcow2Image) {
        _ = installed
        images.withLock { list in
            list.removeAll { $0.image == nil }
            list.append(Entry(image: image))
        }
    }

    static func closeAll() {
        let list = images.withLock { $0 }
        for entry in list { try? entry.image?.close() }
    }
}

/// `realpath(3)`: the canonical path of an existing file, or nil.
package func realPath(_ path: String) -> String? { KeptFiles.realPath(path) }
