@testable import Block
import DeviceModel
import Foundation
import Glibc
import SystemSupport
import Testing

/// The lock bytes another open file description sees on `path`: "100"... for a permission
/// held, "200"... for one not shared (QEMU's file-posix.c layout).
func lockBytes(_ path: String) throws -> [Int64] {
    let probe = try FileDescriptor.open(path, O_RDONLY)
    return (Array(100...103) + Array(200...203)).filter { byte in
        (try? LockBytes.heldByOthers(probe.rawValue, byte: Int64(byte)).get()) == true
    }.map(Int64.init)
}

/// The message QEMU gives for a refused permission (`shared`: one the opener will not share).
func lockMessage(_ name: String, shared: Bool = false, path: String) -> String {
    (shared ? "Failed to get shared \"\(name)\" lock" : "Failed to get \"\(name)\" lock")
        + "\nIs another process using the image [\(path)]?"
}

/// Runs `body` and returns the message of the SystemError it throws (nil if none).
func thrownMessage(_ body: () throws -> Void) -> String? {
    do {
        try body()
        return nil
    } catch let error as SystemError {
        return error.description
    } catch {
        return "\(error)"
    }
}

/// Image locking (ImageLock.swift): the bytes, the check-then-apply sequence, and what a
/// second open in this process meets. OFD locks belong to the open file description, so two
/// descriptors of one file in one process see each other as two processes would.
@Suite struct ImageLockTests {
    let dir = TempDirectory()

    func rawFile(_ name: String = "disk.raw", size: Int = 1 << 20) throws -> String {
        let path = dir.file(name)
        try writeFile(path, [UInt8](repeating: 0, count: size))
        return path
    }

    func qcow2File(_ name: String = "disk.qcow2", backing: String? = nil) throws -> String {
        let path = dir.file(name)
        var options = Qcow2CreateOptions()
        options.backingFile = backing
        options.backingFormat = backing == nil ? nil : "qcow2"
        try Qcow2Image.create(path: path, size: 1 << 20, options: options)
        return path
    }

    /// F_OFD_SETLK / F_OFD_GETLK between two descriptions of one file: a lock is seen from
    /// the other description, never from its own, and goes with unlock.
    @Test func ofdLocksBetweenTwoDescriptions() throws {
        let path = try rawFile()
        let a = try FileDescriptor.open(path, O_RDWR)
        let b = try FileDescriptor.open(path, O_RDONLY)
        #expect(LockBytes.lock(a.rawValue, byte: 101) == nil)
        #expect(LockBytes.lock(b.rawValue, byte: 101) == nil, "shared locks never conflict with each other")
        #expect(try LockBytes.heldByOthers(b.rawValue, byte: 101).get())
        #expect(try LockBytes.heldByOthers(a.rawValue, byte: 101).get())
        #expect(LockBytes.unlock(b.rawValue, byte: 101) == nil)
        #expect(try !LockBytes.heldByOthers(a.rawValue, byte: 101).get(), "its own lock does not count")
        #expect(try LockBytes.heldByOthers(b.rawValue, byte: 101).get())
        #expect(try !LockBytes.heldByOthers(b.rawValue, byte: 102).get())
        #expect(LockBytes.unlock(a.rawValue, byte: 101) == nil)
        #expect(try !LockBytes.heldByOthers(b.rawValue, byte: 101).get())
    }

    /// The bytes each kind of user takes, as QEMU 7.2 takes them (measured in /proc/locks with
    /// qemu-io and qemu-system-riscv64: see Tests/README.md).
    @Test func bytesMatchQemu() throws {
        let raw = try rawFile()
        let qcow2 = try qcow2File()
        let cases: [(String, Bool, ImageLocking, [Int64], String)] = [
            (qcow2, false, .device, [100, 101, 103, 201, 203], "qcow2 read-write disk"),
            (qcow2, true, .device, [100, 201, 203], "qcow2 read-only disk"),
            (qcow2, false, .tool, [100, 101, 103, 201, 203], "qemu-io on qcow2"),
            (qcow2, true, .tool, [100, 201, 203], "qemu-io -r / qemu-img info on qcow2"),
            (qcow2, true, ImageLocking(forceShare: true), [100], "qemu-io -r -U, force-share=on"),
            (raw, false, .device, [100, 101, 201], "raw read-write virtio disk"),
            (raw, true, .device, [100, 201], "raw read-only virtio disk"),
            (raw, false, .tool, [100, 101], "qemu-io on raw"),
            (raw, true, .tool, [100], "qemu-io -r on raw"),
            (raw, true, .stableReader, [100, 201, 203], "convert's source, a backing file"),
            (raw, false, .none, [], "file.locking=off"),
        ]
        for (path, readOnly, locking, bytes, what) in cases {
            let image = try DiskImage.open(path: path, format: nil, readOnly: readOnly, locking: locking)
            #expect(try lockBytes(path) == bytes, "\(what)")
            withExtendedLifetime(image) {}
        }
        #expect(try lockBytes(raw) == [] && lockBytes(qcow2) == [], "closing the image gives its bytes back")
    }

    /// A backing file is read and protected: nobody may write or resize it.
    @Test func backingFileLockedReadOnly() throws {
        let base = try qcow2File("base.qcow2")
        let top = try qcow2File("top.qcow2", backing: "base.qcow2")
        let image = try DiskImage.open(path: top, format: "qcow2", readOnly: false, locking: .device)
        #expect(try lockBytes(base) == [100, 201, 203])
        #expect(thrownMessage { _ = try Qcow2Image(path: base, readOnly: false) } == lockMessage("write", path: base))
        withExtendedLifetime(image) {}
    }

    /// Two opens in one process meet the same rules and QEMU's messages, in QEMU's order:
    /// the permissions wanted first, then those not shared.
    @Test func secondOpenInProcess() throws {
        let raw = try rawFile()
        let qcow2 = try qcow2File()
        do {
            let disk = try RawImage(path: raw, locking: .device)
            #expect(thrownMessage { _ = try RawImage(path: raw, locking: .device) } == lockMessage("write", path: raw))
            #expect(thrownMessage { _ = try RawImage(path: raw, readOnly: true, locking: .device) }
                    == lockMessage("write", shared: true, path: raw))
            // A reader that shares everything may stay beside a writer (qemu-img info on raw).
            _ = try RawImage(path: raw, readOnly: true, locking: .tool)
            _ = try RawImage(path: raw, readOnly: true, locking: .none)
            withExtendedLifetime(disk) {}
        }
        do {
            let reader = try Qcow2Image(path: qcow2, readOnly: true)
            #expect(thrownMessage { _ = try Qcow2Image(path: qcow2, readOnly: false) } == lockMessage("write", path: qcow2))
            #expect(try lockBytes(qcow2) == [100, 201, 203], "a refused open leaves the bytes as they were")
            _ = try Qcow2Image(path: qcow2, readOnly: true)
            withExtendedLifetime(reader) {}
        }
        do {
            let writer = try Qcow2Image(path: qcow2, readOnly: false)
            #expect(thrownMessage { _ = try Qcow2Image(path: qcow2, readOnly: true) } == lockMessage("write", shared: true, path: qcow2))
            let shared = try Qcow2Image(path: qcow2, readOnly: true, locking: ImageLocking(forceShare: true))
            #expect(shared.size == 1 << 20)
            withExtendedLifetime(writer) {}
        }
        #expect(try lockBytes(qcow2) == [])
    }

    /// A reopen in this process (a reset rebuilding the machine) never leaves the image
    /// unprotected: the old holder retires, the new open takes its own bytes, and the old
    /// bytes go only with the old image.
    @Test func reopenKeepsProtection() throws {
        let path = try qcow2File()
        var old: Qcow2Image? = try Qcow2Image(path: path, readOnly: false, locking: .device)
        old?.locks?.retire()  // as the board's close() does: the bytes stay
        #expect(try lockBytes(path) == [100, 101, 103, 201, 203])
        let new = try Qcow2Image(path: path, readOnly: false, locking: .device)
        old = nil
        #expect(try lockBytes(path) == [100, 101, 103, 201, 203])
        #expect(thrownMessage { _ = try Qcow2Image(path: path, readOnly: false) } == lockMessage("write", path: path))
        withExtendedLifetime(new) {}
    }

    /// A migration's destination opens its disks inactive (no locks, as QEMU), the source
    /// hands over (keeps reading, shares everything) and the destination takes the locks.
    @Test func migrationHandover() throws {
        for (path, format) in [(try rawFile(), "raw"), (try qcow2File(), "qcow2")] {
            let source = try DiskImage.open(path: path, format: format, readOnly: false, locking: .device)
            let destination = try DiskImage.open(path: path, format: format, readOnly: false, inactive: true, locking: .device)
            #expect(thrownMessage { try DiskImage.activate(destination) } == lockMessage("write", path: path), "\(format)")
            try DiskImage.inactivate(source)
            #expect(try lockBytes(path) == [100], "\(format): the handed-over source only reads")
            try DiskImage.activate(destination)
            #expect(thrownMessage { try DiskImage.activate(source) } == lockMessage("write", path: path), "\(format)")
            withExtendedLifetime(source) {}
            withExtendedLifetime(destination) {}
        }
    }

    /// `create` over an image in use is refused before anything is written (QEMU's create
    /// locks the file first, then truncates).
    @Test func createRefusesImageInUse() throws {
        let path = try qcow2File()
        let before = try Data(contentsOf: URL(fileURLWithPath: path))
        let disk = try Qcow2Image(path: path, readOnly: false, locking: .device)
        #expect(thrownMessage { try Qcow2Image.create(path: path, size: 1 << 20, options: Qcow2CreateOptions()) }
                == lockMessage("write", path: path))
        try disk.close()
        withExtendedLifetime(disk) {}
        #expect(try Data(contentsOf: URL(fileURLWithPath: path)).count == before.count)
        try Qcow2Image.create(path: path, size: 2 << 20, options: Qcow2CreateOptions())
        #expect(try Qcow2Image(path: path, readOnly: true).size == 2 << 20)
    }
}

/// Whether a QEMU program is installed, for the interop tests.
let qemuIOPresent = FileManager.default.isExecutableFile(atPath: "/usr/bin/qemu-io")

/// qemu-io kept running on an image (its stdin a pipe left open), as a VM would hold it.
final class QemuIOHolder {
    let process = Process()
    let input = Pipe()

    init(_ arguments: [String], path: String) throws {
        process.executableURL = URL(fileURLWithPath: "/usr/bin/qemu-io")
        process.arguments = arguments + [path]
        process.standardInput = input
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        // Holding: its bytes show on the file (it opens before it reads a command).
        let deadline = Date().addingTimeInterval(20)
        while try lockBytes(path).isEmpty && Date() < deadline { usleep(20_000) }
    }

    func quit() {
        input.fileHandleForWriting.write(Data("quit\n".utf8))
        try? input.fileHandleForWriting.close()
        process.waitUntilExit()
    }

    deinit { if process.isRunning { quit() } }
}

/// swemu and QEMU 7.2 refuse each other's images in both directions, with QEMU's messages.
@Suite(.enabled(if: qemuImgPresent && qemuIOPresent, Comment(rawValue: qemuImgMissing)))
struct ImageLockInteropTests {
    let dir = TempDirectory()

    /// swemu writing an image: qemu-img info, snapshot -c and qemu-io's write refuse it;
    /// `-U` reads it.
    @Test func swemuHoldsQemuRefuses() throws {
        let path = dir.file("disk.qcow2")
        try Qcow2Image.create(path: path, size: 1 << 20, options: Qcow2CreateOptions())
        try swemuHolds(path)
        let after = try run(["qemu-img", "snapshot", "-c", "s1", path])
        #expect(after.status == 0, "once swemu closes the image: \(after.err)")
    }

    func swemuHolds(_ path: String) throws {
        let disk = try DiskImage.open(path: path, format: "qcow2", readOnly: false, locking: .device)
        defer { withExtendedLifetime(disk) {} }
        let info = try run(["qemu-img", "info", path])
        #expect(info.status == 1 && info.err == "qemu-img: Could not open '\(path)': \(lockMessage("write", shared: true, path: path))\n")
        let shared = try run(["qemu-img", "info", "-U", path])
        #expect(shared.status == 0 && shared.out.contains("file format: qcow2"))
        let snapshot = try run(["qemu-img", "snapshot", "-c", "s1", path])
        #expect(snapshot.status == 1 && snapshot.err.contains(lockMessage("write", path: path)))
        let write = try run(["qemu-io", "-f", "qcow2", "-c", "write 0 512", path])
        #expect(write.err.contains("can't open device \(path): \(lockMessage("write", path: path))"), "\(write)")
    }

    /// qemu-io holding an image: swemu refuses to write it, or to read it without -U.
    @Test func qemuHoldsSwemuRefuses() throws {
        let path = dir.file("disk.qcow2")
        try #require(try run(["qemu-img", "create", "-q", "-f", "qcow2", path, "1M"]).status == 0)
        let writer = try QemuIOHolder(["-f", "qcow2"], path: path)
        #expect(try lockBytes(path) == [100, 101, 103, 201, 203], "qemu-io's bytes")
        #expect(thrownMessage { _ = try DiskImage.open(path: path, format: "qcow2", readOnly: false, locking: .device) }
                == lockMessage("write", path: path))
        #expect(thrownMessage { _ = try DiskImage.open(path: path, format: "qcow2", readOnly: true) }
                == lockMessage("write", shared: true, path: path))
        #expect(try DiskImage.open(path: path, format: "qcow2", readOnly: true, locking: ImageLocking(forceShare: true)).size == 1 << 20)
        #expect(try DiskImage.open(path: path, format: "qcow2", readOnly: true, locking: .none).size == 1 << 20)
        writer.quit()
        let reader = try QemuIOHolder(["-r", "-f", "qcow2"], path: path)
        #expect(thrownMessage { _ = try DiskImage.open(path: path, format: "qcow2", readOnly: false) } == lockMessage("write", path: path))
        _ = try DiskImage.open(path: path, format: "qcow2", readOnly: true, locking: .device)  // readers share
        reader.quit()
        _ = try DiskImage.open(path: path, format: "qcow2", readOnly: false, locking: .device)
    }
}
