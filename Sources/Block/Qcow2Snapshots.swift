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

    /// `qemu-img snapshot -c NAME`: a disk-only snapshot (no VM state, icount 0, as qemu-img
    /// writes it).
    package func createSnapshot(name: String) throws(SystemError) {
        try checkWritable("snapshot create")
        try locked { () throws(SystemError) in
            guard !snapshots.contains(where: { $0.name == name }) else {
                throw .configuration("Could not create snapshot '\(name)': snapshot with the same name already exists")
            }
            try appendSnapshotLocked(name: name, vmStateBytes: 0, vmClockNanoseconds: 0, icount: 0, date: nil)
        }
    }

    /// Copies the active L1 table into a new snapshot table entry (qcow2.txt "Snapshots"):
    /// every cluster the table reaches gains a reference, then the entry joins the table.
    private func appendSnapshotLocked(name: String, vmStateBytes: UInt64, vmClockNanoseconds: UInt64, icount: UInt64,
                                      date: (seconds: UInt32, nanoseconds: UInt32)?) throws(SystemError) {
        try adjustTree(l1, by: 1)
        try refreshCopiedFlags()
        let l1Clusters = (UInt64(l1.count) * 8 + clusterSize - 1) / clusterSize
        let l1Offset = l1Clusters == 0 ? 0 : try allocateClusters(l1Clusters)  // an empty disk has no table
        try file.writeBytes(at: l1Offset, Qcow2Image.tableBytes(l1))
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        var extra = [UInt8](repeating: 0, count: 24)  // vm_state_size_large, disk_size, icount
        extra.putBE64(vmStateBytes, at: 0)
        extra.putBE64(header.size, at: 8)
        extra.putBE64(icount, at: 16)
        let id = (snapshots.compactMap { UInt64($0.id) }.max() ?? 0) + 1
        // qcow2.txt: a state that does not fit vm_state_size leaves it 0, so that a reader
        // without vm_state_size_large sees a disk-only snapshot rather than a truncated state.
        let small = vmStateBytes <= UInt64(UInt32.max) ? UInt32(vmStateBytes) : 0
        let snapshot = Qcow2Snapshot(l1TableOffset: l1Offset, l1Size: UInt32(l1.count), id: String(id), name: name,
                                     dateSeconds: date?.seconds ?? UInt32(truncatingIfNeeded: now.tv_sec),
                                     dateNanoseconds: date?.nanoseconds ?? UInt32(now.tv_nsec),
                                     vmClockNanoseconds: vmClockNanoseconds, vmStateSize: small, extraData: extra)
        try writeSnapshotTable(snapshots + [snapshot])
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
            try linkBarrier()  // the new references are durable before the table uses them
            try file.writeBytes(at: header.l1TableOffset, Qcow2Image.tableBytes(l1))
            if let size = snapshot.diskSize, size != header.size {
                header.size = size
                try file.writeBytes(at: 24, .be64(size))
            }
            try syncBarrier()  // and the old table is gone from the disk before its references go
            try adjustTree(old, by: -1)
            try refreshCopiedFlags()
        }
    }

    /// `qemu-img snapshot -d NAME`.
    package func deleteSnapshot(_ name: String) throws(SystemError) {
        try checkWritable("snapshot delete")
        try locked { () throws(SystemError) in
            guard let index = findSnapshot(name) else { throw .configuration("Could not delete snapshot '\(name)': snapshot not found") }
            try deleteSnapshotLocked(at: index)
        }
    }

    /// Drops entry `index` from the table first, then its references (a crash leaks, never
    /// loses): its L1 table, and one on everything that table reaches (VM state included).
    private func deleteSnapshotLocked(at index: Int) throws(SystemError) {
        let snapshot = snapshots[index]
        let table = try snapshotL1(snapshot)
        var remaining = snapshots
        remaining.remove(at: index)
        try writeSnapshotTable(remaining)
        try syncBarrier()  // the entry is gone from the disk before its references go
        try adjustTree(table, by: -1)
        let l1Clusters = (UInt64(snapshot.l1Size) * 8 + clusterSize - 1) / clusterSize
        for k in 0..<l1Clusters { try updateRefcount(cluster: snapshot.l1TableOffset / clusterSize + k, by: -1) }
        try refreshCopiedFlags()
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
        try linkBarrier()  // the new table is durable before the header points at it
        try file.writeBytes(at: 60, fields)  // nb_snapshots, snapshots_offset
        header.nbSnapshots = UInt32(table.count)
        header.snapshotsOffset = offset
        if !snapshots.isEmpty && oldBytes > 0 {
            for k in 0..<((oldBytes + clusterSize - 1) / clusterSize) { try deferRelease(oldOffset / clusterSize + k) }
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
                    try deferRelease(old / clusterSize)
                }
            } else {
                // The old vmstate area may become disk: a state left there by applying a
                // snapshot (loadvm) must not show through as the new space's contents.
                if newSize > header.size { try discardVMStateAreaLocked() }
                if needed > UInt64(l1.count) { try growL1(to: needed) }
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
        try linkBarrier()  // the new table is durable before the header points at it
        try file.writeBytes(at: 36, fields)  // l1_size, l1_table_offset
        l1 = newTable
        header.l1Size = UInt32(entries)
        header.l1TableOffset = offset
        if oldOffset != 0 {
            for k in 0..<oldClusters { try deferRelease(oldOffset / clusterSize + k) }
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

// MARK: VM state (savevm / loadvm)

/// The VM state of a snapshot lives in the image's "vmstate area" (QEMU's
/// `qcow2_vm_state_offset`): guest offsets from the first L1 entry past those the virtual disk
/// uses, written through the ordinary cluster mapping (the active L1 table grows to reach it).
/// `savevm` writes the state there, then snapshots the L1 table (the snapshot keeps the state's
/// clusters), then discards the area from the active layer, as QEMU's `qcow2_snapshot_create`
/// does; `loadvm` reads it back through the snapshot's L1 table.
extension Qcow2Image {
    /// Guest bytes one L1 entry maps (qcow2.txt: `cluster_size * l2_entries`).
    private var l1Coverage: UInt64 { l2Entries * clusterSize }

    /// The first guest offset of the vmstate area of a disk of `diskSize` bytes: `diskSize`
    /// rounded up to a whole L1 entry (QEMU: `size_to_l1(size) << (cluster_bits + l2_bits)`).
    /// nil when it overflows (a corrupt size).
    private func vmStateOffset(diskSize: UInt64) -> UInt64? {
        let entries = diskSize / l1Coverage + (diskSize % l1Coverage == 0 ? 0 : 1)
        let (offset, overflow) = entries.multipliedReportingOverflow(by: l1Coverage)
        return overflow ? nil : offset
    }

    /// `savevm NAME` for this image: `writeVMState` streams the VM state into the vmstate
    /// area (sequential appends; nothing is held in memory beyond one chunk), then the
    /// snapshot is taken with vm_state_size, vm_state_size_large, vm_clock_nsec and icount
    /// set, and the area is discarded from the active layer (the disk's contents do not change).
    ///
    /// An existing snapshot with the same name is replaced when `replacing` (QEMU's savevm),
    /// else refused before anything is written. Unlike QEMU, the old snapshot is deleted only
    /// once the new state is written whole: a failed save keeps it. When `writeVMState` or
    /// the write fails, what was written is discarded again and no snapshot is made.
    ///
    /// - Parameters:
    ///   - vmClockNanoseconds: the virtual clock at the snapshot (`vm_clock_nsec`).
    ///   - icount: the instruction count in icount mode; nil writes -1 ("none"), as QEMU does.
    ///   - date: seconds and nanoseconds since the epoch (`date_sec`, `date_nsec`); nil: now.
    package func createSnapshot(name: String, vmClockNanoseconds: UInt64, icount: UInt64? = nil,
                                date: (seconds: UInt32, nanoseconds: UInt32)? = nil, replacing: Bool = true,
                                writeVMState: (Qcow2VMStateWriter) throws(SystemError) -> Void) throws(SystemError) {
        try checkWritable("savevm")
        let writer = try locked { () throws(SystemError) -> Qcow2VMStateWriter in
            try checkNotCorrupt()
            guard replacing || !snapshots.contains(where: { $0.name == name }) else {
                throw .configuration("Could not create snapshot '\(name)': snapshot with the same name already exists")
            }
            guard !savingVMState else {
                throw .configuration("\(file.path): another VM state is being saved into this image; wait for it to finish")
            }
            guard let base = vmStateOffset(diskSize: header.size) else {
                throw .badInput("\(file.path): the disk size \(header.size) leaves no room for a VM state")
            }
            // Whatever an earlier loadvm left in the area (the applied snapshot's state) would
            // otherwise be copied into the new snapshot too.
            try discardVMStateAreaLocked()
            savingVMState = true
            return Qcow2VMStateWriter(image: self, base: base)
        }
        defer { try? locked { () throws(SystemError) in savingVMState = false } }
        do {
            try writeVMState(writer)
            try writer.finish()
        } catch {
            writer.abandon()
            try? locked { () throws(SystemError) in try discardVMStateAreaLocked() }
            throw error
        }
        try locked { () throws(SystemError) in
            do throws(SystemError) {
                try checkNotCorrupt()
                while let index = snapshots.firstIndex(where: { $0.name == name }) {
                    guard replacing else {
                        throw .configuration("Could not create snapshot '\(name)': snapshot with the same name already exists")
                    }
                    try deleteSnapshotLocked(at: index)
                }
                try appendSnapshotLocked(name: name, vmStateBytes: writer.count, vmClockNanoseconds: vmClockNanoseconds,
                                         icount: icount ?? .max, date: date)
            } catch {
                try? discardVMStateAreaLocked()
                throw error
            }
            // QEMU: "The VM state isn't needed any more in the active L1 table; in fact, it
            // hurts by causing expensive COW for the next snapshot."
            try discardVMStateAreaLocked()
        }
    }

    /// `savevm` with the whole state in hand.
    package func createSnapshot(name: String, vmState: [UInt8], vmClockNanoseconds: UInt64, icount: UInt64? = nil,
                                date: (seconds: UInt32, nanoseconds: UInt32)? = nil, replacing: Bool = true) throws(SystemError) {
        try createSnapshot(name: name, vmClockNanoseconds: vmClockNanoseconds, icount: icount, date: date,
                           replacing: replacing) { (writer) throws(SystemError) in try writer.write(vmState) }
    }

    /// A sequential reader of the VM state of snapshot `name` (matched as `findSnapshot`
    /// does), read through the snapshot's own L1 table: the active disk is left alone, so the
    /// caller can check the state before `applySnapshot`. Throws when the snapshot has none.
    package func openVMState(snapshot name: String) throws(SystemError) -> Qcow2VMStateReader {
        try locked { () throws(SystemError) -> Qcow2VMStateReader in
            guard let index = findSnapshot(name) else {
                throw .configuration("Could not read the VM state of snapshot '\(name)': snapshot not found")
            }
            let snapshot = snapshots[index]
            let count = snapshot.vmStateBytes
            guard count > 0 else {
                throw .configuration("Snapshot '\(name)' has no VM state: it is a disk-only snapshot (as 'qemu-img snapshot -c' makes); revert its disk offline with 'swemu-img snapshot -a \(name)'")
            }
            let table = try snapshotL1(snapshot)
            let diskSize = snapshot.diskSize ?? header.size
            guard let base = vmStateOffset(diskSize: diskSize), count <= UInt64.max - base,
                  (base + count - 1) / l1Coverage < UInt64(table.count) else {
                throw .badInput("\(file.path): snapshot \(snapshot.id) (\(snapshot.name)): its VM state of \(count) bytes lies outside its L1 table of \(table.count) entries; the image is corrupt")
            }
            return Qcow2VMStateReader(image: self, snapshot: snapshot, table: table, base: base, count: count)
        }
    }

    /// The whole VM state of snapshot `name` (see `openVMState`); states too large to hold
    /// in memory are read with `openVMState` instead.
    package func readVMState(snapshot name: String) throws(SystemError) -> [UInt8] {
        let reader = try openVMState(snapshot: name)
        guard reader.count <= Qcow2Image.maxVMStateInMemory else {
            throw .configuration("The VM state of snapshot '\(name)' is \(reader.count) bytes, too large to read whole (the limit is \(Qcow2Image.maxVMStateInMemory)); read it in pieces with openVMState")
        }
        let count = Int(reader.count)
        return try [UInt8](unsafeUninitializedCapacity: count) { (buffer, initialized) throws(SystemError) in
            // SAFETY: `buffer` is the array's own storage of `count` bytes; the reader fills
            // every byte (it throws otherwise, and `initialized` stays 0: no byte is exposed).
            let raw = UnsafeMutableRawBufferPointer(buffer)
            var done = 0
            while done < count {
                let n = try reader.read(into: UnsafeMutableRawBufferPointer(rebasing: raw[done...]))
                guard n > 0 else { throw .badInput("\(file.path): the VM state of snapshot '\(name)' ended early") }
                done += n
            }
            initialized = count
        }
    }

    /// The most `readVMState` returns as one array.
    package static let maxVMStateInMemory: UInt64 = 16 << 30

    /// Appends VM state bytes at guest offset `offset` of the vmstate area, growing the active
    /// L1 table to reach them.
    fileprivate func storeVMStateLocked(at offset: UInt64, _ bytes: UnsafeRawBufferPointer) throws(SystemError) {
        try checkNotCorrupt()
        let (end, overflow) = offset.addingReportingOverflow(UInt64(bytes.count))
        let entries = end / l1Coverage + (end % l1Coverage == 0 ? 0 : 1)
        guard !overflow, entries <= Qcow2Header.maxL1Bytes / 8 else {
            throw .configuration("\(file.path): the VM state does not fit in the image (its L1 table would pass \(Qcow2Header.maxL1Bytes) bytes); use an image with larger clusters")
        }
        if entries > UInt64(l1.count) { try growL1(to: entries) }
        try writeLocked(at: offset, from: bytes)
    }

    /// Discards every allocated cluster of the active layer's vmstate area, as QEMU's
    /// `qcow2_cluster_discard` does for it: the L2 entry becomes a zero cluster (v3) or
    /// unallocated (v2), and its cluster loses the active layer's reference. Each L2 table is
    /// copied first when shared with a snapshot, rewritten whole, then the old entries released.
    private func discardVMStateAreaLocked() throws(SystemError) {
        guard let base = vmStateOffset(diskSize: header.size) else { return }
        let first = base / l1Coverage
        guard first < UInt64(l1.count) else { return }
        let replacement: UInt64 = header.version >= 3 ? Qcow2Image.zeroFlag : 0
        for l1Index in Int(first)..<l1.count {
            let l2Offset = l1[l1Index] & Qcow2Image.offsetMask
            guard l2Offset != 0 else { continue }
            let old = try l2Table(at: l2Offset)
            let allocated = old.indices.filter {
                switch mapping(of: old[$0]) {
                case .unallocated, .zero(host: 0): return false
                default: return true
                }
            }
            guard let firstIndex = allocated.first else { continue }
            let table = try writableL2Table(for: UInt64(l1Index) * l2Entries + UInt64(firstIndex))
            var new = try l2Table(at: table)
            for index in allocated { new[index] = replacement }
            try setL2Entries(table: table, from: 0, new)
            for index in allocated { try release(old[index]) }
        }
    }

    /// Reads `buffer.count` bytes at guest offset `offset` through the L1 table `table` (a
    /// snapshot's): clusters it does not map read as zeroes (the vmstate area lies past the
    /// disk, so a backing file has nothing there).
    fileprivate func readThroughLocked(_ table: [UInt64], at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws(SystemError) {
        func entry(_ cluster: UInt64) throws(SystemError) -> UInt64 {
            let l1Index = Int(cluster / l2Entries)
            guard l1Index < table.count else { return 0 }
            let l2Offset = table[l1Index] & Qcow2Image.offsetMask
            return l2Offset == 0 ? 0 : try l2Table(at: l2Offset)[Int(cluster % l2Entries)]
        }
        // SAFETY: every slice below is `done..<(done + n)` with `done + n <= buffer.count`, a
        // part of the caller's buffer, used only during this call.
        var done = 0
        while done < buffer.count {
            let position = offset + UInt64(done)
            let within = position % clusterSize
            let cluster = position / clusterSize
            var n = Int(min(clusterSize - within, UInt64(buffer.count - done)))
            let current = try entry(cluster)
            switch mapping(of: current) {
            case .unallocated:
                UnsafeMutableRawBufferPointer(rebasing: buffer[done..<(done + n)]).initializeMemory(as: UInt8.self, repeating: 0)
            case .data(let host, _):
                try validateOffset(host, "data cluster")
                // Contiguous host clusters become one host read.
                var next = cluster + 1
                while done + n < buffer.count, next % l2Entries != 0,
                      case .data(let h, _) = mapping(of: try entry(next)), h == host + (next - cluster) * clusterSize {
                    n += Int(min(clusterSize, UInt64(buffer.count - done - n)))
                    next += 1
                }
                try file.read(at: host + within, into: UnsafeMutableRawBufferPointer(rebasing: buffer[done..<(done + n)]))
            case .zero, .compressed:
                try readCluster(current, at: position, into: UnsafeMutableRawBufferPointer(rebasing: buffer[done..<(done + n)]))
            }
            done += n
        }
    }

    /// Whether `snapshot` is still in the table (a reader's snapshot may be deleted under it).
    fileprivate func stillHasSnapshot(_ snapshot: Qcow2Snapshot) -> Bool {
        snapshots.contains { $0.id == snapshot.id && $0.l1TableOffset == snapshot.l1TableOffset }
    }
}

/// Appends the VM state to the vmstate area during `Qcow2Image.createSnapshot(name:...
/// writeVMState:)`. Small writes are gathered into whole clusters, so that the image sees
/// large sequential writes whatever the caller's granularity.
package final class Qcow2VMStateWriter {
    private let image: Qcow2Image
    private let base: UInt64
    /// Bytes accepted so far: the state's size once the snapshot is made.
    package private(set) var count: UInt64 = 0
    /// Bytes already in the image (`count` less what `pending` holds).
    private var stored: UInt64 = 0
    private var pending: [UInt8] = []
    /// Writes go to the image in multiples of this (whole clusters, at least 1 MiB).
    private let chunk: Int
    private var closed = false

    fileprivate init(image: Qcow2Image, base: UInt64) {
        self.image = image
        self.base = base
        chunk = Int(max(image.clusterSize, (1 << 20) / image.clusterSize * image.clusterSize))
        pending.reserveCapacity(chunk)
    }

    /// Appends `bytes` to the state.
    package func write(_ bytes: UnsafeRawBufferPointer) throws(SystemError) {
        guard !closed else {
            throw .configuration("\(image.file.path): VM state written after its snapshot was made or abandoned")
        }
        // SAFETY: `rest` is always a slice of the caller's `bytes` (take <= rest.count,
        // whole <= rest.count), read only before this call returns; `pending` copies what stays.
        var rest = bytes
        if !pending.isEmpty {
            let take = min(chunk - pending.count, rest.count)
            pending.append(contentsOf: rest[0..<take])
            rest = UnsafeRawBufferPointer(rebasing: rest[take...])
            if pending.count == chunk { try flushPending() }
        }
        if rest.count >= chunk {
            // Whole chunks go straight from the caller's buffer.
            let whole = rest.count / chunk * chunk
            try store(UnsafeRawBufferPointer(rebasing: rest[0..<whole]))
            rest = UnsafeRawBufferPointer(rebasing: rest[whole...])
        }
        pending.append(contentsOf: rest)
        count += UInt64(bytes.count)
    }

    package func write(_ bytes: [UInt8]) throws(SystemError) {
        // SAFETY: `raw` is the array's storage, used only inside the closure.
        try bytes.withUnsafeBytes { raw in Result { () throws(SystemError) in try write(raw) } }.get()
    }

    /// Writes what is gathered; no more writes after it.
    fileprivate func finish() throws(SystemError) {
        guard !closed else { return }
        try flushPending()
        closed = true
    }

    fileprivate func abandon() {
        closed = true
        pending = []
    }

    private func flushPending() throws(SystemError) {
        guard !pending.isEmpty else { return }
        // SAFETY: `raw` is `pending`'s storage, written to the file inside the closure and not
        // kept; `store` does not touch `pending`.
        try pending.withUnsafeBytes { raw in Result { () throws(SystemError) in try store(raw) } }.get()
        pending.removeAll(keepingCapacity: true)
    }

    private func store(_ bytes: UnsafeRawBufferPointer) throws(SystemError) {
        let offset = base + stored
        try image.locked { () throws(SystemError) in try image.storeVMStateLocked(at: offset, bytes) }
        stored += UInt64(bytes.count)
    }
}

/// Reads a snapshot's VM state in order, through the snapshot's L1 table (`openVMState`).
package final class Qcow2VMStateReader {
    private let image: Qcow2Image
    private let snapshot: Qcow2Snapshot
    private let table: [UInt64]
    private let base: UInt64
    /// The state's size in bytes (vm_state_size_large).
    package let count: UInt64
    /// Bytes read so far.
    package private(set) var position: UInt64 = 0

    fileprivate init(image: Qcow2Image, snapshot: Qcow2Snapshot, table: [UInt64], base: UInt64, count: UInt64) {
        self.image = image
        self.snapshot = snapshot
        self.table = table
        self.base = base
        self.count = count
    }

    /// Fills `buffer` from the current position, less at the end of the state; returns how
    /// many bytes it read (0 at the end).
    package func read(into buffer: UnsafeMutableRawBufferPointer) throws(SystemError) -> Int {
        let n = Int(min(UInt64(buffer.count), count - position))
        guard n > 0 else { return 0 }
        // SAFETY: `buffer[0..<n]` lies in the caller's buffer (n <= buffer.count).
        try image.locked { () throws(SystemError) in
            guard image.stillHasSnapshot(snapshot) else {
                throw .configuration("Snapshot '\(snapshot.name)' was deleted while its VM state was being read")
            }
            try image.readThroughLocked(table, at: base + position, into: UnsafeMutableRawBufferPointer(rebasing: buffer[0..<n]))
        }
        position += UInt64(n)
        return n
    }

    /// The next `n` bytes at most (fewer at the end of the state).
    package func read(upTo n: Int) throws(SystemError) -> [UInt8] {
        let k = Int(min(UInt64(max(n, 0)), count - position))
        var bytes = [UInt8](repeating: 0, count: k)
        // SAFETY: `raw` is the array's storage, filled inside the closure only.
        let got = try bytes.withUnsafeMutableBytes { raw in Result { () throws(SystemError) in try read(into: raw) } }.get()
        return got == k ? bytes : Array(bytes[0..<got])
    }
}
