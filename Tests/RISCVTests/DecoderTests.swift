import Foundation
import Testing
@testable import RISCV

@Suite struct DecoderTests {
    /// Each table row's own encoding decodes to that row: the table has no shadowed entries.
    @Test func everyRowDecodesToItself() {
        let decoder = Decoder()
        for entry in instructionTable {
            #expect(decoder.entry(for: entry.match)?.op == entry.op, "\(entry.mnemonic) is shadowed")
        }
    }

    /// No two rows accept the same bits (checked pairwise on the bits both fix).
    @Test func rowsDoNotOverlap() {
        for (i, a) in instructionTable.enumerated() {
            for b in instructionTable[(i + 1)...] {
                let common = a.mask & b.mask
                if a.match & common == b.match & common {
                    // Overlap is allowed only when one row is strictly more specific (and wins).
                    #expect(a.mask != b.mask, "\(a.mnemonic) and \(b.mnemonic) have the same encoding")
                }
            }
        }
    }

    @Test func immediatesAreSignExtended() {
        let d = Decoder()
        // addi a0, a0, -1
        let addi = d.decode32(0xfff5_0513)
        #expect(addi.op == .addi && addi.imm == -1 && addi.rd == 10 && addi.rs1 == 10)
        // sd a1, -8(sp)
        let sd = d.decode32(0xfeb1_3c23)
        #expect(sd.op == .sd && sd.imm == -8 && sd.rs2 == 11 && sd.rs1 == 2)
        // beq zero, zero, -4096 (the most negative branch)
        let beq = d.decode32(0x8000_0063)
        #expect(beq.op == .beq && beq.imm == -4096)
        // jal zero, -1048576
        let jal = d.decode32(0x8000_006f)
        #expect(jal.op == .jal && jal.imm == -1_048_576)
        // lui a0, 0xfffff sign-extends on RV64
        let lui = d.decode32(0xffff_f537)
        #expect(lui.op == .lui && lui.imm == -4096)
    }

    @Test(arguments: [
        (UInt16(0x0000), "the all-zero instruction"),
        (UInt16(0x0004), "c.addi4spn with nzuimm 0"),
        (UInt16(0x6101), "c.addi16sp with imm 0"),
        (UInt16(0x6081), "c.lui with imm 0"),
        (UInt16(0x2001), "c.addiw with rd 0"),
        (UInt16(0x4002), "c.lwsp with rd 0"),
        (UInt16(0x6002), "c.ldsp with rd 0"),
        (UInt16(0x8002), "c.jr with rs1 0"),
        (UInt16(0x9c41), "reserved c.subw/c.addw slot"),
        (UInt16(0x8000), "opcode 00 funct3 100 is reserved"),
    ] as [(UInt16, String)])
    func reservedCompressedEncodingsAreIllegal(bits: UInt16, what: String) {
        let d = Decoder().decodeCompressed(bits)
        #expect(d.op == .illegal, "\(what)")
        #expect(d.raw == UInt32(bits) && d.length == 2)
    }

    @Test func compressedExpansions() {
        let d = Decoder()
        // c.li a0, -1 -> addi a0, zero, -1
        let li = d.decodeCompressed(0x557d)
        #expect(li.op == .addi && li.rd == 10 && li.rs1 == 0 && li.imm == -1 && li.length == 2)
        // c.ld a5, 8(a0) -> ld a5, 8(a0)
        let ld = d.decodeCompressed(0x651c)
        #expect(ld.op == .ld && ld.rd == 15 && ld.rs1 == 10 && ld.imm == 8)
        // c.j -2 -> jal zero, -2
        let j = d.decodeCompressed(0xbffd)
        #expect(j.op == .jal && j.rd == 0 && j.imm == -2)
        // c.addi16sp sp, -64
        let addi16sp = d.decodeCompressed(0x7139)
        #expect(addi16sp.op == .addi && addi16sp.rd == 2 && addi16sp.imm == -64)
        // c.ebreak
        #expect(d.decodeCompressed(0x9002).op == .ebreak)
        // c.srai a0, 63 -> srai with shamt 63
        let srai = d.decodeCompressed(0x957d)
        #expect(srai.op == .srai && srai.imm == 63 && srai.rd == 10)
    }

    @Test func illegal32BitEncodings() {
        let d = Decoder()
        #expect(d.decode32(0xffff_ffff).op == .illegal)
        // slli with shamt[5] set and funct6 != 0 (bit 26): reserved
        #expect(d.decode32(0x0400_1013 | 1 << 26 | 1 << 30).op == .illegal)
        // ecall with a non-zero rd is reserved
        #expect(d.decode32(0x0000_00f3).op == .illegal)
    }
}
