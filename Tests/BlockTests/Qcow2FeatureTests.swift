@testable import Block
import DeviceModel
import Foundation
import SystemSupport
import Testing

/// Backing chains, compressed clusters, snapshots and check/repair, each against qemu-img.
@Suite(.enabled(if: qemuImgPresent, Comment(rawValue: qemuImgMissing)))
struct Qcow2FeatureTests {
    /// raw base <- qcow2 (qemu) <- qcow2 (swemu) <- qcow2 (qemu): every layer reads the chain
    /// the same in both tools, and writes at the top leave the lower layers alone.
    @Test func backingChains() throws {
        let dir = TempDirectory()
        let size = 4 << 20
        let base = noise(size, seed: 1)
        try writeFile(dir.file("base.raw"), base)
        #expect(try run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", "base.raw", "-F", "raw", "-o", "cluster_size=4k", dir.file("mid.qcow2")]).status == 0)
        var expected = base
        let midData = noise(300_000, seed: 2)
        #expect(try run(["qemu-io", "-c", "write -P 0x5a 1000448 300032", dir.file("mid.qcow2")]).status == 0)
        expected.replaceSubrange(1000448..<(1000448 + 300032), with: [UInt8](repeating: 0x5a, count: 300032))
        var options = Qcow2CreateOptions()
        options.backingFile = "mid.qcow2"
        options.backingFormat = "qcow2"
        options.clusterSize = 65536
        try Qcow2Image.create(path: dir.file("top.qcow2"), size: UInt64(size), options: options)
        do {
            let top = try Qcow2Image(path: dir.file("top.qcow2"), readOnly: false)
            #expect(try readAll(top) == expected)
            try top.write(at: 123_457, midData)  // partial clusters: COW from the chain below
            expected.replaceSubrange(123_457..<(123_457 + midData.count), with: midData)
            try top.writeZeroes(at: 2 << 20, count: 1 << 20, mayUnmap: true)  // must hide the backing data
            expected.replaceSubrange((2 << 20)..<(3 << 20), with: [UInt8](repeating: 0, count: 1 << 20))
            #expect(try readAll(top) == expected)
            try top.close()
        }
        #expect(try run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", "top.qcow2", "-F", "qcow2", dir.file("leaf.qcow2")]).status == 0)
        try writeFile(dir.file("expected.raw"), expected)
        let compare = try run(["qemu-img", "compare", "-F", "raw", dir.file("leaf.qcow2"), dir.file("expected.raw")])
        #expect(compare.status == 0, "\(compare.out)\(compare.err)")
        #expect(try readAll(try DiskImage.open(path: dir.file("leaf.qcow2"), format: nil, readOnly: true)) == expected)
        #expect(try readAll(try DiskImage.open(path: dir.file("mid.qcow2"), format: "qcow2", readOnly: true)) != expected)
        for layer in ["mid.qcow2", "top.qcow2", "leaf.qcow2"] { try expectQemuCheckClean(dir.file(layer)) }
    }

    /// Compressed clusters written by swemu, for every cluster size: qemu-img reads the same
    /// bytes and checks clean; overwriting some of them here keeps the image clean too.
    @Test(arguments: Qcow2InteropTests.clusterSizes)
    func compressedWrites(clusterSize: UInt64) throws {
        let dir = TempDirectory()
        var options = Qcow2CreateOptions()
        options.clusterSize = clusterSize
        let size = Int(max(clusterSize * 4, 1 << 20))
        let path = dir.file("c.qcow2")
        try Qcow2Image.create(path: path, size: UInt64(size), options: options)
        var expected = noise(size, seed: clusterSize)
        for k in 0..<(expected.count / 3000) where k % 7 == 0 { expected[k * 3000] = 0x77 }  // compressible and not
        do {
            let image = try Qcow2Image(path: path, readOnly: false)
            for cluster in 0..<(UInt64(size) / clusterSize) {
                let start = Int(cluster * clusterSize)
                try image.writeCompressed(cluster: cluster, Array(expected[start..<(start + Int(clusterSize))]))
            }
            #expect(try readAll(image) == expected)
            try image.write(at: clusterSize / 2, [UInt8](repeating: 9, count: Int(clusterSize)))
            expected.replaceSubrange(Int(clusterSize / 2)..<Int(clusterSize / 2 * 3), with: [UInt8](repeating: 9, count: Int(clusterSize)))
            try image.close()
        }
        try expectQemuCheckClean(path)
        try writeFile(dir.file("expected.raw"), expected)
        let compare = try run(["qemu-img", "compare", "-F", "raw", path, dir.file("expected.raw")])
        #expect(compare.status == 0, "\(compare.out)\(compare.err)")
        let map = try run(["qemu-img", "map", "--output=json", path])
        #expect(map.out.contains("\"data\": true"))
    }

    /// Snapshots made by either tool: listed, applied and deleted by the other, with refcounts
    /// qemu-img check finds right at every step.
    @Test(arguments: [UInt32(2), 3])
    func snapshots(version: UInt32) throws {
        let dir = TempDirectory()
        let path = dir.file("s.qcow2")
        var options = Qcow2CreateOptions()
        options.version = version
        options.clusterSize = 4096
        try Qcow2Image.create(path: path, size: 2 << 20, options: options)
        let first = noise(2 << 20, seed: 3)
        let image = try Qcow2Image(path: path, readOnly: false)
        try image.write(at: 0, first)
        try image.createSnapshot(name: "one")
        let second = noise(2 << 20, seed: 4)
        try image.write(at: 0, Array(second[0..<(1 << 20)]))
        try image.writeZeroes(at: 1 << 20, count: 1 << 20, mayUnmap: true)
        var current = Array(second[0..<(1 << 20)]) + [UInt8](repeating: 0, count: 1 << 20)
        #expect(try readAll(image) == current)
        try image.close()
        try expectQemuCheckClean(path)
        // QEMU makes a second snapshot and writes on; swemu applies and deletes.
        #expect(try run(["qemu-img", "snapshot", "-c", "two", path]).status == 0)
        #expect(try run(["qemu-io", "-c", "write -P 0xee 0 64k", path]).status == 0)
        let list = try run(["qemu-img", "snapshot", "-l", path]).out
        #expect(list.contains("one") && list.contains("two"))
        do {
            let image = try Qcow2Image(path: path, readOnly: false)
            #expect(image.snapshots.map(\.name) == ["one", "two"])
            try image.applySnapshot("two")
            #expect(try readAll(image) == current)
            try image.deleteSnapshot("two")
            try image.close()
        }
        try expectQemuCheckClean(path)
        #expect(try run(["qemu-img", "snapshot", "-a", "one", path]).status == 0)
        #expect(try readAll(try Qcow2Image(path: path, readOnly: true)) == first)
        do {
            let image = try Qcow2Image(path: path, readOnly: false)
            try image.deleteSnapshot("one")
            current = first
            try image.write(at: 4096 * 3, [1, 2, 3])  // sole owner again: written in place
            current.replaceSubrange((4096 * 3)..<(4096 * 3 + 3), with: [1, 2, 3])
            #expect(try readAll(image) == current)
            try image.close()
        }
        try expectQemuCheckClean(path)
    }

    /// Injected faults: swemu's check finds the leaks and corruptions qemu-img check finds, and
    /// each tool's repair leaves an image the other checks clean.
    @Test func checkFindsAndRepairsInjectedFaults() throws {
        let dir = TempDirectory()
        let path = dir.file("f.qcow2")
        #expect(try run(["qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=4k", path, "1M"]).status == 0)
        #expect(try run(["qemu-io", "-c", "write -P 1 0 256k", path]).status == 0)
        var leaked: UInt64 = 0, victim: UInt64 = 0
        do {
            let image = try Qcow2Image(path: path, readOnly: false)
            try image.locked { () throws(SystemError) in
                leaked = try image.allocateClusters(3) / image.clusterSize  // 3 leaks, inside the file:
                try image.file.writeBytes(at: (leaked + 3) * image.clusterSize - 1, [1])
                guard case .data(let host, _) = image.mapping(of: try image.l2Entry(5)) else { return }
                victim = host / image.clusterSize
                try image.setRefcount(cluster: victim, 0)  // a corruption (and a COPIED flag now wrong)
            }
            try image.close()
        }
        #expect(leaked > 0 && victim > 0)
        let qemu = try run(["qemu-img", "check", "--output=json", path])
        #expect(qemu.status == 2)
        let report = try JSONSerialization.jsonObject(with: Data(qemu.out.utf8)) as? [String: Any] ?? [:]
        let ours = try Qcow2Image(path: path, readOnly: true, backingMode: .skip).check(repair: .none)
        #expect(report["leaks"] as? Int == ours.leaks, "\(qemu.out) vs \(ours)")
        #expect(report["corruptions"] as? Int == ours.corruptions, "\(qemu.out) vs \(ours)")
        #expect(report["image-end-offset"] as? Int == Int(ours.imageEndOffset))
        #expect(ours.leaks == 3 && ours.corruptions == 2)
        #expect(ours.messages.contains("ERROR cluster \(victim) refcount=0 reference=1"))
        // A referenced cluster with refcount 0 means the refcount structure must be rebuilt:
        // -r leaks refuses, as qemu-img does ("ERROR need to rebuild refcount structures",
        // exit 1), and changes nothing; -r all rebuilds.
        try FileManager.default.copyItem(atPath: path, toPath: dir.file("leaks.qcow2"))
        #expect(try run(["qemu-img", "check", "-r", "leaks", dir.file("leaks.qcow2")]).status == 1)
        let leaksOnly = try Qcow2Image(path: path, readOnly: false, backingMode: .skip, forRepair: true, forCheck: true)
        let fixed = try leaksOnly.check(repair: .leaks)
        #expect(fixed.failure == "Input/output error" && fixed.leaksFixed == 0)
        #expect(fixed.messages.last == "ERROR need to rebuild refcount structures")
        try leaksOnly.close()
        // qemu-img check -r all on a copy fixes as many corruptions as ours does.
        try FileManager.default.copyItem(atPath: path, toPath: dir.file("copy.qcow2"))
        let qemuFix = try run(["qemu-img", "check", "-r", "all", "--output=json", dir.file("copy.qcow2")])
        let qemuFixed = (try JSONSerialization.jsonObject(with: Data(qemuFix.out.utf8)) as? [String: Any])?["corruptions-fixed"] as? Int
        let all = try Qcow2Image(path: path, readOnly: false, backingMode: .skip, forRepair: true, forCheck: true)
        let repaired = try all.check(repair: .all)
        #expect(repaired.corruptionsFixed == qemuFixed, "\(qemuFix.out) vs \(repaired)")
        #expect(repaired.messages.contains("Rebuilding refcount structure"))
        try all.close()
        try expectQemuCheckClean(path)
        // And the other way: qemu-img repairs swemu-made damage; both agree it is clean.
        do {
            let image = try Qcow2Image(path: path, readOnly: false)
            try image.locked { () throws(SystemError) in
                let leak = try image.allocateClusters(2)
                try image.file.writeBytes(at: leak + 2 * image.clusterSize - 1, [1])
            }
            try image.close()
        }
        #expect(try run(["qemu-img", "check", "-r", "leaks", path]).status == 0)
        let after = try Qcow2Image(path: path, readOnly: true, backingMode: .skip).check(repair: .none)
        #expect(after.leaks == 0 && after.corruptions == 0)
    }

    /// cache=none and directsync (O_DIRECT): misaligned guest buffers, qcow2's 8-byte metadata
    /// writes and packed compressed clusters all go through aligned bounce buffers; the images
    /// read back right and qemu-img finds them clean.
    @Test(arguments: [BlockCacheMode.none, .directsync])
    func directIO(cache: BlockCacheMode) throws {
        let dir = TempDirectory()
        var options = Qcow2CreateOptions()
        options.clusterSize = 4096
        try Qcow2Image.create(path: dir.file("d.qcow2"), size: 1 << 20, options: options)
        try writeFile(dir.file("d.raw"), [UInt8](repeating: 0, count: 1 << 20))
        let data = noise(300_000, seed: 6)
        var expected = [UInt8](repeating: 0, count: 1 << 20)
        expected.replaceSubrange(4096..<(4096 + 3584), with: data[1..<3585])
        expected.replaceSubrange(65536..<(65536 + 131072), with: data[0..<131072])
        for format in ["raw", "qcow2"] {
            let path = dir.file("d.\(format)")
            let image = try DiskImage.open(path: path, format: format, readOnly: false, cache: cache)
            // A buffer one byte off any alignment, then an aligned one.
            try data.withUnsafeBytes { b in
                try image.write(at: 4096, from: UnsafeRawBufferPointer(rebasing: b[1..<3585]))
            }
            try image.write(at: 65536, Array(data[0..<131072]))
            #expect(try image.read(at: 0, count: 1 << 20) == expected)
            // directsync wraps the image in a backend that flushes after every write.
            if let qcow2 = DiskImage.qcow2(image) {
                try qcow2.writeCompressed(cluster: 100, [UInt8](repeating: 5, count: 4096))
                try qcow2.writeCompressed(cluster: 101, [UInt8](repeating: 6, count: 4096))
                #expect(try qcow2.read(at: 100 * 4096, count: 8192) == [UInt8](repeating: 5, count: 4096) + [UInt8](repeating: 6, count: 4096))
                try qcow2.close()
                try expectQemuCheckClean(path)
            }
        }
        #expect(try run(["qemu-img", "compare", "-f", "raw", "-F", "qcow2", dir.file("d.raw"), dir.file("d.qcow2")]).status == 1)  // the compressed clusters
    }

    /// Header extensions survive: QEMU's feature name table and one no tool knows, through a
    /// read-write session and a header rewrite (rebase); qemu-img still opens the image.
    @Test func headerExtensionsArePreserved() throws {
        let dir = TempDirectory()
        let path = dir.file("e.qcow2")
        #expect(try run(["qemu-img", "create", "-q", "-f", "qcow2", path, "1M"]).status == 0)
        let file = try ImageFile(path: path, readOnly: false)
        var header = try Qcow2Header(parsing: try file.readBytes(at: 0, count: 65536), fileLength: try file.length(), name: path)
        #expect(header.extensions.contains { $0.type == Qcow2HeaderExtension.featureNameTable })
        let unknown = Qcow2HeaderExtension(type: 0x1234_5678, data: Array("kept as is".utf8))
        header.extensions.append(unknown)
        try file.writeBytes(at: 0, try header.serialized())
        let expected = header.extensions
        do {
            let image = try Qcow2Image(path: path, readOnly: false)
            try image.write(at: 0, [1, 2, 3])
            try image.setBacking(file: nil, format: nil)
            try image.close()
        }
        let after = try Qcow2Header(parsing: try file.readBytes(at: 0, count: 65536), fileLength: try file.length(), name: path)
        #expect(after.extensions == expected)
        try expectQemuCheckClean(path)
        #expect(try run(["qemu-io", "-c", "read -P 1 0 1", path]).status == 0)
    }

    /// A partial write into a new cluster writes only its bytes when the cluster is fresh
    /// space past the end of the file; a reused cluster (freed by a discard) still gets its
    /// old contents replaced by zeroes around the new bytes.
    @Test func partialWritesIntoFreshAndReusedClusters() throws {
        let dir = TempDirectory()
        let path = dir.file("p.qcow2")
        var options = Qcow2CreateOptions()
        options.clusterSize = 65536
        try Qcow2Image.create(path: path, size: 4 << 20, options: options)
        let image = try Qcow2Image(path: path, readOnly: false)
        try image.write(at: 0, [UInt8](repeating: 0xaa, count: 65536))
        let lengthBefore = try image.file.length()
        try image.write(at: 1 << 20, [UInt8](repeating: 1, count: 4096))  // fresh: only 4 KiB written
        #expect(try image.file.length() == lengthBefore + 4096)
        try image.discard(at: 0, count: 65536)  // frees the 0xaa cluster for reuse
        try image.write(at: 2 << 20, [UInt8](repeating: 2, count: 4096))
        #expect(try image.read(at: 1 << 20, count: 65536) == [UInt8](repeating: 1, count: 4096) + [UInt8](repeating: 0, count: 61440))
        #expect(try image.read(at: 2 << 20, count: 65536) == [UInt8](repeating: 2, count: 4096) + [UInt8](repeating: 0, count: 61440))
        try image.close()
        try expectQemuCheckClean(path)
    }

    /// Grow and shrink: qemu-img agrees on the size and finds the image clean.
    @Test func resize() throws {
        let dir = TempDirectory()
        let path = dir.file("r.qcow2")
        var options = Qcow2CreateOptions()
        options.clusterSize = 512  // a small L2 coverage, so growing moves the L1 table
        try Qcow2Image.create(path: path, size: 1 << 20, options: options)
        let data = noise(1 << 20, seed: 5)
        do {
            let image = try Qcow2Image(path: path, readOnly: false)
            try image.write(at: 0, data)
            try image.resize(to: 40 << 20)
            try image.write(at: (40 << 20) - 512, [UInt8](repeating: 3, count: 512))
            #expect(try image.read(at: 0, count: 1 << 20) == data)
            try image.close()
        }
        try expectQemuCheckClean(path)
        #expect(try run(["qemu-img", "info", path]).out.contains("virtual size: 40 MiB (41943040 bytes)"))
        do {
            let image = try Qcow2Image(path: path, readOnly: false)
            try image.resize(to: 512 << 10)
            try image.close()
        }
        try expectQemuCheckClean(path)
        #expect(try readAll(try Qcow2Image(path: path, readOnly: true)) == Array(data[0..<(512 << 10)]))
        // With a snapshot (qemu-img's, of the 512 KiB disk): grow past the snapshot's L1 table,
        // shrink below it, then apply it: its size and data come back; clean at every step.
        #expect(try run(["qemu-img", "snapshot", "-c", "small", path]).status == 0)
        do {
            let image = try Qcow2Image(path: path, readOnly: false)
            try image.resize(to: 64 << 20)
            try image.write(at: 60 << 20, [UInt8](repeating: 8, count: 4096))
            try image.resize(to: 128 << 10)
            try image.close()
        }
        try expectQemuCheckClean(path)
        do {
            let image = try Qcow2Image(path: path, readOnly: false)
            #expect(image.size == 128 << 10)
            try image.applySnapshot("small")
            #expect(image.size == 512 << 10)
            #expect(try readAll(image) == Array(data[0..<(512 << 10)]))
            try image.close()
        }
        try expectQemuCheckClean(path)
    }

    /// Refcounts of every width (refcount_bits 1 to 64) and refcount table growth: a 512-byte
    /// cluster image filled with data needs many refcount blocks and a larger table.
    @Test(arguments: [UInt64(1), 2, 4, 8, 16, 32, 64])
    func refcountWidthsAndTableGrowth(bits: UInt64) throws {
        let dir = TempDirectory()
        let path = dir.file("w.qcow2")
        var options = Qcow2CreateOptions()
        options.clusterSize = 512
        options.refcountBits = bits
        try Qcow2Image.create(path: path, size: 8 << 20, options: options)
        let data = noise(8 << 20, seed: bits)
        do {
            let image = try Qcow2Image(path: path, readOnly: false)
            try image.write(at: 0, data)
            // 16-bit and wider refcounts need more than the 64 blocks one 512-byte table cluster holds.
            #expect(image.header.refcountTableClusters > 1 || bits < 16)
            try image.close()
        }
        try expectQemuCheckClean(path)
        try writeFile(dir.file("expected.raw"), data)
        #expect(try run(["qemu-img", "compare", "-F", "raw", path, dir.file("expected.raw")]).status == 0)
        if bits == 1 {
            // A second reference cannot be counted in one bit: a clear error, no damage.
            let image = try Qcow2Image(path: path, readOnly: false)
            let error = systemError { () throws(SystemError) in try image.createSnapshot(name: "s") }
            #expect(error?.message.contains("refcount overflow") == true)
        }
    }
}
