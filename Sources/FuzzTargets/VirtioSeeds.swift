/// Seeds for the virtio targets: the requests a Linux driver makes, as `VirtioFuzz` programs.
struct VirtioSeed {
    typealias Op = VirtioFuzz.Op
    var w = FuzzInputWriter()

    /// The header: device options, every feature accepted, queues of 32.
    init(options: UInt8 = 0, _ more: UInt8...) {
        w.u8(options)
        w.append(more)
        w.u64(0)
        for _ in 0..<4 { w.u8(0) }
    }

    /// A buffer list: readable buffers' contents, writable buffers' sizes.
    mutating func chain(_ q: UInt8, readable: [[UInt8]], writable: [UInt16], indirect: Bool = false, notify: Bool = true) {
        w.u8(Op.chain.rawValue)
        w.u8(q)
        w.u8(UInt8(readable.count + writable.count - 1) | (indirect ? 0x80 : 0))
        for r in readable {
            w.u8(0)
            w.u16(UInt16(r.count))
            w.append(Array(r.prefix(1024)))
        }
        for size in writable {
            w.u8(1)
            w.u16(size)
        }
        if notify { self.notify(q) }
    }

    mutating func notify(_ q: UInt8) {
        w.u8(Op.notify.rawValue)
        w.u8(q)
    }

    mutating func op(_ op: Op, _ operands: [UInt8] = []) {
        w.u8(op.rawValue)
        w.append(operands)
    }

    var bytes: [UInt8] { w.bytes }
}

func le<T: FixedWidthInteger>(_ value: T) -> [UInt8] {
    (0..<MemoryLayout<T>.size).map { UInt8(truncatingIfNeeded: value >> (8 * $0)) }
}

extension VirtioFuzz {
    static func blockSeeds() -> [(String, [UInt8])] {
        func header(_ type: UInt32, sector: UInt64) -> [UInt8] { le(type) + le(UInt32(0)) + le(sector) }
        var seeds: [(String, [UInt8])] = []
        var s = VirtioSeed(options: 8 << 2)
        s.chain(0, readable: [header(0, sector: 1)], writable: [512, 1])  // IN
        s.chain(0, readable: [header(1, sector: 2), [UInt8](repeating: 0xab, count: 512)], writable: [1])  // OUT
        s.chain(0, readable: [header(4, sector: 0)], writable: [1])  // FLUSH
        s.chain(0, readable: [header(8, sector: 0)], writable: [20, 1])  // GET_ID
        seeds.append(("rw", s.bytes))
        s = VirtioSeed(options: 8 << 2)
        // DISCARD and WRITE_ZEROES: one segment {sector u64, num_sectors u32, flags u32}.
        s.chain(0, readable: [header(11, sector: 0), le(UInt64(1)) + le(UInt32(2)) + le(UInt32(0))], writable: [1], indirect: true)
        s.chain(0, readable: [header(13, sector: 0), le(UInt64(3)) + le(UInt32(1)) + le(UInt32(1))], writable: [1])
        s.chain(0, readable: [header(0, sector: 7)], writable: [200, 312, 1], indirect: true)
        s.op(.acknowledge)
        seeds.append(("discard-zeroes", s.bytes))
        s = VirtioSeed(options: 1 | 2 | 4 << 2)  // read-only, failing
        s.chain(0, readable: [header(1, sector: 0), [UInt8](repeating: 1, count: 512)], writable: [1])
        s.op(.backend, [0])
        s.chain(0, readable: [header(0, sector: 0)], writable: [512, 1])
        seeds.append(("readonly-failing", s.bytes))
        return seeds
    }

    static func consoleSeeds() -> [(String, [UInt8])] {
        var s = VirtioSeed()
        s.chain(0, readable: [], writable: [64], notify: true)
        s.chain(0, readable: [], writable: [16], notify: true)
        s.op(.backend, [5] + Array("hello".utf8))
        s.chain(1, readable: [Array("console output\n".utf8)], writable: [])
        s.op(.configWrite, [8, 2] + le(UInt64(0x41)))  // emerg_wr
        s.op(.configRead, [0, 1])
        s.op(.acknowledge)
        return [("rx-tx", s.bytes)]
    }

    static func rngSeeds() -> [(String, [UInt8])] {
        var s = VirtioSeed()
        s.chain(0, readable: [], writable: [32])
        s.chain(0, readable: [], writable: [16, 16], indirect: true)
        var f = VirtioSeed(options: 1)
        f.chain(0, readable: [], writable: [8])
        return [("read", s.bytes), ("failing", f.bytes)]
    }

    static func inputSeeds() -> [(String, [UInt8])] {
        var s = VirtioSeed()
        // The driver's probe: select ID_NAME, then EV_BITS of EV_KEY; read what they answer.
        s.op(.configWrite, [0, 2] + le(UInt64(0x0001)))
        s.op(.configRead, [2, 1])
        s.op(.configWrite, [0, 2] + le(UInt64(0x0111)))
        s.op(.configRead, [8, 4])
        // Event buffers, the power button, an LED report on statusq.
        for _ in 0..<4 { s.chain(0, readable: [], writable: [8], notify: false) }
        s.notify(0)
        s.op(.backend, [0])
        s.chain(1, readable: [[0x11, 0, 1, 0, 1, 0, 0, 0]], writable: [])
        s.op(.acknowledge)
        return [("probe-button-led", s.bytes)]
    }

    static func balloonSeeds() -> [(String, [UInt8])] {
        // Linux's tell_host: le32 PFNs (4 KiB pages) of the buffer area, one out of RAM.
        func pfns(_ list: [UInt32]) -> [UInt8] { list.flatMap { le($0) } }
        let page = UInt32((VirtioFuzz.ramBase + VirtioFuzz.dataStart) >> 12)
        var s = VirtioSeed()
        s.op(.backend, [0] + le(UInt32(0x80)))  // target: 32 KiB of the 64
        s.chain(0, readable: [pfns([page, page + 1, page + 3, 0xffff_ffff])], writable: [])
        s.op(.configWrite, [4, 2] + le(UInt64(3)))  // actual = 3
        s.chain(1, readable: [pfns([page + 1])], writable: [])
        // Stats: le16 tag, le64 value records; then the host asks for more.
        s.chain(2, readable: [[4, 0, 0, 0, 0, 1, 0, 0, 0, 0, 5, 0, 0, 0, 0, 2, 0, 0, 0, 0]], writable: [])
        s.op(.backend, [1])
        return [("inflate-deflate-stats", s.bytes)]
    }

    static func netSeeds() -> [(String, [UInt8])] {
        let header = [UInt8](repeating: 0, count: 12)
        var frame: [UInt8] = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x52, 0x54, 0, 0x12, 0x34, 0x56, 0x08, 0x06]
        frame += [UInt8](repeating: 0x11, count: 46)
        var seeds: [(String, [UInt8])] = []
        // tx: plain, split header, indirect; then a TCP frame with a checksum request over a tap.
        var s = VirtioSeed(options: 0, 0)
        s.chain(1, readable: [header + frame], writable: [])
        s.chain(1, readable: [header, frame], writable: [], indirect: true)
        s.op(.acknowledge)
        seeds.append(("tx", s.bytes))
        var ipv4: [UInt8] = [0x52, 0x54, 0, 0x12, 0x34, 0x57, 0x52, 0x54, 0, 0x12, 0x34, 0x56, 0x08, 0x00]
        ipv4 += [0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, 6, 0, 0, 10, 0, 2, 15, 10, 0, 2, 2]
        ipv4 += [0x30, 0x39, 0, 80, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0]
        // flags NEEDS_CSUM, gso none, hdr_len, gso_size, csum_start 34, csum_offset 16.
        let csum: [UInt8] = [1, 0] + le(UInt16(54)) + le(UInt16(0)) + le(UInt16(34)) + le(UInt16(16)) + le(UInt16(0))
        s = VirtioSeed(options: 0xff, 0)
        s.chain(1, readable: [csum + ipv4], writable: [])
        let tso: [UInt8] = [1, 1] + le(UInt16(54)) + le(UInt16(1000)) + le(UInt16(34)) + le(UInt16(16)) + le(UInt16(0))
        s.chain(1, readable: [tso + ipv4], writable: [])
        seeds.append(("tx-offload", s.bytes))
        // rx: buffers posted, frames delivered, back-pressure.
        s = VirtioSeed(options: 0, 0x81)
        s.chain(0, readable: [], writable: [1526])
        s.chain(0, readable: [], writable: [12, 1514], indirect: true)
        s.op(.backend, [0] + le(UInt16(frame.count)) + frame)
        s.op(.backend, [0] + le(UInt16(frame.count)) + frame)
        s.op(.backend, [0] + le(UInt16(frame.count)) + frame)
        s.chain(1, readable: [header + frame], writable: [])
        s.chain(1, readable: [header + frame], writable: [])
        s.op(.backend, [9 << 2 | 1])
        s.op(.backend, [2])  // link down
        s.chain(1, readable: [header + frame], writable: [])
        s.op(.backend, [6])  // link up
        s.op(.backend, [3])  // stopped
        s.chain(1, readable: [header + frame], writable: [])
        s.op(.backend, [7])  // running
        seeds.append(("rx", s.bytes))
        // The control queue: promiscuous, all-multicast, MAC table, MAC address.
        s = VirtioSeed(options: 0, 0)
        s.chain(2, readable: [[0, 0], [1]], writable: [1])
        s.chain(2, readable: [[0, 1, 0]], writable: [1])
        let table: [UInt8] = le(UInt32(1)) + [0x52, 0x54, 0, 0, 0, 1] + le(UInt32(2)) + [0x01, 0, 0x5e, 0, 0, 1, 0x33, 0x33, 0, 0, 0, 1]
        s.chain(2, readable: [[1, 0], table], writable: [1])
        s.chain(2, readable: [[1, 1], [0x52, 0x54, 0, 0xaa, 0xbb, 0xcc]], writable: [1], indirect: true)
        s.chain(2, readable: [[9, 9]], writable: [1])
        s.op(.configRead, [0, 2])
        s.op(.configRead, [6, 1])
        seeds.append(("ctrl", s.bytes))
        return seeds
    }
}
