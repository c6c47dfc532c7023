@testable import Block
import DeviceModel
import Foundation
import SystemSupport
import Testing

/// Untrusted images (DESIGN.md §6): every malformed header or table is refused with an error
/// that names the problem; nothing crashes, hangs or allocates absurdly.
@Suite struct Qcow2BadInputTests {
    /// A valid 1 MiB v3 image with 4 KiB clusters and some data, as bytes to corrupt.
    static func validImage(in dir: TempDirectory, compressed: Bool = false) throws -> [UInt8] {
        var options = Qcow2CreateOptions()
        options.clusterSize = 4096
        let path = dir.file("valid.qcow2")
        try Qcow2Image.create(path: path, size: 1 << 20, options: options)
        let image = try Qcow2Image(path: path, readOnly: false)
        if compressed {
            try image.writeCompressed(cluster: 0, [UInt8](repeating: 7, count: 4096))
        } else {
            try image.write(at: 0, noise(64 << 10, seed: 9))
        }
        try image.close()
        return try FileDescriptor.readWholeFile(path, limit: 1 << 24)
    }

    static func openError(_ bytes: [UInt8], in dir: TempDirectory, readOnly: Bool = true) throws -> SystemError? {
        let path = dir.file("bad.qcow2")
        try writeFile(path, bytes)
        return systemError { () throws(SystemError) in
            let image = try Qcow2Image(path: path, readOnly: readOnly)
            _ = try image.read(at: 0, count: Int(image.size))
        }
    }

    static func patched(_ bytes: [UInt8], _ edits: [(at: Int, value: UInt64, width: Int)]) -> [UInt8] {
        var b = bytes
        for e in edits {
            for i in 0..<e.width { b[e.at + i] = UInt8(truncatingIfNeeded: e.value >> (8 * (e.width - 1 - i))) }
        }
        return b
    }

    @Test func headersAndTablesAreValidated() throws {
        let dir = TempDirectory()
        let valid = try Self.validImage(in: dir)
        #expect(try Self.openError(valid, in: dir) == nil)
        let cases: [(bytes: [UInt8], message: String)] = [
            (Array(valid[0..<40]), "truncated qcow2 header: 40 bytes"),
            (Array(valid[0..<90]), "truncated qcow2 v3 header"),
            (noise(4096, seed: 1), "not a qcow2 image"),
            (Self.patched(valid, [(4, 7, 4)]), "version (offset 4): 7 is not 2 or 3"),
            (Self.patched(valid, [(20, 30, 4)]), "cluster_bits (offset 20): 30 is outside 9...21"),
            (Self.patched(valid, [(24, 1 << 62, 8)]), "qcow2 header field size (offset 24)"),
            (Self.patched(valid, [(36, 0xffff_ffff, 4)]), "l1_table_offset (offset 40): table of 34359738360 bytes is larger than the limit"),
            (Self.patched(valid, [(40, 1 << 40, 8)]), "l1_table_offset (offset 40): table at 1099511627776 of 8 bytes passes the end of the file"),
            (Self.patched(valid, [(40, 0, 8)]), "l1_table_offset (offset 40): table at offset 0 overlaps the header"),
            (Self.patched(valid, [(40, 4097, 8)]), "offset 4097 is not cluster-aligned"),
            (Self.patched(valid, [(48, 1 << 40, 8)]), "refcount_table_offset (offset 48): table at 1099511627776"),
            (Self.patched(valid, [(56, 100_000, 4)]), "refcount_table_offset (offset 48): table of 409600000 bytes is larger than the limit"),
            (Self.patched(valid, [(56, 0, 4)]), "refcount_table_clusters (offset 56): is 0"),
            (Self.patched(valid, [(60, 1_000_000, 4)]), "nb_snapshots (offset 60): 1000000 is more than 65536"),
            (Self.patched(valid, [(60, 2, 4), (64, 1 << 30, 8)]), "snapshots_offset (offset 64)"),
            (Self.patched(valid, [(96, 7, 4)]), "refcount_order (offset 96): 7 is more than 6"),
            (Self.patched(valid, [(100, 8192, 4)]), "header_length (offset 100)"),
            (Self.patched(valid, [(72, 1 << 9, 8)]), "unknown incompatible qcow2 features 0x200"),
            (Self.patched(valid, [(32, 1, 4)]), "encrypted qcow2 images"),
            (Self.patched(valid, [(8, 4000, 8), (16, 200, 4)]), "backing_file_offset (offset 8)"),
            (Self.patched(valid, [(8, 200, 8), (16, 5000, 4)]), "backing_file_size (offset 16): 5000"),
            (Self.patched(valid, [(112, 0x1234, 4), (116, 100_000, 4)]), "header extension 0x1234 at offset 112 runs past its area"),
        ]
        for c in cases {
            let error = try Self.openError(c.bytes, in: dir)
            #expect(error?.code == .badInput || error?.code == .unsupported, "\(c.message): \(String(describing: error))")
            #expect(error?.message.contains(c.message) == true, "expected '\(c.message)', got \(String(describing: error))")
        }
    }

    /// Tables that point past the end of the file or into the header fail the request that
    /// meets them, naming the table and the offset.
    @Test func tablePointersAreValidated() throws {
        let dir = TempDirectory()
        let valid = try Self.validImage(in: dir)
        let l1Offset = Int(valid.be64(40))
        let l2Offset = Int(valid.be64(l1Offset) & Qcow2Image.offsetMask)
        let cases: [(bytes: [UInt8], message: String)] = [
            (Self.patched(valid, [(l1Offset, 1 << 63 | 1 << 40, 8)]), "L2 table at offset 1099511627776 is past the end of the file"),
            (Self.patched(valid, [(l1Offset, 1 << 63 | 512, 8)]), "L2 table at offset 512 is not cluster-aligned"),
            (Self.patched(valid, [(l2Offset, 1 << 63 | 1 << 40, 8)]), "data cluster at offset 1099511627776 is past the end of the file"),
            (Self.patched(valid, [(l2Offset + 8, 1 << 63 | 512, 8)]), "data cluster at offset 512 is not cluster-aligned"),
        ]
        for c in cases {
            let error = try Self.openError(c.bytes, in: dir)
            #expect(error?.message.contains(c.message) == true, "expected '\(c.message)', got \(String(describing: error))")
        }
        // Refcount block pointing into the header: refused when an allocation meets it.
        let rt = Int(valid.be64(48))
        let path = dir.file("bad.qcow2")
        try writeFile(path, Self.patched(valid, [(rt, 0, 8)]))
        let image = try Qcow2Image(path: path, readOnly: false)
        // With its only refcount block gone every cluster looks free: the write that would
        // reuse one is refused and the image marked corrupt, so nothing is overwritten.
        let data = noise(256 << 10, seed: 4)
        let error = systemError { () throws(SystemError) in try image.write(at: 512 << 10, data) }
        #expect(error?.message.contains("no refcount block covers it; the image is marked corrupt") == true, "\(String(describing: error))")
        #expect(systemError { () throws(SystemError) in try image.write(at: 0, [1]) }?.message.contains("marked corrupt") == true)
        try image.close()
        #expect(try Self.openError(try FileDescriptor.readWholeFile(path, limit: 1 << 24), in: dir, readOnly: false)?.message
            .contains("marked corrupt") == true)
        // check -r all rebuilds the refcounts; qemu-img agrees, and the image works again.
        let repair = try Qcow2Image(path: dir.file("bad.qcow2"), readOnly: false, backingMode: .skip, forRepair: true)
        #expect(try repair.check(repair: .all).corruptionsFixed > 0)
        try repair.close()
        if qemuImgPresent { try expectQemuCheckClean(dir.file("bad.qcow2")) }
        let repaired = try Qcow2Image(path: dir.file("bad.qcow2"), readOnly: false)
        try repaired.write(at: 512 << 10, data)
        #expect(try repaired.read(at: 0, count: 64 << 10) == noise(64 << 10, seed: 9))
        #expect(try repaired.read(at: 512 << 10, count: data.count) == data)
        try repaired.close()
    }

    @Test func corruptCompressedClusterIsAnError() throws {
        let dir = TempDirectory()
        let valid = try Self.validImage(in: dir, compressed: true)
        let l1Offset = Int(valid.be64(40))
        let l2Offset = Int(valid.be64(l1Offset) & Qcow2Image.offsetMask)
        let entry = valid.be64(l2Offset)
        #expect(entry & Qcow2Image.compressedFlag != 0)
        let x = 62 - (12 - 8)
        let data = Int(entry & ((1 << UInt64(x)) - 1))
        var bytes = valid
        for i in 0..<16 { bytes[data + i] = 0xff }
        let error = try Self.openError(bytes, in: dir)
        #expect(error?.message.contains("is corrupt (inflate failed)") == true, "\(String(describing: error))")
    }

    @Test func corruptBitAllowsReadOnlyOnly() throws {
        let dir = TempDirectory()
        let valid = try Self.validImage(in: dir)
        let bytes = Self.patched(valid, [(72, Qcow2Header.corruptBit, 8)])
        #expect(try Self.openError(bytes, in: dir, readOnly: true) == nil)
        let error = try Self.openError(bytes, in: dir, readOnly: false)
        #expect(error?.message.contains("marked corrupt; open it read-only") == true)
    }

    @Test func backingLoopsAndMissingFilesAreRefused() throws {
        let dir = TempDirectory()
        var options = Qcow2CreateOptions()
        options.backingFormat = "qcow2"
        options.backingFile = "b.qcow2"
        try Qcow2Image.create(path: dir.file("a.qcow2"), size: 1 << 20, options: options)
        options.backingFile = "a.qcow2"
        try Qcow2Image.create(path: dir.file("b.qcow2"), size: 1 << 20, options: options)
        options.backingFile = "self.qcow2"
        try Qcow2Image.create(path: dir.file("self.qcow2"), size: 1 << 20, options: options)
        options.backingFile = "missing.qcow2"
        try Qcow2Image.create(path: dir.file("orphan.qcow2"), size: 1 << 20, options: options)
        for (name, message) in [("a.qcow2", "backing file loop"), ("self.qcow2", "backing file loop"), ("orphan.qcow2", "cannot open backing file")] {
            let error = systemError { () throws(SystemError) in _ = try Qcow2Image(path: dir.file(name), readOnly: true) }
            #expect(error?.message.contains(message) == true, "\(name): \(String(describing: error))")
        }
    }

    /// Random damage to the header and tables of a valid image: opening and reading either
    /// works or fails with an error, and never takes long.
    @Test func randomDamageNeverCrashes() throws {
        let dir = TempDirectory()
        let valid = try Self.validImage(in: dir)
        var x: UInt64 = 0x1234_5678
        var failures = 0
        for _ in 0..<400 {
            var bytes = valid
            for _ in 0..<4 {
                x ^= x << 13; x ^= x >> 7; x ^= x << 17
                // Mostly the header and the first tables (L1, refcounts, L2).
                let at = Int(x >> 8) % min(bytes.count, 6 * 4096)
                bytes[at] = UInt8(truncatingIfNeeded: x)
            }
            if try Self.openError(bytes, in: dir) != nil { failures += 1 }
        }
        // The generator is fixed, so is the damage, and so the number of images refused (the
        // rest open and read in full): a check added or lost changes the count.
        #expect(failures == 114)
    }
}
