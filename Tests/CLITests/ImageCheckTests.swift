import Foundation
import Testing
import TestSupport
@testable import CLI

/// `swemu-img check` against `qemu-img check` on damaged images: the same exit status, the
/// same `--output=json` report, the same problems on stderr in the same words, for a plain
/// check and for `-r leaks` and `-r all`; and after `-r all` both tools find the same image
/// clean (or both still find it damaged, when qemu-img cannot repair it either).
@Suite(.enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/qemu-img"),
                "qemu-img (Debian's qemu-utils) is not installed; run scripts/setup"))
struct ImageCheckTests {
    /// Runs a program; returns its exit status and output.
    static func shell(_ arguments: [String]) throws -> (status: Int32, out: String, err: String) {
        try runProgram(arguments)
    }

    /// How an image is damaged: a name, and what to do to a clean image's bytes.
    struct Damage: CustomStringConvertible, Sendable {
        let description: String
        let lazyRefcounts: Bool
        let apply: @Sendable (inout [UInt8]) -> Void
    }

    static func be64(_ b: [UInt8], _ at: Int) -> UInt64 { (0..<8).reduce(0) { $0 << 8 | UInt64(b[at + $1]) } }
    static func put64(_ b: inout [UInt8], _ at: Int, _ v: UInt64) { for i in 0..<8 { b[at + i] = UInt8(truncatingIfNeeded: v >> (56 - 8 * i)) } }
    static func put16(_ b: inout [UInt8], _ at: Int, _ v: UInt16) { b[at] = UInt8(v >> 8); b[at + 1] = UInt8(truncatingIfNeeded: v) }

    // The clean image: 4 KiB clusters, 16-bit refcounts, one refcount block, data in guest
    // clusters 0-15 (host clusters from `firstData`), a compressed cluster after them.
    static let mask: UInt64 = 0x00ff_ffff_ffff_fe00
    static func refblock(_ b: [UInt8]) -> Int { Int(be64(b, Int(be64(b, 48))) & mask) }
    static func l1(_ b: [UInt8]) -> Int { Int(be64(b, 40)) }
    static func l2(_ b: [UInt8]) -> Int { Int(be64(b, l1(b)) & mask) }
    static func dataHost(_ b: [UInt8], _ guestCluster: Int) -> Int { Int(be64(b, l2(b) + 8 * guestCluster) & mask) }

    static let damages: [Damage] = [
        Damage(description: "clean", lazyRefcounts: false) { _ in },
        Damage(description: "leaked cluster", lazyRefcounts: false) { b in
            let c = b.count / 4096
            b += [UInt8](repeating: 0, count: 8192)
            put16(&b, refblock(b) + 2 * c, 1)
            put16(&b, refblock(b) + 2 * (c + 1), 1)
        },
        Damage(description: "refcount too high", lazyRefcounts: false) { b in
            put16(&b, refblock(b) + 2 * (dataHost(b, 3) / 4096), 2)
        },
        Damage(description: "refcount zero on a data cluster", lazyRefcounts: false) { b in
            put16(&b, refblock(b) + 2 * (dataHost(b, 4) / 4096), 0)
        },
        Damage(description: "L2 entry past the end of the file", lazyRefcounts: false) { b in
            put64(&b, l2(b) + 8 * 40, 0x8000_0000_0100_0000)
        },
        Damage(description: "unaligned L2 entry", lazyRefcounts: false) { b in
            put64(&b, l2(b) + 8 * 41, 0x8000_0000_0000_6200)
        },
        Damage(description: "data cluster overlapping the L1 table", lazyRefcounts: false) { b in
            put64(&b, l2(b) + 8 * 2, 0x8000_0000_0000_0000 | UInt64(l1(b)))
        },
        Damage(description: "two guest clusters sharing one host cluster", lazyRefcounts: false) { b in
            put64(&b, l2(b) + 8 * 5, be64(b, l2(b) + 8 * 6))
        },
        Damage(description: "truncated inside the refcount block", lazyRefcounts: false) { b in b.removeLast(b.count - refblock(b)) },
        Damage(description: "truncated before the L1 table", lazyRefcounts: false) { b in b.removeLast(b.count - l1(b)) },
        Damage(description: "truncated inside the L2 table", lazyRefcounts: false) { b in b.removeLast(b.count - l2(b) - 100) },
        Damage(description: "truncated inside the data", lazyRefcounts: false) { b in b.removeLast(b.count - dataHost(b, 6)) },
        Damage(description: "lazy refcounts, dirty, refcounts behind", lazyRefcounts: true) { b in
            b[79] |= 1  // incompatible_features: dirty
            put16(&b, refblock(b) + 2 * (dataHost(b, 7) / 4096), 0)
            put16(&b, refblock(b) + 2 * (dataHost(b, 8) / 4096), 0)
        },
    ]

    /// A clean image made by qemu-img and qemu-io, as bytes.
    static func cleanImage(in dir: String, lazy: Bool) throws -> [UInt8] {
        let path = "\(dir)/clean.qcow2"
        let options = "cluster_size=4k" + (lazy ? ",lazy_refcounts=on" : "")
        #expect(try shell(["qemu-img", "create", "-q", "-f", "qcow2", "-o", options, path, "1M"]).status == 0)
        let io = try shell(["qemu-io", "-c", "write -P 0x11 0 64k", "-c", "write -c -P 0x22 128k 4k", "-c", "write -P 0x33 200k 4k", path])
        #expect(io.status == 0, "\(io.err)")
        return [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
    }

    /// Makes stderr comparable: the program name, and the image's name.
    static func normalized(_ text: String, _ path: String) -> String {
        text.replacingOccurrences(of: "qemu-img: ", with: "PROG: ").replacingOccurrences(of: "swemu-img: ", with: "PROG: ")
            .replacingOccurrences(of: path, with: "IMAGE")
            .replacingOccurrences(of: (path as NSString).lastPathComponent, with: "IMAGE")
    }

    @Test(arguments: damages)
    func checkAndRepairMatchQemu(damage: Damage) throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("swemu-check-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var bytes = try Self.cleanImage(in: dir, lazy: damage.lazyRefcounts)
        damage.apply(&bytes)
        for mode in [[], ["-r", "leaks"], ["-r", "all"]] {
            for output in [["--output=json"], []] {
                let q = "\(dir)/q.qcow2", s = "\(dir)/s.qcow2"
                try Data(bytes).write(to: URL(fileURLWithPath: q))
                try Data(bytes).write(to: URL(fileURLWithPath: s))
                let theirs = try Self.shell(["qemu-img", "check"] + mode + output + [q])
                let ours = ImageTool.run(["check"] + mode + output + [s])
                let what = "\(damage) check \((mode + output).joined(separator: " "))"
                if damage.description == "truncated inside the refcount block" && mode == ["-r", "all"] {
                    // qemu-img's rebuild runs into the L1 table past the end of the file and gives
                    // up (exit 1, image marked corrupt); ours rebuilds past it, and the table
                    // still missing keeps the image damaged. Neither calls it clean.
                    #expect(theirs.status == 1 && ours.status == 2, "\(what): \(ours.stdout)\(ours.stderr)")
                    continue
                }
                #expect(ours.status == theirs.status, "\(what): exit \(ours.status), qemu-img \(theirs.status)\n\(ours.stderr)\n---\n\(theirs.err)")
                #expect(Self.normalized(ours.stdout, s) == Self.normalized(theirs.out, q), "\(what) stdout:\n\(ours.stdout)\n---\n\(theirs.out)")
                #expect(Self.normalized(ours.stderr, s) == Self.normalized(theirs.err, q), "\(what) stderr:\n\(ours.stderr)\n---\n\(theirs.err)")
                guard mode == ["-r", "all"] else { continue }
                // After -r all, each tool agrees with the other about the other's repair.
                let qemuOnOurs = try Self.shell(["qemu-img", "check", "--output=json", s])
                let oursOnQemus = ImageTool.run(["check", "--output=json", q])
                #expect(qemuOnOurs.status == oursOnQemus.status, "\(what): after repair qemu-img says \(qemuOnOurs.status), swemu-img \(oursOnQemus.status)")
                if theirs.status == 0 {
                    #expect(qemuOnOurs.status == 0, "\(what): qemu-img finds our repair wanting: \(qemuOnOurs.out)\(qemuOnOurs.err)")
                }
            }
        }
    }

    /// The exit statuses on their own: 0 clean, 2 corruptions, 3 leaks only, 1 when the check
    /// cannot run (not a qcow2 image: 63 for a raw one, as qemu-img; an empty file: 1).
    @Test func exitStatuses() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("swemu-check-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let clean = try Self.cleanImage(in: dir, lazy: false)
        var leaky = clean
        Self.damages[1].apply(&leaky)
        try Data(leaky).write(to: URL(fileURLWithPath: "\(dir)/leaky.qcow2"))
        #expect(ImageTool.run(["check", "\(dir)/clean.qcow2"]).status == 0)
        #expect(ImageTool.run(["check", "\(dir)/leaky.qcow2"]).status == 3)
        #expect(ImageTool.run(["check", "-r", "leaks", "\(dir)/leaky.qcow2"]).status == 0)
        #expect(ImageTool.run(["check", "\(dir)/leaky.qcow2"]).status == 0)
        try Data(clean.prefix(5000)).write(to: URL(fileURLWithPath: "\(dir)/cut.qcow2"))
        #expect(ImageTool.run(["check", "\(dir)/cut.qcow2"]).status == 2)
        #expect(try Self.shell(["qemu-img", "check", "\(dir)/cut.qcow2"]).status == 2)
        try Data().write(to: URL(fileURLWithPath: "\(dir)/empty.qcow2"))
        #expect(ImageTool.run(["check", "-f", "qcow2", "\(dir)/empty.qcow2"]).status == 1)
        #expect(try Self.shell(["qemu-img", "check", "-f", "qcow2", "\(dir)/empty.qcow2"]).status == 1)
    }
}
