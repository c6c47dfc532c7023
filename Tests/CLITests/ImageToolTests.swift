import Foundation
import Testing
import TestSupport
@testable import CLI

/// Runs a program; returns its exit status and output.
@discardableResult
private func shell(_ arguments: [String]) throws -> (status: Int32, out: String, err: String) {
    try runProgram(arguments)
}

private let qemuImg = FileManager.default.isExecutableFile(atPath: "/usr/bin/qemu-img")

/// swemu-img against qemu-img: the same command lines, the same output (where it does not
/// depend on how the host file system allocates), and images each tool accepts from the other.
@Suite(.enabled(if: qemuImg, "qemu-img (Debian's qemu-utils) is not installed; run scripts/setup"))
struct ImageToolTests {
    let dir: String

    init() throws {
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("swemu-img-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    }

    func path(_ name: String) -> String { "\(dir)/\(name)" }

    func swemu(_ args: [String]) -> (status: Int32, stdout: String, stderr: String) { ImageTool.run(args) }

    /// Output with the image names made equal and the host-dependent "disk size" dropped.
    func normalized(_ text: String, _ names: [String]) -> String {
        var t = text
        for n in names { t = t.replacingOccurrences(of: n, with: "IMAGE") }
        return t.split(separator: "\n", omittingEmptySubsequences: false)
            .filter { !$0.hasPrefix("disk size:") && !$0.contains("\"actual-size\"") }.joined(separator: "\n")
    }

    func bytes(_ count: Int, seed: UInt8) -> Data {
        Data((0..<count).map { i in i % 5000 < 1200 ? 0 : UInt8(truncatingIfNeeded: i * 31 + Int(seed) + i / 977) })
    }

    @Test(arguments: [
        ["-f", "qcow2"], ["-f", "qcow2", "-o", "cluster_size=4k,compat=0.10"], ["-f", "qcow2", "-o", "preallocation=metadata"],
        ["-f", "qcow2", "-o", "cluster_size=2M,refcount_bits=64,lazy_refcounts=on"], ["-f", "raw"],
    ])
    func createAndInfoMatchQemu(options: [String]) throws {
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let ours = swemu(["create"] + options + [path("s.img"), "100M"])
        let theirs = try shell(["qemu-img", "create"] + options + [path("q.img"), "100M"])
        #expect(ours.status == 0 && theirs.status == 0, "\(ours.stderr)")
        #expect(normalized(ours.stdout, [path("s.img")]) == normalized(theirs.out, [path("q.img")]))
        for format in [[], ["--output=json"]] {
            let a = swemu(["info"] + format + [path("s.img")])
            let b = try shell(["qemu-img", "info"] + format + [path("q.img")])
            #expect(normalized(a.stdout, [path("s.img")]) == normalized(b.out, [path("q.img")]))
        }
        #expect(try shell(["qemu-img", "info", path("s.img")]).status == 0)
        if options.contains("qcow2") {
            try #require(try shell(["qemu-img", "check", path("s.img")]).status == 0)
            let a = swemu(["check", path("q.img")]), b = try shell(["qemu-img", "check", path("q.img")])
            #expect(a.stdout == b.out && a.status == b.status)
        }
    }

    @Test func convertCompareMapMeasureMatchQemu() throws {
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try bytes(3 << 20, seed: 1).write(to: URL(fileURLWithPath: path("src.raw")))
        for compress in [false, true] {
            let out = path(compress ? "c.qcow2" : "p.qcow2")
            let convert = swemu(["convert", "-f", "raw", "-O", "qcow2", "-o", "cluster_size=4096"] + (compress ? ["-c", "-t", "directsync"] : []) + [path("src.raw"), out])
            #expect(convert.status == 0, "\(convert.stderr)")
            #expect(try shell(["qemu-img", "check", out]).status == 0)
            #expect(try shell(["qemu-img", "compare", "-f", "raw", "-F", "qcow2", path("src.raw"), out]).out == "Images are identical.\n")
            #expect(swemu(["compare", "-f", "raw", path("src.raw"), out]).stdout == "Images are identical.\n")
            for args in [["map"], ["map", "--output=json"], ["check"], ["measure", "-O", "qcow2"], ["measure", "-O", "raw"], ["info"]] {
                let a = swemu(args + [out]), b = try shell(["qemu-img"] + args + [out])
                #expect(normalized(a.stdout, []) == normalized(b.out, []), "\(args)")
            }
        }
        for outFormat in ["qcow2", "raw"] {
            let a = swemu(["measure", "-O", outFormat, path("src.raw")])
            let b = try shell(["qemu-img", "measure", "-O", outFormat, path("src.raw")])
            #expect(a.stdout == b.out, "measure -O \(outFormat) of a raw file")
        }
        // A difference: both tools name the same first differing sector.
        try shell(["qemu-io", "-c", "write -P 0x33 1049088 512", path("p.qcow2")])
        let a = swemu(["compare", path("src.raw"), path("p.qcow2")])
        let b = try shell(["qemu-img", "compare", path("src.raw"), path("p.qcow2")])
        #expect(a.stdout == b.out && a.status == b.status && a.status == 1, "\(a) \(b)")
        for size in ["1G", "7T"] {
            let a = swemu(["measure", "--size", size, "-O", "qcow2", "-o", "cluster_size=512"])
            let b = try shell(["qemu-img", "measure", "--size", size, "-O", "qcow2", "-o", "cluster_size=512"])
            #expect(a.stdout == b.out && a.status == b.status)
            #expect(a.stderr.replacingOccurrences(of: "swemu-img", with: "qemu-img") == b.err)
        }
        // qemu-img's convert of our compressed image is identical too.
        #expect(try shell(["qemu-img", "convert", "-O", "raw", path("c.qcow2"), path("back.raw")]).status == 0)
        #expect(try Data(contentsOf: URL(fileURLWithPath: path("back.raw"))) == bytes(3 << 20, seed: 1))
    }

    @Test func snapshotResizeRebaseCommitLeaveImagesQemuAccepts() throws {
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try bytes(2 << 20, seed: 2).write(to: URL(fileURLWithPath: path("base1.raw")))
        try bytes(2 << 20, seed: 3).write(to: URL(fileURLWithPath: path("base2.raw")))
        #expect(swemu(["create", "-q", "-f", "qcow2", "-b", "base1.raw", "-F", "raw", path("top.qcow2")]).status == 0)
        try shell(["qemu-io", "-c", "write -P 0x44 100000 300000", path("top.qcow2")])
        try shell(["qemu-img", "convert", "-O", "raw", path("top.qcow2"), path("before.raw")])
        // info of the chain, human and JSON, as qemu-img prints it (host allocation aside).
        for format in [[], ["--output=json"]] {
            let a = swemu(["info", "--backing-chain"] + format + [path("top.qcow2")])
            let b = try shell(["qemu-img", "info", "--backing-chain"] + format + [path("top.qcow2")])
            #expect(normalized(a.stdout, []) == normalized(b.out, []), "info --backing-chain \(format)")
        }
        // Snapshots, listed the same way by both.
        #expect(swemu(["snapshot", "-c", "snap", path("top.qcow2")]).status == 0)
        #expect(swemu(["snapshot", "-l", path("top.qcow2")]).stdout == (try shell(["qemu-img", "snapshot", "-l", path("top.qcow2")]).out))
        #expect(try shell(["qemu-img", "check", path("top.qcow2")]).status == 0)
        #expect(swemu(["snapshot", "-d", "snap", path("top.qcow2")]).status == 0)
        #expect(try shell(["qemu-img", "check", path("top.qcow2")]).status == 0)
        // Safe rebase onto a different base keeps what the guest sees.
        let rebase = swemu(["rebase", "-b", "base2.raw", "-F", "raw", path("top.qcow2")])
        #expect(rebase.status == 0, "\(rebase.stderr)")
        #expect(try shell(["qemu-img", "check", path("top.qcow2")]).status == 0)
        #expect(try shell(["qemu-img", "compare", "-F", "raw", path("top.qcow2"), path("before.raw")]).status == 0)
        #expect(try shell(["qemu-img", "info", path("top.qcow2")]).out.contains("backing file: base2.raw"))
        // Commit into base2: base2 now reads as the top did; the top is empty again.
        let commit = swemu(["commit", path("top.qcow2")])
        #expect(commit.stdout == "Image committed.\n", "\(commit.stderr)")
        #expect(try Data(contentsOf: URL(fileURLWithPath: path("base2.raw"))) == Data(contentsOf: URL(fileURLWithPath: path("before.raw"))))
        #expect(try shell(["qemu-img", "check", path("top.qcow2")]).status == 0)
        #expect(try shell(["qemu-img", "map", "--output=json", path("top.qcow2")]).out.contains("\"depth\": 1"))
        // Unsafe rebase only rewrites the name; resize grows and shrinks.
        #expect(swemu(["rebase", "-u", "-b", "base1.raw", "-F", "raw", path("top.qcow2")]).status == 0)
        #expect(try shell(["qemu-img", "info", "--output=json", path("top.qcow2")]).out.contains("\"backing-filename\": \"base1.raw\""))
        #expect(swemu(["resize", path("top.qcow2"), "+10M"]).stdout == "Image resized.\n")
        #expect(swemu(["resize", path("top.qcow2"), "1M"]).stderr.contains("Use the --shrink option"))
        #expect(swemu(["resize", "--shrink", path("top.qcow2"), "1M"]).status == 0)
        #expect(try shell(["qemu-img", "check", path("top.qcow2")]).status == 0)
        #expect(try shell(["qemu-img", "info", path("top.qcow2")]).out.contains("virtual size: 1 MiB (1048576 bytes)"))
        #expect(swemu(["check", path("base1.raw")]).status == 63)
        // Commit into a smaller base grows it first.
        #expect(swemu(["create", "-q", "-f", "qcow2", path("small.qcow2"), "1M"]).status == 0)
        #expect(swemu(["create", "-q", "-f", "qcow2", "-b", "small.qcow2", "-F", "qcow2", path("big.qcow2"), "3M"]).status == 0)
        try shell(["qemu-io", "-c", "write -P 0x66 2621440 4096", path("big.qcow2")])
        #expect(swemu(["commit", path("big.qcow2")]).status == 0)
        #expect(try shell(["qemu-img", "info", path("small.qcow2")]).out.contains("virtual size: 3 MiB"))
        #expect(try shell(["qemu-io", "-c", "read -P 0x66 2621440 4096", path("small.qcow2")]).status == 0)  // 1 on a mismatch
        #expect(try shell(["qemu-img", "check", path("small.qcow2")]).status == 0)
    }
}
