@testable import Block
import DeviceModel
import Foundation
import SystemSupport
import Testing

/// Crash safety of qcow2 under cache=writeback (DESIGN.md §6: nothing the guest flushed is
/// lost). A guest-like workload runs through the qcow2 driver while `ImageFileJournal`
/// records every write and sync the driver issues; the test then rebuilds the file as a
/// power loss could leave it — everything before the last sync, and any subset of the
/// sector-sized pieces written after it — at every sync and at random points between, and
/// asks of each: it opens, `check` finds at most leaks, and every sector holds what the
/// guest last wrote before its last completed flush, or something it wrote later.
@Suite struct Qcow2CrashTests {
    /// xorshift64: deterministic choices from a seed.
    struct Rng {
        var x: UInt64
        mutating func next() -> UInt64 {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17
            return x
        }
        mutating func below(_ n: UInt64) -> UInt64 { next() % n }
    }

    /// One guest operation and where the journal stood when it returned.
    struct Op {
        enum Kind { case write(UInt32), zero, flush, snapshot }
        var kind: Kind
        var sectors: Range<UInt64>
        /// Journal length when the operation returned.
        var end: Int
    }

    static let sector: UInt64 = 512

    /// A sector's contents: the write's tag and the sector's number, repeated, so that a
    /// sector from the wrong place or a torn one is recognised.
    static func pattern(tag: UInt32, sector: UInt64) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: Int(Self.sector))
        for i in stride(from: 0, to: bytes.count, by: 16) {
            bytes.putBE64(UInt64(tag), at: i)
            bytes.putBE64(sector, at: i + 8)
        }
        return bytes
    }

    /// Files as a power loss could leave them: `durable` is the file with every event before
    /// the last sync applied; `crash(at:)` adds the events after it, each 512-byte piece of a
    /// write kept or lost at random (a disk keeps whole sectors), or all of them (`keepAll`:
    /// a `kill -9`, where the page cache survives). Crash points must come in order.
    struct Replay {
        let events: [ImageFileJournal.Event]
        var durable: [UInt8]
        var applied = 0  // events folded into `durable`

        static func apply(_ event: ImageFileJournal.Event, to file: inout [UInt8], keep: (Int) -> Bool = { _ in true }) {
            switch event {
            case .sync: return
            case .truncate(let length):
                if Int(length) < file.count { file.removeLast(file.count - Int(length)) } else {
                    file += [UInt8](repeating: 0, count: Int(length) - file.count)
                }
            case .write(let offset, let bytes):
                var at = 0
                while at < bytes.count {
                    let pieceEnd = min(bytes.count, Int((offset + UInt64(at)) / sector + 1) * Int(sector) - Int(offset))
                    if keep(at) {
                        let start = Int(offset) + at, end = Int(offset) + pieceEnd
                        if end > file.count { file += [UInt8](repeating: 0, count: end - file.count) }
                        file.replaceSubrange(start..<end, with: bytes[at..<pieceEnd])
                    }
                    at = pieceEnd
                }
            }
        }

        mutating func crash(at prefix: Int, rng: inout Rng, keepAll: Bool) -> [UInt8] {
            let lastSync = events[..<prefix].lastIndex(of: .sync) ?? -1
            while applied < lastSync {
                Replay.apply(events[applied], to: &durable)
                applied += 1
            }
            var file = durable
            for event in events[max(applied, 0)..<prefix] {
                Replay.apply(event, to: &file) { _ in keepAll || rng.below(2) == 0 }
            }
            return file
        }
    }

    /// Per sector, the values a crash may leave: the last one written before the flush at op
    /// index `flushed` (0 when none was), and any written after it.
    static func allowedValues(ops: [Op], flushed: Int?, sectors: Int) -> [Set<UInt32>] {
        var allowed = [Set<UInt32>](repeating: [0], count: sectors)
        for (index, op) in ops.enumerated() {
            let value: UInt32
            switch op.kind {
            case .write(let t): value = t
            case .zero: value = 0
            default: continue
            }
            for s in op.sectors {
                if let flushed, index < flushed { allowed[Int(s)] = [value] } else { allowed[Int(s)].insert(value) }
            }
        }
        return allowed
    }

    /// The first sector that holds neither zeroes nor one whole allowed `pattern`, described.
    static func firstWrongSector(_ disk: [UInt8], allowed: [Set<UInt32>]) -> String? {
        for s in 0..<allowed.count {
            let base = s * Int(sector)
            let tag = disk.be64(base)
            var whole = true
            for i in stride(from: 0, to: Int(sector), by: 16) {
                let (t, n) = (disk.be64(base + i), disk.be64(base + i + 8))
                if tag == 0 ? (t != 0 || n != 0) : (t != tag || n != UInt64(s)) { whole = false; break }
            }
            if !whole { return "sector \(s) holds garbage (tag \(tag)), expected one of \(allowed[s].sorted())" }
            if !allowed[s].contains(UInt32(truncatingIfNeeded: tag)) {
                return "sector \(s) holds write \(tag), expected one of \(allowed[s].sorted())"
            }
        }
        return nil
    }

    @Test(arguments: [(UInt64(512), UInt64(1)), (4096, 2), (65536, 3)])
    func powerLossLeavesAtMostLeaks(clusterSize: UInt64, seed: UInt64) throws {
        let dir = TempDirectory()
        let path = dir.file("crash.qcow2")
        var options = Qcow2CreateOptions()
        options.clusterSize = clusterSize
        let diskSize: UInt64 = clusterSize == 65536 ? 8 << 20 : 2 << 20
        try Qcow2Image.create(path: path, size: diskSize, options: options)
        let base = try FileDescriptor.readWholeFile(path, limit: 1 << 26)

        // The workload, recording where in the journal each operation ended.
        var ops: [Op] = []
        var events: [ImageFileJournal.Event] = []
        do {
            ImageFileJournal.start(path: path)
            var rng = Rng(x: seed)
            var tag: UInt32 = 0
            let image = try Qcow2Image(path: path, readOnly: false)
            let sectors = diskSize / Self.sector
            func journalLength() -> Int {
                // Peek: stop and restart keeps the events (stop returns them, start clears).
                let so_far = ImageFileJournal.stop(path: path)
                events += so_far
                ImageFileJournal.start(path: path)
                return events.count
            }
            for step in 0..<260 {
                let choice = rng.below(100)
                let start = rng.below(4) == 0 ? rng.below(sectors) : rng.below(sectors / 4) + (rng.below(2) * sectors / 2)
                let count = min(sectors - start, 1 + rng.below(rng.below(3) == 0 ? 300 : 24))
                let range = start..<(start + count)
                switch choice {
                case 0..<62:
                    tag += 1
                    var data: [UInt8] = []
                    data.reserveCapacity(Int(count * Self.sector))
                    for s in range { data += Self.pattern(tag: tag, sector: s) }
                    try image.write(at: start * Self.sector, data)
                    ops.append(Op(kind: .write(tag), sectors: range, end: journalLength()))
                case 62..<76:
                    if rng.below(2) == 0 {
                        try image.writeZeroes(at: start * Self.sector, count: count * Self.sector, mayUnmap: rng.below(2) == 0)
                        ops.append(Op(kind: .zero, sectors: range, end: journalLength()))
                    } else {
                        let cs = clusterSize / Self.sector
                        let first = (start + cs - 1) / cs * cs, last = (start + count) / cs * cs
                        if first < last {
                            try image.discard(at: first * Self.sector, count: (last - first) * Self.sector)
                            ops.append(Op(kind: .zero, sectors: first..<last, end: journalLength()))
                        }
                    }
                case 76..<92:
                    try image.flush()
                    ops.append(Op(kind: .flush, sectors: 0..<0, end: journalLength()))
                default:
                    if step % 60 == 5 {
                        try image.createSnapshot(name: "s\(step)")
                        try image.flush()
                        ops.append(Op(kind: .snapshot, sectors: 0..<0, end: journalLength()))
                    }
                }
            }
            events += ImageFileJournal.stop(path: path)
            try image.close()
        }
        #expect(events.contains(.sync))

        // Crash points: just before and after every sync (a sample of them when there are
        // many), and random points between.
        var rng = Rng(x: seed &* 7919)
        var points = Set<Int>()
        let syncs = events.indices.filter { events[$0] == .sync }
        let every = max(1, syncs.count / 45)
        for (k, index) in syncs.enumerated() where k % every == 0 { points.insert(index); points.insert(index + 1) }
        for _ in 0..<45 { points.insert(Int(rng.below(UInt64(events.count))) + 1) }
        var replay = Replay(events: events, durable: base)
        var checked = 0, leaky = 0
        var allowedCache: [Int: [Set<UInt32>]] = [:]
        var failures: [String] = []
        let crashPath = dir.file("after-crash.qcow2")
        for prefix in points.sorted() where prefix <= events.count {
            // Attempt 0: a power loss (any subset of the unsynced writes); 1: a kill -9 (all of them).
            for attempt in 0..<2 {
                let bytes = replay.crash(at: prefix, rng: &rng, keepAll: attempt == 1)
                try writeFile(crashPath, bytes)
                let where_ = "crash after event \(prefix)/\(events.count), attempt \(attempt)"
                // Which operations are durable: those before the last flush whose sync is in.
                let lastSync = events[..<prefix].lastIndex(of: .sync).map { $0 + 1 } ?? 0
                let flushed = ops.lastIndex { op in
                    if case .flush = op.kind { return op.end <= lastSync }
                    if case .snapshot = op.kind { return op.end <= lastSync }
                    return false
                }
                let inSnapshot = ops.contains { op in
                    guard case .snapshot = op.kind else { return false }
                    let begin = ops.last { $0.end < op.end }?.end ?? 0
                    return begin < prefix && prefix < op.end
                }
                do {
                    let result = try Qcow2Image(path: crashPath, readOnly: true, backingMode: .skip, forCheck: true).check(repair: .none)
                    checked += 1
                    if result.leaks > 0 { leaky += 1 }
                    // Creating a snapshot changes refcounts and COPIED flags in many places: a
                    // crash in the middle may leave flags behind their refcounts, as in QEMU
                    // (check -r all sets them). Nothing else may be wrong.
                    let onlyFlags = result.messages.allSatisfy { $0.contains("OFLAG_COPIED") || $0.hasPrefix("Leaked") }
                    if result.corruptions > 0 && !(inSnapshot && onlyFlags) || result.checkErrors > 0 {
                        failures.append("\(where_): \(result.corruptions) corruptions: \(result.messages.filter { !$0.hasPrefix("Leaked") }.prefix(6))")
                        continue
                    }
                    let image = try Qcow2Image(path: crashPath, readOnly: true)
                    let disk = try image.read(at: 0, count: Int(diskSize))
                    let allowed = allowedCache[flushed ?? -1] ?? Self.allowedValues(ops: ops, flushed: flushed, sectors: Int(diskSize / Self.sector))
                    allowedCache[flushed ?? -1] = allowed
                    if let problem = Self.firstWrongSector(disk, allowed: allowed) { failures.append("\(where_): \(problem)") }
                } catch {
                    failures.append("\(where_): \(error)")
                }
            }
            if failures.count > 5 { break }
        }
        #expect(failures.isEmpty, "\(failures.prefix(5).joined(separator: "\n"))")
        #expect(checked > 30)
        print("qcow2 crash test (cluster \(clusterSize)): \(events.count) events, \(checked) crash images checked, \(leaky) with leaks")
    }
}
