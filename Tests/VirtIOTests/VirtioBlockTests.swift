import Block
import DeviceModel
import Devices
import Glibc
import GuestMemory
import SystemSupport
import Testing
import VirtIO

typealias BlkType = VirtioBlock.RequestType
typealias BlkStatus = VirtioBlock.Status

/// A virtio-blk behind a fake guest, with request helpers shaped like Linux's virtio_blk:
/// one header descriptor, data descriptors, one status descriptor.
struct BlockHarness {
    let guest: FakeGuest
    let device: VirtioBlock

    init(backend: any BlockBackend, serial: String = "", ioThread: Bool = false, accept: (VirtioFeatures) -> VirtioFeatures = { $0 }) {
        device = ioThread ? try! VirtioBlock.withIOThread(backend: backend, serial: serial) : VirtioBlock(backend: backend, serial: serial)
        guest = FakeGuest(device: device)
        let accepted = guest.initialize(accept: accept)
        #expect(accepted)
    }

    static func header(_ type: UInt32, sector: UInt64) -> [UInt8] {
        le(type) + le(UInt32(0)) + le(sector)
    }

    /// Sends a request; returns the status byte, the data read back and the used length.
    @discardableResult
    func request(_ type: UInt32, sector: UInt64 = 0, out: [[UInt8]] = [], inSizes: [Int] = [],
                 indirect: Bool = false) -> (status: UInt8?, data: [UInt8], used: UInt32?) {
        let (_, writable) = guest.submit(queue: 0, readable: [BlockHarness.header(type, sector: sector)] + out,
                                         writable: inSizes + [1], indirect: indirect)
        let used = guest.takeUsed(queue: 0)
        guard used.count == 1 else { return (nil, [], nil) }
        var data: [UInt8] = []
        for (address, size) in zip(writable, inSizes) { data += guest.bytes(at: address, count: size) }
        let status = guest.bytes(at: writable[writable.count - 1], count: 1)[0]
        return (status, data, used[0].length)
    }

    func request(_ type: BlkType, sector: UInt64 = 0, out: [[UInt8]] = [], inSizes: [Int] = [],
                 indirect: Bool = false) -> (status: UInt8?, data: [UInt8], used: UInt32?) {
        request(type.rawValue, sector: sector, out: out, inSizes: inSizes, indirect: indirect)
    }

    static func segment(sector: UInt64, count: UInt32, flags: UInt32 = 0) -> [UInt8] {
        le(sector) + le(count) + le(flags)
    }
}

let ok = BlkStatus.ok.rawValue
let ioError = BlkStatus.ioError.rawValue
let unsupported = BlkStatus.unsupported.rawValue

func pattern(_ count: Int, seed: UInt8) -> [UInt8] {
    (0..<count).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ Int(seed)) }
}

@Suite struct VirtioBlockTests {
    @Test func configAndFeatures() throws {
        let file = TempFile(contents: [UInt8](repeating: 0, count: 64 * 512))
        let h = BlockHarness(backend: try RawImage(path: file.path))
        #expect(h.guest.reg(.deviceID) == 2)
        let offered = h.guest.deviceFeatures
        #expect(offered.isSuperset(of: [VirtioBlock.Feature.segMax, VirtioBlock.Feature.blockSize, VirtioBlock.Feature.flush,
                                        VirtioBlock.Feature.discard, VirtioBlock.Feature.writeZeroes, .version1]))
        #expect(!offered.contains(VirtioBlock.Feature.readOnly))
        #expect(h.guest.config(UInt64.self, at: 0) == 64)  // capacity
        #expect(h.guest.config(UInt32.self, at: 12) == 254)  // seg_max
        #expect(h.guest.config(UInt32.self, at: 20) == 512)  // blk_size
        #expect(h.guest.config(UInt32.self, at: 40) == VirtioBlock.maxDiscardSegments)
        #expect(h.guest.config(UInt32.self, at: 44) == 1)  // discard_sector_alignment
        #expect(h.guest.config(UInt8.self, at: 56) == 1)  // write_zeroes_may_unmap
        // Linux reads 64-bit fields as two 32-bit halves.
        #expect(h.guest.config(UInt32.self, at: 4) == 0)
    }

    /// With an I/O thread, notify returns before the disk is touched; the worker completes the
    /// requests in order (the read after the writes sees them) and raises the interrupt.
    @Test func ioThreadCompletesInOrder() throws {
        let file = TempFile(contents: [UInt8](repeating: 0, count: 64 * 512))
        let h = BlockHarness(backend: try RawImage(path: file.path), ioThread: true)
        var writable: [[GuestAddress]] = []
        for k in 0..<8 {
            let (_, w) = h.guest.submit(queue: 0, readable: [BlockHarness.header(BlkType.write.rawValue, sector: UInt64(k))] + [pattern(512, seed: UInt8(k))],
                                        writable: [1], indirect: false)
            writable.append(w)
        }
        let (_, readBack) = h.guest.submit(queue: 0, readable: [BlockHarness.header(BlkType.read.rawValue, sector: 0)],
                                           writable: [8 * 512, 1], indirect: false)
        var used: [UInt32] = []
        for _ in 0..<500 where used.count < 9 {
            used += h.guest.takeUsed(queue: 0).map(\.length)
            if used.count < 9 { usleep(10_000) }
        }
        #expect(used.count == 9)
        #expect(writable.allSatisfy { h.guest.bytes(at: $0[0], count: 1)[0] == ok })
        #expect(h.guest.bytes(at: readBack[0], count: 8 * 512) == (0..<8).flatMap { pattern(512, seed: UInt8($0)) })
    }

    @Test func writeThenReadOnARawFile() throws {
        let file = TempFile(contents: [UInt8](repeating: 0, count: 16 * 512))
        let h = BlockHarness(backend: try RawImage(path: file.path))
        let data = pattern(1024, seed: 3)
        let w = h.request(.write, sector: 2, out: [data])
        #expect(w.status == ok)
        #expect(w.used == 1)
        #expect(Array(file.contents()[1024..<2048]) == data)
        // Read back, scattered over three buffers.
        let r = h.request(.read, sector: 2, inSizes: [100, 412, 512])
        #expect(r.status == ok)
        #expect(r.data == data)
        #expect(r.used == 1025)
        #expect(h.request(.flush).status == ok)
        #expect(!h.guest.needsReset)
    }

    @Test func writeGatheredFromSeveralBuffers() throws {
        let disk = MemoryDisk(sectors: 8)
        let h = BlockHarness(backend: disk)
        let a = pattern(300, seed: 1)
        let b = pattern(212, seed: 2)
        #expect(h.request(.write, sector: 7, out: [a, b]).status == ok)
        #expect(Array(disk.data[7 * 512..<8 * 512]) == a + b)
    }

    @Test func indirectRequest() throws {
        let disk = MemoryDisk(sectors: 8)
        let h = BlockHarness(backend: disk)
        let r = h.request(.read, sector: 5, inSizes: [512], indirect: true)
        #expect(r.status == ok)
        #expect(r.data == [UInt8](repeating: 5, count: 512))
    }

    @Test func flushReachesTheBackend() {
        let disk = MemoryDisk(sectors: 8)
        let h = BlockHarness(backend: disk)
        #expect(h.request(.flush).status == ok)
        #expect(disk.state.withLock { $0.flushes } == 1)
    }

    @Test func getIDReportsThePaddedSerial() {
        let h = BlockHarness(backend: MemoryDisk(sectors: 8), serial: "swemu-disk-0")
        let r = h.request(.getID, inSizes: [20])
        #expect(r.status == ok)
        #expect(r.data == Array("swemu-disk-0".utf8) + [UInt8](repeating: 0, count: 8))
        // Longer serials are cut to 20 bytes.
        let long = BlockHarness(backend: MemoryDisk(sectors: 8), serial: String(repeating: "x", count: 30))
        #expect(long.request(.getID, inSizes: [20]).data == [UInt8](repeating: UInt8(ascii: "x"), count: 20))
    }

    @Test func discardAndWriteZeroesOnARawFile() throws {
        let file = TempFile(contents: [UInt8](repeating: 0xab, count: 64 * 512))
        let h = BlockHarness(backend: try RawImage(path: file.path))
        // Write-zeroes without and with unmap, two segments in one request.
        let wz = h.request(.writeZeroes, out: [BlockHarness.segment(sector: 1, count: 2) + BlockHarness.segment(sector: 8, count: 8, flags: 1)])
        #expect(wz.status == ok)
        var contents = file.contents()
        #expect(contents.count == 64 * 512)
        #expect(Array(contents[512..<1536]).allSatisfy { $0 == 0 })
        #expect(Array(contents[4096..<8192]).allSatisfy { $0 == 0 })
        #expect(contents[0] == 0xab && contents[1536] == 0xab && contents[8192] == 0xab)
        // Discard is advisory: OK, and the file keeps its size.
        #expect(h.request(.discard, out: [BlockHarness.segment(sector: 32, count: 16)]).status == ok)
        contents = file.contents()
        #expect(contents.count == 64 * 512)
        #expect(contents[0] == 0xab)
    }

    @Test func discardSegmentRules() {
        let disk = MemoryDisk(sectors: 64)
        let h = BlockHarness(backend: disk)
        // unmap on a discard, or unknown flags: UNSUPP.
        #expect(h.request(.discard, out: [BlockHarness.segment(sector: 0, count: 1, flags: 1)]).status == unsupported)
        #expect(h.request(.writeZeroes, out: [BlockHarness.segment(sector: 0, count: 1, flags: 2)]).status == unsupported)
        // Past the end, or a bad segment list: IOERR, and nothing was done.
        #expect(h.request(.discard, out: [BlockHarness.segment(sector: 0, count: 1) + BlockHarness.segment(sector: 60, count: 8)]).status == ioError)
        #expect(h.request(.discard, out: [[1, 2, 3]]).status == ioError)
        #expect(h.request(.discard, out: []).status == ioError)
        #expect(disk.state.withLock { $0.discards.isEmpty })
        let tooMany = (0..<33).flatMap { _ in BlockHarness.segment(sector: 0, count: 1) }
        #expect(h.request(.discard, out: [tooMany]).status == ioError)
        #expect(h.request(.discard, out: [BlockHarness.segment(sector: 4, count: 2)]).status == ok)
        #expect(disk.state.withLock { $0.discards.map(\.0) } == [2048])
    }

    @Test func discardNotNegotiatedIsUnsupported() {
        let h = BlockHarness(backend: MemoryDisk(sectors: 8),
                             accept: { $0.subtracting([VirtioBlock.Feature.discard, VirtioBlock.Feature.writeZeroes]) })
        #expect(h.request(.discard, out: [BlockHarness.segment(sector: 0, count: 1)]).status == unsupported)
        #expect(h.request(.writeZeroes, out: [BlockHarness.segment(sector: 0, count: 1)]).status == unsupported)
    }

    @Test(arguments: [
        (UInt64(8), 512),  // just past the end
        (UInt64(7), 1024),  // straddles the end
        (UInt64.max, 512),  // sector × 512 overflows
        (UInt64(1) << 50, 512),  // the offset fits in 64 bits but is far past the end
        (UInt64(0), 100),  // not a whole sector
    ])
    func outOfRangeOrUnalignedIsIOError(sector: UInt64, bytes: Int) {
        let disk = MemoryDisk(sectors: 8)
        let h = BlockHarness(backend: disk)
        #expect(h.request(.read, sector: sector, inSizes: [bytes]).status == ioError)
        #expect(h.request(.write, sector: sector, out: [[UInt8](repeating: 1, count: bytes)]).status == ioError)
        #expect(disk.data == MemoryDisk(sectors: 8).data)
        #expect(!h.guest.needsReset)
    }

    @Test func readOnlyDiskRefusesWrites() throws {
        let original = pattern(8 * 512, seed: 9)
        let file = TempFile(contents: original)
        let h = BlockHarness(backend: try RawImage(path: file.path, readOnly: true))
        let offered = h.guest.deviceFeatures
        #expect(offered.contains(VirtioBlock.Feature.readOnly))
        #expect(!offered.contains(VirtioBlock.Feature.discard))
        #expect(h.request(.write, sector: 0, out: [[UInt8](repeating: 0, count: 512)]).status == ioError)
        #expect(h.request(.writeZeroes, out: [BlockHarness.segment(sector: 0, count: 1)]).status != ok)
        #expect(h.request(.read, sector: 1, inSizes: [512]).data == Array(original[512..<1024]))
        #expect(h.request(.flush).status == ok)
        #expect(file.contents() == original)
    }

    @Test func unknownRequestTypesAreUnsupported() {
        let h = BlockHarness(backend: MemoryDisk(sectors: 8))
        #expect(h.request(BlkType.getLifetime, inSizes: [16]).status == unsupported)
        #expect(h.request(UInt32(99)).status == unsupported)
        #expect(h.request(BlkType.secureErase, out: [BlockHarness.segment(sector: 0, count: 1)]).status == unsupported)
    }

    @Test func backendFailureIsIOError() {
        let disk = MemoryDisk(sectors: 8)
        let h = BlockHarness(backend: disk)
        disk.state.withLock { $0.failing = true }
        #expect(h.request(.read, inSizes: [512]).status == ioError)
        #expect(h.request(.write, out: [[UInt8](repeating: 0, count: 512)]).status == ioError)
        #expect(h.request(.flush).status == ioError)
        disk.state.withLock { $0.failing = false }
        #expect(h.request(.flush).status == ok)
        #expect(!h.guest.needsReset)
    }

    /// Chains that are not requests: NEEDS_RESET, and the device works after a reset.
    @Test(arguments: ["short header", "no status", "status read-only", "header only writable"])
    func malformedRequestsNeedReset(kind: String) {
        let disk = MemoryDisk(sectors: 8)
        let h = BlockHarness(backend: disk)
        let header = BlockHarness.header(BlkType.read.rawValue, sector: 0)
        switch kind {
        case "short header":
            h.guest.submit(queue: 0, readable: [Array(header[0..<8])], writable: [512, 1])
        case "no status":
            h.guest.submit(queue: 0, readable: [header], writable: [])
        case "status read-only":
            h.guest.submit(queue: 0, readable: [header, [0]], writable: [])
        default:
            h.guest.submit(queue: 0, readable: [], writable: [16, 1])
        }
        #expect(h.guest.needsReset)
        #expect(h.guest.takeUsed(queue: 0).isEmpty)
        #expect(h.guest.acknowledgeInterrupt() == .configChange)
        h.guest.initialize()
        #expect(h.request(.read, sector: 3, inSizes: [512]).data == [UInt8](repeating: 3, count: 512))
    }

    @Test func manyRequestsWrapTheRings() {
        let disk = MemoryDisk(sectors: 8)
        let h = BlockHarness(backend: disk)
        for i in 0..<600 {
            let r = h.request(.read, sector: UInt64(i % 8), inSizes: [512])
            guard r.status == ok, r.data.first == UInt8(i % 8) else {
                Issue.record("request \(i) failed: \(String(describing: r.status))")
                return
            }
        }
        #expect(h.guest.usedIdx(queue: 0) == 600)
    }
}
