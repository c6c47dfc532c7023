import Glibc
import SystemSupport

/// What `check` found (qemu-img check's `ImageCheck`).
package struct Qcow2CheckResult: Sendable, Equatable {
    package var corruptions = 0
    package var leaks = 0
    package var corruptionsFixed = 0
    package var leaksFixed = 0
    /// Internal errors: a refcount that could not be read, a repair that could not run.
    package var checkErrors = 0
    /// Set when the check stopped before it finished (qemu-img's "Check failed: <reason>",
    /// exit status 1): the counts are then incomplete.
    package var failure: String?
    /// One line per problem, in qemu-img check's words (its stderr).
    package var messages: [String] = []
    package var totalClusters: UInt64 = 0
    package var allocatedClusters: UInt64 = 0
    package var fragmentedClusters: UInt64 = 0
    package var compressedClusters: UInt64 = 0
    package var imageEndOffset: UInt64 = 0
}

package enum Qcow2Repair: Sendable {
    case none, leaks, all
}

/// qcow2.txt "Cluster mapping" / "Host cluster management": the bits a valid entry leaves 0
/// (QEMU's L1E_RESERVED_MASK, L2E_STD_RESERVED_MASK, REFT_RESERVED_MASK).
private let l1ReservedMask: UInt64 = 0x7f00_0000_0000_01ff
private let l2StandardReservedMask: UInt64 = 0x3f00_0000_0000_01fe
private let refcountTableReservedMask: UInt64 = 0x1ff

extension Qcow2Image {
    /// How far `check -r all` grows the file to hold a refcount block outside it: the count
    /// array check keeps has one entry per cluster up to there (64 Mi entries, 256 MiB).
    static let maxCheckedClusters: UInt64 = 1 << 26

    /// qemu-img check, as QEMU 7.2's qcow2 driver does it (block/qcow2-refcount.c,
    /// `qcow2_check_refcounts`): recounts every reference the metadata makes (header, L1 and
    /// L2 tables, data and compressed clusters, snapshots, the refcount structure itself) into
    /// an in-memory table and compares it with the stored refcounts. More stored than
    /// referenced is a leak; fewer is a corruption, as are references past the end of the file,
    /// misaligned or reserved-bit entries and a wrong COPIED flag (qcow2.txt: set exactly when
    /// the refcount is 1). `repair`: `.leaks` frees leaked clusters; `.all` also raises short
    /// refcounts, rewrites COPIED flags, and rebuilds the refcount structure when it cannot be
    /// trusted (a referenced cluster with refcount 0, a broken refcount block). Nothing is
    /// read from past the end of the file but zeroes, so a truncated image is reported, not
    /// refused.
    package func check(repair: Qcow2Repair) throws(SystemError) -> Qcow2CheckResult {
        try locked { () throws(SystemError) in try checkLocked(repair: repair) }
    }

    func checkLocked(repair: Qcow2Repair) throws(SystemError) -> Qcow2CheckResult {
        // Releases waiting for a flush belong to the metadata now (see `release`).
        try applyDeferredReleasesLocked()
        var messages: [String] = []
        let fileLength = try file.length()
        let clusters = (fileLength + clusterSize - 1) / clusterSize
        // One counter per host cluster (256 MiB of counters: 4 TiB of 64 KiB clusters).
        guard clusters <= 1 << 26 else {
            throw .unsupported("\(file.path): \(clusters) clusters are too many to check in memory")
        }
        var result = Qcow2CheckResult()
        result.totalClusters = (header.size + clusterSize - 1) / clusterSize
        var rebuild = false
        var counts = try calculateRefcounts(&result, &messages, repair: repair, rebuild: &rebuild)
        let preCompare = result
        var highest = compareRefcounts(&result, &messages, fix: .none, rebuild: &rebuild, counts)

        if rebuild && repair == .all {
            let before = result
            messages.append("Rebuilding refcount structure")
            try rebuildRefcountStructure(counts)
            result.corruptions = 0
            result.leaks = 0
            // The old refcount structures are references no more: count again, then free them.
            rebuild = false
            counts = try calculateRefcounts(&result, &messages, repair: .none, rebuild: &rebuild)
            let saved = result
            result = Qcow2CheckResult()
            highest = compareRefcounts(&result, &messages, fix: .leaks, rebuild: &rebuild, counts)
            if rebuild { messages.append("ERROR rebuilt refcount structure is still broken") }
            let freshLeaks = result.leaks
            result = saved
            if result.corruptions < before.corruptions { result.corruptionsFixed += before.corruptions - result.corruptions }
            if result.leaks < before.leaks { result.leaksFixed += before.leaks - result.leaks }
            result.leaks += freshLeaks
        } else if repair != .none {
            if rebuild {
                messages.append("ERROR need to rebuild refcount structures")
                result.checkErrors += 1
                result.failure = "Input/output error"
                result.messages = messages
                return result
            }
            if result.leaks > 0 || result.corruptions > 0 {
                result = preCompare
                highest = compareRefcounts(&result, &messages, fix: repair, rebuild: &rebuild, counts)
            }
        }
        try checkCopiedFlags(&result, &messages, repair: repair)
        result.imageEndOffset = (highest + 1) * clusterSize
        if repair != .none && result.checkErrors == 0 && result.corruptions == 0
            && header.incompatibleFeatures & Qcow2Header.corruptBit != 0 {
            // qcow2.txt "corrupt bit": cleared once the image is consistent again.
            header.incompatibleFeatures &= ~Qcow2Header.corruptBit
            try file.writeBytes(at: Qcow2Header.incompatibleFeaturesOffset, .be64(header.incompatibleFeatures))
        }
        if repair != .none { try file.sync() }
        result.messages = messages
        return result
    }

    /// The references the metadata makes, per host cluster (QEMU's `calculate_refcounts`).
    private func calculateRefcounts(_ result: inout Qcow2CheckResult, _ messages: inout [String], repair: Qcow2Repair,
                                    rebuild: inout Bool) throws(SystemError) -> [UInt32] {
        var fileLength = try file.length()
        var counts = [UInt32](repeating: 0, count: Int((fileLength + clusterSize - 1) / clusterSize))
        let cap = UInt32(clamping: maxRefcount)

        /// qemu's `qcow2_inc_refcounts_imrt`: the last cluster may run less than one cluster
        /// past the end of the file (a file cut inside its last cluster); more is a corruption.
        func increment(_ offset: UInt64, _ size: UInt64) {
            guard size > 0 else { return }
            if offset.addingReportingOverflow(size).partialValue >= fileLength &+ clusterSize || offset > UInt64(Int64.max) {
                messages.append("ERROR: counting reference for region exceeding the end of the file by one cluster or more: offset 0x\(hex(offset)) size 0x\(hex(size))")
                result.corruptions += 1
                return
            }
            for k in (offset / clusterSize)...((offset + size - 1) / clusterSize) {
                if k >= UInt64(counts.count) { counts += [UInt32](repeating: 0, count: Int(k) + 1 - counts.count) }
                if counts[Int(k)] == cap {
                    messages.append("ERROR: overflow cluster offset=0x\(hex(k * clusterSize))")
                    messages.append("Use qemu-img amend to increase the refcount entry width or qemu-img convert to create a clean copy if the image cannot be opened for writing")
                    result.corruptions += 1
                    continue
                }
                counts[Int(k)] += 1
            }
        }

        func checkL2(_ l2Offset: UInt64, fragmentation: Bool) throws(SystemError) {
            let table = try Qcow2Image.readTable(file, at: l2Offset, count: Int(l2Entries))
            var nextContiguous: UInt64 = 0
            for entry in table {
                let compressed = entry & Qcow2Image.compressedFlag != 0
                if !compressed && entry & l2StandardReservedMask != 0 {
                    messages.append("ERROR found l2 entry with reserved bits set: \(hex(entry))")
                    result.corruptions += 1
                }
                switch mapping(of: entry) {
                case .compressed(let offset, let bytes):
                    if entry & Qcow2Image.copiedFlag != 0 {
                        messages.append("ERROR: coffset=0x\(hex(offset)): copied flag must never be set for compressed clusters")
                        result.corruptions += 1
                    }
                    increment(offset, bytes)
                    if fragmentation {
                        result.allocatedClusters += 1
                        result.compressedClusters += 1
                        // Sub-sector packing: every compressed cluster counts as fragmented.
                        result.fragmentedClusters += 1
                    }
                case .unallocated, .zero(host: 0):
                    continue
                case .zero(let host), .data(let host, _):
                    if host % clusterSize != 0 {
                        result.corruptions += 1
                        let preallocatedZero = entry & Qcow2Image.zeroFlag != 0
                        messages.append("ERROR offset=\(hex(host)): \(preallocatedZero ? "Preallocated" : "Data") cluster is not properly aligned; L2 entry corrupted.")
                    }
                    if fragmentation {
                        result.allocatedClusters += 1
                        if nextContiguous != 0 && host != nextContiguous { result.fragmentedClusters += 1 }
                        nextContiguous = host + clusterSize
                    }
                    increment(host, clusterSize)
                }
            }
        }

        func checkL1(_ l1Offset: UInt64, _ l1Size: UInt32, fragmentation: Bool) throws(SystemError) {
            guard l1Size > 0 else { return }
            increment(l1Offset, UInt64(l1Size) * 8)
            for entry in try Qcow2Image.readTable(file, at: l1Offset, count: Int(l1Size)) where entry != 0 {
                if entry & l1ReservedMask != 0 {
                    messages.append("ERROR found L1 entry with reserved bits set: \(hex(entry))")
                    result.corruptions += 1
                }
                let l2Offset = entry & Qcow2Image.offsetMask
                increment(l2Offset, clusterSize)
                if l2Offset % clusterSize != 0 {
                    messages.append("ERROR l2_offset=\(hex(l2Offset)): Table is not cluster aligned; L1 entry corrupted")
                    result.corruptions += 1
                }
                try checkL2(l2Offset, fragmentation: fragmentation)
            }
        }

        increment(0, clusterSize)  // the header
        try checkL1(header.l1TableOffset, header.l1Size, fragmentation: true)
        for snapshot in snapshots {
            guard snapshot.l1TableOffset % clusterSize == 0 else {
                messages.append("ERROR snapshot \(snapshot.id) (\(snapshot.name)) l1_offset=\(hexC(snapshot.l1TableOffset)): L1 table is not cluster aligned; snapshot table entry corrupted")
                result.corruptions += 1
                continue
            }
            guard UInt64(snapshot.l1Size) * 8 <= Qcow2Header.maxL1Bytes else {
                messages.append("ERROR snapshot \(snapshot.id) (\(snapshot.name)) l1_size=\(hexC(UInt64(snapshot.l1Size))): L1 table is too large; snapshot table entry corrupted")
                result.corruptions += 1
                continue
            }
            try checkL1(snapshot.l1TableOffset, snapshot.l1Size, fragmentation: false)
        }
        increment(header.snapshotsOffset, UInt64(snapshots.reduce(0) { $0 + $1.serialized().count }))
        increment(header.refcountTableOffset, UInt64(header.refcountTableClusters) * clusterSize)

        // check_refblocks: every refcount block lies in the image and is referenced once.
        for (index, entry) in refcountTable.enumerated() {
            let offset = entry & Qcow2Image.refcountTableMask
            let cluster = offset / clusterSize
            if entry & refcountTableReservedMask != 0 {
                messages.append("ERROR refcount table entry \(index) has reserved bits set")
                result.corruptions += 1
                rebuild = true
                continue
            }
            if cluster >= UInt64(counts.count) {
                result.corruptions += 1
                messages.append("\(repair == .all ? "Repairing" : "ERROR") refcount block \(index) is outside image")
                if repair == .all && cluster >= Self.maxCheckedClusters {
                    // QEMU's resize_fail: its refcount array cannot grow that far either (found by
                    // fuzzing: an entry near 2^48 asked for a 64 GiB array here).
                    messages.append("ERROR could not resize image: Cannot allocate memory")
                    rebuild = true
                } else if repair == .all {
                    // As QEMU: grow the file to hold the block (which then reads as zeroes).
                    try file.truncate(to: offset + clusterSize)
                    fileLength = offset + clusterSize
                    fileEnd = max(fileEnd, fileLength)
                    openedLength = max(openedLength, fileLength)
                    if counts.count < Int(cluster) + 1 { counts += [UInt32](repeating: 0, count: Int(cluster) + 1 - counts.count) }
                    result.corruptions -= 1
                    result.corruptionsFixed += 1
                    increment(offset, clusterSize)
                }
                continue
            }
            guard offset != 0 else { continue }
            increment(offset, clusterSize)
            if counts[Int(cluster)] != 1 {
                messages.append("ERROR refcount block \(index) refcount=\(counts[Int(cluster)])")
                result.corruptions += 1
                rebuild = true
            }
        }
        return counts
    }

    /// The stored refcount of `cluster`, or why it cannot be read (qemu's "Can't get refcount").
    private func storedRefcount(_ cluster: UInt64) -> Result<UInt64, SystemError> {
        let tableIndex = cluster / refcountBlockEntries
        if tableIndex < UInt64(refcountTable.count), (refcountTable[Int(tableIndex)] & Qcow2Image.refcountTableMask) % clusterSize != 0 {
            return .failure(SystemError(.badInput, "Input/output error"))
        }
        return Result { () throws(SystemError) in try refcount(of: cluster) }
    }

    /// Stored against counted refcounts, fixing what `fix` allows (QEMU's `compare_refcounts`);
    /// returns the highest cluster in use.
    private func compareRefcounts(_ result: inout Qcow2CheckResult, _ messages: inout [String], fix: Qcow2Repair,
                                  rebuild: inout Bool, _ counts: [UInt32]) -> UInt64 {
        var highest: UInt64 = 0
        var c: UInt64 = 0
        let zeroes = [UInt32](repeating: 0, count: Int(refcountBlockEntries))
        let zeroBlock = [UInt8](repeating: 0, count: Int(clusterSize))
        while c < UInt64(counts.count) {
            defer { c += 1 }
            // A refcount block that does not exist holds zeroes: where nothing references its
            // clusters either, there is nothing to compare (a corrupt table can make `counts`
            // 64 Mi clusters long; looking each up would take minutes).
            if c % refcountBlockEntries == 0 {
                let tableIndex = Int(c / refcountBlockEntries)
                let blockEnd = min(c + refcountBlockEntries, UInt64(counts.count))
                let offset = tableIndex < refcountTable.count ? refcountTable[tableIndex] & Qcow2Image.refcountTableMask : 0
                // ... and so does a block of zero bytes (a fuzzed or truncated image's).
                let block = offset == 0 || offset % clusterSize != 0 ? nil : try? refcountBlock(at: offset)
                let storedZero = offset == 0 || block.map { $0.count <= zeroBlock.count && Self.allZero($0, 0..<$0.count, zeroes: zeroBlock) } == true
                if storedZero, Self.allZero(counts, Int(c)..<Int(blockEnd), zeroes: zeroes) {
                    c = blockEnd - 1
                    continue
                }
            }
            let stored: UInt64
            switch storedRefcount(c) {
            case .success(let value): stored = value
            case .failure(let error):
                messages.append("Can't get refcount for cluster \(c): \(error.message)")
                result.checkErrors += 1
                continue
            }
            let referenced = UInt64(counts[Int(c)])
            if stored > 0 || referenced > 0 { highest = c }
            guard stored != referenced else { continue }
            var fixing = false
            if stored == 0 {
                rebuild = true  // refcount 0 on a cluster in use: the structure is not to be trusted
            } else if stored > referenced && fix != .none {
                fixing = true
            } else if stored < referenced && fix == .all {
                fixing = true
            }
            messages.append("\(fixing ? "Repairing" : stored < referenced ? "ERROR" : "Leaked") cluster \(c) refcount=\(stored) reference=\(referenced)")
            if fixing {
                do throws(SystemError) {
                    try setRefcount(cluster: c, referenced)
                    if referenced == 0 { freeHint = min(freeHint, c) }
                    if stored > referenced { result.leaksFixed += 1 } else { result.corruptionsFixed += 1 }
                    continue
                } catch {
                    messages.append("ERROR: \(error.message)")
                }
            }
            if stored < referenced { result.corruptions += 1 } else { result.leaks += 1 }
        }
        return highest
    }

    /// Whether values[range] are all 0 (refcounts counted, a refcount block's bytes): memcmp
    /// against `zeroes`, as a loop over 64 Mi entries is slow in a debug or sanitized build.
    private static func allZero<T: FixedWidthInteger>(_ values: [T], _ range: Range<Int>, zeroes: [T]) -> Bool {
        guard !range.isEmpty else { return true }
        precondition(range.lowerBound >= 0 && range.upperBound <= values.count && range.count <= zeroes.count)
        return values.withUnsafeBufferPointer { all in
            zeroes.withUnsafeBufferPointer { zero in
                // SAFETY: the precondition keeps range inside values and no longer than zeroes,
                // and a non-empty range means neither buffer is empty (so neither base is nil).
                memcmp(all.baseAddress! + range.lowerBound, zero.baseAddress!, range.count * MemoryLayout<T>.stride) == 0
            }
        }
    }

    /// QEMU's `rebuild_refcount_structure`: a new refcount table and blocks holding `counts`,
    /// written past everything the file and the metadata use, then made the header's. The old
    /// table and blocks are leaks from then on (the caller frees them).
    private func rebuildRefcountStructure(_ counts: [UInt32]) throws(SystemError) {
        // Past the file, and past every table the metadata points at, even beyond the end
        // of a truncated file (QEMU's overlap check refuses a write there; we keep clear).
        func end(_ offset: UInt64, _ bytes: UInt64) -> UInt64 {
            let (sum, overflow) = offset.addingReportingOverflow(bytes)
            return overflow ? .max : sum
        }
        var metadataEnd = max(end(header.l1TableOffset, UInt64(l1.count) * 8),
                              end(header.refcountTableOffset, UInt64(header.refcountTableClusters) * clusterSize),
                              end(header.snapshotsOffset, UInt64(snapshots.reduce(0) { $0 + $1.serialized().count })))
        for snapshot in snapshots { metadataEnd = max(metadataEnd, end(snapshot.l1TableOffset, UInt64(snapshot.l1Size) * 8)) }
        for entry in l1 { metadataEnd = max(metadataEnd, end(entry & Qcow2Image.offsetMask, clusterSize)) }
        for entry in refcountTable { metadataEnd = max(metadataEnd, end(entry & Qcow2Image.refcountTableMask, clusterSize)) }
        let start = max(UInt64(counts.count), (try file.length() + clusterSize - 1) / clusterSize, fileEnd / clusterSize,
                        metadataEnd / clusterSize + 1)
        // The same bound as the check's own table (see `checkLocked`).
        guard start <= 1 << 26 else {
            throw .badInput("\(file.path): cannot rebuild the refcount structure: the metadata points \(metadataEnd) bytes into the file")
        }
        var blocks: UInt64 = 0, tableClusters: UInt64 = 1
        while true {
            let end = start + blocks + tableClusters
            let needBlocks = (end + refcountBlockEntries - 1) / refcountBlockEntries
            let needTable = max(1, (needBlocks * 8 + clusterSize - 1) / clusterSize)
            if needBlocks == blocks && needTable == tableClusters { break }
            (blocks, tableClusters) = (needBlocks, needTable)
        }
        guard tableClusters * clusterSize <= Qcow2Header.maxRefcountTableBytes else {
            throw .badInput("\(file.path): the rebuilt refcount table would be larger than \(Qcow2Header.maxRefcountTableBytes) bytes")
        }
        let end = start + blocks + tableClusters
        var table = [UInt64](repeating: 0, count: Int(tableClusters * clusterSize / 8))
        let zeroes = [UInt32](repeating: 0, count: Int(refcountBlockEntries))
        for b in 0..<blocks {
            var block = [UInt8](repeating: 0, count: Int(clusterSize))
            let first = b * refcountBlockEntries
            let last = min(first + refcountBlockEntries, end)
            // The counted clusters (skipped at once where none is referenced), then the new
            // structures' own, 1 each.
            let counted = min(last, start, UInt64(counts.count))
            if first < counted && !Self.allZero(counts, Int(first)..<Int(counted), zeroes: zeroes) {
                for c in first..<counted where counts[Int(c)] != 0 {
                    _ = Qcow2Image.setRefcountEntry(&block, Int(c - first), order: header.refcountOrder, min(UInt64(counts[Int(c)]), maxRefcount))
                }
            }
            for c in max(first, start)..<max(last, start) {
                _ = Qcow2Image.setRefcountEntry(&block, Int(c - first), order: header.refcountOrder, 1)
            }
            table[Int(b)] = (start + b) * clusterSize
            try file.writeBytes(at: (start + b) * clusterSize, block)
        }
        let tableOffset = (start + blocks) * clusterSize
        try file.writeBytes(at: tableOffset, Qcow2Image.tableBytes(table))
        // The new structure is durable before the header points at it (qcow2.txt: the header
        // is the one place that switches from the old refcounts to the new).
        try file.sync()
        var fields = [UInt8](repeating: 0, count: 12)
        fields.putBE64(tableOffset, at: 0)
        fields.putBE32(UInt32(tableClusters), at: 8)
        try file.writeBytes(at: 48, fields)  // refcount_table_offset, refcount_table_clusters
        try file.sync()
        header.refcountTableOffset = tableOffset
        header.refcountTableClusters = UInt32(tableClusters)
        refcountTable = table
        resetRefcountCachesLocked(blockClusters: Set((0..<blocks).map { start + $0 }))
        fileEnd = max(fileEnd, end * clusterSize)
        openedLength = max(openedLength, end * clusterSize)
    }

    /// qcow2.txt: the COPIED flag (bit 63) of active L1 and L2 entries is set exactly when the
    /// refcount of the cluster it points to is 1 (QEMU's `check_oflag_copied`).
    private func checkCopiedFlags(_ result: inout Qcow2CheckResult, _ messages: inout [String], repair: Qcow2Repair) throws(SystemError) {
        // -r leaks repairs flags only once the refcounts are known right.
        let fix = repair == .all || (repair == .leaks && result.checkErrors == 0 && result.corruptions == 0 && result.leaks == 0)
        for (l1Index, l1Entry) in l1.enumerated() {
            let l2Offset = l1Entry & Qcow2Image.offsetMask
            guard l2Offset != 0 else { continue }
            guard case .success(let l2Refcount) = storedRefcount(l2Offset / clusterSize) else { continue }
            if (l2Refcount == 1) != (l1Entry & Qcow2Image.copiedFlag != 0) {
                messages.append("\(fix ? "Repairing" : "ERROR") OFLAG_COPIED L2 cluster: l1_index=\(l1Index) l1_entry=\(hex(l1Entry)) refcount=\(l2Refcount)")
                if fix {
                    try setL1Entry(l1Index, l2Refcount == 1 ? l1Entry | Qcow2Image.copiedFlag : l1Entry & ~Qcow2Image.copiedFlag)
                    result.corruptionsFixed += 1
                } else {
                    result.corruptions += 1
                }
            }
            var table = try Qcow2Image.readTable(file, at: l2Offset, count: Int(l2Entries))
            var dirty = 0
            for (index, entry) in table.enumerated() {
                let host: UInt64
                switch mapping(of: entry) {
                case .data(let h, _): host = h
                case .zero(let h) where h != 0: host = h
                default: continue
                }
                guard case .success(let refcount) = storedRefcount(host / clusterSize) else { continue }
                guard (refcount == 1) != (entry & Qcow2Image.copiedFlag != 0) else { continue }
                messages.append("\(fix ? "Repairing" : "ERROR") OFLAG_COPIED data cluster: l2_entry=\(hex(entry)) refcount=\(refcount)")
                if fix {
                    table[index] = refcount == 1 ? entry | Qcow2Image.copiedFlag : entry & ~Qcow2Image.copiedFlag
                    dirty += 1
                } else {
                    result.corruptions += 1
                }
            }
            guard dirty > 0 else { continue }
            guard l2Offset % clusterSize == 0, l2Offset >= clusterSize, !isMetadataOtherThanL2(l2Offset / clusterSize) else {
                // QEMU's overlap check refuses the write.
                messages.append("ERROR: Could not write L2 table; metadata overlap check failed: Input/output error")
                result.checkErrors += 1
                result.corruptions += dirty
                continue
            }
            try setL2Entries(table: l2Offset, from: 0, table)
            result.corruptionsFixed += dirty
        }
    }
}

func hex(_ v: UInt64) -> String { String(v, radix: 16) }

/// C's `%#x`: "0" for zero, "0x..." otherwise.
func hexC(_ v: UInt64) -> String { v == 0 ? "0" : "0x" + String(v, radix: 16) }
