import CLinux
import DeviceModel
import Glibc
@testable import Net
import Synchronization
import SystemSupport
import Testing

/// Network namespaces for the tap tests: a tap is created in the namespace of the thread that
/// opens /dev/net/tun, so each test moves a fresh thread of its own into a new namespace
/// (unshare(CLONE_NEWNET) changes only the calling thread) and builds everything there. Nothing
/// is ever created in the host's namespace; the namespace goes away with its last descriptor.
enum NetNamespace {
    private typealias Unshare = @convention(c) (Int32) -> Int32
    private static let CLONE_NEWNET: Int32 = 0x4000_0000

    private static let unshare: Unshare? = {
        guard let me = dlopen(nil, RTLD_NOW), let symbol = dlsym(me, "unshare") else { return nil }
        // SAFETY: glibc's unshare has exactly this C signature: int unshare(int flags).
        return unsafeBitCast(symbol, to: Unshare.self)
    }()

    /// Why the tap tests cannot run here, or nil.
    static let unavailable: String? = {
        if geteuid() != 0 { return "the tap tests need root (CAP_NET_ADMIN) to create a network namespace and a tap" }
        if access("/dev/net/tun", R_OK | W_OK) != 0 { return "/dev/net/tun is missing or not accessible" }
        guard unshare != nil else { return "unshare(2) is not available" }
        let probe: Result<Bool, SystemError>? = try? run { () throws(SystemError) in true }
        if case .failure(let error)? = probe { return "cannot create a network namespace: \(error)" }
        if probe == nil { return "cannot create a network namespace" }
        return nil
    }()

    /// Runs `body` on a new thread in a new network namespace and returns its result.
    static func run<R: Sendable>(_ body: @escaping @Sendable () throws(SystemError) -> R) throws -> Result<R, SystemError> {
        let result = Mutex<Result<R, SystemError>?>(nil)
        try HostThread.spawn(name: "netns-test") {
            guard let unshare, unshare(CLONE_NEWNET) == 0 else {
                let err = Errno.current
                result.withLock { $0 = .failure(SystemError(.syscall, "unshare(CLONE_NEWNET)", errno: err)) }
                return
            }
            let value = Result { () throws(SystemError) in try body() }
            result.withLock { $0 = value }
        }
        _ = NetTestKit.eventually(10) { result.withLock { $0 != nil } }
        guard let value = result.withLock({ $0 }) else { throw SystemError(.syscall, "the namespace thread did not finish") }
        return value
    }

    /// Brings `name` up with `address`/24 (an AF_INET socket of this thread's namespace) and
    /// returns its MAC address.
    static func configure(_ name: String, address: [UInt8]) throws(SystemError) -> [UInt8] {
        let s = FileDescriptor(owning: socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0))
        func request() -> ifreq {
            var r = ifreq()
            let bytes = Array(name.utf8)
            // SAFETY: the name (under IFNAMSIZ bytes, checked by the backend) fits ifrn_name.
            withUnsafeMutableBytes(of: &r.ifr_ifrn.ifrn_name) { $0.copyBytes(from: bytes) }
            return r
        }
        func ioctl(_ what: String, _ number: Int32, _ r: inout ifreq) throws(SystemError) {
            _ = try syscall(what) { clx_ioctl_ptr(s.rawValue, UInt(number), &r) }
        }
        func inet(_ bytes: [UInt8]) -> ifreq {
            var r = request()
            var sin = sockaddr_in()
            sin.sin_family = sa_family_t(AF_INET)
            // SAFETY: four bytes into the 4-byte in_addr, and the 16-byte sockaddr_in into
            // ifr_ifru, whose ifru_addr member is a 16-byte sockaddr.
            withUnsafeMutableBytes(of: &sin.sin_addr) { $0.copyBytes(from: bytes) }
            withUnsafeMutableBytes(of: &r.ifr_ifru) { $0.copyBytes(from: withUnsafeBytes(of: &sin) { Array($0) }) }
            return r
        }
        var r = inet(address)
        try ioctl("SIOCSIFADDR", Int32(SIOCSIFADDR), &r)
        r = inet([255, 255, 255, 0])
        try ioctl("SIOCSIFNETMASK", Int32(SIOCSIFNETMASK), &r)
        r = request()
        try ioctl("SIOCGIFFLAGS", Int32(SIOCGIFFLAGS), &r)
        r.ifr_ifru.ifru_flags |= Int16(IFF_UP)
        try ioctl("SIOCSIFFLAGS", Int32(SIOCSIFFLAGS), &r)
        r = request()
        try ioctl("SIOCGIFHWADDR", Int32(SIOCGIFHWADDR), &r)
        return withUnsafeBytes(of: &r.ifr_ifru.ifru_hwaddr.sa_data) { Array($0.prefix(6)) }
    }

    /// Brings `name` up (the loopback of a new namespace starts down).
    static func bringUp(_ name: String) throws(SystemError) {
        let s = FileDescriptor(owning: socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0))
        var r = ifreq()
        let bytes = Array(name.utf8)
        // SAFETY: the name (under IFNAMSIZ bytes) fits ifrn_name.
        withUnsafeMutableBytes(of: &r.ifr_ifrn.ifrn_name) { $0.copyBytes(from: bytes) }
        _ = try syscall("SIOCGIFFLAGS") { clx_ioctl_ptr(s.rawValue, UInt(SIOCGIFFLAGS), &r) }
        r.ifr_ifru.ifru_flags |= Int16(IFF_UP)
        _ = try syscall("SIOCSIFFLAGS") { clx_ioctl_ptr(s.rawValue, UInt(SIOCSIFFLAGS), &r) }
    }

    /// A non-blocking UDP socket bound to `address`:`port` in this thread's namespace.
    static func udpSocket(_ address: [UInt8], port: UInt16) throws(SystemError) -> Int32 {
        let fd = try syscall("socket") { socket(AF_INET, Int32(SOCK_DGRAM.rawValue | SOCK_NONBLOCK.rawValue), 0) }
        let sa = RawSocketAddress.ipv4(in_addr(s_addr: UInt32(address[0]) | UInt32(address[1]) << 8 | UInt32(address[2]) << 16 | UInt32(address[3]) << 24), port: port)
        try Sockets.bind(fd, sa, what: "bind")
        return fd
    }
}

/// Minimal Ethernet/IPv4/UDP/ARP frames for the tap tests.
enum TapFrames {
    static let guestMAC: [UInt8] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56]

    static func checksum(_ bytes: ArraySlice<UInt8>) -> UInt16 {
        var sum: UInt32 = 0
        var i = bytes.startIndex
        while i + 1 < bytes.endIndex {
            sum += UInt32(bytes[i]) << 8 | UInt32(bytes[i + 1])
            i += 2
        }
        if i < bytes.endIndex { sum += UInt32(bytes[i]) << 8 }
        while sum >> 16 != 0 { sum = (sum & 0xffff) + (sum >> 16) }
        return ~UInt16(sum)
    }

    /// Ethernet + IPv4 + UDP (no UDP checksum) from `source` to `destination`.
    static func udp(to mac: [UInt8], from source: [UInt8], _ sourcePort: UInt16, to destination: [UInt8], _ port: UInt16, payload: [UInt8]) -> [UInt8] {
        let udpLength = 8 + payload.count
        let ipLength = 20 + udpLength
        var ip: [UInt8] = [0x45, 0, UInt8(ipLength >> 8), UInt8(ipLength & 0xff), 0, 1, 0x40, 0, 64, 17, 0, 0] + source + destination
        let sum = checksum(ip[...])
        ip[10] = UInt8(sum >> 8)
        ip[11] = UInt8(sum & 0xff)
        let udp: [UInt8] = [UInt8(sourcePort >> 8), UInt8(sourcePort & 0xff), UInt8(port >> 8), UInt8(port & 0xff),
                            UInt8(udpLength >> 8), UInt8(udpLength & 0xff), 0, 0]
        return mac + guestMAC + [0x08, 0x00] + ip + udp + payload
    }

    /// `udp(...)` with the UDP checksum field holding only the pseudo-header's sum, as a
    /// guest leaves it for NEEDS_CSUM (csum_start 34, csum_offset 6).
    static func udpWithPartialChecksum(to mac: [UInt8], from source: [UInt8], _ sourcePort: UInt16, to destination: [UInt8], _ port: UInt16,
                                       payload: [UInt8]) -> [UInt8] {
        var frame = udp(to: mac, from: source, sourcePort, to: destination, port, payload: payload)
        let udpLength = 8 + payload.count
        let pseudo = ~checksum((source + destination + [0, 17, UInt8(udpLength >> 8), UInt8(udpLength & 0xff)])[...])
        frame[40] = UInt8(pseudo >> 8)
        frame[41] = UInt8(pseudo & 0xff)
        return frame
    }

    /// An ARP reply from the guest (`sender`, guestMAC) to `mac`/`target`.
    static func arpReply(to mac: [UInt8], _ target: [UInt8], from sender: [UInt8]) -> [UInt8] {
        mac + guestMAC + [0x08, 0x06] + [0, 1, 0x08, 0x00, 6, 4, 0, 2] + guestMAC + sender + mac + target
    }

    /// Whether `frame` is an ARP request from `sender` for `target`.
    static func isARPRequest(_ frame: [UInt8], from sender: [UInt8], for target: [UInt8]) -> Bool {
        frame.count >= 42 && frame[12] == 0x08 && frame[13] == 0x06 && frame[20] == 0 && frame[21] == 1
            && Array(frame[28..<32]) == sender && Array(frame[38..<42]) == target
    }
}

@Suite("Tap network backend", .disabled(if: NetNamespace.unavailable != nil, Comment(rawValue: NetNamespace.unavailable ?? "")))
struct TapBackendTests {
    static let host: [UInt8] = [10, 99, 0, 1]
    static let guest: [UInt8] = [10, 99, 0, 2]

    struct Setup: Sendable {
        var backend: TapBackend
        var udp: Int32
        var mac: [UInt8]
    }

    /// In a new namespace: the backend (`ifname=` or an inherited `fd=` opened with a
    /// virtio-net header), the interface up as 10.99.0.1/24, a UDP socket.
    private static func setUp(_ mode: String, loop: EventLoop, extra: String = "") throws -> Setup {
        let name = "swt\(UInt32.random(in: 0...0xffffff))"
        return try NetNamespace.run { () throws(SystemError) in
            let backend: TapBackend
            if mode == "ifname" {
                let options = try QemuOpts(parsing: "tap,id=t,ifname=\(name),script=no,downscript=no\(extra)", impliedKey: "type", option: "-netdev")
                backend = try TapBackend(id: "t", options: options, loop: loop)
            } else {
                let fd = try FileDescriptor.open("/dev/net/tun", O_RDWR)
                var request = ifreq()
                request.ifr_ifru.ifru_flags = TapBackend.IFF_TAP | TapBackend.IFF_NO_PI | TapBackend.IFF_VNET_HDR
                let bytes = Array(name.utf8)
                // SAFETY: the name is under IFNAMSIZ bytes; ifrn_name holds IFNAMSIZ.
                withUnsafeMutableBytes(of: &request.ifr_ifrn.ifrn_name) { $0.copyBytes(from: bytes) }
                _ = try syscall("TUNSETIFF") { clx_ioctl_ptr(fd.rawValue, TapBackend.TUNSETIFF, &request) }
                let number = fd.release()
                let options = try QemuOpts(parsing: "tap,id=t,fd=\(number)", impliedKey: "type", option: "-netdev")
                backend = try TapBackend(id: "t", options: options, loop: loop)
            }
            let mac = try NetNamespace.configure(backend.interfaceName, address: host)
            return Setup(backend: backend, udp: try NetNamespace.udpSocket(host, port: 7777), mac: mac)
        }.get()
    }

    /// virtio_net_hdr's gso_type VIRTIO_NET_HDR_GSO_UDP_L4 (virtio 1.2 §5.1.6).
    static let gsoUDPL4: UInt8 = 5

    /// The virtio_net_hdr a frame crosses with when the backend has offloads (VERSION_1, 12 bytes).
    static let plainHeader = [UInt8](repeating: 0, count: NetOffloads.headerSize)

    /// `ifname` with the default (a virtio-net header: every kernel since 2.6.27 has it),
    /// `ifname` with vnet_hdr=off, and an inherited descriptor opened with IFF_VNET_HDR.
    @Test("frames cross a tap in a namespace of our own, both ways", arguments: ["ifname", "vnet_hdr=off", "fd"])
    func crossing(mode: String) throws {
        try NetTestKit.withLoop { loop in
            let setup = try Self.setUp(mode == "fd" ? "fd" : "ifname", loop: loop, extra: mode == "vnet_hdr=off" ? ",vnet_hdr=off" : "")
            defer {
                setup.backend.close()
                Glibc.close(setup.udp)
            }
            let withHeader = mode != "vnet_hdr=off"
            #expect(setup.backend.offloads.isSuperset(of: [.checksum, .tso4, .tso6, .ecn]) == withHeader)
            #expect(setup.backend.offloads.isEmpty == !withHeader)
            let header = withHeader ? Self.plainHeader : []
            let nic = FakeNIC()
            setup.backend.attach(nic)
            #expect(setup.backend.info == (mode == "fd" ? setup.backend.info : "ifname=\(setup.backend.interfaceName),script=no,downscript=no"))

            // Host → guest: the kernel asks (ARP) who has 10.99.0.2.
            var sin = sockaddr_in()
            sin.sin_family = sa_family_t(AF_INET)
            sin.sin_port = UInt16(9).bigEndian
            withUnsafeMutableBytes(of: &sin.sin_addr) { $0.copyBytes(from: Self.guest) }
            let payload = Array("ping".utf8)
            // SAFETY: sin is a whole sockaddr_in, read by sendto during the call.
            _ = withUnsafePointer(to: &sin) { p in
                p.withMemoryRebound(to: sockaddr.self, capacity: 1) { sendto(setup.udp, payload, payload.count, 0, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
            #expect(NetTestKit.eventually {
                nic.frames.contains { Array($0.prefix(header.count)) == header && TapFrames.isARPRequest(Array($0.dropFirst(header.count)), from: Self.host, for: Self.guest) }
            }, "the ARP request reaches the NIC: \(nic.frames.map(\.count))")

            // Guest → host: a UDP datagram to the host's socket.
            let message = Array("hello from the guest".utf8)
            #expect(setup.backend.send(header + TapFrames.udp(to: setup.mac, from: Self.guest, 4000, to: Self.host, 7777, payload: message)))
            var received: [UInt8] = []
            _ = NetTestKit.eventually {
                var buffer = [UInt8](repeating: 0, count: 2048)
                let n = recv(setup.udp, &buffer, buffer.count, 0)
                if n > 0 { received = Array(buffer[0..<n]) }
                return n > 0
            }
            #expect(received == message)
            #expect(setup.backend.counters.transmitDropped == 0)
        }
    }

    /// With vnet_hdr=on the header crosses both ways and TUNSETOFFLOAD follows the guest: a
    /// datagram with a partial checksum arrives only if the kernel honoured NEEDS_CSUM (a
    /// wrong checksum in a frame without it is dropped), and the host's datagrams come with a
    /// partial checksum exactly when the guest takes checksum offload.
    @Test("vnet_hdr=on: the header crosses both ways and the offloads follow the guest")
    func virtioHeader() throws {
        try NetTestKit.withLoop { loop in
            let setup = try Self.setUp("ifname", loop: loop, extra: ",vnet_hdr=on")
            defer {
                setup.backend.close()
                Glibc.close(setup.udp)
            }
            #expect(setup.backend.offloads.isSuperset(of: [.checksum, .tso4, .tso6, .ecn]))
            let nic = FakeNIC()
            setup.backend.attach(nic)
            let name = setup.backend.interfaceName
            // Nothing until the guest says (TUNSETOFFLOAD 0, as QEMU at open).
            #expect(Self.ethtool(name, via: setup.udp, Self.ETHTOOL_GTXCSUM) == 0)
            #expect(Self.ethtool(name, via: setup.udp, Self.ETHTOOL_GTSO) == 0)

            // Guest → host: UDP whose checksum field holds only the pseudo-header sum.
            let message = Array("partial checksum".utf8)
            let frame = TapFrames.udpWithPartialChecksum(to: setup.mac, from: Self.guest, 4001, to: Self.host, 7777, payload: message)
            // flags NEEDS_CSUM, GSO_NONE, hdr_len 0, gso_size 0, csum_start 34, csum_offset 6.
            let needsChecksum: [UInt8] = [1, 0, 0, 0, 0, 0, 34, 0, 6, 0, 0, 0]
            #expect(setup.backend.send(needsChecksum + frame))
            #expect(Self.receive(setup.udp) == message)

            // Host → guest.
            Self.resolveGuest(setup, nic: nic)

            // With checksum offload taken, partial checksums (NEEDS_CSUM, csum_start
            // at the UDP header, csum_offset 6); without it, finished ones.
            for guest: NetOffloads in [[.checksum, .tso4, .tso6, .ecn], []] {
                setup.backend.setGuestOffloads(guest)
                #expect(Self.ethtool(name, via: setup.udp, Self.ETHTOOL_GTXCSUM) == (guest.isEmpty ? 0 : 1))
                #expect(Self.ethtool(name, via: setup.udp, Self.ETHTOOL_GTSO) == (guest.isEmpty ? 0 : 1))
                let before = nic.frames.count
                Self.sendToGuest(setup.udp, Array("offload \(guest.rawValue)".utf8))
                #expect(NetTestKit.eventually { nic.frames.dropFirst(before).contains(where: Self.isUDP) })
                guard let udp = nic.frames.dropFirst(before).first(where: Self.isUDP) else { continue }
                if guest.isEmpty {
                    #expect(udp[0] & 1 == 0, "finished checksum: \(Array(udp.prefix(12)))")
                } else {
                    #expect(Array(udp.prefix(12)) == [1, 0, 0, 0, 0, 0, 34, 0, 6, 0, 0, 0])
                }
            }
        }
    }

    /// UDP segmentation offload (USO) both ways where the kernel's tap has it (Linux 6.2+):
    /// one 3000-byte GSO_UDP_L4 frame from the guest arrives as three 1000-byte datagrams
    /// (the host's stack segments it and checks every checksum), and a host socket sending
    /// with UDP_SEGMENT reaches the guest as one GSO frame when the guest takes USO, as three
    /// plain ones when it does not.
    @Test("USO: UDP segmentation crosses the tap both ways and follows the guest")
    func udpSegmentation() throws {
        try NetTestKit.withLoop { loop in
            let setup = try Self.setUp("ifname", loop: loop, extra: ",vnet_hdr=on")
            defer {
                setup.backend.close()
                Glibc.close(setup.udp)
            }
            try #require(setup.backend.offloads.contains(.uso), "this kernel's tap has no USO (TUNSETOFFLOAD TUN_F_USO4|TUN_F_USO6: Linux 6.2+)")
            let nic = FakeNIC()
            setup.backend.attach(nic)

            // Guest → host: flags NEEDS_CSUM, gso_type UDP_L4, hdr_len 42, gso_size 1000,
            // csum_start 34, csum_offset 6.
            let payload = (0..<3000).map { UInt8(truncatingIfNeeded: $0 * 7) }
            let frame = TapFrames.udpWithPartialChecksum(to: setup.mac, from: Self.guest, 4002, to: Self.host, 7777, payload: payload)
            let uso: [UInt8] = [1, Self.gsoUDPL4, 42, 0, 0xe8, 0x03, 34, 0, 6, 0, 0, 0]
            #expect(setup.backend.send(uso + frame))
            var datagrams: [[UInt8]] = []
            for _ in 0..<3 { datagrams.append(Self.receive(setup.udp)) }
            #expect(datagrams == [Array(payload[0..<1000]), Array(payload[1000..<2000]), Array(payload[2000..<3000])])

            // Host → guest.
            Self.resolveGuest(setup, nic: nic)
            var segmentSize: Int32 = 1000
            // linux/udp.h: UDP_SEGMENT (103) at level SOL_UDP (17): the stack sends one GSO skb.
            #expect(setsockopt(setup.udp, 17, 103, &segmentSize, socklen_t(MemoryLayout<Int32>.size)) == 0, "UDP_SEGMENT: \(Errno.current)")
            for guest: NetOffloads in [[.checksum, .uso], [.checksum]] {
                setup.backend.setGuestOffloads(guest)
                let before = nic.frames.count
                Self.sendToGuest(setup.udp, payload)
                let expected = guest.contains(.uso) ? 1 : 3
                #expect(NetTestKit.eventually { nic.frames.dropFirst(before).filter(Self.isUDP).count >= expected })
                let udp = nic.frames.dropFirst(before).filter(Self.isUDP)
                #expect(udp.count == expected, "\(guest): \(udp.map(\.count))")
                if guest.contains(.uso), let gso = udp.first {
                    #expect(gso[1] == Self.gsoUDPL4 && gso[4] == 0xe8 && gso[5] == 0x03, "gso_type UDP_L4, gso_size 1000: \(Array(gso.prefix(12)))")
                    #expect(Array(gso.suffix(3000)) == payload)
                } else {
                    #expect(udp.allSatisfy { $0[1] == 0 }, "no GSO without USO")
                    #expect(udp.map { Array($0.suffix(1000)) } == [Array(payload[0..<1000]), Array(payload[1000..<2000]), Array(payload[2000..<3000])])
                }
            }
        }
    }

    @Test("vnet_hdr=off opens without the header, as before")
    func noVirtioHeader() throws {
        try NetTestKit.withLoop { loop in
            let setup = try Self.setUp("ifname", loop: loop, extra: ",vnet_hdr=off")
            defer {
                setup.backend.close()
                Glibc.close(setup.udp)
            }
            #expect(setup.backend.offloads.isEmpty)
            // A no-op without the header: the tap keeps its features.
            setup.backend.setGuestOffloads([.checksum, .tso4])
            #expect(Self.ethtool(setup.backend.interfaceName, via: setup.udp, Self.ETHTOOL_GTSO) == 0)
        }
    }

    // linux/ethtool.h: struct ethtool_value { u32 cmd; u32 data; } through SIOCETHTOOL.
    static let SIOCETHTOOL: UInt = 0x8946
    static let ETHTOOL_GTXCSUM: UInt32 = 0x16
    static let ETHTOOL_GTSO: UInt32 = 0x1e

    /// An ethtool_value query of `name` through `socket`, a socket of the tap's namespace (a
    /// socket's ioctls reach the interfaces of the namespace it was made in); nil if it failed.
    static func ethtool(_ name: String, via socket: Int32, _ command: UInt32) -> UInt32? {
        var value: (UInt32, UInt32) = (command, 0)
        var r = ifreq()
        let bytes = Array(name.utf8)
        // SAFETY: the name is under IFNAMSIZ bytes; ifrn_name holds IFNAMSIZ.
        withUnsafeMutableBytes(of: &r.ifr_ifrn.ifrn_name) { $0.copyBytes(from: bytes) }
        // SAFETY: ifru_data points at `value`, an ethtool_value (two u32), during the ioctl only.
        let rc = withUnsafeMutableBytes(of: &value) { v in
            r.ifr_ifru.ifru_data = v.baseAddress!.assumingMemoryBound(to: CChar.self)
            return clx_ioctl_ptr(socket, SIOCETHTOOL, &r)
        }
        return rc == 0 ? value.1 : nil
    }

    /// Whether `frame` (after its 12-byte virtio_net_hdr) is IPv4 UDP.
    static func isUDP(_ frame: [UInt8]) -> Bool { frame.count > 12 + 23 && frame[12 + 14] == 0x45 && frame[12 + 23] == 17 }

    /// Lets the host reach the guest's address: a first datagram makes the kernel ask (ARP)
    /// who has it, the guest answers, and the datagram arrives.
    static func resolveGuest(_ setup: Setup, nic: FakeNIC) {
        sendToGuest(setup.udp, Array("first".utf8))
        #expect(NetTestKit.eventually {
            nic.frames.contains { $0.count > 12 && TapFrames.isARPRequest(Array($0.dropFirst(12)), from: host, for: guest) }
        })
        #expect(setup.backend.send(plainHeader + TapFrames.arpReply(to: setup.mac, host, from: guest)))
        #expect(NetTestKit.eventually { nic.frames.contains(where: isUDP) })
    }

    /// Sends `payload` from the host's socket to the guest's port 9.
    static func sendToGuest(_ fd: Int32, _ payload: [UInt8]) {
        var sin = sockaddr_in()
        sin.sin_family = sa_family_t(AF_INET)
        sin.sin_port = UInt16(9).bigEndian
        // SAFETY: four bytes into the 4-byte in_addr.
        withUnsafeMutableBytes(of: &sin.sin_addr) { $0.copyBytes(from: guest) }
        // SAFETY: sin is a whole sockaddr_in, read by sendto during the call.
        _ = withUnsafePointer(to: &sin) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { sendto(fd, payload, payload.count, 0, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
    }

    /// The next datagram on `fd`, waiting up to 5 seconds; [] if none came.
    static func receive(_ fd: Int32) -> [UInt8] {
        var received: [UInt8] = []
        _ = NetTestKit.eventually {
            var buffer = [UInt8](repeating: 0, count: 2048)
            let n = recv(fd, &buffer, buffer.count, 0)
            if n > 0 { received = Array(buffer[0..<n]) }
            return n > 0
        }
        return received
    }

    @Test("script= runs with the interface name; the backend owns nothing of the host's")
    func script() throws {
        let out = NetTestKit.temporaryPath("ifup.out")
        let script = NetTestKit.temporaryPath("ifup.sh")
        defer {
            unlink(out)
            unlink(script)
        }
        let text = "#!/bin/sh\necho \"$1\" > \(out)\n"
        let fd = open(script, O_WRONLY | O_CREAT | O_TRUNC, 0o755)
        _ = text.withCString { write(fd, $0, strlen($0)) }
        Glibc.close(fd)
        try NetTestKit.withLoop { loop in
            let name = "swt\(UInt32.random(in: 0...0xffffff))"
            let backend = try NetNamespace.run { () throws(SystemError) in
                try TapBackend(id: "t", options: QemuOpts(parsing: "tap,id=t,ifname=\(name),script=\(script),downscript=no", impliedKey: "type", option: "-netdev"), loop: loop)
            }.get()
            defer { backend.close() }
            let written = (try? FileDescriptor.readWholeFile(out, limit: 100)) ?? []
            #expect(String(decoding: written, as: UTF8.self) == "\(name)\n")
            #expect(backend.info == "ifname=\(name),script=\(script),downscript=no")

            // A failing script fails the backend, with QEMU's message.
            let failing = NetTestKit.temporaryPath("nope.sh")
            let failure = try NetNamespace.run { () throws(SystemError) in
                try TapBackend(id: "t", options: QemuOpts(parsing: "tap,id=t,ifname=\(name)x,script=\(failing)", impliedKey: "type", option: "-netdev"), loop: loop)
            }
            guard case .failure(let error) = failure else {
                Issue.record("a missing script must fail")
                return
            }
            #expect("\(error)".hasPrefix("-netdev tap: network script \(failing) failed with status") || "\(error)".hasPrefix("-netdev tap: could not launch network script \(failing)"))
        }
    }
}

@Suite("Tap backend errors")
struct TapErrorTests {
    @Test("fd= with a descriptor that is not a tap is refused clearly")
    func notATap() throws {
        let fd = open("/dev/null", O_RDWR)
        defer { Glibc.close(fd) }
        try NetTestKit.withLoop { loop in
            #expect(NetTestKit.failure("tap,id=t,fd=\(fd)", loop: loop)
                    == "-netdev tap: fd=\(fd) is not a tap device: TUNGETIFF failed: Inappropriate ioctl for device")
        }
    }

    @Test("an interface name over 15 bytes is refused before anything is opened")
    func longName() throws {
        try NetTestKit.withLoop { loop in
            #expect(NetTestKit.failure("tap,id=t,ifname=0123456789abcdef,script=no", loop: loop)
                    == "-netdev tap: interface name '0123456789abcdef' is too long: at most 15 bytes")
        }
    }
}

/// Multicast needs a namespace of its own too: on the host's, the group's traffic would leave
/// through the default interface.
@Suite("Multicast dgram", .disabled(if: NetNamespace.unavailable != nil, Comment(rawValue: NetNamespace.unavailable ?? "")))
struct MulticastTests {
    @Test("dgram and socket mcast= share a group on the loopback of a new namespace")
    func multicast() throws {
        try NetTestKit.withLoop { loop in
            let port = UInt16.random(in: 20000...40000)
            let (a, b) = try NetNamespace.run { () throws(SystemError) in
                try NetNamespace.bringUp("lo")
                let a = try DgramBackend(id: "a", options: QemuOpts(parsing: "dgram,id=a,remote.type=inet,remote.host=230.0.0.1,remote.port=\(port),local.type=inet,local.host=127.0.0.1,local.port=0", impliedKey: "type", option: "-netdev"), loop: loop)
                let b = try NetBackends.makeSocketFamily(type: "socket", id: "b", options: QemuOpts(parsing: "socket,id=b,mcast=230.0.0.1:\(port),localaddr=127.0.0.1", impliedKey: "type", option: "-netdev"), loop: loop)
                return (a, b)
            }.get()
            defer {
                a.close()
                b.close()
            }
            #expect(a.info == "mcast=230.0.0.1:\(port)")
            let nicA = FakeNIC(), nicB = FakeNIC()
            a.attach(nicA)
            b.attach(nicB)
            let frame = NetTestKit.frame(size: 1514, tag: 42)
            #expect(a.send(frame))
            #expect(nicB.waitFrames(1) == [frame], "the other member hears it")
            #expect(nicA.waitFrames(1) == [frame], "loopback on: the sender hears itself, as in QEMU")
        }
    }
}
