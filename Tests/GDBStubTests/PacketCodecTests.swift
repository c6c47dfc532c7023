import Testing
@testable import GDBStub

@Suite struct PacketCodecTests {
    @Test func framesWithChecksum() {
        #expect(String(decoding: GDBPacket.frame(Array("OK".utf8)), as: UTF8.self) == "$OK#9a")
        #expect(String(decoding: GDBPacket.frame([]), as: UTF8.self) == "$#00")
    }

    @Test func escapesReservedCharacters() {
        // '$' '#' '}' '*' become '}' + (byte ^ 0x20); the checksum covers the escaped bytes.
        let framed = GDBPacket.frame(Array("a$#}*".utf8))
        #expect(Array(framed.dropFirst().prefix(9)) == Array("a}\u{04}}\u{03}}]}\u{0a}".utf8))
        let sum = framed.dropFirst().prefix(9).reduce(UInt8(0), &+)
        #expect(Array(framed.suffix(2)) == GDBPacket.hex([sum]))
        #expect(GDBPacket.unescape(framed.dropFirst().prefix(9)) == Array("a$#}*".utf8))
        #expect(GDBPacket.unescape(Array("ab}".utf8)[...]) == nil)
    }

    @Test func decodesPacketsAcksAndInterrupts() {
        var decoder = GDBPacketDecoder()
        let inputs = decoder.feed(Array("+$g#67-\u{03}junk$m0,4#fd".utf8))
        #expect(inputs == [.ack, .packet(Array("g".utf8)), .nack, .interrupt, .packet(Array("m0,4".utf8))])
    }

    @Test func decodesAcrossFeeds() {
        var decoder = GDBPacketDecoder()
        var inputs: [GDBInput] = []
        for byte in "$qC#b4".utf8 { inputs += decoder.feed([byte]) }
        #expect(inputs == [.packet(Array("qC".utf8))])
    }

    @Test func badChecksumsAndCutPacketsAreCorrupt() {
        var decoder = GDBPacketDecoder()
        #expect(decoder.feed(Array("$g#00".utf8)) == [.corrupt])
        #expect(decoder.feed(Array("$g#zz".utf8)) == [.corrupt])
        // A new '$' inside a packet: the first is abandoned, the second decodes.
        #expect(decoder.feed(Array("$gar$g#67".utf8)) == [.corrupt, .packet(Array("g".utf8))])
    }

    @Test func oversizedPacketsAreRefusedNotBuffered() {
        var decoder = GDBPacketDecoder(maxPayload: 8)
        let payload = Array(repeating: UInt8(ascii: "a"), count: 100)
        let sum = payload.reduce(UInt8(0), &+)
        #expect(decoder.feed([UInt8(ascii: "$")] + payload + [UInt8(ascii: "#")] + GDBPacket.hex([sum])) == [.corrupt])
        #expect(decoder.feed(Array("$g#67".utf8)) == [.packet(Array("g".utf8))])
    }

    @Test func hexHelpers() {
        #expect(GDBPacket.bytes(fromHex: Array("00ff7A".utf8)) == [0, 255, 0x7a])
        #expect(GDBPacket.bytes(fromHex: Array("0".utf8)) == nil)
        #expect(GDBPacket.bytes(fromHex: Array("zz".utf8)) == nil)
        #expect(GDBPacket.number(fromHex: Array("80000000".utf8)) == 0x8000_0000)
        #expect(GDBPacket.number(fromHex: Array("".utf8)) == nil)
        #expect(GDBPacket.number(fromHex: Array("11112222333344445".utf8)) == nil)  // more than 64 bits
    }
}
