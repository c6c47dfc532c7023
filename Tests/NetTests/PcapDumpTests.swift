import DeviceModel
import Foundation
import Glibc
@testable import Net
import Synchronization
import SystemSupport
import TestSupport
import Testing

/// A backend with no I/O: records what the guest sends, delivers what the test injects.
final class LoopbackFakeBackend: NetBackend {
    let id = "fake"
    let info = "fake backend"
    private let state = Mutex<(sent: [[UInt8]], frontend: (any NetFrontend)?, ready: Int, closed: Bool)>(([], nil, 0, false))

    func attach(_ frontend: (any NetFrontend)?) { state.withLock { $0.frontend = frontend } }
    func send(_ frame: [UInt8]) -> Bool {
        state.withLock { $0.sent.append(frame) }
        return true
    }
    func frontendReady() { state.withLock { $0.ready += 1 } }
    func close() { state.withLock { $0.closed = true } }

    /// Offers `frame` to the attached NIC, as a backend's I/O thread would.
    func inject(_ frame: [UInt8]) -> Bool { state.withLock { $0.frontend }?.receive(frame) ?? false }
    var sent: [[UInt8]] { state.withLock { $0.sent } }
    var readyCalls: Int { state.withLock { $0.ready } }
    var closed: Bool { state.withLock { $0.closed } }
}

/// A classic pcap file, parsed independently of the writer.
struct PcapFile {
    struct Record: Equatable {
        var seconds: UInt32
        var microseconds: UInt32
        var included: Int
        var original: Int
        var data: [UInt8]
    }
    var magic: UInt32
    var major: UInt16
    var minor: UInt16
    var snaplen: UInt32
    var linktype: UInt32
    var records: [Record] = []

    init?(_ bytes: [UInt8]) {
        func u32(_ at: Int) -> UInt32 { UInt32(bytes[at]) | UInt32(bytes[at + 1]) << 8 | UInt32(bytes[at + 2]) << 16 | UInt32(bytes[at + 3]) << 24 }
        func u16(_ at: Int) -> UInt16 { UInt16(bytes[at]) | UInt16(bytes[at + 1]) << 8 }
        guard bytes.count >= 24 else { return nil }
        magic = u32(0)
        major = u16(4)
        minor = u16(6)
        snaplen = u32(16)
        linktype = u32(20)
        var at = 24
        while at + 16 <= bytes.count {
            let included = Int(u32(at + 8))
            guard at + 16 + included <= bytes.count else { return nil }
            records.append(Record(seconds: u32(at), microseconds: u32(at + 4), included: included, original: Int(u32(at + 12)),
                                  data: Array(bytes[(at + 16)..<(at + 16 + included)])))
            at += 16 + included
        }
        guard at == bytes.count else { return nil }
    }
}

@Suite("filter-dump pcap writer")
struct PcapDumpTests {
    @Test("frames of both directions appear in order with correct headers")
    func bothDirections() throws {
        let path = NetTestKit.temporaryPath("dump.pcap")
        defer { unlink(path) }
        let inner = LoopbackFakeBackend()
        let before = UInt32(time(nil))
        let dump = try PcapDump.wrap(inner, file: path, maxlen: PcapDump.defaultMaxlen)
        #expect(dump.id == "fake" && dump.info == "fake backend")
        let nic = FakeNIC()
        dump.attach(nic)
        let out1 = NetTestKit.frame(size: 60, tag: 1), in1 = NetTestKit.frame(size: 1514, tag: 2)
        let out2 = NetTestKit.frame(size: 65535, tag: 3), in2 = NetTestKit.frame(size: 14, tag: 4)
        #expect(dump.send(out1))
        #expect(inner.inject(in1))
        #expect(dump.send(out2))
        nic.setAccepting(false)
        #expect(!inner.inject(in2), "refused: not recorded")
        nic.setAccepting(true)
        #expect(inner.inject(in2), "offered again: recorded once")
        dump.frontendReady()
        #expect(inner.readyCalls == 1)
        dump.close()
        #expect(inner.closed)
        #expect(inner.sent == [out1, out2])
        #expect(nic.frames == [in1, in2])

        let file = try #require(PcapFile(try FileDescriptor.readWholeFile(path, limit: 1 << 20)))
        #expect(file.magic == 0xa1b2_c3d4 && file.major == 2 && file.minor == 4)
        #expect(file.snaplen == 65536 && file.linktype == 1)
        #expect(file.records.map(\.data) == [out1, in1, out2, in2])
        #expect(file.records.map(\.original) == [60, 1514, 65535, 14])
        #expect(file.records.allSatisfy { $0.included == $0.original && $0.seconds >= before && $0.seconds <= before + 60 && $0.microseconds < 1_000_000 })
    }

    @Test("maxlen cuts each record but keeps the original length")
    func truncation() throws {
        let path = NetTestKit.temporaryPath("cut.pcap")
        defer { unlink(path) }
        let inner = LoopbackFakeBackend()
        let dump = try PcapDump.wrap(inner, file: path, maxlen: 20)
        dump.attach(FakeNIC())
        let long = NetTestKit.frame(size: 100, tag: 9), short = NetTestKit.frame(size: 14, tag: 8)
        _ = dump.send(long)
        _ = inner.inject(short)
        dump.close()
        let file = try #require(PcapFile(try FileDescriptor.readWholeFile(path, limit: 1 << 20)))
        #expect(file.snaplen == 20)
        #expect(file.records.map(\.included) == [20, 14])
        #expect(file.records.map(\.original) == [100, 14])
        #expect(file.records.map(\.data) == [Array(long.prefix(20)), short])
    }

    @Test("bad maxlen and an unwritable file are refused")
    func errors() {
        #expect(throws: SystemError.self) { try PcapDump.wrap(LoopbackFakeBackend(), file: NetTestKit.temporaryPath("x"), maxlen: 0) }
        do {
            _ = try PcapDump.wrap(LoopbackFakeBackend(), file: "/nonexistent-dir/x.pcap", maxlen: 100)
            Issue.record("an unwritable file must fail")
        } catch {
            #expect("\(error)" == "-object filter-dump: cannot open '/nonexistent-dir/x.pcap': No such file or directory")
        }
    }

    @Test("Python's struct reads the file the same way (an independent reader)",
          .disabled(if: access(Python.executable, X_OK) != 0, "no Python to run (\(Python.origin))"))
    func pythonReads() throws {
        let python = Python.executable
        let path = NetTestKit.temporaryPath("py.pcap")
        defer { unlink(path) }
        let inner = LoopbackFakeBackend()
        let dump = try PcapDump.wrap(inner, file: path, maxlen: 1000)
        dump.attach(FakeNIC())
        _ = dump.send(NetTestKit.frame(size: 1514, tag: 1))
        _ = inner.inject(NetTestKit.frame(size: 60, tag: 2))
        dump.close()
        let script = """
        import struct, sys
        d = open(sys.argv[1], 'rb').read()
        magic, major, minor, zone, sig, snap, link = struct.unpack('<IHHiIII', d[:24])
        assert magic == 0xa1b2c3d4, hex(magic)
        out = [f'{major}.{minor} {snap} {link}']
        at = 24
        while at < len(d):
            s, us, incl, orig = struct.unpack('<IIII', d[at:at+16])
            out.append(f'{incl}/{orig} {d[at+16:at+20].hex()}')
            at += 16 + incl
        print(';'.join(out))
        """
        let process = Process()
        process.executableURL = URL(fileURLWithPath: python)
        process.arguments = ["-c", script, path]
        let pipe = Pipe()
        process.standardOutput = pipe
        try process.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        #expect(process.terminationStatus == 0)
        #expect(String(decoding: data, as: UTF8.self) == "2.4 1000 1;1000/1514 00000001;60/60 00000002\n")
    }
}
