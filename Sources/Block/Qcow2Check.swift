import SystemSupport

/// What `check` found (qemu-img check's `ImageCheck`).
package struct Qcow2CheckResult: Sendable, Equatable {
    package var corruptions = 0
    package var leaks = 0
    package var corruptionsFixed = 0
    package var leaksFixed = 0
    /// One line per problem, in qemu-img check's words.
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

extension Qcow2Image {
    /// qemu-img check: recounts every reference the metadata makes (header, L1 and L2 tables,
    /// data and compressed clusters, snapshots, the refcount structure itself) and compares
    /// with the stored refcounts. More stored than referenced is a leak; fewer is a corruption,
    /// as is a wrong COPIED flag (qcow2.txt: set exactly when the refcount is 1). `repair`
    /// sets the stored refcounts (and flags) to what the metadata says.
    package func check(repair: Qcow2Repair) throws(SystemError) -> Qcow2CheckResult {
        try locked { () throws(SystemError) in try checkLocked(repair: repair) }
    }

    func checkLocked(repair: Qcow2Repair) throws(SystemError) -> Qcow2CheckResult {
        var result = Qcow2CheckResult()
        let fileClusters = fileEnd / clusterSize
        // One counter per host cluster the file holds, bounded (256 MiB of counters: 4 TiB of
        // 64 KiB clusters).
        guard fileClusters <= 1 << 26 else {
            throw .unsupported("\(file.path): \(fileClusters) clusters are too many to check in memory")
        }
        var counts = [UInt32](repeating: 0, count: Int(fileClusters))
        result.totalClusters = (header.size + clusterSize - 1) / clusterSize

        func count(_ offset: UInt64, _ length: UInt64) {
            guard length > 0 else { return }
            let first = offset / clusterSize, last = (offset + length - 1) / clusterSize
            for c in first...last {
                if c >= fileClusters {
                    result.messages.append("ERROR: counting reference for region exceeding the end of the file by one cluster or more: offset 0x\(hex(c * clusterSize)) size 0x\(hex(clusterSize))")
                    result.corruptions += 1
                    return
                }
                counts[Int(c)] &+= 1
            }
        }

        count(0, clusterSize)  // the header
        var nextContiguous: UInt64 = 0
        func walkL1(_ table: [UInt64], offset: UInt64, active: Bool) throws(SystemError) {
            count(offset, UInt64(table.count) * 8)
            for (l1Index, l1Entry) in table.enumerated() {
                let l2Offset = l1Entry & Qcow2Image.offsetMask
                guard l2Offset != 0 else { continue }
                guard l2Offset % clusterSize == 0, l2Offset >= clusterSize, l2Offset < fileEnd else {
                    result.messages.append("ERROR l2_offset=\(hex(l2Offset)): Table is not cluster aligned or lies outside the image; L1 entry \(l1Index) corrupted")
                    result.corruptions += 1
                    continue
                }
                count(l2Offset, clusterSize)
                let l2 = try l2Table(at: l2Offset)
                nextContiguous = 0  // qemu-img counts fragmentation within each L2 table
                for (l2Index, entry) in l2.enumerated() {
                    switch mapping(of: entry) {
                    case .unallocated, .zero(host: 0):
                        continue
                    case .compressed(let offset, let bytes):
                        // qcow2.txt: every sector the compressed data touches counts.
                        count(offset & ~511, offset % 512 + bytes)
                        if active {
                            result.allocatedClusters += 1
                            result.compressedClusters += 1
                            result.fragmentedClusters += 1
                        }
                    case .zero(let host), .data(let host, _):
                        guard host % clusterSize == 0 else {
                            result.messages.append("ERROR offset=\(hex(host)): Cluster is not properly aligned; L2 entry \(l2Index) of L2 table at \(hex(l2Offset)) corrupted")
                            result.corruptions += 1
                            continue
                        }
                        count(host, clusterSize)
                        if active {
                            result.allocatedClusters += 1
                            if nextContiguous != 0 && host != nextContiguous { result.fragmentedClusters += 1 }
                            nextContiguous = host + clusterSize
                        }
                    }
                }
            }
        }
        try walkL1(l1, offset: header.l1TableOffset, active: true)
        if !snapshots.isEmpty {
            count(header.snapshotsOffset, UInt64(snapshots.reduce(0) { $0 + $1.serialized().count }))
            for snapshot in snapshots {
                guard snapshot.l1Size == 0 || snapshot.l1TableOffset % clusterSize == 0 && snapshot.l1TableOffset >= clusterSize,
                      snapshot.l1TableOffset + UInt64(snapshot.l1Size) * 8 <= fileEnd,
                      UInt64(snapshot.l1Size) * 8 <= Qcow2Header.maxL1Bytes else {
                    result.messages.append("ERROR snapshot \(snapshot.id) (\(snapshot.name)) L1 table is outside the image or too large")
                    result.corruptions += 1
                    continue
                }
                try walkL1(try Qcow2Image.readTable(file, at: snapshot.l1TableOffset, count: Int(snapshot.l1Size)),
                           offset: snapshot.l1TableOffset, active: false)
            }
        }
        count(header.refcountTableOffset, UInt64(header.refcountTableClusters) * clusterSize)
        for (index, entry) in refcountTable.enumerated() {
            let block = entry & Qcow2Image.refcountTableMask
            guard block != 0 else { continue }
            guard block % clusterSize == 0, block < fileEnd else {
                result.messages.append("ERROR refcount block \(index) is not cluster aligned or lies outside the image; refcount table entry corrupted")
                result.corruptions += 1
                continue
            }
            count(block, clusterSize)
        }

        // Compare: fix what `repair` allows, as qemu-img check -r does.
        var highest: UInt64 = 0
        for c in 0..<fileClusters {
            let stored = try refcount(of: c)
            let referenced = UInt64(counts[Int(c)])
            if stored > 0 || referenced > 0 { highest = c }
            guard stored != referenced else { continue }
            let isLeak = stored > referenced
            let fix = repair == .all || (repair == .leaks && isLeak)
            result.messages.append("\(fix ? "Repairing" : isLeak ? "Leaked" : "ERROR") cluster \(c) refcount=\(stored) reference=\(referenced)")
            if fix {
                try setRefcount(cluster: c, referenced)
                if referenced == 0 { freeHint = min(freeHint, c) }
            }
            switch (isLeak, fix) {
            case (true, true): result.leaksFixed += 1
            case (true, false): result.leaks += 1
            case (false, true): result.corruptionsFixed += 1
            case (false, false): result.corruptions += 1
            }
        }
        result.imageEndOffset = (highest + 1) * clusterSize
        try checkCopiedFlags(&result, repair: repair == .all)
        if repair == .all && result.corruptions == 0 && header.incompatibleFeatures & Qcow2Header.corruptBit != 0 {
            // qcow2.txt "corrupt bit": cleared once the image is repaired.
            header.incompatibleFeatures &= ~Qcow2Header.corruptBit
            try file.writeBytes(at: Qcow2Header.incompatibleFeaturesOffset, .be64(header.incompatibleFeatures))
        }
        return result
    }

    /// qcow2.txt: the COPIED flag (bit 63) of active L1 and L2 entries is set exactly when the
    /// refcount of the cluster it points to is 1.
    private func checkCopiedFlags(_ result: inout Qcow2CheckResult, repair: Bool) throws(SystemError) {
        for (l1Index, l1Entry) in l1.enumerated() {
            let l2Offset = l1Entry & Qcow2Image.offsetMask
            guard l2Offset != 0, l2Offset % clusterSize == 0, l2Offset >= clusterSize, l2Offset < fileEnd else { continue }
            let l2Refcount = try refcount(of: l2Offset / clusterSize)
            if (l2Refcount == 1) != (l1Entry & Qcow2Image.copiedFlag != 0) {
                result.messages.append("\(repair ? "Repairing" : "ERROR") OFLAG_COPIED L2 cluster: l1_index=\(l1Index) l1_entry=\(hex(l1Entry)) refcount=\(l2Refcount)")
                if repair {
                    try setL1Entry(l1Index, l2Refcount == 1 ? l1Entry | Qcow2Image.copiedFlag : l1Entry & ~Qcow2Image.copiedFlag)
                    result.corruptionsFixed += 1
                } else {
                    result.corruptions += 1
                }
            }
            let table = try l2Table(at: l2Offset)
            for (index, entry) in table.enumerated() {
                let host: UInt64
                switch mapping(of: entry) {
                case .data(let h, _): host = h
                case .zero(let h) where h != 0: host = h
                default: continue
                }
                guard host % clusterSize == 0, host < fileEnd else { continue }
                let refcount = try refcount(of: host / clusterSize)
                guard (refcount == 1) != (entry & Qcow2Image.copiedFlag != 0) else { continue }
                result.messages.append("\(repair ? "Repairing" : "ERROR") OFLAG_COPIED data cluster: l2_entry=\(hex(entry)) refcount=\(refcount)")
                // Only the active table may change: a shared table is copied first.
                if repair && l1[l1Index] & Qcow2Image.copiedFlag != 0 {
                    try setL2Entry(table: l2Offset, index: index, refcount == 1 ? entry | Qcow2Image.copiedFlag : entry & ~Qcow2Image.copiedFlag)
                    result.corruptionsFixed += 1
                } else {
                    result.corruptions += 1
                }
            }
        }
    }
}

func hex(_ v: UInt64) -> String { String(v, radix: 16) }
