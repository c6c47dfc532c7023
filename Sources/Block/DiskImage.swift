import DeviceModel
import Glibc
import SystemSupport

/// Opening disk images by format, as QEMU's `-drive format=` and `qemu-img -f` do.
package enum DiskImage {
    package static let formats = ["raw", "qcow2"]

    /// QEMU's format probe: a file starting with qcow2's magic is qcow2, anything else raw.
    package static func probe(path: String) throws(SystemError) -> String {
        let file = try ImageFile(path: path, readOnly: true)
        let magic = try file.readBytes(at: 0, count: 4)
        return magic == [0x51, 0x46, 0x49, 0xfb] ? "qcow2" : "raw"
    }

    /// Whether `[offset, offset + count)` of `image` is known to read as zeroes without reading
    /// it (holes in raw files, zero and unallocated clusters of qcow2 chains).
    package static func knownZero(_ image: any BlockBackend, at offset: UInt64, count: UInt64) throws(SystemError) -> Bool {
        switch image {
        case let raw as RawImage: return raw.isHole(at: offset, count: count)
        case let qcow2 as Qcow2Image: return try qcow2.knownZero(at: offset, count: count)
        default: return false
        }
    }

    /// Where the backing file `name` of the image at `path` is: relative names are relative to
    /// the image's directory, as QEMU resolves them.
    package static func resolveBacking(_ name: String, relativeTo path: String) -> String {
        guard !name.hasPrefix("/"), let slash = path.lastIndex(of: "/") else { return name }
        return String(path[...slash]) + name
    }

    /// The backing file a qcow2 image at `path` names, resolved as `resolveBacking` does; nil
    /// for a raw image or a qcow2 image without one. Reads the header only (no locks taken).
    package static func backingFile(ofImageAt path: String) throws(SystemError) -> String? {
        let file = try ImageFile(path: path, readOnly: true)
        let length = try file.length()
        let first = try file.readBytes(at: 0, count: Int(min(length, 2 << 20)))
        guard first.starts(with: [0x51, 0x46, 0x49, 0xfb]) else { return nil }
        let header = try Qcow2Header(parsing: first, fileLength: length, name: path)
        return header.backingFile.map { resolveBacking($0, relativeTo: path) }
    }

    /// The lock holders of `image`'s own file (not its backing chain), under any wrapper.
    package static func locks(of image: any BlockBackend) -> ImageLockHolder? {
        switch image {
        case let raw as RawImage: return raw.locks
        case let qcow2 as Qcow2Image: return qcow2.locks
        case let cached as CachedBackend: return locks(of: cached.inner)
        case let overlay as SnapshotOverlay: return overlay.baseLocks
        default: return nil
        }
    }

    /// Takes `image`'s locks (a migration's destination, or a source whose migration failed).
    package static func activate(_ image: any BlockBackend) throws(SystemError) {
        if let raw = image as? RawImage ?? (image as? CachedBackend)?.inner as? RawImage { try raw.activate() }
        if let qcow2 = qcow2(image) { try qcow2.activate() }
    }

    /// Gives `image` over to another process (a migration's source handing over).
    package static func inactivate(_ image: any BlockBackend) throws(SystemError) {
        if let raw = image as? RawImage ?? (image as? CachedBackend)?.inner as? RawImage { try raw.inactivate() }
        if let qcow2 = qcow2(image) { try qcow2.inactivate() }
    }

    /// The qcow2 image behind `image` (also under a cache mode's wrapper), if it is one.
    package static func qcow2(_ image: any BlockBackend) -> Qcow2Image? {
        image as? Qcow2Image ?? (image as? CachedBackend)?.inner as? Qcow2Image
    }

    /// `format`, or the probed format when nil.
    package static func probedFormat(_ format: String?, path: String) throws(SystemError) -> String {
        if let format { return format }
        return try probe(path: path)
    }

    /// QEMU's warning when it had to guess raw.
    package static func probedRawWarning(path: String) -> String {
        "WARNING: Image format was not specified for '\(path)' and probing guessed raw.\n"
            + "         Automatically detecting the format is dangerous for raw images, write operations on block 0 will be restricted.\n"
            + "         Specify the 'raw' format explicitly to remove the restrictions."
    }

    /// Opens `path` as `format` (probed when nil). `chain` holds the real paths of the images
    /// above it in a backing chain (loop detection).
    /// `inactive`: a qcow2 image is opened without writing anything (an incoming migration's
    /// destination, while the source still owns the file; `Qcow2Image.activate()` takes it), and
    /// no image takes its locks until then.
    /// `locking`: what the user takes and shares of the image (ImageLock.swift); a backing file
    /// is always a reader that lets nobody write it.
    package static func open(path: String, format: String?, readOnly: Bool, cache: BlockCacheMode = .writeback,
                             chain: [String] = [], inactive: Bool = false,
                             locking: ImageLocking = .tool) throws(SystemError) -> any BlockBackend {
        let format = try probedFormat(format, path: path)
        let image: any BlockBackend
        switch format {
        case "raw":
            image = try RawImage(path: path, readOnly: readOnly, direct: cache.direct, locking: locking, inactive: inactive)
        case "qcow2":
            image = try Qcow2Image(path: path, readOnly: readOnly, backingMode: .open(chain: chain), cache: cache, inactive: inactive,
                                   locking: locking)
        default:
            throw .configuration("'\(path)': unknown image format '\(format)'; accepted: \(formats.joined(separator: ", "))")
        }
        // qcow2 ignores flushes itself under cache=unsafe (its close must not sync either).
        let wrap = cache.writeThrough || (cache == .unsafe && !(image is Qcow2Image))
        return wrap ? CachedBackend(image, mode: cache) : image
    }
}

/// QEMU's `-drive cache=` modes: whether the host page cache is bypassed (O_DIRECT), whether
/// every write is made durable before it completes, and whether the guest's flushes count.
public enum BlockCacheMode: String, Sendable, CaseIterable {
    /// The default: writes reach the host page cache; the guest's flush makes them durable.
    case writeback
    /// O_DIRECT: the host page cache is bypassed; the guest's flush makes writes durable.
    case none
    /// Every write is made durable before it completes.
    case writethrough
    /// O_DIRECT, and every write durable before it completes.
    case directsync
    /// The guest's flushes are ignored: fast, and lost if the host crashes.
    case unsafe

    package var direct: Bool { self == .none || self == .directsync }
    package var writeThrough: Bool { self == .writethrough || self == .directsync }
}

/// A backend under a cache mode that changes when data becomes durable.
final class CachedBackend: BlockBackend {
    let inner: any BlockBackend
    let mode: BlockCacheMode

    init(_ inner: any BlockBackend, mode: BlockCacheMode) {
        self.inner = inner
        self.mode = mode
    }

    var label: String { inner.label }
    var size: UInt64 { inner.size }
    var readOnly: Bool { inner.readOnly }

    func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws(SystemError) {
        try inner.read(at: offset, into: buffer)
    }

    func write(at offset: UInt64, from buffer: UnsafeRawBufferPointer) throws(SystemError) {
        try inner.write(at: offset, from: buffer)
        if mode.writeThrough { try inner.flush() }
    }

    func flush() throws(SystemError) {
        if mode != .unsafe { try inner.flush() }
    }

    func discard(at offset: UInt64, count: UInt64) throws(SystemError) {
        try inner.discard(at: offset, count: count)
        if mode.writeThrough { try inner.flush() }
    }

    func writeZeroes(at offset: UInt64, count: UInt64, mayUnmap: Bool) throws(SystemError) {
        try inner.writeZeroes(at: offset, count: count, mayUnmap: mayUnmap)
        if mode.writeThrough { try inner.flush() }
    }
}

/// How `Qcow2Image.create` lays out a new image (qemu-img create's `-o` options).
package struct Qcow2CreateOptions: Sendable {
    package enum Preallocation: String, Sendable {
        case off, metadata, full
    }

    package var clusterSize: UInt64 = 65536
    /// 2 (`compat=0.10`) or 3 (`compat=1.1`, the default).
    package var version: UInt32 = 3
    package var backingFile: String?
    package var backingFormat: String?
    package var preallocation: Preallocation = .off
    package var refcountBits: UInt64 = 16
    package var lazyRefcounts = false

    package init() {}
}

extension Qcow2Image {
    /// Creates a qcow2 image of `size` bytes (rounded up to a sector) at `path`, laid out as
    /// QEMU lays one out: the header in cluster 0, then the refcount table, its refcount
    /// blocks, and the L1 table.
    package static func create(path: String, size requested: UInt64, options: Qcow2CreateOptions) throws(SystemError) {
        let cs = options.clusterSize
        guard cs.nonzeroBitCount == 1, (512...(2 << 20)).contains(cs) else {
            throw .configuration("Cluster size must be a power of two between 512 and 2048k")
        }
        guard options.refcountBits.nonzeroBitCount == 1, options.refcountBits <= 64 else {
            throw .configuration("Refcount width must be a power of two and may not exceed 64 bits")
        }
        guard options.version == 3 || options.refcountBits == 16 else {
            throw .configuration("Different refcount widths than 16 bits require compatibility level 1.1 or above (use compat=1.1 or greater)")
        }
        let size = (requested + 511) / 512 * 512
        let l2Coverage = cs / 8 * cs
        let l1Size = (size + l2Coverage - 1) / l2Coverage
        guard l1Size * 8 <= Qcow2Header.maxL1Bytes else {
            throw .configuration("Image size \(size) is too large for cluster size \(cs) (at most \(Qcow2Header.maxL1Bytes / 8 * l2Coverage) bytes)")
        }
        let refcountOrder = UInt32(options.refcountBits.trailingZeroBitCount)
        let blockEntries = cs * 8 / options.refcountBits
        let l1Clusters = (l1Size * 8 + cs - 1) / cs  // none for an empty disk, as QEMU does
        // The refcount table, blocks and L1 table must count themselves: iterate to a fixed point.
        var tableClusters: UInt64 = 1, blocks: UInt64 = 1
        while true {
            let total = 1 + tableClusters + blocks + l1Clusters
            let needBlocks = (total + blockEntries - 1) / blockEntries
            let needTable = max(1, (needBlocks * 8 + cs - 1) / cs)
            if needBlocks == blocks && needTable == tableClusters { break }
            blocks = needBlocks
            tableClusters = needTable
        }
        let tableOffset = cs
        let blocksOffset = tableOffset + tableClusters * cs
        let end = blocksOffset + (blocks + l1Clusters) * cs
        let l1Offset = l1Clusters == 0 ? 0 : blocksOffset + blocks * cs
        var header = Qcow2Header(version: options.version, clusterBits: UInt32(cs.trailingZeroBitCount), size: size,
                                 l1Size: UInt32(l1Size), l1TableOffset: l1Offset, refcountTableOffset: tableOffset,
                                 refcountTableClusters: UInt32(tableClusters), refcountOrder: refcountOrder)
        header.backingFile = options.backingFile
        header.backingFormat = options.backingFormat
        if options.lazyRefcounts {
            guard options.version == 3 else { throw .configuration("Lazy refcounts only supported with compatibility level 1.1 and above (use compat=1.1 or greater)") }
            header.compatibleFeatures |= Qcow2Header.lazyRefcountsBit
        }
        let file = try ImageFile.create(path: path)
        try file.writeBytes(at: 0, try header.serialized())
        var table = [UInt8](repeating: 0, count: Int(tableClusters * cs))
        for k in 0..<blocks { table.putBE64(blocksOffset + k * cs, at: Int(k) * 8) }
        try file.writeBytes(at: tableOffset, table)
        var block = [UInt8](repeating: 0, count: Int(blocks * cs))
        for cluster in 0..<(end / cs) {
            _ = setRefcountEntry(&block, Int(cluster), order: refcountOrder, 1)
        }
        try file.writeBytes(at: blocksOffset, block)
        try file.truncate(to: end)
        if options.preallocation != .off {
            file.locks?.retire()  // the image below takes over from the creator's locks
            let image = try Qcow2Image(path: path, readOnly: false, backingMode: .skip)
            try image.preallocate(full: options.preallocation == .full)
            try image.close()
        }
        try file.sync()
    }

    /// Gives every guest cluster an L2 entry and a data cluster (qemu-img's
    /// `preallocation=metadata`); `full` also writes the data clusters' zeroes.
    func preallocate(full: Bool) throws(SystemError) {
        try locked { () throws(SystemError) in
            let clusters = (header.size + clusterSize - 1) / clusterSize
            var cluster: UInt64 = 0
            while cluster < clusters {
                let run = min(l2Entries - cluster % l2Entries, clusters - cluster)
                let table = try writableL2Table(for: cluster)
                let host = try allocateClusters(run)
                for k in 0..<run {
                    try setL2Entry(table: table, index: Int((cluster + k) % l2Entries), (host + k * clusterSize) | Qcow2Image.copiedFlag)
                }
                if full {
                    let zeroes = [UInt8](repeating: 0, count: Int(min(run * clusterSize, 64 << 20)))
                    var done: UInt64 = 0
                    while done < run * clusterSize {
                        let n = min(UInt64(zeroes.count), run * clusterSize - done)
                        try zeroes.withUnsafeBytes { b in
                            Result { () throws(SystemError) in try file.write(at: host + done, from: UnsafeRawBufferPointer(rebasing: b[0..<Int(n)])) }
                        }.get()
                        done += n
                    }
                }
                cluster += run
            }
            try file.truncate(to: fileEnd)
        }
    }
}
