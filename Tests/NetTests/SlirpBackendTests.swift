import DeviceModel
import Glibc
import Synchronization
import SystemSupport
import Testing

@testable import Net

/// `-netdev user` (libslirp). Traffic stays on loopback: the host address 10.0.2.2 is the
/// host's 127.0.0.1 to the guest. No DNS here: slirp would forward to the host's resolver
/// (NOTES.md "Network tests on these machines").
@Suite struct SlirpBackendTests {
    static let slirpMAC: [UInt8] = [0x52, 0x55, 10, 0, 2, 2]

    // MARK: DHCP and ARP

    @Test func dhcpOffersTheFirstAddressWithRouterAndDNS() throws {
        let (backend, guest) = try start("user,id=dhcp0")
        defer { backend.close() }
        #expect(backend.send(Frames.dhcpDiscover()))
        let offer = try #require(guest.waitFor { Frames.parseDHCP($0) })
        #expect(offer.operation == 2)
        #expect(offer.transaction == 0x1234_5678)
        #expect(offer.messageType == 2)  // DHCPOFFER
        #expect(offer.clientMAC == Frames.guestMAC)
        #expect(offer.yourAddress == Frames.ip("10.0.2.15"))
        #expect(offer.options[1] == Frames.ip("255.255.255.0"))
        #expect(offer.options[3] == Frames.ip("10.0.2.2"))
        #expect(offer.options[6] == Frames.ip("10.0.2.3"))
        #expect(offer.options[54] == Frames.ip("10.0.2.2"))
    }

    @Test func dhcpFollowsTheConfiguredNetworkAndNames() throws {
        let (backend, guest) = try start(
            "user,id=dhcp1,net=192.168.76.0/24,dhcpstart=192.168.76.20,domainname=example.test,dnssearch=a.test,dnssearch=b.test")
        defer { backend.close() }
        #expect(backend.send(Frames.dhcpDiscover(transaction: 7)))
        let offer = try #require(guest.waitFor { Frames.parseDHCP($0) })
        #expect(offer.transaction == 7)
        #expect(offer.yourAddress == Frames.ip("192.168.76.20"))
        #expect(offer.options[3] == Frames.ip("192.168.76.2"))
        #expect(offer.options[6] == Frames.ip("192.168.76.3"))
        #expect(offer.options[15].map { String(decoding: $0, as: UTF8.self) } == "example.test")
        // RFC 3397: both search domains in order, "b.test" ending in a pointer to "test".
        #expect(offer.options[119] == [1, 97, 4, 116, 101, 115, 116, 0, 1, 98, 0xc0, 2])
    }

    @Test func arpForTheGatewayIsAnsweredWithSlirpsMAC() throws {
        let (backend, guest) = try start("user,id=arp0")
        defer { backend.close() }
        #expect(backend.send(Frames.arpRequest(for: "10.0.2.2")))
        let reply = try #require(guest.waitFor { frame in Frames.parseARP(frame).flatMap { $0.operation == 2 ? $0 : nil } })
        #expect(reply.senderIP == Frames.ip("10.0.2.2"))
        #expect(reply.senderMAC == Self.slirpMAC)
        #expect(reply.targetMAC == Frames.guestMAC)
        #expect(reply.targetIP == Frames.ip("10.0.2.15"))
    }

    // MARK: NAT to the host

    @Test func udpToTheHostAddressReachesLoopbackAndTheReplyComesBack() throws {
        let server = try LoopbackSocket.udp()
        let (backend, guest) = try start("user,id=udp0")
        defer { backend.close() }
        let datagram = Frames.udpFrame(to: Self.slirpMAC, from: "10.0.2.15", 40_000, to: "10.0.2.2", server.port, payload: Array("ping".utf8))
        #expect(backend.send(datagram))
        let (payload, peer) = try #require(server.receive(timeoutMilliseconds: 5000))
        #expect(payload == Array("ping".utf8))
        server.send(Array("pong".utf8), to: peer)
        // slirp first asks who has 10.0.2.15; the test guest answers.
        let reply = try #require(guest.waitFor { frame in Frames.parseUDP(frame).flatMap { $0.destinationPort == 40_000 ? $0 : nil } })
        #expect(reply.payload == Array("pong".utf8))
        #expect(reply.sourcePort == server.port)
        #expect(reply.ip.source == Frames.ip("10.0.2.2"))
        #expect(reply.ip.destination == Frames.ip("10.0.2.15"))
        #expect(reply.ip.headerChecksumValid)
        #expect(reply.checksumValid)
    }

    @Test func restrictedGuestCannotReachTheHost() throws {
        let server = try LoopbackSocket.udp()
        let (backend, guest) = try start("user,id=restrict0,restrict=on")
        defer { backend.close() }
        #expect(backend.info == "net=10.0.2.0,restrict=on")
        let datagram = Frames.udpFrame(to: Self.slirpMAC, from: "10.0.2.15", 40_001, to: "10.0.2.2", server.port, payload: Array("out".utf8))
        #expect(backend.send(datagram))
        // slirp handles frames in order and sends UDP at once: once the ARP answer to a later
        // frame is back, a forwarded datagram would already sit in the server's socket.
        #expect(backend.send(Frames.arpRequest(for: "10.0.2.2")))
        #expect(guest.waitFor { Frames.parseARP($0) } != nil)
        #expect(server.receive(timeoutMilliseconds: 50) == nil)
    }

    // MARK: host forwarding

    @Test func hostForwardTurnsAHostConnectionIntoASYNToTheGuest() throws {
        let port = try LoopbackSocket.freeTCPPort()
        let (backend, guest) = try start("user,id=fwd0,hostfwd=tcp:127.0.0.1:\(port)-:22")
        defer { backend.close() }
        let client = try LoopbackSocket.connectTCP(port: port)
        #expect(client != nil)
        let syn = try #require(guest.waitFor { frame in Frames.parseTCP(frame).flatMap { $0.flags.contains(.syn) ? $0 : nil } })
        #expect(syn.ip.destination == Frames.ip("10.0.2.15"))
        #expect(syn.destinationPort == 22)
        #expect(!syn.flags.contains(.ack))
        #expect(syn.checksumValid)
        #expect(syn.ip.headerChecksumValid)
    }

    @Test func hostForwardsAreAddedAndRemovedAtRunTime() throws {
        let port = try LoopbackSocket.freeTCPPort()
        let (backend, guest) = try start("user,id=fwd1")
        defer { backend.close() }
        #expect(try LoopbackSocket.connectTCP(port: port) == nil)
        try backend.addHostForward(HostForward(parsing: "tcp:127.0.0.1:\(port)-10.0.2.15:2222"))
        let info = try backend.connectionInfo
        #expect(info.hasPrefix("Hub -1 (fwd1):\n"))
        #expect(info.contains("HOST_FORWARD"))
        let client = try LoopbackSocket.connectTCP(port: port)
        #expect(client != nil)
        #expect(guest.waitFor { frame in Frames.parseTCP(frame).flatMap { $0.destinationPort == 2222 && $0.flags.contains(.syn) ? $0 : nil } } != nil)

        #expect(try backend.removeHostForward(protocol: "tcp", hostAddress: "127.0.0.1", hostPort: port))
        #expect(try LoopbackSocket.connectTCP(port: port) == nil)
        #expect(try !backend.removeHostForward(protocol: "tcp", hostAddress: "127.0.0.1", hostPort: port))
        #expect(throws: SystemError.self) { try backend.removeHostForward(protocol: "sctp", hostAddress: nil, hostPort: port) }
    }

    @Test func hostForwardOnAPortInUseSaysSo() throws {
        let listener = try LoopbackSocket.listenTCP()
        let rule = "tcp:127.0.0.1:\(listener.port)-:22"
        let error = try #require(throws: SystemError.self) {
            _ = try SlirpBackend(id: "busy0", config: UserNetConfig(parsing: "user,id=busy0,hostfwd=\(rule)"))
        }
        #expect(error.message == "-netdev user: could not set up host forwarding rule '\(rule)'")
        #expect(error.errno == Errno(rawValue: EADDRINUSE))

        let (backend, _) = try start("user,id=busy1")
        defer { backend.close() }
        let runtime = try #require(throws: SystemError.self) { try backend.addHostForward(HostForward(parsing: rule)) }
        #expect(runtime.message == "Could not set up host forwarding rule '\(rule)'")
        #expect(runtime.description.hasSuffix(String(cString: strerror(EADDRINUSE))))
    }

    // MARK: guest forwarding

    @Test func guestForwardToAHostTCPPortCarriesBothWays() throws {
        let listener = try LoopbackSocket.listenTCP()
        let (backend, guest) = try start("user,id=gfwd0,guestfwd=tcp:10.0.2.100:1234-tcp:127.0.0.1:\(listener.port)")
        defer { backend.close() }
        // Like QEMU's chardev, the host connection is made when the backend starts.
        let host = try #require(listener.accept(timeoutMilliseconds: 5000))
        let connection = try #require(try GuestTCP.open(backend: backend, guest: guest, to: "10.0.2.100", port: 1234))
        connection.send(Array("hello".utf8))
        #expect(host.read(count: 5, timeoutMilliseconds: 5000) == Array("hello".utf8))
        host.write(Array("world".utf8))
        #expect(connection.receive(count: 5) == Array("world".utf8))
    }

    @Test func guestForwardToACommandRunsItPerConnection() throws {
        let (backend, guest) = try start("user,id=gfwd1,restrict=on,guestfwd=tcp:10.0.2.100:7-cmd:cat")
        defer { backend.close() }
        let connection = try #require(try GuestTCP.open(backend: backend, guest: guest, to: "10.0.2.100", port: 7))
        connection.send(Array("echo me\n".utf8))
        #expect(connection.receive(count: 8) == Array("echo me\n".utf8))
    }

    @Test func guestForwardToAHostThatRefusesFailsAtStart() throws {
        let port = try LoopbackSocket.freeTCPPort()
        let rule = "tcp:10.0.2.100:1234-tcp:127.0.0.1:\(port)"
        let error = try #require(throws: SystemError.self) {
            _ = try SlirpBackend(id: "gfwd2", config: UserNetConfig(parsing: "user,id=gfwd2,guestfwd=\(rule)"))
        }
        #expect(error.message == "-netdev user: guest forwarding rule '\(rule)': cannot connect to 127.0.0.1:\(port)")
        #expect(error.errno == .connectionRefused)
        let clash = try #require(throws: SystemError.self) {
            _ = try SlirpBackend(id: "gfwd3", config: UserNetConfig(parsing: "user,id=gfwd3,guestfwd=tcp:10.0.2.2:80-cmd:cat"))
        }
        #expect(clash.message == "-netdev user: conflicting or invalid address:port in guest forwarding rule 'tcp:10.0.2.2:80-cmd:cat'")
    }

    // MARK: robustness and flow control

    @Test func malformedFramesAreDroppedAndTheStackGoesOn() throws {
        let (backend, guest) = try start("user,id=bad0")
        defer { backend.close() }
        #expect(backend.send([]))
        #expect(backend.send([1, 2, 3]))
        #expect(backend.send([UInt8](repeating: 0, count: SlirpBackend.maxFrameSize + 1)))
        #expect(backend.droppedFromGuest == 3)
        // Garbage behind IPv4 and ARP headers is slirp's to refuse.
        var generator = SystemRandomNumberGenerator()
        for i in 0..<200 {
            let length = Int.random(in: 0...120, using: &generator)
            let body = (0..<length).map { _ in UInt8.random(in: 0...255, using: &generator) }
            let type = i % 2 == 0 ? Frames.etherTypeIPv4 : Frames.etherTypeARP
            #expect(backend.send(Frames.ethernet(destination: Self.slirpMAC, type: type, payload: body)))
        }
        #expect(backend.send(Frames.arpRequest(for: "10.0.2.2")))
        #expect(guest.waitFor { Frames.parseARP($0).flatMap { $0.operation == 2 && $0.senderIP == Frames.ip("10.0.2.2") ? $0 : nil } } != nil)
    }

    @Test func framesTheGuestCannotTakeWaitInABoundedQueue() throws {
        let (backend, guest) = try start("user,id=full0")
        defer { backend.close() }
        guest.setAccepting(false)
        let count = SlirpBackend.maxPendingFramesToGuest + 144
        for _ in 0..<count { #expect(backend.send(Frames.arpRequest(for: "10.0.2.2"))) }
        #expect(eventually { backend.droppedToGuest == 144 })
        #expect(guest.frames.isEmpty)
        guest.setAccepting(true)
        backend.frontendReady()
        #expect(eventually { guest.frames.count == SlirpBackend.maxPendingFramesToGuest })
        #expect(backend.droppedToGuest == 144)
    }

    @Test func aFullSendQueueSaysStopThenReady() throws {
        let (backend, guest) = try start("user,id=full1")
        defer { backend.close() }
        // Park the slirp thread inside the frontend, so nothing drains the send queue.
        guest.hold()
        #expect(backend.send(Frames.arpRequest(for: "10.0.2.2")))
        #expect(eventually { guest.isHolding })
        // A frame slirp ignores (IEEE 802 local experimental EtherType).
        let filler = Frames.ethernet(destination: Self.slirpMAC, type: 0x88b5, payload: [UInt8](repeating: 0, count: 46))
        var results: [Bool] = []
        for _ in 0..<(SlirpBackend.maxQueuedGuestFrames + 76) { results.append(backend.send(filler)) }
        #expect(results.prefix(SlirpBackend.maxQueuedGuestFrames - 1).allSatisfy { $0 })
        #expect(results.dropFirst(SlirpBackend.maxQueuedGuestFrames - 1).allSatisfy { !$0 })
        #expect(backend.droppedFromGuest == 76)
        #expect(guest.backendReadyCalls == 0)
        guest.release()
        #expect(eventually { guest.backendReadyCalls == 1 })
        #expect(backend.send(filler))
    }

    @Test func closeEndsTheThreadEveryTime() throws {
        for i in 0..<50 {
            let backend = try SlirpBackend(id: "leak\(i)", config: UserNetConfig(parsing: "user,id=leak\(i)"))
            backend.attach(TestGuest())
            #expect(backend.send(Frames.arpRequest(for: "10.0.2.2")))
            backend.close()
            backend.close()
            #expect(backend.send(Frames.arpRequest(for: "10.0.2.2")))  // dropped, not queued
            #expect(throws: SystemError.self) { try backend.connectionInfo }
        }
        #expect(eventually { threadCount(prefix: "slirp-leak") == 0 })
        // deinit closes too.
        do { _ = try SlirpBackend(id: "leakd", config: UserNetConfig(parsing: "user,id=leakd")) }
        #expect(eventually { threadCount(prefix: "slirp-leakd") == 0 })
    }

    // MARK: options

    @Test func defaultsAreQemus() throws {
        let config = try UserNetConfig(parsing: "user,id=n0")
        #expect(config.id == "n0")
        #expect(config.network.description == "10.0.2.0")
        #expect(config.netmask.description == "255.255.255.0")
        #expect(config.host.description == "10.0.2.2")
        #expect(config.dns.description == "10.0.2.3")
        #expect(config.dhcpStart.description == "10.0.2.15")
        #expect(config.ipv4 && config.ipv6 && !config.restricted)
        #expect(config.ipv6Prefix.description == "fec0::")
        #expect(config.ipv6PrefixLength == 64)
        #expect(config.ipv6Host.description == "fec0::2")
        #expect(config.ipv6DNS.description == "fec0::3")
        #expect(config.infoString == "net=10.0.2.0,restrict=off")
    }

    @Test func optionsAreParsedAsQemuDoes() throws {
        let classful = try UserNetConfig(parsing: "user,id=n,net=172.16.5.0")
        #expect(classful.network.description == "172.16.0.0")
        #expect(classful.netmask.description == "255.240.0.0")
        #expect(classful.host.description == "172.16.2.2")
        let dotted = try UserNetConfig(parsing: "user,id=n,net=10.1.0.0/255.255.0.0,host=10.1.0.1,dns=10.1.0.53,restrict")
        #expect(dotted.netmask.description == "255.255.0.0")
        #expect(dotted.host.description == "10.1.0.1")
        #expect(dotted.dns.description == "10.1.0.53")
        #expect(dotted.dhcpStart.description == "10.1.2.15")
        #expect(dotted.restricted)
        // Naming one family alone turns the other off (net_init_slirp).
        let only6 = try UserNetConfig(parsing: "user,id=n,ipv6=on,ipv6-net=fd00:1::/48,ipv6-host=fd00:1::9")
        #expect(!only6.ipv4 && only6.ipv6)
        #expect(only6.ipv6PrefixLength == 48)
        #expect(only6.ipv6Host.description == "fd00:1::9")
        #expect(only6.ipv6DNS.description == "fd00:1::3")
        #expect(try !UserNetConfig(parsing: "user,id=n,ipv4=on").ipv6)

        let forwards = try UserNetConfig(parsing: "user,id=n,hostfwd=tcp::5555-:22,hostfwd=udp:127.0.0.1:5353-10.0.2.20:53,hostfwd=:0.0.0.0:0x50-:80")
        #expect(forwards.hostForwards.map(\.text) == ["tcp::5555-:22", "udp:127.0.0.1:5353-10.0.2.20:53", ":0.0.0.0:0x50-:80"])
        #expect(forwards.hostForwards[0].transport == .tcp && forwards.hostForwards[0].hostAddress == .any && forwards.hostForwards[0].guestAddress == nil)
        #expect(forwards.hostForwards[1].transport == .udp && forwards.hostForwards[1].guestAddress?.description == "10.0.2.20")
        #expect(forwards.hostForwards[2].hostPort == 80 && forwards.hostForwards[2].transport == .tcp)

        let guestfwd = try UserNetConfig(parsing: "user,id=n,guestfwd=tcp:10.0.2.100:1234-cmd:nc -q0 127.0.0.1 80,guestfwd=:10.0.2.101:99-tcp:127.0.0.1:7")
        #expect(guestfwd.guestForwards.map(\.target) == [.command("nc -q0 127.0.0.1 80"), .tcp(host: .init(0x7f00_0001), port: 7)])
        #expect(guestfwd.guestForwards.map(\.port) == [1234, 99])

        // The QemuOpts form (one of each key) gives the same configuration.
        let opts = try QemuOpts(parsing: "user,id=n,hostfwd=tcp::5555-:22", impliedKey: "type", option: "-netdev")
        #expect(try UserNetConfig(options: opts) == UserNetConfig(parsing: "user,id=n,hostfwd=tcp::5555-:22"))

        let removal = try HostForward.parseRemoval("udp:127.0.0.1:5353")
        #expect(removal == HostForward.Removal(transport: .udp, hostAddress: .init(0x7f00_0001), hostPort: 5353))
        #expect(try HostForward.parseRemoval("::22") == HostForward.Removal(transport: .tcp, hostAddress: .any, hostPort: 22))
    }

    @Test(arguments: [
        ("user,id=n,net=10.0.2.0/33", "-netdev user: net=10.0.2.0/33: the prefix length must be from 4 to 32"),
        ("user,id=n,net=10.0.2", "-netdev user: net=10.0.2: not an IPv4 network"),
        ("user,id=n,net=10.0.0.0/255.0.255.0", "-netdev user: net=10.0.0.0/255.0.255.0: not an IPv4 network"),
        ("user,id=n,host=10.0.3.2", "-netdev user: host=10.0.3.2: not inside the network 10.0.2.0/255.255.255.0"),
        ("user,id=n,host=10.0.2.x", "-netdev user: host=10.0.2.x: not an IPv4 address"),
        ("user,id=n,dns=10.0.2.2", "-netdev user: dns=10.0.2.2: the DNS address must differ from the host address"),
        ("user,id=n,dns=8.8.8.8,restrict=on", "-netdev user: dns=8.8.8.8: not inside the network"),
        ("user,id=n,dhcpstart=10.0.2.3", "-netdev user: dhcpstart=10.0.2.3: must differ from the host"),
        ("user,id=n,dhcpstart=10.9.2.30", "-netdev user: dhcpstart=10.9.2.30: not inside the network"),
        ("user,id=n,ipv4=off,ipv6=off", "-netdev user: ipv4=off and ipv6=off: at least one must be on"),
        ("user,id=n,ipv4=off,net=10.0.2.0/24", "-netdev user: net=10.0.2.0/24: given with IPv4 off"),
        ("user,id=n,ipv6=off,ipv6-dns=fec0::3", "-netdev user: ipv6-dns=fec0::3: given with IPv6 off"),
        ("user,id=n,ipv6-net=fec0::/127", "-netdev user: ipv6-net=fec0::/127: the prefix length must be from 0 to 126"),
        ("user,id=n,ipv6-host=fec1::2", "-netdev user: ipv6-host=fec1::2: not inside fec0::/64"),
        ("user,id=n,domainname=", "-netdev user: domainname=: must not be empty"),
        ("user,id=n,dnssearch=a..b", "-netdev user: dnssearch=a..b: not a domain name"),
        ("user,id=n,restrict=maybe", "-netdev: option 'restrict' takes on or off"),
        ("user,id=n,bogus=1", "-netdev: unknown option 'bogus' for netdev 'user'"),
        ("user,net=10.0.2.0/24", "-netdev user: missing id=NAME"),
        ("tap,id=n", "-netdev: type 'tap' is not 'user'"),
        ("user,id=n,smb=/srv", "-netdev user: smb=: the built-in SMB server is not supported"),
        ("user,id=n,hostfwd=tcp::99999-:22", "-netdev user: invalid host forwarding rule 'tcp::99999-:22' (bad host port '99999')"),
        ("user,id=n,hostfwd=sctp::1-:2", "-netdev user: invalid host forwarding rule 'sctp::1-:2' (bad protocol name 'sctp')"),
        ("user,id=n,hostfwd=tcp::22", "-netdev user: invalid host forwarding rule 'tcp::22' (missing '-'"),
        ("user,id=n,hostfwd=tcp::2222-:0", "-netdev user: invalid host forwarding rule 'tcp::2222-:0' (bad guest port '0')"),
        ("user,id=n,hostfwd=tcp:localhost:2222-:22", "-netdev user: invalid host forwarding rule 'tcp:localhost:2222-:22' (bad host address"),
        ("user,id=n,hostfwd=unix:/tmp/s-:22", "-netdev user: invalid host forwarding rule 'unix:/tmp/s-:22' (unix socket forwarding is not supported"),
        ("user,id=n,guestfwd=tcp:10.0.2.100:1234-unix:/x", "-netdev user: invalid guest forwarding rule 'tcp:10.0.2.100:1234-unix:/x': the target must be"),
        ("user,id=n,guestfwd=udp:10.0.2.100:53-cmd:x", "-netdev user: invalid guest forwarding rule 'udp:10.0.2.100:53-cmd:x': only tcp"),
        ("user,id=n,guestfwd=tcp:10.0.2.100:0-cmd:x", "-netdev user: invalid guest forwarding rule 'tcp:10.0.2.100:0-cmd:x': bad port"),
    ])
    func badOptionsSayWhatIsWrong(text: String, expected: String) {
        let error = #expect(throws: SystemError.self) { try UserNetConfig(parsing: text) }
        #expect(error?.message.hasPrefix(expected) == true, "\(error?.message ?? "no error")")
    }

    // MARK: helpers

    /// A backend from `options` with a test guest attached.
    private func start(_ options: String) throws -> (SlirpBackend, TestGuest) {
        let config = try UserNetConfig(parsing: options)
        let backend = try SlirpBackend(id: config.id, config: config)
        let guest = TestGuest(backend: backend)
        backend.attach(guest)
        return (backend, guest)
    }
}

/// A guest NIC: keeps every frame, answers slirp's ARP requests for its address (10.0.2.15),
/// and can refuse frames or hold the backend's thread to test flow control.
private final class TestGuest: NetFrontend {
    private struct State {
        weak var backend: SlirpBackend?
        var frames: [[UInt8]] = []
        var accepting = true
        var holding = false
        var held = false
        var backendReadyCalls = 0
    }
    private let state: Mutex<State>
    let address = Frames.ip("10.0.2.15")

    init(backend: SlirpBackend? = nil) { state = Mutex(State(backend: backend)) }

    func receive(_ frame: [UInt8]) -> Bool {
        while state.withLock({ s in
            if s.holding { s.held = true }
            return s.holding
        }) {
            usleep(1000)
        }
        let (accepted, backend) = state.withLock { s -> (Bool, SlirpBackend?) in
            guard s.accepting else { return (false, nil) }
            s.frames.append(frame)
            return (true, s.backend)
        }
        if accepted, let arp = Frames.parseARP(frame), arp.operation == 1, arp.targetIP == address, let backend {
            _ = backend.send(Frames.arp(operation: 2, senderMAC: Frames.guestMAC, senderIP: address, targetMAC: arp.senderMAC, targetIP: arp.senderIP))
        }
        return accepted
    }

    func backendReady() { state.withLock { $0.backendReadyCalls += 1 } }

    var frames: [[UInt8]] { state.withLock { $0.frames } }
    var backendReadyCalls: Int { state.withLock { $0.backendReadyCalls } }
    var isHolding: Bool { state.withLock { $0.held } }
    func setAccepting(_ on: Bool) { state.withLock { $0.accepting = on } }
    /// The next `receive` blocks (the backend's thread with it) until `release()`.
    func hold() { state.withLock { $0.holding = true } }
    func release() { state.withLock { $0.holding = false } }

    /// The first received frame `match` accepts, waiting up to `seconds`.
    func waitFor<T>(_ seconds: Double = 5, _ match: ([UInt8]) -> T?) -> T? {
        var seen = 0
        let deadline = monotonicSeconds() + seconds
        repeat {
            let frames = self.frames
            for frame in frames[seen...] {
                if let found = match(frame) { return found }
            }
            seen = frames.count
            usleep(1000)
        } while monotonicSeconds() < deadline
        return nil
    }
}

/// The guest's end of one TCP connection through slirp: handshake, data, acknowledgments.
private final class GuestTCP {
    let backend: SlirpBackend
    let guest: TestGuest
    let remote: String
    let remotePort: UInt16
    let localPort: UInt16 = 50_000
    var sequence: UInt32 = 1000
    var acknowledgment: UInt32 = 0
    var seen = 0

    private init(backend: SlirpBackend, guest: TestGuest, remote: String, remotePort: UInt16) {
        self.backend = backend
        self.guest = guest
        self.remote = remote
        self.remotePort = remotePort
    }

    /// SYN, SYN-ACK, ACK; nil if slirp does not answer the SYN.
    static func open(backend: SlirpBackend, guest: TestGuest, to remote: String, port: UInt16) throws -> GuestTCP? {
        let c = GuestTCP(backend: backend, guest: guest, remote: remote, remotePort: port)
        c.segment(flags: .syn)
        c.sequence += 1
        guard let synAck = c.next(where: { $0.flags.contains([.syn, .ack]) }) else { return nil }
        c.acknowledgment = synAck.sequence &+ 1
        c.segment(flags: .ack)
        return c
    }

    func segment(flags: Frames.TCPFlags, payload: [UInt8] = []) {
        _ = backend.send(Frames.tcpFrame(to: SlirpBackendTests.slirpMAC, from: "10.0.2.15", localPort, to: remote, remotePort,
                                         sequence: sequence, acknowledgment: acknowledgment, flags: flags, payload: payload))
    }

    func send(_ bytes: [UInt8]) {
        segment(flags: [.psh, .ack], payload: bytes)
        sequence &+= UInt32(bytes.count)
    }

    /// The next segment of this connection that `match` accepts (5 s at most).
    func next(where match: (Frames.TCP) -> Bool) -> Frames.TCP? {
        let deadline = monotonicSeconds() + 5
        repeat {
            let frames = guest.frames
            while seen < frames.count {
                defer { seen += 1 }
                if let tcp = Frames.parseTCP(frames[seen]), tcp.destinationPort == localPort, tcp.sourcePort == remotePort, match(tcp) {
                    return tcp
                }
            }
            usleep(1000)
        } while monotonicSeconds() < deadline
        return nil
    }

    /// `count` bytes of in-order data from the other end, acknowledged as they come.
    func receive(count: Int) -> [UInt8] {
        var data: [UInt8] = []
        while data.count < count, let tcp = next(where: { !$0.payload.isEmpty && $0.sequence == acknowledgment }) {
            data += tcp.payload
            acknowledgment &+= UInt32(tcp.payload.count)
            segment(flags: .ack)
        }
        return data
    }
}

/// Polls `condition` until it holds or `seconds` pass.
private func eventually(_ seconds: Double = 5, _ condition: () -> Bool) -> Bool {
    let deadline = monotonicSeconds() + seconds
    while monotonicSeconds() < deadline {
        if condition() { return true }
        usleep(1000)
    }
    return condition()
}

private func monotonicSeconds() -> Double {
    var now = timespec()
    clock_gettime(CLOCK_MONOTONIC, &now)
    return Double(now.tv_sec) + Double(now.tv_nsec) / 1e9
}

/// Threads of this process whose name starts with `prefix` (/proc/self/task/*/comm).
private func threadCount(prefix: String) -> Int {
    guard let dir = opendir("/proc/self/task") else { return -1 }
    defer { closedir(dir) }
    var count = 0
    while let entry = readdir(dir) {
        let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        guard !name.hasPrefix(".") else { continue }
        let fd = open("/proc/self/task/\(name)/comm", O_RDONLY)
        guard fd >= 0 else { continue }
        var buffer = [UInt8](repeating: 0, count: 64)
        let n = read(fd, &buffer, buffer.count)
        close(fd)
        if n > 0, String(decoding: buffer[0..<n], as: UTF8.self).hasPrefix(prefix) { count += 1 }
    }
    return count
}

/// A loopback socket the test owns.
private final class LoopbackSocket: Sendable {
    let fd: Int32
    let port: UInt16

    private init(fd: Int32, port: UInt16) {
        self.fd = fd
        self.port = port
    }

    deinit { close(fd) }

    private static func loopback(port: UInt16) -> sockaddr_in {
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = port.bigEndian
        address.sin_addr = in_addr(s_addr: UInt32(0x7f00_0001).bigEndian)
        return address
    }

    private static func bound(type: Int32) throws -> LoopbackSocket {
        let fd = socket(AF_INET, type | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw SystemError(.syscall, "socket", errno: .current) }
        var address = loopback(port: 0)
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let ok = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0 }
        }
        guard ok else {
            let error = Errno.current
            close(fd)
            throw SystemError(.syscall, "bind 127.0.0.1:0", errno: error)
        }
        return LoopbackSocket(fd: fd, port: UInt16(bigEndian: address.sin_port))
    }

    static func udp() throws -> LoopbackSocket { try bound(type: Int32(SOCK_DGRAM.rawValue)) }

    static func listenTCP() throws -> LoopbackSocket {
        let socket = try bound(type: Int32(SOCK_STREAM.rawValue))
        guard listen(socket.fd, 4) == 0 else { throw SystemError(.syscall, "listen", errno: .current) }
        return socket
    }

    /// A port nothing listens on now (bound once by the kernel's choice, then released).
    static func freeTCPPort() throws -> UInt16 { try bound(type: Int32(SOCK_STREAM.rawValue)).port }

    /// A connected socket, or nil when the connection is refused.
    static func connectTCP(port: UInt16) throws -> LoopbackSocket? {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue | SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw SystemError(.syscall, "socket", errno: .current) }
        var address = loopback(port: port)
        let rc = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        if rc != 0 {
            let error = Errno.current
            close(fd)
            if error == .connectionRefused { return nil }
            throw SystemError(.syscall, "connect 127.0.0.1:\(port)", errno: error)
        }
        return LoopbackSocket(fd: fd, port: port)
    }

    /// The next connection on a listening socket, or nil after `timeoutMilliseconds`.
    func accept(timeoutMilliseconds: Int32) -> LoopbackSocket? {
        var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        guard poll(&p, 1, timeoutMilliseconds) > 0 else { return nil }
        let connection = Glibc.accept(fd, nil, nil)
        return connection >= 0 ? LoopbackSocket(fd: connection, port: port) : nil
    }

    /// Up to `count` bytes from a stream, waiting up to `timeoutMilliseconds` in all.
    func read(count: Int, timeoutMilliseconds: Int32) -> [UInt8] {
        var data: [UInt8] = []
        let deadline = monotonicSeconds() + Double(timeoutMilliseconds) / 1000
        var buffer = [UInt8](repeating: 0, count: 4096)
        while data.count < count && monotonicSeconds() < deadline {
            var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            guard poll(&p, 1, 50) > 0 else { continue }
            let n = Glibc.recv(fd, &buffer, min(buffer.count, count - data.count), Int32(MSG_DONTWAIT))
            if n <= 0 { break }
            data += buffer[0..<n]
        }
        return data
    }

    func write(_ bytes: [UInt8]) {
        _ = Glibc.send(fd, bytes, bytes.count, Int32(MSG_NOSIGNAL))
    }

    /// One datagram and its sender, or nil after `timeoutMilliseconds`.
    func receive(timeoutMilliseconds: Int32) -> ([UInt8], sockaddr_in)? {
        var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        guard poll(&p, 1, timeoutMilliseconds) > 0 else { return nil }
        var buffer = [UInt8](repeating: 0, count: 2048)
        var peer = sockaddr_in()
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let n = withUnsafeMutablePointer(to: &peer) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { recvfrom(fd, &buffer, buffer.count, Int32(MSG_DONTWAIT), $0, &length) }
        }
        guard n >= 0 else { return nil }
        return (Array(buffer[0..<n]), peer)
    }

    func send(_ bytes: [UInt8], to peer: sockaddr_in) {
        var peer = peer
        _ = withUnsafePointer(to: &peer) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { sendto(fd, bytes, bytes.count, 0, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
    }
}
