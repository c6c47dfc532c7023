/// Building and parsing the Ethernet frames tests exchange with a network backend: Ethernet
/// II, ARP (RFC 826), IPv4 (RFC 791), UDP (RFC 768), TCP (RFC 9293) and BOOTP/DHCP
/// (RFC 2131/2132). Self-contained (no Foundation, no project code): just enough to play a
/// guest; parsers return nil on anything they do not understand.
enum Frames {
    static let broadcastMAC: [UInt8] = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff]
    /// QEMU's default NIC address.
    static let guestMAC: [UInt8] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56]

    static let etherTypeIPv4: UInt16 = 0x0800
    static let etherTypeARP: UInt16 = 0x0806
    static let protocolTCP: UInt8 = 6
    static let protocolUDP: UInt8 = 17

    /// "10.0.2.15" → [10, 0, 2, 15] (tests write valid addresses).
    static func ip(_ text: String) -> [UInt8] {
        let parts = text.split(separator: ".").compactMap { UInt8($0) }
        precondition(parts.count == 4, "bad test address \(text)")
        return parts
    }

    static func be16(_ value: UInt16) -> [UInt8] { [UInt8(value >> 8), UInt8(value & 0xff)] }
    static func be32(_ value: UInt32) -> [UInt8] { [UInt8(value >> 24), UInt8((value >> 16) & 0xff), UInt8((value >> 8) & 0xff), UInt8(value & 0xff)] }
    static func read16(_ bytes: ArraySlice<UInt8>, _ offset: Int) -> UInt16 {
        let i = bytes.startIndex + offset
        return UInt16(bytes[i]) << 8 | UInt16(bytes[i + 1])
    }
    static func read32(_ bytes: ArraySlice<UInt8>, _ offset: Int) -> UInt32 {
        UInt32(read16(bytes, offset)) << 16 | UInt32(read16(bytes, offset + 2))
    }

    /// The Internet checksum (RFC 1071) of `bytes` plus an already summed `initial`.
    static func checksum<C: Collection>(_ bytes: C, initial: UInt32 = 0) -> UInt16 where C.Element == UInt8 {
        var sum = initial
        var high = true
        for byte in bytes {
            sum += high ? UInt32(byte) << 8 : UInt32(byte)
            high.toggle()
        }
        while sum > 0xffff { sum = (sum & 0xffff) + (sum >> 16) }
        return ~UInt16(sum)
    }

    /// The sum of the TCP/UDP pseudo-header (source, destination, protocol, length).
    static func pseudoHeaderSum(source: [UInt8], destination: [UInt8], protocol: UInt8, length: Int) -> UInt32 {
        let words = source + destination + [0, `protocol`] + be16(UInt16(length))
        var sum: UInt32 = 0
        for i in stride(from: 0, to: words.count, by: 2) { sum += UInt32(words[i]) << 8 | UInt32(words[i + 1]) }
        return sum
    }

    // MARK: building

    static func ethernet(destination: [UInt8], source: [UInt8] = guestMAC, type: UInt16, payload: [UInt8]) -> [UInt8] {
        destination + source + be16(type) + payload
    }

    static func arp(operation: UInt16, senderMAC: [UInt8], senderIP: [UInt8], targetMAC: [UInt8], targetIP: [UInt8]) -> [UInt8] {
        let body = be16(1) + be16(etherTypeIPv4) + [6, 4] + be16(operation) + senderMAC + senderIP + targetMAC + targetIP
        let destination = operation == 1 ? broadcastMAC : targetMAC
        return ethernet(destination: destination, source: senderMAC, type: etherTypeARP, payload: body)
    }

    /// "Who has `target`? Tell `senderIP`" from the guest.
    static func arpRequest(for target: String, from senderIP: String = "10.0.2.15", mac: [UInt8] = guestMAC) -> [UInt8] {
        arp(operation: 1, senderMAC: mac, senderIP: ip(senderIP), targetMAC: [0, 0, 0, 0, 0, 0], targetIP: ip(target))
    }

    static func ipv4(source: [UInt8], destination: [UInt8], protocol: UInt8, payload: [UInt8], identification: UInt16 = 1) -> [UInt8] {
        var header = [0x45, 0] + be16(UInt16(20 + payload.count)) + be16(identification) + [0x40, 0] + [64, `protocol`, 0, 0]
        header += source + destination
        let sum = checksum(header)
        header[10] = UInt8(sum >> 8)
        header[11] = UInt8(sum & 0xff)
        return header + payload
    }

    /// An IPv4/UDP packet (not yet in a frame), UDP checksum filled in.
    static func udpPacket(source: [UInt8], sourcePort: UInt16, destination: [UInt8], destinationPort: UInt16, payload: [UInt8]) -> [UInt8] {
        var udp = be16(sourcePort) + be16(destinationPort) + be16(UInt16(8 + payload.count)) + [0, 0] + payload
        var sum = checksum(udp, initial: pseudoHeaderSum(source: source, destination: destination, protocol: protocolUDP, length: udp.count))
        if sum == 0 { sum = 0xffff }
        udp[6] = UInt8(sum >> 8)
        udp[7] = UInt8(sum & 0xff)
        return ipv4(source: source, destination: destination, protocol: protocolUDP, payload: udp)
    }

    static func udpFrame(to destinationMAC: [UInt8], from source: String, _ sourcePort: UInt16, to destination: String, _ destinationPort: UInt16,
                         payload: [UInt8]) -> [UInt8] {
        ethernet(destination: destinationMAC, type: etherTypeIPv4,
                 payload: udpPacket(source: ip(source), sourcePort: sourcePort, destination: ip(destination), destinationPort: destinationPort, payload: payload))
    }

    struct TCPFlags: OptionSet {
        let rawValue: UInt8
        static let fin = TCPFlags(rawValue: 0x01)
        static let syn = TCPFlags(rawValue: 0x02)
        static let rst = TCPFlags(rawValue: 0x04)
        static let psh = TCPFlags(rawValue: 0x08)
        static let ack = TCPFlags(rawValue: 0x10)
    }

    static func tcpFrame(to destinationMAC: [UInt8], from source: String, _ sourcePort: UInt16, to destination: String, _ destinationPort: UInt16,
                         sequence: UInt32, acknowledgment: UInt32, flags: TCPFlags, window: UInt16 = 65_535, payload: [UInt8] = []) -> [UInt8] {
        var tcp = be16(sourcePort) + be16(destinationPort) + be32(sequence) + be32(acknowledgment)
        tcp += [5 << 4, flags.rawValue] + be16(window) + [0, 0, 0, 0] + payload
        let sum = checksum(tcp, initial: pseudoHeaderSum(source: ip(source), destination: ip(destination), protocol: protocolTCP, length: tcp.count))
        tcp[16] = UInt8(sum >> 8)
        tcp[17] = UInt8(sum & 0xff)
        return ethernet(destination: destinationMAC, type: etherTypeIPv4,
                        payload: ipv4(source: ip(source), destination: ip(destination), protocol: protocolTCP, payload: tcp))
    }

    /// A DHCPDISCOVER broadcast from `mac` (0.0.0.0:68 → 255.255.255.255:67).
    static func dhcpDiscover(mac: [UInt8] = guestMAC, transaction: UInt32 = 0x1234_5678) -> [UInt8] {
        var bootp: [UInt8] = [1, 1, 6, 0] + be32(transaction) + [0, 0, 0, 0]  // op, htype, hlen, hops, xid, secs, flags
        bootp += [UInt8](repeating: 0, count: 16)                              // ciaddr, yiaddr, siaddr, giaddr
        bootp += mac + [UInt8](repeating: 0, count: 10)                        // chaddr
        bootp += [UInt8](repeating: 0, count: 192)                             // sname, file
        bootp += [99, 130, 83, 99]                                             // magic cookie
        bootp += [53, 1, 1]                                                    // DHCP message type: DISCOVER
        bootp += [55, 5, 1, 3, 6, 15, 119]                                     // parameters wanted
        bootp += [255]
        bootp += [UInt8](repeating: 0, count: max(0, 300 - bootp.count))      // BOOTP's minimum size
        return ethernet(destination: broadcastMAC, source: mac, type: etherTypeIPv4,
                        payload: udpPacket(source: [0, 0, 0, 0], sourcePort: 68, destination: [255, 255, 255, 255], destinationPort: 67, payload: bootp))
    }

    // MARK: parsing

    struct Ethernet {
        var destination: [UInt8]
        var source: [UInt8]
        var type: UInt16
        var payload: ArraySlice<UInt8>
    }

    static func parseEthernet(_ frame: [UInt8]) -> Ethernet? {
        guard frame.count >= 14 else { return nil }
        return Ethernet(destination: Array(frame[0..<6]), source: Array(frame[6..<12]), type: read16(frame[...], 12), payload: frame[14...])
    }

    struct ARP {
        var operation: UInt16
        var senderMAC: [UInt8]
        var senderIP: [UInt8]
        var targetMAC: [UInt8]
        var targetIP: [UInt8]
    }

    static func parseARP(_ frame: [UInt8]) -> ARP? {
        guard let eth = parseEthernet(frame), eth.type == etherTypeARP, eth.payload.count >= 28 else { return nil }
        let p = eth.payload
        let s = p.startIndex
        return ARP(operation: read16(p, 6), senderMAC: Array(p[s + 8..<s + 14]), senderIP: Array(p[s + 14..<s + 18]),
                   targetMAC: Array(p[s + 18..<s + 24]), targetIP: Array(p[s + 24..<s + 28]))
    }

    struct IPv4 {
        var source: [UInt8]
        var destination: [UInt8]
        var `protocol`: UInt8
        var payload: ArraySlice<UInt8>
        /// The header checksum verifies (sums to zero).
        var headerChecksumValid: Bool
    }

    static func parseIPv4(_ frame: [UInt8]) -> IPv4? {
        guard let eth = parseEthernet(frame), eth.type == etherTypeIPv4, eth.payload.count >= 20 else { return nil }
        let p = eth.payload
        let s = p.startIndex
        let headerLength = Int(p[s] & 0x0f) * 4
        let total = Int(read16(p, 2))
        guard p[s] >> 4 == 4, headerLength >= 20, total >= headerLength, total <= p.count else { return nil }
        return IPv4(source: Array(p[s + 12..<s + 16]), destination: Array(p[s + 16..<s + 20]), protocol: p[s + 9],
                    payload: p[s + headerLength..<s + total], headerChecksumValid: checksum(p[s..<s + headerLength]) == 0)
    }

    struct UDP {
        var ip: IPv4
        var sourcePort: UInt16
        var destinationPort: UInt16
        var payload: [UInt8]
        /// The checksum verifies, or is 0 (none, allowed over IPv4).
        var checksumValid: Bool
    }

    static func parseUDP(_ frame: [UInt8]) -> UDP? {
        guard let ip = parseIPv4(frame), ip.protocol == protocolUDP, ip.payload.count >= 8 else { return nil }
        let p = ip.payload
        let length = Int(read16(p, 4))
        guard length >= 8, length <= p.count else { return nil }
        let segment = p.prefix(length)
        let valid = read16(p, 6) == 0
            || checksum(segment, initial: pseudoHeaderSum(source: ip.source, destination: ip.destination, protocol: protocolUDP, length: length)) == 0
        return UDP(ip: ip, sourcePort: read16(p, 0), destinationPort: read16(p, 2), payload: Array(segment.dropFirst(8)), checksumValid: valid)
    }

    struct TCP {
        var ip: IPv4
        var sourcePort: UInt16
        var destinationPort: UInt16
        var sequence: UInt32
        var acknowledgment: UInt32
        var flags: TCPFlags
        var payload: [UInt8]
        var checksumValid: Bool
    }

    static func parseTCP(_ frame: [UInt8]) -> TCP? {
        guard let ip = parseIPv4(frame), ip.protocol == protocolTCP, ip.payload.count >= 20 else { return nil }
        let p = ip.payload
        let offset = Int(p[p.startIndex + 12] >> 4) * 4
        guard offset >= 20, offset <= p.count else { return nil }
        let valid = checksum(p, initial: pseudoHeaderSum(source: ip.source, destination: ip.destination, protocol: protocolTCP, length: p.count)) == 0
        return TCP(ip: ip, sourcePort: read16(p, 0), destinationPort: read16(p, 2), sequence: read32(p, 4), acknowledgment: read32(p, 8),
                   flags: TCPFlags(rawValue: p[p.startIndex + 13] & 0x3f), payload: Array(p.dropFirst(offset)), checksumValid: valid)
    }

    struct DHCP {
        var operation: UInt8
        var transaction: UInt32
        var yourAddress: [UInt8]
        var clientMAC: [UInt8]
        /// Options by code; a repeated code's values are concatenated (RFC 3396).
        var options: [UInt8: [UInt8]]
        var messageType: UInt8? { options[53]?.first }
    }

    static func parseDHCP(_ frame: [UInt8]) -> DHCP? {
        guard let udp = parseUDP(frame), udp.sourcePort == 67, udp.payload.count >= 240 else { return nil }
        let p = udp.payload[...]
        guard Array(p[236..<240]) == [99, 130, 83, 99] else { return nil }
        var options: [UInt8: [UInt8]] = [:]
        var i = 240
        while i < p.count {
            let code = p[i]
            if code == 255 { break }
            if code == 0 {
                i += 1
                continue
            }
            guard i + 1 < p.count, i + 2 + Int(p[i + 1]) <= p.count else { return nil }
            let length = Int(p[i + 1])
            options[code, default: []] += p[i + 2..<i + 2 + length]
            i += 2 + length
        }
        return DHCP(operation: p[0], transaction: read32(p, 4), yourAddress: Array(p[16..<20]), clientMAC: Array(p[28..<34]), options: options)
    }
}
