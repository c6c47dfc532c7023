import Glibc
import SystemSupport

/// The options of one `-netdev user,...` (QEMU 7.2's `NetdevUserOptions`, net/slirp.c
/// `net_init_slirp`/`net_slirp_init`): the addresses of libslirp's virtual network, its DHCP
/// answers and the forwarding rules. Only values are checked here; `SlirpBackend` builds the
/// stack from them.
///
/// Defaults and checks are QEMU's: `net=10.0.2.0/24`, the host (gateway) at `.2`, the DNS at
/// `.3`, DHCP handing out addresses from `.15`; a `net=` without a mask takes its class's mask;
/// host and DHCP start must lie inside the network, the DNS too when `restrict=on`; IPv6 on
/// `fec0::/64` with the host at `::2` and the DNS at `::3`.
public struct UserNetConfig: Sendable, Equatable {
    /// An IPv4 address in host byte order; `description` is the dotted quad.
    public struct IPv4Address: Sendable, Equatable, Hashable, CustomStringConvertible {
        public var value: UInt32
        public init(_ value: UInt32) { self.value = value }

        /// Dotted-quad only ("10.0.2.15"): QEMU's `inet_aton` also takes "10.2" or "0x0a000202",
        /// forms that only hide typing mistakes.
        public init?(parsing text: String) {
            var address = in_addr()
            guard inet_pton(AF_INET, text, &address) == 1 else { return nil }
            value = UInt32(bigEndian: address.s_addr)
        }

        public static let any = IPv4Address(0)

        /// The `struct in_addr` libslirp takes (network byte order).
        var inAddr: in_addr { in_addr(s_addr: value.bigEndian) }

        public var description: String {
            "\(value >> 24).\((value >> 16) & 0xff).\((value >> 8) & 0xff).\(value & 0xff)"
        }
    }

    /// An IPv6 address, 16 bytes in network order.
    public struct IPv6Address: Sendable, Equatable, Hashable, CustomStringConvertible {
        public var bytes: [UInt8]

        public init?(parsing text: String) {
            var address = in6_addr()
            guard inet_pton(AF_INET6, text, &address) == 1 else { return nil }
            bytes = withUnsafeBytes(of: address) { Array($0) }
        }

        init(bytes: [UInt8]) { self.bytes = bytes }

        var in6Addr: in6_addr {
            var address = in6_addr()
            // SAFETY: `bytes` always holds 16 bytes (both initializers guarantee it) and
            // in6_addr is exactly 16 bytes of plain data.
            withUnsafeMutableBytes(of: &address) { $0.copyBytes(from: bytes) }
            return address
        }

        /// The prefix with its low byte or'ed with `low` (QEMU: `s6_addr[15] |= 2`).
        func withLastByte(_ low: UInt8) -> IPv6Address {
            var copy = bytes
            copy[15] |= low
            return IPv6Address(bytes: copy)
        }

        /// True when the first `length` bits equal those of `other` (QEMU's in6_equal_net).
        func sharesPrefix(with other: IPv6Address, length: Int) -> Bool {
            for bit in 0..<length {
                let mask = UInt8(0x80) >> UInt8(bit % 8)
                if bytes[bit / 8] & mask != other.bytes[bit / 8] & mask { return false }
            }
            return true
        }

        public var description: String {
            var address = in6Addr
            var text = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
            _ = inet_ntop(AF_INET6, &address, &text, socklen_t(text.count))
            return String(decoding: text.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        }
    }

    /// `guestfwd=`: what a guest connection to `address:port` (inside the virtual network)
    /// reaches on the host.
    public struct GuestForward: Sendable, Equatable {
        public enum Target: Sendable, Equatable {
            /// `cmd:COMMAND`: libslirp runs the command per connection, its stdin/stdout
            /// joined to the connection (`slirp_add_exec`).
            case command(String)
            /// `tcp:HOST:PORT`: one host TCP connection made when the backend starts, as
            /// QEMU's chardev of that name; the guest's bytes go there and its replies back.
            case tcp(host: IPv4Address, port: UInt16)
        }
        /// nil: libslirp's default, the network's `.4` (check_guestfwd).
        public var address: IPv4Address?
        public var port: UInt16
        public var target: Target
        /// The rule as written, for messages.
        public var text: String

        /// Parses QEMU's `[tcp]:[SERVER]:PORT-cmd:COMMAND` or `[tcp]:[SERVER]:PORT-tcp:HOST:PORT`.
        public init(parsing text: String) throws(SystemError) {
            self.text = text
            func bad(_ why: String) -> SystemError {
                SystemError(.configuration, "invalid guest forwarding rule '\(text)': \(why)")
            }
            guard let dash = text.firstIndex(of: "-") else { throw bad("expected [tcp]:[SERVER]:PORT-cmd:COMMAND or -tcp:HOST:PORT") }
            let local = text[..<dash].split(separator: ":", omittingEmptySubsequences: false)
            guard local.count == 3 else { throw bad("expected [tcp]:[SERVER]:PORT before '-'") }
            guard local[0].isEmpty || local[0] == "tcp" else { throw bad("only tcp is forwarded, not '\(local[0])'") }
            if local[1].isEmpty {
                address = nil
            } else if let parsed = IPv4Address(parsing: String(local[1])) {
                address = parsed
            } else {
                throw bad("bad server address '\(local[1])'")
            }
            guard let parsedPort = UInt16(local[2]), parsedPort >= 1 else { throw bad("bad port '\(local[2])' (1 to 65535)") }
            port = parsedPort
            let device = text[text.index(after: dash)...]
            if device.hasPrefix("cmd:") {
                let command = String(device.dropFirst(4))
                guard !command.isEmpty else { throw bad("empty command after 'cmd:'") }
                target = .command(command)
            } else if device.hasPrefix("tcp:") {
                let parts = device.dropFirst(4).split(separator: ":", omittingEmptySubsequences: false)
                guard parts.count == 2, let host = IPv4Address(parsing: String(parts[0])),
                      let hostPort = UInt16(parts[1]), hostPort >= 1 else {
                    throw bad("expected tcp:HOST:PORT with a dotted-quad HOST and a PORT from 1 to 65535")
                }
                target = .tcp(host: host, port: hostPort)
            } else {
                throw bad("the target must be cmd:COMMAND or tcp:HOST:PORT (other chardevs are not supported)")
            }
        }
    }

    /// The `-netdev` id.
    public var id: String
    /// `restrict=on`: the guest reaches only the forwarded ports, never the outside.
    public var restricted = false
    public var ipv4 = true
    public var ipv6 = true
    public var network = IPv4Address(0x0a00_0200)
    public var netmask = IPv4Address(0xffff_ff00)
    public var host = IPv4Address(0x0a00_0202)
    public var dns = IPv4Address(0x0a00_0203)
    public var dhcpStart = IPv4Address(0x0a00_020f)
    public var ipv6Prefix = IPv6Address(bytes: [0xfe, 0xc0] + [UInt8](repeating: 0, count: 14))
    public var ipv6PrefixLength = 64
    public var ipv6Host = IPv6Address(bytes: [0xfe, 0xc0] + [UInt8](repeating: 0, count: 13) + [2])
    public var ipv6DNS = IPv6Address(bytes: [0xfe, 0xc0] + [UInt8](repeating: 0, count: 13) + [3])
    /// DHCP option 12 (the guest's host name).
    public var hostname: String?
    /// DHCP option 15.
    public var domainName: String?
    /// DHCP option 119, in order.
    public var dnsSearch: [String] = []
    /// `tftp=DIR`: libslirp's read-only TFTP server at the host address serves this directory.
    public var tftpRoot: String?
    /// `bootfile=`: the BOOTP file name in DHCP answers.
    public var bootFile: String?
    /// `tftp-server-name=`: DHCP option 66.
    public var tftpServerName: String?
    public var hostForwards: [HostForward] = []
    public var guestForwards: [GuestForward] = []

    /// Keys QEMU lets repeat in one `-netdev user` (list-valued in NetdevUserOptions).
    public static let repeatableKeys: Set<String> = ["hostfwd", "guestfwd", "dnssearch"]

    static let acceptedKeys = [
        "id", "net", "ip", "host", "dns", "dhcpstart", "restrict", "ipv4", "ipv6",
        "ipv6-net", "ipv6-prefix", "ipv6-prefixlen", "ipv6-host", "ipv6-dns",
        "hostname", "domainname", "dnssearch", "tftp", "bootfile", "tftp-server-name",
        "smb", "smbserver", "hostfwd", "guestfwd",
    ]

    /// Parses the whole option string of `-netdev user,id=n0,hostfwd=...,hostfwd=...`
    /// ("user," first, as QEMU's implied `type`); the `repeatableKeys` may be given many times.
    public init(parsing text: String, option: String = "-netdev") throws(SystemError) {
        try self.init(options: QemuOpts(parsing: text, impliedKey: "type", option: option, repeatable: Self.repeatableKeys))
    }

    /// Builds the configuration from the options of one `-netdev user` (a leading `type`
    /// entry, QEMU's implied key of `-netdev`, must say `user`); parse them with
    /// `repeatable: repeatableKeys` so that `hostfwd=` and the like may repeat.
    public init(options raw: QemuOpts) throws(SystemError) {
        let option = "\(raw.option) user"
        if let type = raw.string("type"), type != "user" {
            throw SystemError(.configuration, "\(raw.option): type '\(type)' is not 'user'")
        }
        let options = try raw.validate(accepted: Self.acceptedKeys, booleans: ["restrict", "ipv4", "ipv6"], context: "netdev 'user'")
        func bad(_ key: String, _ why: String) -> SystemError {
            SystemError(.configuration, "\(option): \(key)=\(options.string(key) ?? ""): \(why)")
        }
        func values(_ key: String) -> [String] { options.strings(key) }
        func address(_ key: String) throws(SystemError) -> IPv4Address? {
            guard let text = options.string(key) else { return nil }
            guard let parsed = IPv4Address(parsing: text) else { throw bad(key, "not an IPv4 address (a.b.c.d)") }
            return parsed
        }
        func address6(_ key: String) throws(SystemError) -> IPv6Address? {
            guard let text = options.string(key) else { return nil }
            guard let parsed = IPv6Address(parsing: text) else { throw bad(key, "not an IPv6 address") }
            return parsed
        }

        guard let id = options.string("id"), !id.isEmpty else {
            throw SystemError(.configuration, "\(option): missing id=NAME (the name a -device netdev= refers to)")
        }
        self.id = id

        for key in ["smb", "smbserver"] where options.contains(key) {
            throw SystemError(.unsupported, "\(option): \(key)=: the built-in SMB server is not supported by swemu")
        }

        restricted = try options.bool("restrict", default: false)
        // QEMU (net_init_slirp): naming only one family turns the other off.
        let ipv4Option = try options.bool("ipv4")
        let ipv6Option = try options.bool("ipv6")
        ipv4 = !(ipv4Option == false || (ipv6Option == true && ipv4Option == nil))
        ipv6 = !(ipv6Option == false || (ipv4Option == true && ipv6Option == nil))
        if !ipv4 && !ipv6 {
            throw SystemError(.configuration, "\(option): ipv4=off and ipv6=off: at least one must be on")
        }
        if !ipv4, let key = ["net", "ip", "host", "dns", "dhcpstart"].first(where: options.contains) {
            throw bad(key, "given with IPv4 off (ipv4=off)")
        }
        if !ipv6, let key = ["ipv6-net", "ipv6-prefix", "ipv6-prefixlen", "ipv6-host", "ipv6-dns"].first(where: options.contains) {
            throw bad(key, "given with IPv6 off (ipv6=off)")
        }

        // net=ADDR[/MASK] (legacy ip=ADDR means ADDR/24); MASK a length 4-32 or dotted.
        var networkText = options.string("net")
        if networkText == nil, let ip = options.string("ip") { networkText = ip + "/24" }
        if let networkText {
            let key = options.contains("net") ? "net" : "ip"
            let parts = networkText.split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false)
            guard let base = IPv4Address(parsing: String(parts[0])) else {
                throw bad(key, "not an IPv4 network (a.b.c.d or a.b.c.d/LENGTH)")
            }
            if parts.count == 2 {
                if let length = Int(parts[1]) {
                    guard (4...32).contains(length) else { throw bad(key, "the prefix length must be from 4 to 32") }
                    netmask = IPv4Address(UInt32.max << UInt32(32 - length))
                } else if let mask = IPv4Address(parsing: String(parts[1])), (~mask.value) & (~mask.value &+ 1) == 0 {
                    netmask = mask
                } else {
                    throw bad(key, "not an IPv4 network (the mask is a length from 4 to 32 or a contiguous a.b.c.d mask)")
                }
            } else {
                netmask = Self.classfulMask(base)
            }
            network = IPv4Address(base.value & netmask.value)
            host = IPv4Address(network.value | (0x0202 & ~netmask.value))
            dhcpStart = IPv4Address(network.value | (0x020f & ~netmask.value))
            dns = IPv4Address(network.value | (0x0203 & ~netmask.value))
        }
        func inside(_ a: IPv4Address) -> Bool { a.value & netmask.value == network.value }

        if let given = try address("host") { host = given }
        if !inside(host) { throw bad("host", "not inside the network \(network)/\(netmask)") }
        if let given = try address("dns") { dns = given }
        if restricted && !inside(dns) { throw bad("dns", "not inside the network \(network)/\(netmask) (restrict=on)") }
        if dns == host { throw bad(options.contains("dns") ? "dns" : "host", "the DNS address must differ from the host address") }
        if let given = try address("dhcpstart") { dhcpStart = given }
        if !inside(dhcpStart) { throw bad("dhcpstart", "not inside the network \(network)/\(netmask)") }
        if dhcpStart == host || dhcpStart == dns {
            throw bad("dhcpstart", "must differ from the host (\(host)) and DNS (\(dns)) addresses")
        }

        // IPv6: ipv6-net=PREFIX[/LEN] is the command line's short form of ipv6-prefix(+len).
        if let text = options.string("ipv6-net") {
            let parts = text.split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false)
            guard let prefix = IPv6Address(parsing: String(parts[0])) else { throw bad("ipv6-net", "not an IPv6 prefix") }
            ipv6Prefix = prefix
            if parts.count == 2 {
                guard let length = Int(parts[1]), (0...126).contains(length) else {
                    throw bad("ipv6-net", "the prefix length must be from 0 to 126")
                }
                ipv6PrefixLength = length
            }
        }
        if let prefix = try address6("ipv6-prefix") { ipv6Prefix = prefix }
        if let length = try options.int("ipv6-prefixlen", in: 0...126) { ipv6PrefixLength = length }
        ipv6Host = ipv6Prefix.withLastByte(2)
        ipv6DNS = ipv6Prefix.withLastByte(3)
        if let given = try address6("ipv6-host") {
            guard given.sharesPrefix(with: ipv6Prefix, length: ipv6PrefixLength) else {
                throw bad("ipv6-host", "not inside \(ipv6Prefix)/\(ipv6PrefixLength)")
            }
            ipv6Host = given
        }
        if let given = try address6("ipv6-dns") {
            if restricted && !given.sharesPrefix(with: ipv6Prefix, length: ipv6PrefixLength) {
                throw bad("ipv6-dns", "not inside \(ipv6Prefix)/\(ipv6PrefixLength) (restrict=on)")
            }
            ipv6DNS = given
        }

        // Names go into DHCP options and C strings: bounded as QEMU bounds them, no NULs.
        for key in ["hostname", "domainname", "tftp-server-name", "tftp", "bootfile"] {
            guard let value = options.string(key) else { continue }
            if value.utf8.contains(0) { throw bad(key, "contains a NUL character") }
            if key != "tftp" && value.utf8.count > 255 { throw bad(key, "longer than 255 bytes") }
        }
        hostname = options.string("hostname")
        domainName = options.string("domainname")
        if domainName == "" { throw bad("domainname", "must not be empty") }
        tftpRoot = options.string("tftp")
        bootFile = options.string("bootfile")
        tftpServerName = options.string("tftp-server-name")

        for name in values("dnssearch") {
            let labels = name.split(separator: ".", omittingEmptySubsequences: false)
            let trimmed = name.hasSuffix(".") ? labels.dropLast() : labels[...]
            guard !trimmed.isEmpty, name.utf8.count <= 253, !name.utf8.contains(0),
                  trimmed.allSatisfy({ !$0.isEmpty && $0.utf8.count <= 63 }) else {
                throw SystemError(.configuration, "\(option): dnssearch=\(name): not a domain name (labels of 1 to 63 bytes separated by '.')")
            }
            dnsSearch.append(name)
        }
        for rule in values("hostfwd") {
            do throws(SystemError) {
                hostForwards.append(try HostForward(parsing: rule))
            } catch {
                throw SystemError(.configuration, "\(option): \(error.message)")
            }
        }
        for rule in values("guestfwd") {
            do throws(SystemError) {
                guestForwards.append(try GuestForward(parsing: rule))
            } catch {
                throw SystemError(.configuration, "\(option): \(error.message)")
            }
        }
    }

    /// The mask QEMU gives a `net=` without one (net_slirp_init): classful, with the private
    /// and benchmarking ranges narrowed as QEMU narrows them.
    private static func classfulMask(_ address: IPv4Address) -> IPv4Address {
        let a = address.value
        if a & 0x8000_0000 == 0 { return IPv4Address(0xff00_0000) }             // class A
        if a & 0xfff0_0000 == 0xac10_0000 { return IPv4Address(0xfff0_0000) }   // 172.16.0.0/12
        if a & 0xc000_0000 == 0x8000_0000 { return IPv4Address(0xffff_0000) }   // class B
        if a & 0xffff_0000 == 0xc0a8_0000 { return IPv4Address(0xffff_0000) }   // 192.168.0.0/16
        if a & 0xffff_0000 == 0xc612_0000 { return IPv4Address(0xfffe_0000) }   // 198.18.0.0/15
        if a & 0xe000_0000 == 0xe000_0000 { return IPv4Address(0xffff_ff00) }   // class C (as QEMU)
        return IPv4Address(0xffff_fff0)                                          // multicast/reserved
    }

    /// `info network`'s text for the backend (QEMU: "net=%s,restrict=%s").
    public var infoString: String { "net=\(network),restrict=\(restricted ? "on" : "off")" }
}

/// One host forwarding rule (`-netdev user,hostfwd=RULE`, HMP `hostfwd_add`): QEMU's
/// `[tcp|udp]:[HOSTADDR]:HOSTPORT-[GUESTADDR]:GUESTPORT` (net/slirp.c slirp_hostfwd). The
/// protocol defaults to tcp; an empty host address listens on every host address (INADDR_ANY,
/// as QEMU); an empty guest address means the first DHCP address (libslirp's default).
public struct HostForward: Sendable, Equatable, CustomStringConvertible {
    public enum Transport: String, Sendable {
        case tcp, udp
    }
    public var transport: Transport
    public var hostAddress: UserNetConfig.IPv4Address
    /// 0 lets the kernel pick a port.
    public var hostPort: UInt16
    /// nil: the DHCP start address.
    public var guestAddress: UserNetConfig.IPv4Address?
    public var guestPort: UInt16
    /// The rule as the user wrote it (QEMU quotes it back in its errors).
    public var text: String

    public init(parsing text: String) throws(SystemError) {
        self.text = text
        func bad(_ why: String) -> SystemError {
            SystemError(.configuration, "invalid host forwarding rule '\(text)' (\(why)); expected [tcp|udp]:[HOSTADDR]:HOSTPORT-[GUESTADDR]:GUESTPORT")
        }
        let halves = text.split(separator: "-", maxSplits: 1, omittingEmptySubsequences: false)
        guard halves.count == 2 else { throw bad("missing '-' between the host and the guest side") }
        let hostSide = halves[0].split(separator: ":", omittingEmptySubsequences: false)
        switch hostSide[0] {
        case "", "tcp": transport = .tcp
        case "udp": transport = .udp
        case "unix": throw bad("unix socket forwarding is not supported")
        default: throw bad("bad protocol name '\(hostSide[0])'")
        }
        guard hostSide.count == 3 else { throw bad("the host side is [tcp|udp]:[HOSTADDR]:HOSTPORT") }
        if hostSide[1].isEmpty {
            hostAddress = .any
        } else if let parsed = UserNetConfig.IPv4Address(parsing: String(hostSide[1])) {
            hostAddress = parsed
        } else {
            throw bad("bad host address '\(hostSide[1])'")
        }
        guard let port = HostForward.port(hostSide[2]) else { throw bad("bad host port '\(hostSide[2])'") }
        hostPort = port
        let guestSide = halves[1].split(separator: ":", omittingEmptySubsequences: false)
        guard guestSide.count == 2 else { throw bad("the guest side is [GUESTADDR]:GUESTPORT") }
        if guestSide[0].isEmpty {
            guestAddress = nil
        } else if let parsed = UserNetConfig.IPv4Address(parsing: String(guestSide[0])) {
            guestAddress = parsed
        } else {
            throw bad("bad guest address '\(guestSide[0])'")
        }
        guard let guest = HostForward.port(guestSide[1]), guest != 0 else { throw bad("bad guest port '\(guestSide[1])'") }
        guestPort = guest
    }

    /// A port number, decimal or 0x hex as QEMU's qemu_strtoi(base 0) reads it.
    private static func port(_ text: Substring) -> UInt16? {
        if text.hasPrefix("0x") || text.hasPrefix("0X") { return UInt16(text.dropFirst(2), radix: 16) }
        return UInt16(text)
    }

    public var description: String { text }

    /// What HMP `hostfwd_remove [tcp|udp]:[HOSTADDR]:HOSTPORT` names.
    public struct Removal: Sendable, Equatable {
        public var transport: Transport
        public var hostAddress: UserNetConfig.IPv4Address
        public var hostPort: UInt16
    }

    /// Parses `hostfwd_remove`'s argument; QEMU answers "invalid format" to anything else.
    public static func parseRemoval(_ text: String) throws(SystemError) -> Removal {
        let parts = text.split(separator: ":", omittingEmptySubsequences: false)
        let bad = SystemError(.configuration, "invalid format '\(text)': expected [tcp|udp]:[HOSTADDR]:HOSTPORT")
        guard parts.count == 3 else { throw bad }
        let transport: Transport
        switch parts[0] {
        case "", "tcp": transport = .tcp
        case "udp": transport = .udp
        default: throw bad
        }
        var address = UserNetConfig.IPv4Address.any
        if !parts[1].isEmpty {
            guard let parsed = UserNetConfig.IPv4Address(parsing: String(parts[1])) else { throw bad }
            address = parsed
        }
        guard let port = HostForward.port(parts[2]) else { throw bad }
        return Removal(transport: transport, hostAddress: address, hostPort: port)
    }
}
