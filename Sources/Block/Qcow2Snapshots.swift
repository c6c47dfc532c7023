import Glibc
import SystemSupport

/// Internal snapshots (qcow2.txt "Snapshots") and resizing. A snapshot is a copy of the
/// active L1 table; the L2 tables and data clusters it reaches gain one reference each, so
/// the next write to any of them copies it first (COW through the COPIED flags).
extension Qcow2Image {
    /// The snapshot named `name`, matched by ID first and then by name, as qemu-img does.
    package func findSnapshot(_ name: String) -> Int? {
        snapshots.firstIndex { $0.id == name } ?? snapshots.firstIndex { $0.name == name }
    }

    /// `qemu-img snapshot -c NAME`.
    package func createSnapshot(name: String) throws(SystemError) {
        try checkWritable("snapshot create")
        try locked { () throws(SystemError) in
            guard !snapshots.contains(where: { $0.name == name }) else {
                throw .configuration("Could not create snapshot '\(name)': snapshot with the same name already exists")
            }
            try adjustTree(l1, by: 1)
            try refreshCopiedFlags()
            let l1Clusters = (UInt64(l1.count) * 8 + clusterSize - 1) / clusterSize
            let l1Offset = l1Clusters == 0 ? 0 : try allocateClusters(l1Clusters)  // an empty disk has no table
            try file.writeBytes(at: l1Offset, Qcow2Image.tableBytes(l1))
            var now = timespec()
            clock_gettime(CLOCK_REALTIME, &now)
            var extra = [UInt8](repeating: 0, count: 24)  // vm_state_size_large, disk_size, icount
            extra.putBE64(header.size, at: 8)
            let id = (snapshots.compactMap { UInt64($0.id) }.max() ?? 0) + 1
            let snapshot = Qcow2Snapshot(l1TableOffset: l1Offset, l1Size: UInt32(l1.count), id: String(id), name: name,
                                         dateSeconds: UInt32(truncatingIfNeeded: now.tv_sec), dateNanoseconds: UInt32(now.tv_nsec),
                                         vmClockNanoseconds: 0, vmStateSize: 0, extraData: extra)
            try writeSnapshotTable(snapshots + [snapshot])
        }
    }

    /// `qemu-img snapshot -a NAME`: the snapshot's L1 table becomes the active one.
    package func applySnapshot(_ name: String) throws(SystemError) {
        try checkWritable("snapshot apply")
        try locked { () throws(SystemError) in
            guard let index = findSnapshot(name) else { throw .configuration("Could not apply snapshot '\(name)': snapshot not found") }
            let snapshot = snapshots[index]
            let table = try snapshotL1(snapshot)
            if table.count > l1.count { try growL1(to: UInt64(table.count)) }
            let old = l1
            // Take the new references before dropping the old (a crash leaks, never loses).
            try adjustTree(table, by: 1)
            l1 = table + [UInt64](repeating: 0, count: old.count - table.count)
            try file.writeBytes(at: header.l1TableOffset, Qcow2Image.tableBytes(l1))
            if let size = snapshot.diskSize, size != header.size {
                header.size = size
                try file.writeBytes(at: 24, .be64(size))
            }
            try adjustTree(old, by: -1)
            try refreshCopiedFlags()
        }
    }

    /// `qemu-img snapshot -d NAME`.
    package func deleteSnapshot(_ name: String) throws(SystemError) {
        try checkWritable("snapshot delete")
        try locked { () throws(SystemError) in
            guard let index = findSnapshot(name) else { throw .configuration("Could not delete snapshot '\(name)': snapshot not found") }
            let snapshot = snapshots[index]
            let table = try snapshotL1(snapshot)
            var remaining = snapshots
            remaining.remove(at: index)
            try writeSnapshotTable(remaining)
            try adjustTree(table, by: -1)
            let l1Clusters = (UInt64(snapshot.l1Size) * 8 + clusterSize - 1) / clusterSize
            for k in 0..<l1Clusters { try updateRefcount(cluster: snapshot.l1TableOffset / clusterSize + k, by: -1) }
            try refreshCopiedFlags()
        }
    }

    private func snapshotL1(_ snapshot: Qcow2Snapshot) throws(SystemError) -> [UInt64] {
        let bytes = UInt64(snapshot.l1Size) * 8
        guard bytes > 0 else { return [] }
        guard bytes <= Qcow2Header.maxL1Bytes, snapshot.l1TableOffset % clusterSize == 0, snapshot.l1TableOffset >= clusterSize,
              snapshot.l1TableOffset + bytes <= fileEnd else {
            throw .badInput("\(file.path): snapshot \(snapshot.id) (\(snapshot.name)): L1 table at \(snapshot.l1TableOffset) of \(snapshot.l1Size) entries lies outside the image")
        }
        return try Qcow2Image.readTable(file, at: snapshot.l1TableOffset, count: Int(snapshot.l1Size))
    }

    /// Adds `delta` to the refcount of every L2 table `table` reaches and of every cluster
    /// those tables map (qcow2.txt: each L1 table that reaches a cluster holds a reference).
    private func adjustTree(_ table: [UInt64], by delta: Int64) throws(SystemError) {
        for entry in table {
            let l2Offset = entry & Qcow2Image.offsetMask
            guard l2Offset != 0 else { continue }
            let l2 = try l2Table(at: l2Offset)
            try updateRefcount(cluster: l2Offset / clusterSize, by: delta)
            for e in l2 {
                switch mapping(of: e) {
                case .unallocated, .zero(host: 0): continue
                case .zero(let host), .data(let host, _): try updateRefcount(cluster: host / clusterSize, by: delta)
                case .compressed(let offset, let bytes):
                    for c in compressedClusters(offset: offset, bytes: bytes) { try updateRefcount(cluster: c, by: delta) }
                }
            }
        }
    }

    /// Sets the COPIED flag of every active L1 and L2 entry exactly when its cluster's
    /// refcount is 1 (after the refcounts changed under them).
    private func refreshCopiedFlags() throws(SystemError) {
        for (l1Index, l1Entry) in l1.enumerated() {
            let l2Offset = l1Entry & Qcow2Image.offsetMask
            guard l2Offset != 0 else { continue }
            let sole = try refcount(of: l2Offset / clusterSize) == 1
            let wanted = sole ? l1Entry | Qcow2Image.copiedFlag : l1Entry & ~Qcow2Image.copiedFlag
            if wanted != l1Entry { try setL1Entry(l1Index, wanted) }
            for (index, entry) in try l2Table(at: l2Offset).enumerated() {
                let host: UInt64
                switch mapping(of: entry) {
                case .data(let h, _): host = h
                case .zero(let h) where h != 0: host = h
                default: continue
                }
                let copied = try refcount(of: host / clusterSize) == 1
                let new = copied ? entry | Qcow2Image.copiedFlag : entry & ~Qcow2Image.copiedFlag
                if new != entry { try setL2Entry(table: l2Offset, index: index, new) }
            }
        }
    }

    /// Writes `table` to new clusters, points the header at it, then frees the old table.
    private func writeSnapshotTable(_ table: [Qcow2Snapshot]) throws(SystemError) {
        let oldOffset = header.snapshotsOffset
        let oldBytes = UInt64(snapshots.reduce(0) { $0 + $1.serialized().count })
        let bytes = table.flatMap { $0.serialized() }
        var offset: UInt64 = 0
        if !bytes.isEmpty {
            offset = try allocateClusters((UInt64(bytes.count) + clusterSize - 1) / clusterSize)
            try file.writeBytes(at: offset, bytes)
        }
        var fields = [UInt8](repeating: 0, count: 12)
        fields.putBE32(UInt32(table.count), at: 0)
        fields.putBE64(offset, at: 4)
        try file.writeBytes(at: 60, fields)  // nb_snapshots, snapshots_offset
        header.nbSnapshots = UInt32(table.count)
        header.snapshotsOffset = offset
        if !snapshots.isEmpty && oldBytes > 0 {
            for k in 0..<((oldBytes + clusterSize - 1) / clusterSize) { try updateRefcount(cluster: oldOffset / clusterSize + k, by: -1) }
        }
        snapshots = table
    }

    /// `qemu-img resize`: grows the disk (the L1 table moves when it must grow), or shrinks
    /// it, freeing every cluster past the new end (shared ones lose the active image's
    /// reference; snapshots keep theirs and their own size).
    package func resize(to requested: UInt64) throws(SystemError) {
        try checkWritable("resize")
        try locked { () throws(SystemError) in
            let newSize = (requested + 511) / 512 * 512
            let coverage = l2Entries * clusterSize
            let needed = (newSize + coverage - 1) / coverage
            guard needed * 8 <= Qcow2Header.maxL1Bytes else { throw .configuration("Image size \(newSize) is too large for this cluster size") }
            if newSize < header.size {
                // Free every cluster past the new end; whole L2 tables past it go too.
                let firstCluster = (newSize + clusterSize - 1) / clusterSize
                for cluster in firstCluster..<((header.size + clusterSize - 1) / clusterSize) where try l2Entry(cluster) != 0 {
                    let table = try writableL2Table(for: cluster)
                    let index = Int(cluster % l2Entries)
                    let old = try l2Table(at: table)[index]
                    try setL2Entry(table: table, index: index, 0)
                    try release(old)
                }
                for index in Int(needed)..<l1.count where l1[index] & Qcow2Image.offsetMask != 0 {
                    let old = l1[index] & Qcow2Image.offsetMask
                    try setL1Entry(index, 0)
                    try updateRefcount(cluster: old / clusterSize, by: -1)
                }
            } else if needed > UInt64(l1.count) {
                try growL1(to: needed)
            }
            header.size = newSize
            try file.writeBytes(at: 24, .be64(newSize))
        }
    }

    /// Moves the active L1 table to new clusters with room for `entries` entries: written
    /// whole before the header points at it, the old table freed after.
    private func growL1(to entries: UInt64) throws(SystemError) {
        let newTable = l1 + [UInt64](repeating: 0, count: Int(entries) - l1.count)
        let oldOffset = header.l1TableOffset
        let oldClusters = (UInt64(l1.count) * 8 + clusterSize - 1) / clusterSize
        let offset = try allocateClusters((entries * 8 + clusterSize - 1) / clusterSize)
        try file.writeBytes(at: offset, Qcow2Image.tableBytes(newTable))
        var fields = [UInt8](repeating: 0, count: 12)
        fields.putBE32(UInt32(entries), at: 0)
        fields.putBE64(offset, at: 4)
        try file.writeBytes(at: 36, fields)  // l1_size, l1_table_offset
        l1 = newTable
        header.l1Size = UInt32(entries)
        header.l1TableOffset = offset
        if oldOffset != 0 {
            for k in 0..<oldClusters { try updateRefcount(cluster: oldOffset / clusterSize + k, by: -1) }
        }
    }

    /// Rewrites the header's backing file name and format (`rebase`), keeping every other
    /// header extension as it was.
    package func setBacking(file name: String?, format: String?) throws(SystemError) {
        try checkWritable("rebase")
        try locked { () throws(SystemError) in
            var new = header
            new.backingFile = name
            new.backingFormat = name == nil ? nil : format
            let bytes = try new.serialized()
            // The first cluster holds only the header, its extensions and the backing file name
            // (qcow2.txt "Header"): the rest is cleared so that no longer name survives.
            try file.writeBytes(at: 0, bytes + [UInt8](repeating: 0, count: Int(clusterSize) - bytes.count))
            header = try Qcow2Header(parsing: try file.readBytes(at: 0, count: Int(clusterSize)), fileLength: try file.length(), name: file.path)
        }
    }

    /// Drops every cluster of the active image (after `commit`): reads fall through to the
    /// backing file again.
    package func makeEmpty() throws(SystemError) {
        try checkWritable("make empty")
        try locked { () throws(SystemError) in
            for cluster in 0..<((header.size + clusterSize - 1) / clusterSize) where try l2Entry(cluster) != 0 {
                let table = try writableL2Table(for: cluster)
                let index = Int(cluster % l2Entries)
                let old = try l2Table(at: table)[index]
                try setL2Entry(table: table, index: index, 0)
                try release(old)
            }
        }
    }
}
