import Foundation
import Testing

/// `kill -9` of swemu-system-riscv64 (the release binary), in every cache mode, at a random moment while a
/// bare-metal guest (Tests/GuestPrograms/riscv/dma/blkloop.S) writes 4 KiB records to a qcow2
/// disk, each followed by a virtio-blk FLUSH and a '.' on the console once the flush has
/// completed: qemu-img check then finds no corruption (leaks are allowed: the process died
/// with clusters allocated and not yet linked, or released and not yet freed), and every
/// record whose dot the host had read before the kill is in the image.
@Suite(.serialized) struct Qcow2KillTests {
    static var missing: String? {
        if !FileManager.default.isExecutableFile(atPath: LinuxBootTests.binary) {
            return "needs the release binary \(LinuxBootTests.binary) (swift build -c release; scripts/test builds it)"
        }
        if let missing = GuestProgram.compilerMissingReason { return missing }
        if !FileManager.default.isExecutableFile(atPath: "/usr/bin/qemu-img") {
            return "needs qemu-img (Debian's qemu-utils; scripts/setup installs it)"
        }
        return nil
    }

    static let recordStride = 40 * 512  // blkloop.S: record n at sector n * 40
    static let records = 4000

    /// Each cache mode once (a kill -9 loses nothing the kernel has, so even cache=unsafe, whose
    /// flushes do not reach the disk, keeps what the guest flushed), with two cluster sizes.
    @Test(.enabled(if: missing == nil, "\(missing ?? "")"),
          arguments: [(UInt64(65536), "writeback"), (4096, "none"), (65536, "writethrough"), (4096, "directsync"), (65536, "unsafe")])
    func killedWhileTheGuestWritesLosesNothingFlushed(clusterSize: UInt64, cache: String) throws {
        try FileManager.default.createDirectory(at: GuestProgram.outputDirectory.appendingPathComponent("dma"),
                                                withIntermediateDirectories: true)
        let elf = try GuestProgram.build("dma/blkloop")
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("swemu-kill-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let disk = dir.appendingPathComponent("disk.qcow2")
        let made = try GuestProgram.run("/usr/bin/qemu-img", ["create", "-q", "-f", "qcow2", "-o", "cluster_size=\(clusterSize)",
                                                              disk.path, "\((Self.records + 2) * Self.recordStride)"])
        try #require(made.status == 0, "qemu-img create: \(made.output)")

        let process = Process()
        process.executableURL = URL(fileURLWithPath: LinuxBootTests.binary)
        process.arguments = ["-M", "virt", "-bios", "none", "-kernel", elf, "-nographic",
                             "-drive", "file=\(disk.path),format=qcow2,if=virtio,cache=\(cache)"]
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        process.standardInput = FileHandle.nullDevice
        try process.run()
        // Kill after a random number of completed flushes (the guest may also finish first).
        let target = Int.random(in: 30...(Self.records * 3 / 4))
        var output = ""
        var dots = 0
        var ended = false
        let deadline = Date().addingTimeInterval(120)
        while dots < target && Date() < deadline {
            let data = pipe.fileHandleForReading.availableData
            if data.isEmpty {  // the program ended
                ended = true
                break
            }
            output += String(decoding: data, as: UTF8.self)
            dots = output.filter { $0 == "." }.count
        }
        // Only a process still running: once one has ended and been reaped, its pid may belong
        // to another test's swemu by now (a Linux boot test once died of this kill -9).
        if !ended && process.isRunning { kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
        #expect(!output.contains("swemu-system-riscv64:"), "swemu failed: \(output.suffix(500))")
        try #require(dots > 0, "the guest flushed nothing: \(output.suffix(500))")

        // No corruption; leaks are allowed (qemu-img check: 0 clean, 3 leaks only).
        let check = try GuestProgram.run("/usr/bin/qemu-img", ["check", disk.path])
        #expect(check.status == 0 || check.status == 3, "qemu-img check after kill -9 at \(dots) flushes: \(check.output)")
        // Every record the guest saw flushed is there, whole.
        let raw = dir.appendingPathComponent("disk.raw")
        let convert = try GuestProgram.run("/usr/bin/qemu-img", ["convert", "-O", "raw", disk.path, raw.path])
        try #require(convert.status == 0, "qemu-img convert: \(convert.output)")
        let bytes = [UInt8](try Data(contentsOf: raw))
        var missingRecords: [Int] = []
        for n in 1...dots {
            let start = n * Self.recordStride
            let record = bytes[start..<(start + 4096)]
            var whole = true
            for i in stride(from: 0, to: 4096, by: 8) {
                var word: UInt64 = 0
                for b in 0..<8 { word |= UInt64(record[record.startIndex + i + b]) << (8 * UInt64(b)) }  // little-endian
                if word != UInt64(n) { whole = false; break }
            }
            if !whole { missingRecords.append(n) }
        }
        #expect(missingRecords.isEmpty, "records flushed before kill -9 (\(dots) of them) but not in the image: \(missingRecords.prefix(10))")
    }
}
