import Foundation
import Testing

/// A running swemu-system-riscv64 protects its disk from qemu-img, qemu-io and a second swemu,
/// and refuses a disk qemu-io holds, with QEMU's messages (issue: host safety, image locking). The guest is two instructions (`wfi; j .-4`) with no firmware: the machine only
/// has to hold its disk.
@Suite(.serialized) struct ImageLockMachineTests {
    static let qemuImg = "/usr/bin/qemu-img"
    static let qemuIO = "/usr/bin/qemu-io"
    static var missing: String? {
        if !FileManager.default.isExecutableFile(atPath: LinuxBootTests.binary) {
            return "\(LinuxBootTests.binary) is not built: swift build -c release --product swemu-system-riscv64"
        }
        if !FileManager.default.isExecutableFile(atPath: qemuImg) || !FileManager.default.isExecutableFile(atPath: qemuIO) {
            return "qemu-img and qemu-io (Debian's qemu-utils) are not installed; run scripts/setup"
        }
        return nil
    }

    let dir: String

    init() throws {
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("swemu-lockvm-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        // wfi; j .-4
        try Data([0x73, 0x00, 0x50, 0x10, 0x6f, 0xf0, 0xdf, 0xff]).write(to: URL(fileURLWithPath: "\(dir)/idle.bin"))
    }

    static func tool(_ arguments: [String]) throws -> (status: Int32, out: String, err: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: arguments[0])
        process.arguments = Array(arguments.dropFirst())
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        process.standardInput = FileHandle.nullDevice
        try process.run()
        // A command that should have been refused but runs (a machine that got the image)
        // would keep the test waiting: SIGKILL after a deadline that only a hang reaches.
        let killer = DispatchWorkItem { kill(process.processIdentifier, SIGKILL) }
        DispatchQueue.global().asyncAfter(deadline: .now() + 120, execute: killer)
        let outData = out.fileHandleForReading.readDataToEndOfFile()
        let errData = err.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        killer.cancel()
        return (process.terminationStatus, String(decoding: outData, as: UTF8.self), String(decoding: errData, as: UTF8.self))
    }

    /// A machine left running; `stop()` ends it.
    final class Machine {
        let process = Process()
        let err = Pipe()

        init(_ executable: String, _ arguments: [String]) throws {
            process.executableURL = URL(fileURLWithPath: executable)
            process.arguments = arguments
            process.standardInput = FileHandle.nullDevice
            process.standardOutput = FileHandle.nullDevice
            process.standardError = err
            try process.run()
        }

        func stop() {
            // SIGKILL: the test runner starts children with SIGTERM blocked until swemu unblocks it.
            if process.isRunning { kill(process.processIdentifier, SIGKILL) }
            process.waitUntilExit()
        }

        deinit { stop() }
    }

    func swemu(_ drive: String) throws -> Machine {
        try Machine(LinuxBootTests.binary, ["-M", "virt", "-bios", "none", "-kernel", "\(dir)/idle.bin", "-nographic",
                                            "-monitor", "none", "-drive", drive])
    }

    /// Waits until `qemu-img info` (without -U) is refused: the machine holds the disk. The
    /// deadline is only for a hang (a loaded machine may take seconds to start swemu); a
    /// machine that ended instead is reported with what it printed.
    func waitHeld(_ path: String, by holder: Process, output: Pipe? = nil) throws -> (status: Int32, out: String, err: String) {
        // Wait by watching /proc/locks for the holder's locks on the file: polling with
        // `qemu-img info` would take a shared lock of its own, which a holder that is just
        // taking its write lock then finds ("Failed to get write lock": the race was the test's).
        var st = stat()
        try #require(stat(path, &st) == 0)
        let inode = ":\(st.st_ino) "
        let deadline = Date().addingTimeInterval(90)
        while Date() < deadline && holder.isRunning {
            let locks = (try? String(contentsOfFile: "/proc/locks", encoding: .utf8)) ?? ""
            if locks.split(separator: "\n").contains(where: { $0.contains(inode) }) { break }
            usleep(50_000)
        }
        usleep(500_000)  // the holder's first lock is there: let it finish taking the others
        var info = try Self.tool([Self.qemuImg, "info", path])
        while info.status == 0 && Date() < deadline && holder.isRunning {
            usleep(50_000)
            info = try Self.tool([Self.qemuImg, "info", path])
        }
        if !holder.isRunning {
            let text = output.map { String(decoding: $0.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self) } ?? ""
            Issue.record("the process holding the image ended (\(holder.terminationStatus)): \(text)")
        }
        return info
    }

    func hint(_ path: String) -> String { "\nIs another process using the image [\(path)]?\n" }

    @Test(.enabled(if: missing == nil, "\(missing ?? "")"))
    func swemuHoldsItsDisk() throws {
        let path = "\(dir)/disk.qcow2"
        try #require(try Self.tool([Self.qemuImg, "create", "-q", "-f", "qcow2", path, "8M"]).status == 0)
        let machine = try swemu("file=\(path),format=qcow2")
        defer { machine.stop() }
        let info = try waitHeld(path, by: machine.process, output: machine.err)
        #expect(info.status == 1 && info.err == "qemu-img: Could not open '\(path)': Failed to get shared \"write\" lock" + hint(path))
        #expect(try Self.tool([Self.qemuImg, "info", "-U", path]).status == 0)
        let snapshot = try Self.tool([Self.qemuImg, "snapshot", "-c", "s1", path])
        #expect(snapshot.err == "qemu-img: Could not open '\(path)': Failed to get \"write\" lock" + hint(path))
        let write = try Self.tool([Self.qemuIO, "-f", "qcow2", "-c", "write 0 512", path])
        #expect(write.err == "qemu-io: can't open device \(path): Failed to get \"write\" lock" + hint(path))
        let second = try Self.tool([LinuxBootTests.binary, "-M", "virt", "-bios", "none", "-kernel", "\(dir)/idle.bin", "-nographic",
                                    "-monitor", "none", "-drive", "file=\(path),format=qcow2"])
        #expect(second.status == 1
                && second.err == "swemu-system-riscv64: -drive file=\(path),format=qcow2: Failed to get \"write\" lock" + hint(path))
        // A reader that shares everything may run beside it.
        let reader = try swemu("file=\(path),format=qcow2,readonly=on,force-share=on")
        usleep(500_000)
        #expect(reader.process.isRunning)
        reader.stop()
        machine.stop()
        #expect(try Self.tool([Self.qemuImg, "snapshot", "-c", "s1", path]).status == 0, "the lock goes with the machine")
    }

    /// qemu-io holding a disk (its stdin a pipe left open, as a VM would hold it): swemu-system
    /// refuses it with QEMU's words; `file.locking=off` and a read-only force-share run anyway.
    /// (A running qemu-system-riscv64 is refused the same way, checked by hand: Tests/README.md.)
    @Test(.enabled(if: missing == nil, "\(missing ?? "")"))
    func qemuHoldsItsDisk() throws {
        let path = "\(dir)/disk.qcow2"
        try #require(try Self.tool([Self.qemuImg, "create", "-q", "-f", "qcow2", path, "8M"]).status == 0)
        let qemu = Process()
        qemu.executableURL = URL(fileURLWithPath: Self.qemuIO)
        qemu.arguments = ["-f", "qcow2", path]
        let input = Pipe()
        qemu.standardInput = input
        qemu.standardOutput = FileHandle.nullDevice
        qemu.standardError = FileHandle.nullDevice
        try qemu.run()
        defer {
            try? input.fileHandleForWriting.close()
            qemu.waitUntilExit()
        }
        _ = try waitHeld(path, by: qemu)
        let drive = "file=\(path),format=qcow2"
        let refused = try Self.tool([LinuxBootTests.binary, "-M", "virt", "-bios", "none", "-kernel", "\(dir)/idle.bin", "-nographic",
                                     "-monitor", "none", "-drive", drive])
        #expect(refused.status == 1
                && refused.err == "swemu-system-riscv64: -drive \(drive): Failed to get \"write\" lock" + hint(path), "\(refused.err)")
        for shared in ["file=\(path),format=qcow2,file.locking=off", "file=\(path),format=qcow2,readonly=on,force-share=on"] {
            let machine = try swemu(shared)
            usleep(500_000)
            #expect(machine.process.isRunning, "\(shared)")
            machine.stop()
        }
    }
}
