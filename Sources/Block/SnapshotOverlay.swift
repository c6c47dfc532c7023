import DeviceModel
import Glibc
import Synchronization
import SystemSupport

/// QEMU's `-snapshot` / `-drive snapshot=on` for any backend: the image is opened read-only
/// and the guest's writes go to a temporary file instead, which disappears when swemu ends
/// (the file is unlinked as soon as it is created). `commit()` (Ctrl-A s) writes them back.
///
/// The overlay tracks written data in 4 KiB clusters; a write that covers part of a cluster
/// first copies the rest of that cluster from the image, so every cluster is read wholly from
/// one side.
package final class SnapshotOverlay: BlockBackend {
    package static let clusterSize: UInt64 = 4096

    private let base: any BlockBackend
    private let basePath: String
    private let baseFormat: String
    private let overlay: RawImage
    private let written: Mutex<[UInt64]>
    package let readOnly: Bool

    package var label: String { "snapshot:\(base.label)" }
    /// The locks on the image under the overlay.
    package var baseLocks: ImageLockHolder? { DiskImage.locks(of: base) }
    package var size: UInt64 { base.size }

    /// Opens `path` read-only under a fresh overlay in `$TMPDIR` (default /var/tmp, where
    /// QEMU puts its snapshot files too, as /tmp may be a small RAM disk).
    /// The image is locked as QEMU locks the backing file of its snapshot overlay: read, and
    /// nobody else may write or resize it (`locking` gives the mode and force-share).
    package init(path: String, format: String = "raw", readOnly: Bool = false, locking: ImageLocking = .tool) throws(SystemError) {
        let base = try DiskImage.open(path: path, format: format, readOnly: true,
                                      locking: ImageLocking(mode: locking.mode, forceShare: locking.forceShare, shared: ImageLocking.stableReader.shared))
        self.base = base
        basePath = path
        baseFormat = format
        self.readOnly = readOnly
        let directory = getenv("TMPDIR").map { String(cString: $0) } ?? "/var/tmp"
        var template = Array("\(directory)/swemu-snapshot-XXXXXX".utf8CString)
        let fd = try syscall("cannot create a snapshot file in \(directory)") { mkstemp(&template) }
        let overlayPath = template.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }  // mkstemp keeps the NUL
        defer {
            close(fd)
            unlink(overlayPath)
        }
        _ = try syscall("cannot size the snapshot file") { ftruncate(fd, off_t(base.size)) }
        overlay = try RawImage(path: overlayPath)
        let clusters = (base.size + SnapshotOverlay.clusterSize - 1) / SnapshotOverlay.clusterSize
        written = Mutex([UInt64](repeating: 0, count: Int((clusters + 63) / 64)))
    }

    private static func isWritten(_ bits: [UInt64], _ cluster: UInt64) -> Bool {
        bits[Int(cluster / 64)] >> (cluster % 64) & 1 != 0
    }

    package func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws(SystemError) {
        try checkRange(offset: offset, count: UInt64(buffer.count))
        guard !buffer.isEmpty else { return }
        // Which side each cluster comes from, decided under the lock; the I/O runs outside it.
        let first = offset / SnapshotOverlay.clusterSize
        let last = (offset + UInt64(buffer.count) - 1) / SnapshotOverlay.clusterSize
        let fromOverlay = written.withLock { bits in (first...last).map { SnapshotOverlay.isWritten(bits, $0) } }
        var done = 0
        while done < buffer.count {
            let position = offset + UInt64(done)
            let cluster = position / SnapshotOverlay.clusterSize
            let clusterEnd = (cluster + 1) * SnapshotOverlay.clusterSize
            let n = Int(min(UInt64(buffer.count - done), clusterEnd - position))
            let part = UnsafeMutableRawBufferPointer(rebasing: buffer[done..<(done + n)])
            if fromOverlay[Int(cluster - first)] {
                try overlay.read(at: position, into: part)
            } else {
                try base.read(at: position, into: part)
            }
            done += n
        }
    }

    package func write(at offset: UInt64, from buffer: UnsafeRawBufferPointer) throws(SystemError) {
        try checkWritable("write")
        try checkRange(offset: offset, count: UInt64(buffer.count))
        guard !buffer.isEmpty else { return }
        let size = SnapshotOverlay.clusterSize
        try written.withLock { (bits: inout [UInt64]) throws(SystemError) in
            let first = offset / size
            let last = (offset + UInt64(buffer.count) - 1) / size
            for cluster in first...last where !SnapshotOverlay.isWritten(bits, cluster) {
                let start = cluster * size
                let covered = offset <= start && offset + UInt64(buffer.count) >= min(start + size, self.size)
                if !covered {
                    // Copy the cluster up before part of it is overwritten.
                    var data = [UInt8](repeating: 0, count: Int(min(size, self.size - start)))
                    try data.withUnsafeMutableBytes { b in Result { () throws(SystemError) in try base.read(at: start, into: b) } }.get()
                    try data.withUnsafeBytes { b in Result { () throws(SystemError) in try overlay.write(at: start, from: b) } }.get()
                }
                bits[Int(cluster / 64)] |= 1 << (cluster % 64)
            }
            try overlay.write(at: offset, from: buffer)
        }
    }

    /// Nothing to make durable: the overlay is thrown away at exit by design.
    package func flush() throws(SystemError) {}

    package func discard(at offset: UInt64, count: UInt64) throws(SystemError) {
        try checkWritable("discard")
        try checkRange(offset: offset, count: count)
    }

    package func writeZeroes(at offset: UInt64, count: UInt64, mayUnmap: Bool) throws(SystemError) {
        try checkWritable("write-zeroes")
        try checkRange(offset: offset, count: count)
        let chunk = [UInt8](repeating: 0, count: 1 << 16)
        var done: UInt64 = 0
        while done < count {
            let n = Int(min(UInt64(chunk.count), count - done))
            try chunk.withUnsafeBytes { b in
                Result { () throws(SystemError) in try write(at: offset + done, from: UnsafeRawBufferPointer(rebasing: b[0..<n])) }
            }.get()
            done += UInt64(n)
        }
    }

    /// Writes every cluster the guest changed back into the image (QEMU's `commit`, Ctrl-A s).
    /// Returns how many clusters were written.
    @discardableResult
    package func commit() throws(SystemError) -> Int {
        // QEMU reopens the image read-write for the commit; here a second open does, and the
        // read-only one steps aside for it in this process while keeping its bytes locked.
        let holder = baseLocks
        holder?.retire()
        defer { holder?.retire(false) }
        let target = try DiskImage.open(path: basePath, format: baseFormat, readOnly: false)
        let bits = written.withLock { $0 }  // a snapshot of the map: commit is rare
        var count = 0
        var data = [UInt8](repeating: 0, count: Int(SnapshotOverlay.clusterSize))
        for cluster in 0..<UInt64(bits.count * 64) where SnapshotOverlay.isWritten(bits, cluster) {
            let start = cluster * SnapshotOverlay.clusterSize
            let n = Int(min(SnapshotOverlay.clusterSize, size - start))
            try data.withUnsafeMutableBytes { b in
                Result { () throws(SystemError) in try overlay.read(at: start, into: UnsafeMutableRawBufferPointer(rebasing: b[0..<n])) }
            }.get()
            try data.withUnsafeBytes { b in
                Result { () throws(SystemError) in try target.write(at: start, from: UnsafeRawBufferPointer(rebasing: b[0..<n])) }
            }.get()
            count += 1
        }
        try target.flush()
        try (target as? Qcow2Image)?.close()
        return count
    }
}
