@testable import Block
import DeviceModel
import Foundation
import SystemSupport
import Testing

/// VM state in internal snapshots (`savevm`/`loadvm`), stored in the vmstate area as QEMU
/// stores it, each step checked with qemu-img (and qemu-io, which reads the vmstate area).
@Suite(.enabled(if: qemuImgPresent, Comment(rawValue: qemuImgMissing)))
struct Qcow2VMStateTests {
    /// Uniformly random bytes (xorshift): a state no cluster of which is all zeroes.
    static func random(_ count: Int, seed: UInt64) -> [UInt8] {
        var x = seed | 1
        return (0..<count).map { _ in
            x ^= x << 13; x ^= x >> 7; x ^= x << 17
            return UInt8(truncatingIfNeeded: x >> 11)
        }
    }

    /// A v2 or v3 image of 8 MiB (64 KiB clusters) whose first 6 MiB hold `disk`.
    static func makeImage(_ dir: TempDirectory, version: UInt32 = 3, disk: [UInt8]) throws -> String {
        let path = dir.file("vm.qcow2")
        var options = Qcow2CreateOptions()
        options.version = version
        try Qcow2Image.create(path: path, size: 8 << 20, options: options)
        let image = try Qcow2Image(path: path, readOnly: false)
        try image.write(at: 0, disk)
        try image.close()
        return path
    }

    /// qemu-img check's verdict: exit 0 and neither errors nor leaks.
    static func expectClean(_ path: String, sourceLocation: SourceLocation = #_sourceLocation) throws {
        let check = try run(["qemu-img", "check", path])
        #expect(check.status == 0 && check.out.contains("No errors were found"),
                "qemu-img check \(path): \(check.out) \(check.err)", sourceLocation: sourceLocation)
    }

    static func snapshotInfo(_ path: String) throws -> [[String: Any]] {
        let info = try run(["qemu-img", "info", "--output=json", path])
        let object = try JSONSerialization.jsonObject(with: Data(info.out.utf8)) as? [String: Any]
        return object?["snapshots"] as? [[String: Any]] ?? []
    }

    /// 3 MiB and a tail that ends mid-cluster, with a run of 0x5a that qemu-io can check.
    static let stateSize = (3 << 20) + 12345
    static func state(seed: UInt64) -> [UInt8] {
        var bytes = random(stateSize, seed: seed)
        bytes.replaceSubrange((1 << 20)..<((1 << 20) + (64 << 10)), with: [UInt8](repeating: 0x5a, count: 64 << 10))
        return bytes
    }

    @Test(arguments: [UInt32(2), 3])
    func roundTrip(version: UInt32) throws {
        let dir = TempDirectory()
        let disk = noise(6 << 20, seed: 11)
        let path = try Self.makeImage(dir, version: version, disk: disk)
        let state = Self.state(seed: 21)
        do {
            let image = try Qcow2Image(path: path, readOnly: false)
            try image.createSnapshot(name: "vm1", vmState: state, vmClockNanoseconds: 3_723_456_789_000,
                                     date: (seconds: 1_700_000_000, nanoseconds: 5))
            #expect(try image.readVMState(snapshot: "vm1") == state)
            #expect(try image.readVMState(snapshot: "1") == state)  // by ID too
            #expect(Array(try readAll(image)[0..<disk.count]) == disk)  // the active disk is unchanged
            let snapshot = try #require(image.snapshots.first)
            #expect(snapshot.vmStateSize == UInt32(Self.stateSize) && snapshot.vmStateBytes == UInt64(Self.stateSize))
            #expect(snapshot.icount == nil && snapshot.vmClockNanoseconds == 3_723_456_789_000)
            try image.close()
        }
        try Self.expectClean(path)
        let list = try run(["qemu-img", "snapshot", "-l", path])
        // QEMU's columns; the size humanised as "%0.3g": 3157728 bytes are 3.01 MiB.
        #expect(list.out.contains(" vm1 ") && list.out.contains("3.01 MiB") && list.out.contains("01:02:03.456"),
                "qemu-img snapshot -l: \(list.out)")
        let info = try Self.snapshotInfo(path)
        #expect(info.count == 1)
        #expect(info.first?["vm-state-size"] as? Int == Self.stateSize)
        #expect(info.first?["date-sec"] as? Int == 1_700_000_000 && info.first?["date-nsec"] as? Int == 5)
        #expect(info.first?["vm-clock-sec"] as? Int == 3723 && info.first?["vm-clock-nsec"] as? Int == 456_789_000)
        #expect(info.first?["icount"] == nil)  // written as -1: "none", as QEMU's savevm writes it

        // QEMU's loadvm path: qemu-img applies the snapshot, qemu-io reads the vmstate area of
        // the (now active) L1 table (read -b: bdrv_load_vmstate) and finds the 0x5a run there.
        #expect(try run(["qemu-img", "snapshot", "-a", "vm1", path]).status == 0)
        let vmstate = try run(["qemu-io", "-f", "qcow2", "-c", "read -b -P 0x5a 1M 64k", "-c", "read -b -P 0x5a 1032k 8k", path])
        #expect(vmstate.status == 0 && !vmstate.out.contains("Pattern verification failed"), "qemu-io: \(vmstate.out) \(vmstate.err)")
        let mismatch = try run(["qemu-io", "-f", "qcow2", "-c", "read -b -P 0x5a 0 4k", path])
        #expect(mismatch.out.contains("Pattern verification failed"))  // the random part is there instead
        try Self.expectClean(path)
        do {
            let image = try Qcow2Image(path: path, readOnly: false)
            #expect(Array(try readAll(image)[0..<disk.count]) == disk)
            #expect(try image.readVMState(snapshot: "vm1") == state)
            // savevm after loadvm: the applied state left in the active layer is not carried
            // into the new snapshot, and both states read back.
            let second = Self.random(100_000, seed: 5)
            try image.createSnapshot(name: "vm2", vmState: second, vmClockNanoseconds: 0)
            #expect(try image.readVMState(snapshot: "vm2") == second)
            #expect(try image.readVMState(snapshot: "vm1") == state)
            try image.close()
        }
        try Self.expectClean(path)
    }

    /// The snapshot keeps the disk as it was; writes after it go to the active layer only.
    @Test func snapshotDiskAndActiveLayer() throws {
        let dir = TempDirectory()
        let disk = noise(6 << 20, seed: 12)
        let path = try Self.makeImage(dir, disk: disk)
        let state = Self.state(seed: 22)
        let image = try Qcow2Image(path: path, readOnly: false)
        try image.createSnapshot(name: "vm", vmState: state, vmClockNanoseconds: 1)
        let later = noise(1 << 20, seed: 13)
        try image.write(at: 2 << 20, later)
        var current = try readAll(image)
        #expect(Array(current[(2 << 20)..<(3 << 20)]) == later)
        #expect(try image.readVMState(snapshot: "vm") == state)
        try image.close()
        try Self.expectClean(path)
        // The snapshot's disk, as QEMU sees it.
        #expect(try run(["qemu-img", "snapshot", "-a", "vm", path]).status == 0)
        current = try readAll(try Qcow2Image(path: path, readOnly: true))
        #expect(Array(current[0..<disk.count]) == disk)
        #expect(current[disk.count...].allSatisfy { $0 == 0 })
    }

    /// Writes of every size through the streaming writer, read back in odd pieces.
    @Test func streaming() throws {
        let dir = TempDirectory()
        let path = try Self.makeImage(dir, disk: noise(1 << 20, seed: 14))
        let state = Self.state(seed: 23)
        let image = try Qcow2Image(path: path, readOnly: false)
        let pieces = [1, 7, 4096, 65536, 100_000, 2 << 20, 3]
        try image.createSnapshot(name: "s", vmClockNanoseconds: 42) { (writer) throws(SystemError) in
            var at = 0, k = 0
            while at < state.count {
                let n = min(pieces[k % pieces.count], state.count - at)
                try state[at..<(at + n)].withUnsafeBytes { raw in Result { () throws(SystemError) in try writer.write(raw) } }.get()
                at += n
                k += 1
            }
            #expect(writer.count == UInt64(state.count))
        }
        let reader = try image.openVMState(snapshot: "s")
        #expect(reader.count == UInt64(state.count))
        var back: [UInt8] = []
        var k = 0
        while true {
            let piece = try reader.read(upTo: [3, 70_000, 1 << 20, 1][k % 4])
            if piece.isEmpty { break }
            back += piece
            k += 1
        }
        #expect(back == state && reader.position == reader.count)
        try image.close()
        try Self.expectClean(path)
    }

    /// A failing state writer leaves no snapshot and no leaked clusters; an existing
    /// snapshot of that name survives.
    @Test func failedSaveKeepsTheOldSnapshot() throws {
        let dir = TempDirectory()
        let path = try Self.makeImage(dir, disk: noise(1 << 20, seed: 15))
        let old = Self.random(200_000, seed: 6)
        let image = try Qcow2Image(path: path, readOnly: false)
        try image.createSnapshot(name: "s", vmState: old, vmClockNanoseconds: 0)
        let error = systemError { () throws(SystemError) in
            try image.createSnapshot(name: "s", vmClockNanoseconds: 0) { (writer) throws(SystemError) in
                try writer.write(Self.random(2 << 20, seed: 7))
                throw .badInput("device state refused")
            }
        }
        #expect(error?.message == "device state refused")
        #expect(image.snapshots.count == 1)
        #expect(try image.readVMState(snapshot: "s") == old)
        try image.close()
        try Self.expectClean(path)
    }

    /// A snapshot qemu-img made has no VM state: a clear error, not empty bytes.
    @Test func diskOnlySnapshotHasNoVMState() throws {
        let dir = TempDirectory()
        let path = try Self.makeImage(dir, disk: noise(1 << 20, seed: 16))
        #expect(try run(["qemu-img", "snapshot", "-c", "disk", path]).status == 0)
        let image = try Qcow2Image(path: path, readOnly: true)
        #expect(image.snapshots.first?.vmStateBytes == 0)
        let error = systemError { () throws(SystemError) in _ = try image.readVMState(snapshot: "disk") }
        #expect(error?.code == .configuration)
        #expect(error?.message.contains("has no VM state") == true && error?.message.contains("disk-only") == true)
        let missing = systemError { () throws(SystemError) in _ = try image.readVMState(snapshot: "nope") }
        #expect(missing?.message.contains("snapshot not found") == true)
    }

    /// savevm with a name in use replaces that snapshot (QEMU's savevm), unless told not to.
    @Test func overwriteSameName() throws {
        let dir = TempDirectory()
        let path = try Self.makeImage(dir, disk: noise(2 << 20, seed: 17))
        let first = Self.state(seed: 24), second = Self.random(500_000, seed: 8)
        do {
            let image = try Qcow2Image(path: path, readOnly: false)
            try image.createSnapshot(name: "keep", vmState: Self.random(70_000, seed: 9), vmClockNanoseconds: 0)
            try image.createSnapshot(name: "vm", vmState: first, vmClockNanoseconds: 1)
            try image.createSnapshot(name: "vm", vmState: second, vmClockNanoseconds: 2)
            #expect(image.snapshots.map(\.name) == ["keep", "vm"])
            #expect(image.snapshots.map(\.id) == ["1", "2"])  // the largest ID in use + 1, as QEMU numbers them
            #expect(try image.readVMState(snapshot: "vm") == second)
            let refused = systemError { () throws(SystemError) in
                try image.createSnapshot(name: "vm", vmState: first, vmClockNanoseconds: 3, replacing: false)
            }
            #expect(refused?.message.contains("already exists") == true)
            #expect(try image.readVMState(snapshot: "vm") == second)
            try image.close()
        }
        try Self.expectClean(path)
        let info = try Self.snapshotInfo(path)
        #expect(info.map { $0["vm-state-size"] as? Int } == [70_000, 500_000])
    }

    /// Deleting a snapshot frees its state's clusters: check stays clean (no leaks), and the
    /// next save of the same size reuses the space instead of growing the file.
    @Test func deleteFreesVMState() throws {
        let dir = TempDirectory()
        let path = try Self.makeImage(dir, disk: noise(2 << 20, seed: 18))
        let state = Self.state(seed: 25)
        let image = try Qcow2Image(path: path, readOnly: false)
        try image.createSnapshot(name: "vm", vmState: state, vmClockNanoseconds: 0)
        let length = try image.file.length()
        try image.deleteSnapshot("vm")
        #expect(image.snapshots.isEmpty)
        let own = try image.check(repair: .none)
        #expect(own.leaks == 0 && own.corruptions == 0, "\(own.messages)")
        try image.close()
        try Self.expectClean(path)
        let again = try Qcow2Image(path: path, readOnly: false)
        try again.createSnapshot(name: "vm", vmState: state, vmClockNanoseconds: 0)
        #expect(try again.file.length() <= length + 2 * again.clusterSize)  // room for a new table
        #expect(try again.readVMState(snapshot: "vm") == state)
        try again.close()
        try Self.expectClean(path)
    }

    /// Growing the disk over the vmstate area after a loadvm (which leaves the applied state
    /// in the active layer) shows zeroes there, not the state.
    @Test func growAfterLoadvmReadsZeroes() throws {
        let dir = TempDirectory()
        let path = try Self.makeImage(dir, disk: noise(1 << 20, seed: 20))
        let image = try Qcow2Image(path: path, readOnly: false)
        try image.createSnapshot(name: "vm", vmState: Self.state(seed: 26), vmClockNanoseconds: 0)
        try image.applySnapshot("vm")
        let area: UInt64 = 512 << 20  // 8 MiB rounded up to one L1 entry of 64 KiB clusters
        try image.resize(to: area + (4 << 20))
        #expect(try image.read(at: area, count: Self.stateSize).allSatisfy { $0 == 0 })
        #expect(try image.readVMState(snapshot: "vm") == Self.state(seed: 26))
        try image.close()
        try Self.expectClean(path)
    }

    /// A state QEMU itself saved (savevm in qemu-system-riscv64) reads back from where QEMU
    /// put it: the migration stream's magic "QEVM" and version 3 come first.
    @Test(.enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/qemu-system-riscv64")))
    func readsQEMUSavevm() throws {
        let dir = TempDirectory()
        let path = try Self.makeImage(dir, disk: noise(1 << 20, seed: 19))
        let qemu = Process()
        qemu.executableURL = URL(fileURLWithPath: "/usr/bin/qemu-system-riscv64")
        qemu.arguments = ["-M", "virt", "-m", "64", "-bios", "none", "-S", "-nodefaults", "-display", "none",
                          "-monitor", "stdio", "-drive", "file=\(path),if=none,id=d0,format=qcow2",
                          "-device", "virtio-blk-device,drive=d0"]
        let input = Pipe()
        qemu.standardInput = input
        qemu.standardOutput = FileHandle.nullDevice
        qemu.standardError = FileHandle.nullDevice
        try qemu.run()
        input.fileHandleForWriting.write(Data("savevm fromqemu\nquit\n".utf8))
        qemu.waitUntilExit()
        let image = try Qcow2Image(path: path, readOnly: true)
        let snapshot = try #require(image.snapshots.first { $0.name == "fromqemu" })
        #expect(snapshot.vmStateBytes > 0)
        let bytes = try image.readVMState(snapshot: "fromqemu")
        #expect(bytes.count == Int(snapshot.vmStateBytes))
        #expect(Array(bytes.prefix(8)) == [0x51, 0x45, 0x56, 0x4d, 0, 0, 0, 3])
    }
}
