import CLinux
import DeviceModel
import Glibc
@testable import Net
import Synchronization
import SystemSupport
import Testing

// MARK: helpers shared by the socket, tap and pcap tests

/// A NIC that records what it receives, can refuse it, and counts `backendReady()`.
final class FakeNIC: NetFrontend {
    private let state = Mutex<(frames: [[UInt8]], accepting: Bool, ready: Int)>(([], true, 0))

    init(accepting: Bool = true) { state.withLock { $0.accepting = accepting } }

    func receive(_ frame: [UInt8]) -> Bool {
        state.withLock { s in
            guard s.accepting else { return false }
            s.frames.append(frame)
            return true
        }
    }

    func backendReady() { state.withLock { $0.ready += 1 } }

    var frames: [[UInt8]] { state.withLock { $0.frames } }
    var readyCalls: Int { state.withLock { $0.ready } }
    func setAccepting(_ on: Bool) { state.withLock { $0.accepting = on } }

    /// Waits until `count` frames arrived (or `seconds` passed) and returns them.
    func waitFrames(_ count: Int, seconds: Double = 5) -> [[UInt8]] {
        _ = NetTestKit.eventually(seconds) { frames.count >= count }
        return frames
    }
}

enum NetTestKit {
    /// An event loop on its own thread for the duration of `body`.
    static func withLoop<R>(_ body: (EventLoop) throws -> R) throws -> R {
        let loop = try EventLoop()
        try loop.start(name: "net-test")
        defer { loop.stop() }
        return try body(loop)
    }

    /// Polls `condition` until it holds or `seconds` pass (a deadline, not a sleep).
    static func eventually(_ seconds: Double = 5, _ condition: () -> Bool) -> Bool {
        let deadline = monotonicSeconds() + seconds
        while monotonicSeconds() < deadline {
            if condition() { return true }
            usleep(1000)
        }
        return condition()
    }

    static func monotonicSeconds() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
    }

    /// A unique path in the temporary directory.
    static func temporaryPath(_ name: String) -> String {
        let dir = getenv("TMPDIR").map { String(cString: $0) } ?? "/tmp"
        return "\(dir)/swemu-net-\(getpid())-\(UInt32.random(in: 0...UInt32.max))-\(name)"
    }

    static func netdev(_ text: String) throws -> QemuOpts {
        try QemuOpts(parsing: text, impliedKey: "type", option: "-netdev")
    }

    /// Builds a backend from a whole `-netdev` string.
    static func make(_ text: String, loop: EventLoop) throws -> any NetBackend {
        let options = try netdev(text)
        return try NetBackends.makeSocketFamily(type: options.implied ?? "", id: options.string("id") ?? "n", options: options, loop: loop)
    }

    /// The message of the error `text` fails with ("" when it does not fail).
    static func failure(_ text: String, loop: EventLoop) -> String {
        do {
            let backend = try make(text, loop: loop)
            backend.close()
            return ""
        } catch {
            return "\(error)"
        }
    }

    /// A frame of `size` bytes whose first bytes carry `tag` (to check order) and the rest a
    /// pattern from it.
    static func frame(size: Int, tag: UInt32) -> [UInt8] {
        var bytes = Array(pattern.prefix(size))
        for i in 0..<min(4, size) { bytes[i] = UInt8(truncatingIfNeeded: tag >> (24 - 8 * UInt32(i))) }
        if size > 4 { bytes[size - 1] = UInt8(truncatingIfNeeded: tag &* 13) }
        return bytes
    }

    /// Bytes that differ from their neighbours, so a shifted or lost chunk shows.
    private static let pattern: [UInt8] = (0..<65536).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ $0 >> 8) }

    /// A port that was free a moment ago (for UDP peers that must know each other's port).
    static func freePort(_ type: Int32) -> UInt16 {
        let fd = socket(AF_INET, type, 0)
        defer { Glibc.close(fd) }
        var sin = sockaddr_in()
        sin.sin_family = sa_family_t(AF_INET)
        sin.sin_addr.s_addr = UInt32(0x7f00_0001).bigEndian
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        // SAFETY: sin is a whole sockaddr_in; bind reads and getsockname writes at most its size.
        withUnsafeMutablePointer(to: &sin) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { a in
                _ = bind(fd, a, length)
                _ = getsockname(fd, a, &length)
            }
        }
        return UInt16(bigEndian: sin.sin_port)
    }

    /// A connected raw TCP client (blocking) to 127.0.0.1:`port`.
    static func rawClient(port: UInt16) -> Int32 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var sin = sockaddr_in()
        sin.sin_family = sa_family_t(AF_INET)
        sin.sin_port = port.bigEndian
        sin.sin_addr.s_addr = UInt32(0x7f00_0001).bigEndian
        // SAFETY: sin is a whole sockaddr_in, read by connect during the call.
        let rc = withUnsafePointer(to: &sin) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        return rc == 0 ? fd : -1
    }

    /// True once the peer closed `fd` (read gives 0 or an error) within `seconds`.
    static func seesEOF(_ fd: Int32, seconds: Double = 5) -> Bool {
        let deadline = monotonicSeconds() + seconds
        var buffer = [UInt8](repeating: 0, count: 256)
        while monotonicSeconds() < deadline {
            var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            guard poll(&p, 1, 20) > 0 else { continue }
            let n = recv(fd, &buffer, buffer.count, Int32(MSG_DONTWAIT))
            if n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR) { return true }
        }
        return false
    }
}

// MARK: stream

@Suite("Socket network backends")
struct SocketBackendTests {
    static let sizes = [14, 60, 1514, 4000, 9018, 65535]

    /// Server and client, each with a NIC, exchange frames both ways.
    private func exchange(_ a: any NetBackend, _ b: any NetBackend, nicA: FakeNIC, nicB: FakeNIC, base: UInt32 = 0) {
        let forward = Self.sizes.enumerated().map { NetTestKit.frame(size: $1, tag: base + UInt32($0)) }
        let backward = Self.sizes.reversed().enumerated().map { NetTestKit.frame(size: $1, tag: base + 100 + UInt32($0)) }
        let before = (nicA.frames.count, nicB.frames.count)
        for f in forward { _ = a.send(f) }
        for f in backward { _ = b.send(f) }
        let gotB = Array(nicB.waitFrames(before.1 + forward.count).dropFirst(before.1))
        let gotA = Array(nicA.waitFrames(before.0 + backward.count).dropFirst(before.0))
        #expect(gotB == forward, "frames A→B arrive whole and in order")
        #expect(gotA == backward, "frames B→A arrive whole and in order")
    }

    @Test("stream over TCP and unix sockets carries frames both ways", arguments: ["inet", "unix"])
    func streamExchange(kind: String) throws {
        try NetTestKit.withLoop { loop in
            let path = NetTestKit.temporaryPath("stream.sock")
            defer { unlink(path) }
            let address = kind == "inet" ? "addr.type=inet,addr.host=127.0.0.1,addr.port=0" : "addr.type=unix,addr.path=\(path)"
            let server = try StreamBackend(id: "s", options: NetTestKit.netdev("stream,id=s,server=on,\(address)"), loop: loop)
            defer { server.close() }
            let port = server.boundPort ?? 0
            #expect(server.info == (kind == "inet" ? "listening on tcp:127.0.0.1:\(port)" : "listening on unix:\(path)"))
            let clientAddress = kind == "inet" ? "addr.type=inet,addr.host=127.0.0.1,addr.port=\(port)" : address
            let client = try NetTestKit.make("stream,id=c,server=off,\(clientAddress)", loop: loop)
            defer { client.close() }
            #expect(client.info == (kind == "inet" ? "connected to tcp:127.0.0.1:\(port)" : "connected to unix:\(path)"))
            let nicS = FakeNIC(), nicC = FakeNIC()
            server.attach(nicS)
            client.attach(nicC)
            #expect(NetTestKit.eventually { server.isConnected })
            exchange(client, server, nicA: nicC, nicB: nicS)
            #expect(server.info.hasPrefix(kind == "inet" ? "connection from tcp:127.0.0.1:" : "connection on unix:\(path)"))
        }
    }

    @Test("a server drops frames while no peer is connected and serves the next client")
    func reconnect() throws {
        try NetTestKit.withLoop { loop in
            let server = try StreamBackend(id: "s", options: NetTestKit.netdev("stream,id=s,server=on,addr.type=inet,addr.host=127.0.0.1,addr.port=0"), loop: loop)
            defer { server.close() }
            let nicS = FakeNIC()
            server.attach(nicS)
            #expect(server.send(NetTestKit.frame(size: 60, tag: 1)), "no peer: taken and dropped")
            #expect(server.counters.transmitDropped == 1)
            let target = "stream,id=c,addr.type=inet,addr.host=127.0.0.1,addr.port=\(server.boundPort ?? 0)"

            let first = try NetTestKit.make(target, loop: loop)
            let nic1 = FakeNIC()
            first.attach(nic1)
            #expect(NetTestKit.eventually { server.isConnected })
            exchange(first, server, nicA: nic1, nicB: nicS)
            first.close()
            #expect(NetTestKit.eventually { !server.isConnected }, "the server notices the peer left")
            #expect(server.info.hasPrefix("listening on tcp:127.0.0.1:"))
            _ = server.send(NetTestKit.frame(size: 60, tag: 2))
            #expect(server.counters.transmitDropped == 2)

            let second = try NetTestKit.make(target, loop: loop)
            defer { second.close() }
            let nic2 = FakeNIC()
            second.attach(nic2)
            #expect(NetTestKit.eventually { server.isConnected })
            exchange(second, server, nicA: nic2, nicB: nicS, base: 1000)
            #expect(server.connectionCount == 2)
            #expect(nic2.frames.allSatisfy { $0 != NetTestKit.frame(size: 60, tag: 2) }, "frames dropped meanwhile never arrive")
        }
    }

    @Test("a bad length from the peer closes that connection; the next peer is served", arguments: [
        [UInt8]([0, 0, 0, 0]), [0x00, 0x01, 0x10, 0x01], [0xff, 0xff, 0xff, 0xff],
    ])
    func malformedLength(header: [UInt8]) throws {
        try NetTestKit.withLoop { loop in
            let server = try StreamBackend(id: "s", options: NetTestKit.netdev("stream,id=s,server=on,addr.type=inet,addr.host=127.0.0.1,addr.port=0"), loop: loop)
            defer { server.close() }
            let nic = FakeNIC()
            server.attach(nic)
            let port = server.boundPort ?? 0
            let bad = NetTestKit.rawClient(port: port)
            #expect(bad >= 0)
            defer { Glibc.close(bad) }
            let good = [UInt8]([0, 0, 0, 14]) + NetTestKit.frame(size: 14, tag: 7)
            _ = (good + header + [UInt8](repeating: 0xee, count: 100)).withUnsafeBytes { Glibc.send(bad, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            #expect(NetTestKit.seesEOF(bad), "the server closes the connection")
            #expect(server.counters.malformed == 1)
            #expect(nic.waitFrames(1) == [NetTestKit.frame(size: 14, tag: 7)], "the frame before the bad length was delivered")

            let next = NetTestKit.rawClient(port: port)
            defer { Glibc.close(next) }
            _ = good.withUnsafeBytes { Glibc.send(next, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            #expect(nic.waitFrames(2).count == 2, "the next peer is served")
        }
    }

    @Test("connecting to a port with no listener names the address and the reason")
    func connectRefused() throws {
        try NetTestKit.withLoop { loop in
            let port = NetTestKit.freePort(Int32(SOCK_STREAM.rawValue))
            let message = NetTestKit.failure("stream,id=c,server=off,addr.type=inet,addr.host=127.0.0.1,addr.port=\(port)", loop: loop)
            #expect(message == "-netdev stream: cannot connect to tcp:127.0.0.1:\(port): Connection refused")
            let path = NetTestKit.temporaryPath("none.sock")
            #expect(NetTestKit.failure("stream,id=c,addr.type=unix,addr.path=\(path)", loop: loop)
                    == "-netdev stream: cannot connect to unix:\(path): No such file or directory")
        }
    }

    @Test("back-pressure: a refusing NIC fills the sender's queue; everything arrives after frontendReady")
    func backPressure() throws {
        try NetTestKit.withLoop { loop in
            let server = try StreamBackend(id: "s", options: NetTestKit.netdev("stream,id=s,server=on,addr.type=inet,addr.host=127.0.0.1,addr.port=0"), loop: loop)
            defer { server.close() }
            let client = try NetTestKit.make("stream,id=c,addr.type=inet,addr.host=127.0.0.1,addr.port=\(server.boundPort ?? 0)", loop: loop)
            defer { client.close() }
            let nicS = FakeNIC(accepting: false), nicC = FakeNIC()
            server.attach(nicS)
            client.attach(nicC)
            #expect(NetTestKit.eventually { server.isConnected })
            var sent: [[UInt8]] = []
            let deadline = NetTestKit.monotonicSeconds() + 10
            var full = false
            while !full && NetTestKit.monotonicSeconds() < deadline {
                let frame = NetTestKit.frame(size: 65535, tag: UInt32(sent.count))
                sent.append(frame)
                full = !client.send(frame)
                if sent.count % 32 == 0 { usleep(2000) }  // let the loop push into the kernel
            }
            #expect(full, "send returns false once the queue is full (\(sent.count) frames sent)")
            #expect(nicS.frames.isEmpty)
            // (No check that backendReady has not come yet: the loop may already have pushed
            // half the queue into the kernel's socket buffer, which is what it is for.)
            nicS.setAccepting(true)
            server.frontendReady()
            let got = nicS.waitFrames(sent.count, seconds: 10)
            #expect(got.count == sent.count)
            #expect(got == sent, "every frame arrives, in order")
            #expect(NetTestKit.eventually { nicC.readyCalls >= 1 }, "the sender hears backendReady")
        }
    }

    // MARK: dgram and legacy socket

    @Test("dgram over UDP on 127.0.0.1 carries frames both ways")
    func dgramUDP() throws {
        try NetTestKit.withLoop { loop in
            let udp = Int32(SOCK_DGRAM.rawValue)
            let pa = NetTestKit.freePort(udp), pb = NetTestKit.freePort(udp)
            let a = try NetTestKit.make("dgram,id=a,local.type=inet,local.host=127.0.0.1,local.port=\(pa),remote.type=inet,remote.host=127.0.0.1,remote.port=\(pb)", loop: loop)
            defer { a.close() }
            let b = try NetTestKit.make("dgram,id=b,local.type=inet,local.host=127.0.0.1,local.port=\(pb),remote.type=inet,remote.host=127.0.0.1,remote.port=\(pa)", loop: loop)
            defer { b.close() }
            #expect(a.info == "udp=127.0.0.1:\(pa)/127.0.0.1:\(pb)")
            let nicA = FakeNIC(), nicB = FakeNIC()
            a.attach(nicA)
            b.attach(nicB)
            exchange(a, b, nicA: nicA, nicB: nicB, smallOnly: true)
        }
    }

    @Test("dgram over unix datagram sockets carries frames both ways")
    func dgramUnix() throws {
        try NetTestKit.withLoop { loop in
            let pathA = NetTestKit.temporaryPath("a.sock"), pathB = NetTestKit.temporaryPath("b.sock")
            let a = try NetTestKit.make("dgram,id=a,local.type=unix,local.path=\(pathA),remote.type=unix,remote.path=\(pathB)", loop: loop)
            let b = try NetTestKit.make("dgram,id=b,local.type=unix,local.path=\(pathB),remote.type=unix,remote.path=\(pathA)", loop: loop)
            #expect(a.info == "udp=\(pathA):\(pathB)")
            let nicA = FakeNIC(), nicB = FakeNIC()
            a.attach(nicA)
            b.attach(nicB)
            exchange(a, b, nicA: nicA, nicB: nicB, smallOnly: true)
            a.close()
            b.close()
            #expect(access(pathA, F_OK) != 0 && access(pathB, F_OK) != 0, "socket files are removed at close")
        }
    }

    @Test("legacy -netdev socket listen=/connect= is a stream link")
    func legacyStream() throws {
        try NetTestKit.withLoop { loop in
            let server = try NetTestKit.make("socket,id=s,listen=127.0.0.1:0", loop: loop)
            defer { server.close() }
            let port = try #require((server as? StreamBackend)?.boundPort)
            let client = try NetTestKit.make("socket,id=c,connect=127.0.0.1:\(port)", loop: loop)
            defer { client.close() }
            let nicS = FakeNIC(), nicC = FakeNIC()
            server.attach(nicS)
            client.attach(nicC)
            #expect(NetTestKit.eventually { (server as? StreamBackend)?.isConnected == true })
            exchange(client, server, nicA: nicC, nicB: nicS)
        }
    }

    @Test("legacy -netdev socket udp=,localaddr= is a dgram link")
    func legacyUDP() throws {
        try NetTestKit.withLoop { loop in
            let udp = Int32(SOCK_DGRAM.rawValue)
            let pa = NetTestKit.freePort(udp), pb = NetTestKit.freePort(udp)
            let a = try NetTestKit.make("socket,id=a,udp=127.0.0.1:\(pb),localaddr=127.0.0.1:\(pa)", loop: loop)
            defer { a.close() }
            let b = try NetTestKit.make("socket,id=b,udp=127.0.0.1:\(pa),localaddr=127.0.0.1:\(pb)", loop: loop)
            defer { b.close() }
            let nicA = FakeNIC(), nicB = FakeNIC()
            a.attach(nicA)
            b.attach(nicB)
            exchange(a, b, nicA: nicA, nicB: nicB, smallOnly: true)
        }
    }

    /// Datagram links carry at most a UDP datagram (65507 bytes), so they skip 65535.
    private func exchange(_ a: any NetBackend, _ b: any NetBackend, nicA: FakeNIC, nicB: FakeNIC, smallOnly: Bool) {
        let sizes = Self.sizes.filter { $0 <= 9018 }
        let forward = sizes.enumerated().map { NetTestKit.frame(size: $1, tag: UInt32($0)) }
        let backward = sizes.reversed().enumerated().map { NetTestKit.frame(size: $1, tag: 100 + UInt32($0)) }
        for f in forward { _ = a.send(f) }
        for f in backward { _ = b.send(f) }
        #expect(nicB.waitFrames(forward.count) == forward)
        #expect(nicA.waitFrames(backward.count) == backward)
    }

    // MARK: bad options

    static let badOptions: [(String, String)] = [
        ("stream,id=n", "-netdev stream: an address is required: addr.type=inet,addr.host=HOST,addr.port=PORT or addr.type=unix,addr.path=PATH"),
        ("stream,id=n,bogus=1", "-netdev: unknown option 'bogus' for netdev 'stream'; accepted: id, server, addr.type, addr.host, addr.port, addr.path, addr.str"),
        ("stream,id=n,addr.host=x,addr.port=1", "-netdev stream: addr.type is missing (inet, unix, fd)"),
        ("stream,id=n,addr.type=tcp,addr.host=x", "-netdev stream: addr.type must be inet, unix, fd, not 'tcp'"),
        ("stream,id=n,addr.type=inet,addr.port=1", "-netdev stream: addr.host is missing (with addr.type=inet)"),
        ("stream,id=n,addr.type=inet,addr.host=127.0.0.1", "-netdev stream: addr.port is missing (with addr.type=inet)"),
        ("stream,id=n,addr.type=inet,addr.host=127.0.0.1,addr.port=70000", "-netdev: option 'addr.port' must be an integer from 0 to 65535, not '70000'"),
        ("stream,id=n,addr.type=unix", "-netdev stream: addr.path is missing (with addr.type=unix)"),
        ("stream,id=n,addr.type=unix,addr.path=/x,addr.port=3", "-netdev stream: addr.port does not go with addr.type=unix"),
        ("stream,id=n,server=maybe,addr.type=unix,addr.path=/x", "-netdev: option 'server' takes on or off (also yes/no, true/false), not 'maybe'"),
        ("stream,id=n,addr.type=fd,addr.str=x", "-netdev stream: addr.str: 'x' is not a file descriptor number (monitor fd names are not supported)"),
        ("stream,id=n,addr.type=fd,addr.str=1", "-netdev stream: addr.str: fd 1 is stdin, stdout or stderr, not an inherited socket or device"),
        ("stream,id=n,addr.type=fd,addr.str=9999", "-netdev stream: addr.str: fd 9999 is not open: Bad file descriptor"),
        ("stream,id=n,server=on,addr.type=unix,addr.path=/proc/version", "-netdev stream: cannot listen on unix:/proc/version: it exists and is not a socket; remove it or choose another path"),
        ("stream,id=n,addr.type=unix,addr.path=/\(String(repeating: "x", count: 120))", "-netdev stream: addr.path '/\(String(repeating: "x", count: 120))' is too long: at most 107 bytes"),
        ("dgram,id=n", "-netdev dgram: dgram requires local= parameter (local.type=inet|unix|fd)"),
        ("dgram,id=n,local.type=inet,local.host=127.0.0.1,local.port=0", "-netdev dgram: type=inet or type=unix requires remote parameter"),
        ("dgram,id=n,local.type=inet,local.host=127.0.0.1,local.port=0,remote.type=unix,remote.path=/x", "-netdev dgram: remote and local types must be the same"),
        ("dgram,id=n,remote.type=fd,remote.str=3", "-netdev dgram: remote.type must be inet, unix, not 'fd'"),
        ("dgram,id=n,remote.type=inet,remote.host=230.0.0.1,remote.port=1234,local.type=unix,local.path=/x", "-netdev dgram: with a multicast remote, local must be type inet (the interface address), not unix:/x"),
        ("dgram,id=n,addr.type=inet", "-netdev: unknown option 'addr.type' for netdev 'dgram'; accepted: id, local.type, local.host, local.port, local.path, local.str, remote.type, remote.host, remote.port, remote.path, remote.str"),
        ("socket,id=n", "-netdev socket: exactly one of listen=, connect=, mcast= or udp= is required"),
        ("socket,id=n,listen=:1,connect=:2", "-netdev socket: exactly one of listen=, connect=, mcast= or udp= is required"),
        ("socket,id=n,listen=1234", "-netdev socket: listen=: '1234' is not HOST:PORT (the port is missing)"),
        ("socket,id=n,connect=127.0.0.1:http", "-netdev socket: connect=: 'http' in '127.0.0.1:http' is not a port number (0 to 65535)"),
        ("socket,id=n,udp=127.0.0.1:5000", "-netdev socket: localaddr= is mandatory with udp="),
        ("socket,id=n,listen=:5000,localaddr=127.0.0.1:1", "-netdev socket: localaddr= is only valid with mcast= or udp="),
        ("socket,id=n,mcast=10.0.0.1:5000", "-netdev socket: multicast group '10.0.0.1' is not an IPv4 multicast address (224.0.0.0/4)"),
        ("socket,id=n,mcast=230.0.0.1:5000,localaddr=nowhere", "-netdev socket: localaddr 'nowhere' is not a valid IPv4 address"),
        ("tap,id=n,ifname=averyveryverylongname", "-netdev tap: interface name 'averyveryverylongname' is too long: at most 15 bytes"),
        ("tap,id=n,ifname=a/b", "-netdev tap: 'a/b' is not a valid interface name"),
        ("tap,id=n,vnet_hdr=maybe", "-netdev: option 'vnet_hdr' takes on or off (also yes/no, true/false), not 'maybe'"),
        ("tap,id=n,fd=5,ifname=tap0", "-netdev tap: ifname=, script=, downscript= and vnet_hdr= are invalid with fd= (ifname= was given)"),
        ("tap,id=n,queues=2", "-netdev: unknown option 'queues' for netdev 'tap'; accepted: id, ifname, fd, script, downscript, vnet_hdr"),
        ("user,id=n", "-netdev: type 'user' is not a socket or tap backend; these are: stream, dgram, socket, tap"),
    ]

    @Test("bad -netdev stream|dgram|socket|tap options give one clear line", arguments: badOptions)
    func badOption(text: String, expected: String) throws {
        try NetTestKit.withLoop { loop in
            #expect(NetTestKit.failure(text, loop: loop) == expected)
        }
    }
}
