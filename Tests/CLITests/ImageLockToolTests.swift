import Foundation
import Testing
import TestSupport
@testable import CLI

private let qemuTools = FileManager.default.isExecutableFile(atPath: "/usr/bin/qemu-img")
    && FileManager.default.isExecutableFile(atPath: "/usr/bin/qemu-io")

/// Runs a program to its end; returns its exit status and output.
private func runTool(_ arguments: [String]) throws -> (status: Int32, out: String, err: String) {
    try runProgram(arguments)
}

/// swemu-img's -U / --force-share and its refusals of an image qemu-io holds, word for word
/// as qemu-img's.
@Suite(.enabled(if: qemuTools, "qemu-img and qemu-io (Debian's qemu-utils) are not installed; run scripts/setup"))
struct ImageLockToolTests {
    let dir: String

    init() throws {
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("swemu-lock-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    }

    func refused(_ path: String, _ name: String, shared: Bool) -> String {
        "swemu-img: Could not open '\(path)': Failed to get \(shared ? "shared " : "")\"\(name)\" lock\n"
            + "Is another process using the image [\(path)]?\n"
    }

    /// Runs `body` while `qemu-io` (its stdin a pipe kept open) holds `path`.
    func whileQemuIOHolds(_ path: String, readOnly: Bool = false, _ body: () throws -> Void) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/qemu-io")
        process.arguments = (readOnly ? ["-r"] : []) + ["-f", "qcow2", path]
        let input = Pipe()
        process.standardInput = input
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        defer {
            try? input.fileHandleForWriting.close()  // end of input: qemu-io quits
            process.waitUntilExit()
        }
        // Holding once qemu-img info without -U is refused (qemu-io opens before it reads).
        // (A reader is not refused by info: give it time to open instead.)
        var tries = 0
        if readOnly { usleep(500_000) }
        while !readOnly, tries < 500, try runTool(["qemu-img", "info", path]).status == 0 {
            tries += 1
            usleep(20_000)
        }
        try body()
    }

    @Test func swemuImgAgainstQemuIO() throws {
        let path = "\(dir)/disk.qcow2"
        try #require(try runTool(["qemu-img", "create", "-q", "-f", "qcow2", path, "1M"]).status == 0)
        try whileQemuIOHolds(path) {
            for command in [["info"], ["check"], ["map"], ["snapshot", "-l"], ["measure", "-O", "qcow2"]] {
                let r = ImageTool.run(command + [path])
                #expect(r.status == 1 && r.stderr == refused(path, "write", shared: true), "\(command): \(r.stderr)")
                let u = ImageTool.run(command + ["-U", path])
                #expect(u.status == 0 && u.stderr.isEmpty, "\(command) -U: \(u.stderr)")
            }
            #expect(ImageTool.run(["info", "--force-share", path]).status == 0)
            #expect(ImageTool.run(["compare", path, path]).stderr == refused(path, "write", shared: true))
            #expect(ImageTool.run(["compare", "-U", path, path]).stdout == "Images are identical.\n")
            #expect(ImageTool.run(["convert", "-O", "raw", path, "\(dir)/out.raw"]).stderr == refused(path, "write", shared: true))
            #expect(ImageTool.run(["convert", "-U", "-O", "raw", path, "\(dir)/out.raw"]).status == 0)
            #expect(ImageTool.run(["snapshot", "-c", "s1", path]).stderr == refused(path, "write", shared: false))
            #expect(ImageTool.run(["snapshot", "-U", "-c", "s1", path]).stderr
                    == "swemu-img: Could not open '\(path)': force-share=on can only be used with read-only images\n")
            #expect(ImageTool.run(["resize", path, "+1M"]).stderr == refused(path, "write", shared: false))
            let before = try Data(contentsOf: URL(fileURLWithPath: path))
            let create = ImageTool.run(["create", "-f", "qcow2", path, "2M"])
            #expect(create.status == 1 && create.stderr.hasSuffix("swemu-img: \(path): Failed to get \"write\" lock\nIs another process using the image [\(path)]?\n"),
                    "\(create.stderr)")
            #expect(try Data(contentsOf: URL(fileURLWithPath: path)) == before, "the image in use is left as it was")
        }
        try whileQemuIOHolds(path, readOnly: true) {
            // Readers share: info and check work; a writer is refused.
            #expect(ImageTool.run(["info", path]).status == 0)
            #expect(ImageTool.run(["check", path]).status == 0)
            #expect(ImageTool.run(["snapshot", "-c", "s1", path]).stderr == refused(path, "write", shared: false))
        }
        // Nobody holds it: everything goes through, and swemu-img leaves no lock behind.
        #expect(ImageTool.run(["snapshot", "-c", "s1", path]).status == 0)
        #expect(try runTool(["qemu-io", "-f", "qcow2", "-c", "write 0 512", path]).status == 0)
    }

    /// The -drive options: file.locking= takes on, off and auto; force-share=on needs readonly=on.
    @Test func driveLockingOptions() throws {
        #expect(try DriveSpec(parsing: "file=x.qcow2,file.locking=off").locking.mode == .off)
        #expect(try DriveSpec(parsing: "file=x.qcow2").locking == .device)
        #expect(try DriveSpec(parsing: "file=x.qcow2,readonly=on,force-share=on").locking.forceShare)
        #expect(throws: (any Error).self) { try DriveSpec(parsing: "file=x.qcow2,file.locking=maybe") }
        do {
            _ = try DriveSpec(parsing: "file=x.qcow2,force-share=on")
            Issue.record("force-share=on without readonly=on was accepted")
        } catch {
            #expect("\(error)" == "-drive file=x.qcow2,force-share=on: force-share=on can only be used with read-only images")
        }
    }
}
