import SystemSupport

/// A header extension (qcow2.txt "Header extensions"): kept as read, so that extensions this
/// build does not interpret survive every header rewrite.
package struct Qcow2HeaderExtension: Equatable, Sendable {
    package var type: UInt32
    package var data: [UInt8]

    /// qcow2.txt's header extension types.
    package static let backingFormat: UInt32 = 0xe279_2aca
    package static let featureNameTable: UInt32 = 0x6803_f857
    package static let externalDataFile: UInt32 = 0x4441_5441
}

/// The qcow2 header (qcow2.txt "Header"), versions 2 and 3, with its extensions and the
/// backing file name. Parsing validates every field against the file's length and against
/// sane limits, and names the field and its offset when one is wrong (DESIGN.md §6).
package struct Qcow2Header: Equatable, Sendable {
    package static let magic: UInt32 = 0x5146_49fb  // "QFI\xfb"
    /// qcow2.txt: incompatible feature bits.
    package static let dirtyBit: UInt64 = 1 << 0
    package static let corruptBit: UInt64 = 1 << 1
    package static let externalDataBit: UInt64 = 1 << 2
    package static let compressionTypeBit: UInt64 = 1 << 3
    package static let extendedL2Bit: UInt64 = 1 << 4
    /// Compatible feature bit 0.
    package static let lazyRefcountsBit: UInt64 = 1 << 0
    /// Field offsets rewritten in place while an image is open.
    package static let incompatibleFeaturesOffset: UInt64 = 72
    package static let autoclearFeaturesOffset: UInt64 = 88
    /// QEMU's limits (block/qcow2.h): larger tables are refused rather than allocated.
    package static let maxL1Bytes: UInt64 = 32 << 20
    package static let maxRefcountTableBytes: UInt64 = 8 << 20
    package static let maxSnapshots: UInt32 = 65536
    package static let maxSnapshotTableBytes: UInt64 = 64 << 20
    package static let maxBackingNameLength: UInt32 = 1023

    package var version: UInt32
    package var backingFileOffset: UInt64 = 0
    package var backingFileSize: UInt32 = 0
    package var clusterBits: UInt32
    package var size: UInt64
    package var cryptMethod: UInt32 = 0
    package var l1Size: UInt32
    package var l1TableOffset: UInt64
    package var refcountTableOffset: UInt64
    package var refcountTableClusters: UInt32
    package var nbSnapshots: UInt32 = 0
    package var snapshotsOffset: UInt64 = 0
    package var incompatibleFeatures: UInt64 = 0
    package var compatibleFeatures: UInt64 = 0
    package var autoclearFeatures: UInt64 = 0
    package var refcountOrder: UInt32 = 4
    package var headerLength: UInt32
    package var compressionType: UInt8 = 0
    package var extensions: [Qcow2HeaderExtension] = []
    package var backingFile: String?

    package var clusterSize: UInt64 { 1 << UInt64(clusterBits) }

    /// The backing file's format from its header extension ("raw", "qcow2"), if recorded.
    package var backingFormat: String? {
        get {
            extensions.first { $0.type == Qcow2HeaderExtension.backingFormat }.map { String(decoding: $0.data, as: UTF8.self) }
        }
        set {
            extensions.removeAll { $0.type == Qcow2HeaderExtension.backingFormat }
            if let newValue { extensions.insert(.init(type: Qcow2HeaderExtension.backingFormat, data: Array(newValue.utf8)), at: 0) }
        }
    }

    package init(version: UInt32, clusterBits: UInt32, size: UInt64, l1Size: UInt32, l1TableOffset: UInt64,
                 refcountTableOffset: UInt64, refcountTableClusters: UInt32, refcountOrder: UInt32) {
        self.version = version
        self.clusterBits = clusterBits
        self.size = size
        self.l1Size = l1Size
        self.l1TableOffset = l1TableOffset
        self.refcountTableOffset = refcountTableOffset
        self.refcountTableClusters = refcountTableClusters
        self.refcountOrder = refcountOrder
        // QEMU writes 112 for v3: the 104-byte header, the compression type and padding.
        headerLength = version == 2 ? 72 : 112
    }

    /// Parses the header at the start of `bytes` (the file's first cluster, or all of a shorter
    /// file). `fileLength` bounds every table the header points at.
    package init(parsing bytes: [UInt8], fileLength: UInt64, name: String) throws(SystemError) {
        func bad(_ field: String, _ offset: Int, _ what: String) -> SystemError {
            .badInput("\(name): qcow2 header field \(field) (offset \(offset)): \(what)")
        }
        guard bytes.count >= 72 else {
            throw .badInput("\(name): truncated qcow2 header: \(bytes.count) bytes, at least 72 needed")
        }
        guard bytes.be32(0) == Qcow2Header.magic else { throw bad("magic", 0, "not a qcow2 image (no QFI\\xfb)") }
        version = bytes.be32(4)
        guard version == 2 || version == 3 else { throw bad("version", 4, "\(version) is not 2 or 3") }
        backingFileOffset = bytes.be64(8)
        backingFileSize = bytes.be32(16)
        clusterBits = bytes.be32(20)
        guard (9...21).contains(clusterBits) else {
            throw bad("cluster_bits", 20, "\(clusterBits) is outside 9...21 (cluster sizes 512 B to 2 MiB)")
        }
        size = bytes.be64(24)
        cryptMethod = bytes.be32(32)
        l1Size = bytes.be32(36)
        l1TableOffset = bytes.be64(40)
        refcountTableOffset = bytes.be64(48)
        refcountTableClusters = bytes.be32(56)
        nbSnapshots = bytes.be32(60)
        snapshotsOffset = bytes.be64(64)
        let clusterSize = UInt64(1) << UInt64(clusterBits)
        if version == 3 {
            guard bytes.count >= 104 else { throw .badInput("\(name): truncated qcow2 v3 header: \(bytes.count) bytes, 104 needed") }
            incompatibleFeatures = bytes.be64(72)
            compatibleFeatures = bytes.be64(80)
            autoclearFeatures = bytes.be64(88)
            refcountOrder = bytes.be32(96)
            headerLength = bytes.be32(100)
            guard headerLength >= 104, headerLength % 8 == 0, UInt64(headerLength) <= min(clusterSize, UInt64(bytes.count)) else {
                throw bad("header_length", 100, "\(headerLength) is not a multiple of 8 between 104 and the cluster size")
            }
            compressionType = headerLength > 104 ? bytes[104] : 0
        } else {
            headerLength = 72
            refcountOrder = 4
        }
        guard refcountOrder <= 6 else { throw bad("refcount_order", 96, "\(refcountOrder) is more than 6 (64-bit refcounts)") }
        guard cryptMethod == 0 else { throw .unsupported("\(name): encrypted qcow2 images (crypt_method \(cryptMethod)) are not supported") }
        let known = Qcow2Header.dirtyBit | Qcow2Header.corruptBit | Qcow2Header.compressionTypeBit
        if incompatibleFeatures & Qcow2Header.externalDataBit != 0 {
            throw .unsupported("\(name): qcow2 images with an external data file are not supported")
        }
        if incompatibleFeatures & Qcow2Header.extendedL2Bit != 0 {
            throw .unsupported("\(name): qcow2 images with extended L2 entries (subclusters) are not supported")
        }
        guard incompatibleFeatures & ~known == 0 else {
            throw .unsupported("\(name): unknown incompatible qcow2 features 0x\(String(incompatibleFeatures & ~known, radix: 16))")
        }
        guard compressionType == 0 else {
            throw .unsupported("\(name): qcow2 compression type \(compressionType) is not supported (only zlib, 0)")
        }
        // Every table must lie inside the file, cluster-aligned, and clear of the header.
        func checkTable(_ field: String, _ fieldOffset: Int, offset: UInt64, bytes count: UInt64, limit: UInt64) throws(SystemError) {
            guard count <= limit else { throw bad(field, fieldOffset, "table of \(count) bytes is larger than the limit of \(limit)") }
            guard count > 0 else { return }
            guard offset % clusterSize == 0 else { throw bad(field, fieldOffset, "offset \(offset) is not cluster-aligned") }
            guard offset >= clusterSize else { throw bad(field, fieldOffset, "table at offset \(offset) overlaps the header") }
            guard offset <= fileLength, count <= fileLength - offset else {
                throw bad(field, fieldOffset, "table at \(offset) of \(count) bytes passes the end of the file (\(fileLength) bytes)")
            }
        }
        try checkTable("l1_table_offset", 40, offset: l1TableOffset, bytes: UInt64(l1Size) * 8, limit: Qcow2Header.maxL1Bytes)
        let l2Entries = clusterSize / 8
        // Refuse sizes no L1 table of the allowed size can map (and an L1 too short for `size`).
        let maxSize = Qcow2Header.maxL1Bytes / 8 * l2Entries * clusterSize
        guard size <= maxSize else { throw bad("size", 24, "\(size) bytes is more than \(maxSize), the most this cluster size can map") }
        let neededL1 = (size + l2Entries * clusterSize - 1) / (l2Entries * clusterSize)
        guard UInt64(l1Size) >= neededL1 else { throw bad("l1_size", 36, "\(l1Size) entries cannot map \(size) bytes (\(neededL1) needed)") }
        guard refcountTableClusters > 0 else { throw bad("refcount_table_clusters", 56, "is 0") }
        try checkTable("refcount_table_offset", 48, offset: refcountTableOffset,
                       bytes: UInt64(refcountTableClusters) * clusterSize, limit: Qcow2Header.maxRefcountTableBytes)
        guard nbSnapshots <= Qcow2Header.maxSnapshots else { throw bad("nb_snapshots", 60, "\(nbSnapshots) is more than \(Qcow2Header.maxSnapshots)") }
        if nbSnapshots > 0 {
            try checkTable("snapshots_offset", 64, offset: snapshotsOffset, bytes: UInt64(nbSnapshots) * 40, limit: .max)
        }
        // Header extensions run from the end of the header to the backing file name (or the
        // end of the first cluster).
        let firstCluster = UInt64(min(UInt64(bytes.count), clusterSize))
        let extensionsEnd = Int(backingFileOffset != 0 ? min(backingFileOffset, firstCluster) : firstCluster)
        var at = Int(headerLength)
        while at + 8 <= extensionsEnd {
            let type = bytes.be32(at)
            let length = Int(bytes.be32(at + 4))
            if type == 0 { break }
            guard length <= extensionsEnd - at - 8 else {
                throw .badInput("\(name): qcow2 header extension 0x\(String(type, radix: 16)) at offset \(at) runs past its area")
            }
            extensions.append(Qcow2HeaderExtension(type: type, data: Array(bytes[(at + 8)..<(at + 8 + length)])))
            at += 8 + (length + 7) / 8 * 8
        }
        if extensions.contains(where: { $0.type == Qcow2HeaderExtension.externalDataFile }) && incompatibleFeatures & Qcow2Header.externalDataBit != 0 {
            throw .unsupported("\(name): qcow2 images with an external data file are not supported")
        }
        if backingFileOffset != 0 {
            guard backingFileSize > 0, backingFileSize <= Qcow2Header.maxBackingNameLength else {
                throw bad("backing_file_size", 16, "\(backingFileSize) is not between 1 and \(Qcow2Header.maxBackingNameLength)")
            }
            guard backingFileOffset >= UInt64(headerLength), backingFileOffset + UInt64(backingFileSize) <= firstCluster else {
                throw bad("backing_file_offset", 8, "name at \(backingFileOffset) of \(backingFileSize) bytes lies outside the first cluster")
            }
            let start = Int(backingFileOffset)
            backingFile = String(decoding: bytes[start..<(start + Int(backingFileSize))], as: UTF8.self)
        }
    }

    /// The header, its extensions and the backing file name as they go at the start of the
    /// file; throws when they do not fit in the first cluster.
    package func serialized() throws(SystemError) -> [UInt8] {
        var b = [UInt8](repeating: 0, count: Int(headerLength))
        b.putBE32(Qcow2Header.magic, at: 0)
        b.putBE32(version, at: 4)
        b.putBE32(clusterBits, at: 20)
        b.putBE64(size, at: 24)
        b.putBE32(cryptMethod, at: 32)
        b.putBE32(l1Size, at: 36)
        b.putBE64(l1TableOffset, at: 40)
        b.putBE64(refcountTableOffset, at: 48)
        b.putBE32(refcountTableClusters, at: 56)
        b.putBE32(nbSnapshots, at: 60)
        b.putBE64(snapshotsOffset, at: 64)
        if version == 3 {
            b.putBE64(incompatibleFeatures, at: 72)
            b.putBE64(compatibleFeatures, at: 80)
            b.putBE64(autoclearFeatures, at: 88)
            b.putBE32(refcountOrder, at: 96)
            b.putBE32(headerLength, at: 100)
            if headerLength > 104 { b[104] = compressionType }
        }
        for e in extensions {
            var head = [UInt8](repeating: 0, count: 8)
            head.putBE32(e.type, at: 0)
            head.putBE32(UInt32(e.data.count), at: 4)
            b += head + e.data + [UInt8](repeating: 0, count: (8 - e.data.count % 8) % 8)
        }
        b += [UInt8](repeating: 0, count: 8)  // end of the extension area
        if let backingFile {
            let name = Array(backingFile.utf8)
            guard name.count <= Int(Qcow2Header.maxBackingNameLength) else {
                throw .configuration("backing file name is longer than \(Qcow2Header.maxBackingNameLength) bytes")
            }
            b.putBE64(UInt64(b.count), at: 8)
            b.putBE32(UInt32(name.count), at: 16)
            b += name
        }
        guard UInt64(b.count) <= clusterSize else {
            throw .configuration("the qcow2 header, its extensions and the backing file name do not fit in one cluster (\(clusterSize) bytes)")
        }
        return b
    }
}

/// One entry of the snapshot table (qcow2.txt "Snapshot table"). The extra data is kept whole
/// so that fields this build does not know survive a table rewrite.
package struct Qcow2Snapshot: Equatable, Sendable {
    package var l1TableOffset: UInt64
    package var l1Size: UInt32
    package var id: String
    package var name: String
    package var dateSeconds: UInt32
    package var dateNanoseconds: UInt32
    package var vmClockNanoseconds: UInt64
    package var vmStateSize: UInt32
    /// At least 16 bytes in v3: vm_state_size_large and the virtual disk size.
    package var extraData: [UInt8]

    /// The disk size at the time of the snapshot, from the extra data (v3), if recorded.
    package var diskSize: UInt64? { extraData.count >= 16 ? extraData.be64(8) : nil }

    /// The size of the saved VM state: qcow2.txt's vm_state_size_large when the extra data
    /// holds it (the 32-bit vm_state_size is 0 for states of 4 GiB and more), else
    /// vm_state_size. 0: a disk-only snapshot.
    package var vmStateBytes: UInt64 { extraData.count >= 8 ? extraData.be64(0) : UInt64(vmStateSize) }

    /// The instruction count at the snapshot (qcow2.txt extra data "icount"); nil when not
    /// recorded, or recorded as -1 (QEMU's "not in icount mode").
    package var icount: UInt64? {
        guard extraData.count >= 24 else { return nil }
        let value = extraData.be64(16)
        return value == .max ? nil : value
    }

    /// Parses `count` entries from `bytes` (the table read from the file).
    package static func parseTable(_ bytes: [UInt8], count: Int, name: String) throws(SystemError) -> [Qcow2Snapshot] {
        var result: [Qcow2Snapshot] = []
        var at = 0
        for index in 0..<count {
            guard at + 40 <= bytes.count else {
                throw .badInput("\(name): qcow2 snapshot table entry \(index) at table offset \(at) is truncated")
            }
            let idSize = Int(bytes.be16(at + 12)), nameSize = Int(bytes.be16(at + 14))
            let extraSize = Int(bytes.be32(at + 36))
            guard extraSize <= 1024 else {
                throw .badInput("\(name): qcow2 snapshot \(index): extra_data_size \(extraSize) is more than 1024")
            }
            let end = at + 40 + extraSize + idSize + nameSize
            guard end <= bytes.count else { throw .badInput("\(name): qcow2 snapshot table entry \(index) passes the end of the table") }
            let extraStart = at + 40, idStart = extraStart + extraSize, nameStart = idStart + idSize
            result.append(Qcow2Snapshot(
                l1TableOffset: bytes.be64(at), l1Size: bytes.be32(at + 8),
                id: String(decoding: bytes[idStart..<nameStart], as: UTF8.self),
                name: String(decoding: bytes[nameStart..<end], as: UTF8.self),
                dateSeconds: bytes.be32(at + 16), dateNanoseconds: bytes.be32(at + 20),
                vmClockNanoseconds: bytes.be64(at + 24), vmStateSize: bytes.be32(at + 32),
                extraData: Array(bytes[extraStart..<idStart])))
            at = (end + 7) / 8 * 8
        }
        return result
    }

    /// The largest a table of `count` entries can be (bounds the read before parsing).
    package static func maxTableBytes(count: Int) -> Int { count * (40 + 1024 + 2 * 65535 + 7) }

    package func serialized() -> [UInt8] {
        var b = [UInt8](repeating: 0, count: 40)
        b.putBE64(l1TableOffset, at: 0)
        b.putBE32(l1Size, at: 8)
        b.putBE16(UInt16(truncatingIfNeeded: id.utf8.count), at: 12)
        b.putBE16(UInt16(truncatingIfNeeded: name.utf8.count), at: 14)
        b.putBE32(dateSeconds, at: 16)
        b.putBE32(dateNanoseconds, at: 20)
        b.putBE64(vmClockNanoseconds, at: 24)
        b.putBE32(vmStateSize, at: 32)
        b.putBE32(UInt32(extraData.count), at: 36)
        b += extraData + Array(id.utf8) + Array(name.utf8)
        b += [UInt8](repeating: 0, count: (8 - b.count % 8) % 8)
        return b
    }
}
