import Block
import DeviceModel
import Glibc
import SystemSupport

/// swemu-img's commands past create and info.
extension ImageTool {
    static func allZero(_ bytes: ArraySlice<UInt8>) -> Bool {
        bytes.withUnsafeBytes { b in
            // Word-sized compares: convert's zero detection runs over every byte of the image.
            let words = b.count / 8
            for i in 0..<words where b.loadUnaligned(fromByteOffset: i * 8, as: UInt64.self) != 0 { return false }
            for i in (words * 8)..<b.count where b[i] != 0 { return false }
            return true
        }
    }

    /// Reads `count` bytes at `offset` into `buffer`, from index `start` on.
    static func readChunk(_ image: any BlockBackend, at offset: UInt64, into buffer: inout [UInt8], count: Int, at start: Int = 0) throws(SystemError) {
        try buffer.withUnsafeMutableBytes { b in
            Result { () throws(SystemError) in
                try image.read(at: offset, into: UnsafeMutableRawBufferPointer(rebasing: b[start..<(start + count)]))
            }
        }.get()
    }

    /// Writes `buffer[range]` at `offset`.
    static func writeChunk(_ image: any BlockBackend, at offset: UInt64, _ buffer: [UInt8], range: Range<Int>) throws(SystemError) {
        try buffer.withUnsafeBytes { b in
            Result { () throws(SystemError) in try image.write(at: offset, from: UnsafeRawBufferPointer(rebasing: b[range])) }
        }.get()
    }

    /// "    (12.00/100%)\r", qemu-img's progress line.
    static func progressLine(_ percent: Double) -> String {
        "    (\(percent2(percent))/100%)\r"
    }

    /// printf's "%0.2f".
    static func percent2(_ value: Double) -> String {
        let hundredths = Int((value * 100).rounded())
        let fraction = hundredths % 100
        return "\(hundredths / 100).\(fraction < 10 ? "0" : "")\(fraction)"
    }

    // MARK: convert

    static func convert(_ args: [String], _ out: inout Output, progress: (String) -> Void) throws(SystemError) {
        let a = try Arguments(args, valued: ["-f", "-O", "-o", "-t"], flags: ["-c", "-p", "-q", "-U"])
        // qemu-img convert writes its output with cache=unsafe unless -t says otherwise: the
        // copy can be redone, so it is not synced to the disk at the end.
        let cacheName = a.values["-t"] ?? "unsafe"
        guard let cache = BlockCacheMode(rawValue: cacheName) else {
            throw .configuration("Invalid cache option: \(cacheName) (accepted: \(BlockCacheMode.allCases.map(\.rawValue).joined(separator: ", ")))")
        }
        guard a.positional.count == 2 else { throw .configuration("Expecting one image file name and one output file name") }
        let (source, target) = (a.positional[0], a.positional[1])
        let outFormat = a.values["-O"] ?? "raw"
        let compress = a.flags.contains("-c")
        // The source must not change under the copy: nobody may write it (qemu-img's
        // BDRV_O_NO_SHARE), unless -U shares everything.
        let src = try open(source, format: a.values["-f"], readOnly: true,
                           locking: try a.locking(path: source, readOnly: true, base: .stableReader))
        var createArgs = ["-q", "-f", outFormat]
        let options = a.options.filter { $0.key != "size" }.map { "\($0.key)=\($0.value)" }.sorted()
        if !options.isEmpty { createArgs += ["-o", options.joined(separator: ",")] }
        createArgs += [target, String(src.size)]
        if compress && outFormat != "qcow2" { throw .unsupported("Compression not supported for this file format") }
        var created = Output()
        try create(createArgs, &created)
        let dst = try DiskImage.open(path: target, format: outFormat, readOnly: false, cache: cache)
        let qcow2 = DiskImage.qcow2(dst)
        let clusterSize = qcow2?.clusterSize ?? 65536
        // Whole clusters per request; compressed output goes one cluster at a time.
        let chunk = compress ? clusterSize : max(clusterSize, 2 << 20) / clusterSize * clusterSize
        var buffer = [UInt8](repeating: 0, count: Int(chunk))
        let showProgress = a.flags.contains("-p") && !a.flags.contains("-q")
        var lastShown = -1.0
        if showProgress { progress(progressLine(0)); lastShown = 0 }
        var offset: UInt64 = 0
        // The new image reads as zeroes already, so zeroes are never written (the output stays
        // sparse), and what the source knows to be zero (holes, zero clusters) is not even
        // read: both decided per block of the output's cluster size (64 KiB for raw).
        let block = Int(clusterSize)
        func blocks(_ n: Int) -> Int { (n + block - 1) / block }
        func range(_ first: Int, _ end: Int, _ n: Int) -> Range<Int> { (first * block)..<min(end * block, n) }
        while offset < src.size {
            let n = Int(min(chunk, src.size - offset))
            var known: [Bool] = []
            for k in 0..<blocks(n) {
                let r = range(k, k + 1, n)
                known.append(try DiskImage.knownZero(src, at: offset + UInt64(r.lowerBound), count: UInt64(r.count)))
            }
            var k = 0
            while k < known.count {
                guard !known[k] else { k += 1; continue }
                var end = k + 1
                while end < known.count && !known[end] { end += 1 }
                let read = range(k, end, n)
                try readChunk(src, at: offset + UInt64(read.lowerBound), into: &buffer, count: read.count, at: read.lowerBound)
                var j = k
                while j < end {
                    guard !allZero(buffer[range(j, j + 1, n)]) else { j += 1; continue }
                    var last = j + 1
                    while last < end && !allZero(buffer[range(last, last + 1, n)]) { last += 1 }
                    let write = range(j, last, n)
                    if compress, let qcow2 {
                        try qcow2.writeCompressed(cluster: (offset + UInt64(write.lowerBound)) / clusterSize, Array(buffer[write]))
                    } else {
                        try writeChunk(dst, at: offset + UInt64(write.lowerBound), buffer, range: write)
                    }
                    j = last
                }
                k = end
            }
            offset += UInt64(n)
            let percent = Double(offset) * 100 / Double(max(src.size, 1))
            if showProgress && percent - lastShown >= 1 {
                progress(progressLine(percent))
                lastShown = percent
            }
        }
        try finish(dst)
        if showProgress { progress(progressLine(100) + "\n") }
    }

    // MARK: check

    /// `check`, as qemu-img check: the image is opened tolerantly (tables past the end of a
    /// truncated file read as zeroes, and are reported), each problem goes to stderr in
    /// qemu-img's words, then the summary. Exit status: 0 clean, 1 the check could not run,
    /// 2 corruptions, 3 leaks only (qemu-img's). With `-r`, what was repaired is reported and
    /// the image checked again, as qemu-img does.
    static func check(_ args: [String], _ out: inout Output) throws(SystemError) {
        let a = try Arguments(args, valued: ["-f", "--output", "-r"], flags: ["-q", "-U"])
        guard let path = a.positional.first else { throw .configuration("Expecting one image file name") }
        let json = try a.output()
        let quiet = a.flags.contains("-q")
        let repair: Qcow2Repair
        switch a.values["-r"] {
        case nil: repair = .none
        case "leaks": repair = .leaks
        case "all": repair = .all
        case let other?: throw .configuration("Unknown option value for -r (expecting 'leaks' or 'all'): \(other)")
        }
        guard try DiskImage.probedFormat(a.values["-f"], path: path) == "qcow2" else {
            out.status = 63
            throw .unsupported("This image format does not support checks")
        }
        let locking = try a.locking(path: path, readOnly: repair == .none)
        let image = try opening(path) { () throws(SystemError) in
            try Qcow2Image(path: path, readOnly: repair == .none, backingMode: .skip, forRepair: repair != .none, forCheck: true, locking: locking)
        }
        var result = try image.check(repair: repair)
        out.stderr += result.messages.map { $0 + "\n" }.joined()
        if let failure = result.failure {
            try image.close()
            out.status = 1
            throw SystemError(.badInput, "Check failed: \(failure)")
        }
        if result.leaksFixed + result.corruptionsFixed > 0 {
            if !json && !quiet {
                out.stdout += "The following inconsistencies were found and repaired:\n\n"
                out.stdout += "    \(result.leaksFixed) leaked clusters\n    \(result.corruptionsFixed) corruptions\n\n"
                out.stdout += "Double checking the fixed image now...\n"
            }
            let fixed = (result.leaksFixed, result.corruptionsFixed)
            result = try image.check(repair: .none)
            out.stderr += result.messages.map { $0 + "\n" }.joined()
            (result.leaksFixed, result.corruptionsFixed) = fixed
        }
        try image.close()
        if json {
            // qemu-img's key order (its QDict's), each count present only when not zero.
            func field(_ key: String, _ value: some BinaryInteger) -> [(String, String)] { value == 0 ? [] : [(key, String(value))] }
            var fields = field("image-end-offset", result.imageEndOffset) + field("compressed-clusters", result.compressedClusters)
                + field("total-clusters", result.totalClusters) + field("corruptions", result.corruptions)
                + field("corruptions-fixed", result.corruptionsFixed)
            fields.append(("check-errors", String(result.checkErrors)))
            fields += field("leaks", result.leaks) + field("leaks-fixed", result.leaksFixed)
                + field("allocated-clusters", result.allocatedClusters)
            fields += [("filename", jsonString(path)), ("format", "\"qcow2\"")]
            fields += field("fragmented-clusters", result.fragmentedClusters)
            out.stdout += jsonObject(fields, indent: 0) + "\n"
        } else if !quiet {
            if result.corruptions == 0 && result.leaks == 0 && result.checkErrors == 0 {
                out.stdout += "No errors were found on the image.\n"
            }
            if result.corruptions > 0 {
                out.stdout += "\n\(result.corruptions) errors were found on the image.\nData may be corrupted, or further writes to the image may corrupt it.\n"
            }
            if result.leaks > 0 {
                out.stdout += "\n\(result.leaks) leaked clusters were found on the image.\nThis means waste of disk space, but no harm to data.\n"
            }
            if result.checkErrors > 0 {
                out.stdout += "\n\(result.checkErrors) internal errors have occurred during the check.\n"
            }
            if result.totalClusters > 0 && result.allocatedClusters > 0 {
                let total = Double(result.totalClusters)
                out.stdout += "\(result.allocatedClusters)/\(result.totalClusters) = \(percent2(Double(result.allocatedClusters) * 100 / total))% allocated, "
                    + "\(percent2(Double(result.fragmentedClusters) * 100 / Double(result.allocatedClusters)))% fragmented, "
                    + "\(percent2(Double(result.compressedClusters) * 100 / Double(result.allocatedClusters)))% compressed clusters\n"
            }
            if result.imageEndOffset > 0 { out.stdout += "Image end offset: \(result.imageEndOffset)\n" }
        }
        if result.checkErrors > 0 {
            out.status = 1
            throw SystemError(.badInput, "Check failed")
        }
        out.status = result.corruptions > 0 ? 2 : result.leaks > 0 ? 3 : 0
    }

    // MARK: resize

    static func resize(_ args: [String], _ out: inout Output) throws(SystemError) {
        let a = try Arguments(args, valued: ["-f"], flags: ["--shrink", "-q"])
        guard a.positional.count == 2 else { throw .configuration("Expecting image file name and size") }
        let (path, sizeText) = (a.positional[0], a.positional[1])
        let format = try DiskImage.probedFormat(a.values["-f"], path: path)
        let image = try open(path, format: format, readOnly: false)
        var newSize: UInt64
        if sizeText.hasPrefix("+") {
            newSize = image.size + (try parseSize(String(sizeText.dropFirst())))
        } else if sizeText.hasPrefix("-") {
            let delta = try parseSize(String(sizeText.dropFirst()))
            guard delta <= image.size else { throw .configuration("New image size must be positive") }
            newSize = image.size - delta
        } else {
            newSize = try parseSize(sizeText)
        }
        newSize = (newSize + 511) / 512 * 512
        if newSize < image.size && !a.flags.contains("--shrink") {
            throw .configuration("Use the --shrink option to perform a shrink operation.")
        }
        if let q = image as? Qcow2Image {
            try q.resize(to: newSize)
            try q.close()
        } else {
            let file = try ImageFile(path: path, readOnly: false)
            try file.truncate(to: newSize)
        }
        if !a.flags.contains("-q") { out.stdout += "Image resized.\n" }
    }

    // MARK: snapshot

    static func snapshot(_ args: [String], _ out: inout Output) throws(SystemError) {
        let a = try Arguments(args, valued: ["-a", "-c", "-d", "-f"], flags: ["-l", "-q", "-U"])
        guard let path = a.positional.first else { throw .configuration("Expecting one image file name") }
        let listing = a.flags.contains("-l")
        let image = try qcow2(try open(path, format: a.values["-f"], readOnly: listing, backing: false,
                                       locking: try a.locking(path: path, readOnly: listing)), "snapshot")
        if listing {
            out.stdout += "Snapshot list:\n" + snapshotTable(image.snapshots)
        } else if let name = a.values["-c"] {
            try image.createSnapshot(name: name)
        } else if let name = a.values["-a"] {
            try image.applySnapshot(name)
        } else if let name = a.values["-d"] {
            try image.deleteSnapshot(name)
        } else {
            throw .configuration("Expecting one of -l, -a, -c, -d")
        }
        try image.close()
    }

    // MARK: rebase

    static func rebase(_ args: [String], _ out: inout Output) throws(SystemError) {
        let a = try Arguments(args, valued: ["-f", "-b", "-F"], flags: ["-u", "-q", "-U"])
        guard let path = a.positional.first else { throw .configuration("Expecting one image file name") }
        guard let newName = a.values["-b"] else { throw .configuration("Must specify backing file (-b) or use unsafe mode (-u)") }
        let unsafe = a.flags.contains("-u")
        let image = try qcow2(try open(path, format: a.values["-f"], readOnly: false, backing: !unsafe), "rebase")
        var newFormat = a.values["-F"]
        if !newName.isEmpty && newFormat == nil {
            newFormat = try DiskImage.probe(path: DiskImage.resolveBacking(newName, relativeTo: path))
        }
        if !unsafe {
            // Safe mode: every cluster this image does not hold must read the same afterwards,
            // so where the old and new backing files differ the old data is copied in.
            let newBacking = newName.isEmpty ? nil : try DiskImage.open(path: DiskImage.resolveBacking(newName, relativeTo: path), format: newFormat, readOnly: true)
            let cs = image.clusterSize
            var old = [UInt8](repeating: 0, count: Int(cs)), new = old
            var cluster: UInt64 = 0
            while cluster * cs < image.size {
                defer { cluster += 1 }
                guard try image.clusterStatus(cluster) == .unallocated else { continue }
                let offset = cluster * cs
                let n = Int(min(cs, image.size - offset))
                try readChunk(image, at: offset, into: &old, count: n)
                for i in 0..<n { new[i] = 0 }
                if let newBacking, offset < newBacking.size {
                    try readChunk(newBacking, at: offset, into: &new, count: Int(min(UInt64(n), newBacking.size - offset)))
                }
                if old[0..<n] != new[0..<n] { try writeChunk(image, at: offset, old, range: 0..<n) }
            }
        }
        try image.setBacking(file: newName.isEmpty ? nil : newName, format: newFormat)
        try image.close()
    }

    // MARK: commit

    static func commit(_ args: [String], _ out: inout Output) throws(SystemError) {
        let a = try Arguments(args, valued: ["-f"], flags: ["-d", "-q"])
        guard let path = a.positional.first else { throw .configuration("Expecting one image file name") }
        let image = try qcow2(try open(path, format: a.values["-f"], readOnly: true, backing: false), "commit")
        guard let backingName = image.header.backingFile else { throw .configuration("Image does not have a backing file") }
        let basePath = DiskImage.resolveBacking(backingName, relativeTo: path)
        let baseFormat = try DiskImage.probedFormat(image.header.backingFormat, path: basePath)
        // A base smaller than the image grows first, as qemu-img commit does.
        if try DiskImage.open(path: basePath, format: baseFormat, readOnly: true).size < image.size {
            var resized = Output()
            try resize(["-q", "-f", baseFormat, basePath, String(image.size)], &resized)
        }
        let base = try open(basePath, format: baseFormat, readOnly: false)
        let cs = image.clusterSize
        var buffer = [UInt8](repeating: 0, count: Int(cs))
        var cluster: UInt64 = 0
        while cluster * cs < image.size {
            defer { cluster += 1 }
            let offset = cluster * cs
            let n = Int(min(cs, image.size - offset))
            switch try image.clusterStatus(cluster) {
            case .unallocated: continue
            case .zero: try base.writeZeroes(at: offset, count: UInt64(n), mayUnmap: false)
            case .data, .compressed:
                try readChunk(image, at: offset, into: &buffer, count: n)
                try writeChunk(base, at: offset, buffer, range: 0..<n)
            }
        }
        try finish(base)
        try image.close()
        if !a.flags.contains("-d") {
            let top = try Qcow2Image(path: path, readOnly: false, backingMode: .skip)
            try top.makeEmpty()
            try top.close()
        }
        if !a.flags.contains("-q") { out.stdout += "Image committed.\n" }
    }

    // MARK: map

    struct Extent: Equatable {
        var start: UInt64
        var length: UInt64
        var depth: Int
        var present: Bool
        var zero: Bool
        var data: Bool
        var offset: UInt64?
        var file: String

        /// Whether `next` continues this extent (same kind, and contiguous in the file).
        func merges(_ next: Extent) -> Bool {
            depth == next.depth && present == next.present && zero == next.zero && data == next.data && file == next.file
                && start + length == next.start
                && ((offset == nil && next.offset == nil) || (offset.map { $0 + length } == next.offset))
        }
    }

    /// Where the guest range at `offset` comes from, walking the backing chain.
    static func extent(_ image: any BlockBackend, path: String, at offset: UInt64, depth: Int) throws(SystemError) -> Extent {
        guard let q = image as? Qcow2Image else {
            let length = min(image.size - offset, 1 << 30)
            return Extent(start: offset, length: length, depth: depth, present: true, zero: false, data: true, offset: offset, file: path)
        }
        let cs = q.clusterSize
        let within = offset % cs
        let length = min(cs - within, q.size - offset)
        switch try q.clusterStatus(offset / cs) {
        case .data(let host):
            return Extent(start: offset, length: length, depth: depth, present: true, zero: false, data: true, offset: host + within, file: path)
        case .compressed:
            return Extent(start: offset, length: length, depth: depth, present: true, zero: false, data: true, offset: nil, file: path)
        case .zero:
            return Extent(start: offset, length: length, depth: depth, present: true, zero: true, data: false, offset: nil, file: path)
        case .unallocated:
            if let name = q.header.backingFile {
                let backingPath = DiskImage.resolveBacking(name, relativeTo: path)
                if let backing = q.backing, offset < backing.size {
                    var e = try extent(backing, path: backingPath, at: offset, depth: depth + 1)
                    e.length = min(e.length, length)
                    return e
                }
                return Extent(start: offset, length: length, depth: depth + 1, present: false, zero: true, data: false, offset: nil, file: backingPath)
            }
            return Extent(start: offset, length: length, depth: depth, present: false, zero: true, data: false, offset: nil, file: path)
        }
    }

    static func map(_ args: [String], _ out: inout Output) throws(SystemError) {
        let a = try Arguments(args, valued: ["-f", "--output"], flags: ["-U"])
        guard let path = a.positional.first else { throw .configuration("Expecting one image file name") }
        let json = try a.output()
        let image = try open(path, format: a.values["-f"], readOnly: true, locking: try a.locking(path: path, readOnly: true))
        var extents: [Extent] = []
        var offset: UInt64 = 0
        while offset < image.size {
            let e = try extent(image, path: path, at: offset, depth: 0)
            if let last = extents.last, last.merges(e) { extents[extents.count - 1].length += e.length } else { extents.append(e) }
            offset += e.length
        }
        if json {
            let lines = extents.map { e in
                "{ \"start\": \(e.start), \"length\": \(e.length), \"depth\": \(e.depth), \"present\": \(e.present), \"zero\": \(e.zero), \"data\": \(e.data)"
                    + (e.offset.map { ", \"offset\": \($0)" } ?? "") + "}"
            }
            out.stdout += "[" + lines.joined(separator: ",\n") + "]\n"
        } else {
            out.stdout += "Offset          Length          Mapped to       File\n"
            for e in extents where e.data {
                guard let host = e.offset else { continue }
                out.stdout += padRight(hex0x(e.start), 15) + " " + padRight(hex0x(e.length), 15) + " " + padRight(hex0x(host), 15) + " " + e.file + "\n"
            }
        }
    }

    /// printf's "%#x".
    static func hex0x(_ v: UInt64) -> String { v == 0 ? "0" : "0x" + String(v, radix: 16) }

    // MARK: compare

    static func compare(_ args: [String], _ out: inout Output) throws(SystemError) {
        let a = try Arguments(args, valued: ["-f", "-F"], flags: ["-q", "-U"])
        guard a.positional.count == 2 else { throw .configuration("Expecting two image file names") }
        out.status = 2
        let first = try open(a.positional[0], format: a.values["-f"], readOnly: true,
                             locking: try a.locking(path: a.positional[0], readOnly: true))
        let second = try open(a.positional[1], format: a.values["-F"], readOnly: true,
                              locking: try a.locking(path: a.positional[1], readOnly: true))
        let quiet = a.flags.contains("-q")
        let chunk: UInt64 = 1 << 20
        var x = [UInt8](repeating: 0, count: Int(chunk)), y = x
        /// The first differing sector in `[offset, offset + n)`, if any.
        func mismatch(_ offset: UInt64, _ n: Int) -> UInt64? {
            guard x[0..<n] != y[0..<n] else { return nil }
            let i = (0..<n).first { x[$0] != y[$0] }!
            return offset + UInt64(i) / 512 * 512
        }
        var offset: UInt64 = 0
        let common = min(first.size, second.size)
        while offset < common {
            let n = Int(min(chunk, common - offset))
            try readChunk(first, at: offset, into: &x, count: n)
            try readChunk(second, at: offset, into: &y, count: n)
            if let at = mismatch(offset, n) {
                if !quiet { out.stdout += "Content mismatch at offset \(at)!\n" }
                out.status = 1
                return
            }
            offset += UInt64(n)
        }
        if first.size != second.size {
            if !quiet { out.stdout += "Warning: Image size mismatch!\n" }
            let longer = first.size > second.size ? first : second
            for i in 0..<Int(chunk) { y[i] = 0 }
            while offset < longer.size {
                let n = Int(min(chunk, longer.size - offset))
                try readChunk(longer, at: offset, into: &x, count: n)
                if let at = mismatch(offset, n) {
                    if !quiet { out.stdout += "Content mismatch at offset \(at)!\n" }
                    out.status = 1
                    return
                }
                offset += UInt64(n)
            }
        }
        if !quiet { out.stdout += "Images are identical.\n" }
        out.status = 0
    }

    // MARK: measure

    /// QEMU's `qcow2_refcount_metadata_size`: refcount blocks and table for `clusters`
    /// clusters, counting the clusters they occupy themselves.
    static func refcountMetadataSize(clusters: UInt64, clusterSize: UInt64, refcountBits: UInt64) -> UInt64 {
        let perTableCluster = clusterSize / 8
        let perBlock = clusterSize * 8 / refcountBits
        var table: UInt64 = 0, blocks: UInt64 = 0, n: UInt64 = 0, last: UInt64
        repeat {
            last = n
            blocks = (clusters + table + blocks + perBlock - 1) / perBlock
            table = (blocks + perTableCluster - 1) / perTableCluster
            n = clusters + blocks + table
        } while n != last
        return (blocks + table) * clusterSize
    }

    /// A fully allocated qcow2 image of `size` bytes: header, L2 and L1 tables, refcounts, data.
    static func qcow2FullSize(_ size: UInt64, clusterSize cs: UInt64, refcountBits: UInt64) -> UInt64 {
        let aligned = (size + cs - 1) / cs * cs
        var meta = cs
        let perTable = cs / 8
        let l2Entries = (aligned / cs + perTable - 1) / perTable * perTable
        meta += l2Entries * 8
        let l1Entries = (l2Entries * 8 / cs + perTable - 1) / perTable * perTable
        meta += l1Entries * 8
        meta += refcountMetadataSize(clusters: (meta + aligned) / cs, clusterSize: cs, refcountBits: refcountBits)
        return meta + aligned
    }

    static func measure(_ args: [String], _ out: inout Output) throws(SystemError) {
        let a = try Arguments(args, valued: ["-f", "-O", "-o", "--output", "--size"], flags: ["-U"])
        let json = try a.output()
        let outFormat = a.values["-O"] ?? "raw"
        guard DiskImage.formats.contains(outFormat) else { throw .configuration("Unknown file format '\(outFormat)'") }
        let cs = try a.options["cluster_size"].map { (t: String) throws(SystemError) in try parseSize(t) } ?? 65536
        let refcountBits = UInt64(a.options["refcount_bits"] ?? "16") ?? 16
        var size: UInt64
        var data: UInt64 = 0
        var sourceIsQcow2 = false
        if let sizeText = a.values["--size"] {
            guard a.positional.isEmpty else { throw .configuration("--size N cannot be used together with a filename.") }
            size = (try parseSize(sizeText) + 511) / 512 * 512
            if a.options["preallocation"] == "full" { data = size }
        } else {
            guard let path = a.positional.first else { throw .configuration("Either --size N or one filename must be specified.") }
            let image = try open(path, format: a.values["-f"], readOnly: true, locking: try a.locking(path: path, readOnly: true))
            sourceIsQcow2 = image is Qcow2Image
            size = image.size
            // Whole destination clusters that hold anything but known zeroes (QEMU counts what
            // block status does not report as zero, through the backing chain, in clusters).
            var offset: UInt64 = 0
            while outFormat == "qcow2" && offset < size {
                if try !DiskImage.knownZero(image, at: offset, count: min(cs, size - offset)) { data += cs }
                offset += cs
            }
        }
        var required: UInt64, full: UInt64
        if outFormat == "qcow2" {
            let l1Entries = (size + cs / 8 * cs - 1) / (cs / 8 * cs)
            guard l1Entries * 8 <= Qcow2Header.maxL1Bytes else {
                throw .configuration("The image size is too large (try using a larger cluster size)")
            }
            full = qcow2FullSize(size, clusterSize: cs, refcountBits: refcountBits)
            required = full - (size + cs - 1) / cs * cs + data
        } else {
            // qemu-img: "Unallocated sectors count towards the file size in raw images".
            full = size
            required = size
        }
        let bitmaps = sourceIsQcow2 && outFormat == "qcow2"
        if json {
            var fields: [(String, String)] = []
            if bitmaps { fields.append(("bitmaps", "0")) }
            fields += [("required", String(required)), ("fully-allocated", String(full))]
            out.stdout += jsonObject(fields, indent: 0) + "\n"
        } else {
            out.stdout += "required size: \(required)\nfully allocated size: \(full)\n" + (bitmaps ? "bitmaps size: 0\n" : "")
        }
    }
}
