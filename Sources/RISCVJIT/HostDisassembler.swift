import CCapstone

/// Disassembles host code for `-d out_asm` with Capstone (the library QEMU uses for the same
/// trace), one line per instruction: address, bytes, Intel syntax.
enum HostDisassembler {
    static func lines(_ code: UnsafeRawPointer, count: Int) -> [String] {
        var handle: csh = 0
        guard cs_open(CS_ARCH_X86, CS_MODE_64, &handle) == CS_ERR_OK else { return ["(capstone: cannot open an x86-64 disassembler)"] }
        defer { cs_close(&handle) }
        // SAFETY: `code` is `count` bytes of the code buffer just emitted (its executable
        // view, readable); Capstone allocates `insns` (n entries), freed by cs_free below, and
        // the mnemonic and operand fields are NUL-terminated C strings inside each entry.
        var insns: UnsafeMutablePointer<cs_insn>?
        let n = cs_disasm(handle, code.assumingMemoryBound(to: UInt8.self), count, UInt64(UInt(bitPattern: code)), 0, &insns)
        guard let insns, n > 0 else { return ["(capstone: no instructions decoded)"] }
        defer { cs_free(insns, n) }
        var out: [String] = []
        for i in 0..<n {
            var insn = insns[i]
            let mnemonic = withUnsafeBytes(of: &insn.mnemonic) { String(cString: $0.bindMemory(to: CChar.self).baseAddress!) }
            let operands = withUnsafeBytes(of: &insn.op_str) { String(cString: $0.bindMemory(to: CChar.self).baseAddress!) }
            out.append("0x" + String(insn.address, radix: 16) + ":  " + mnemonic + (operands.isEmpty ? "" : " " + operands))
        }
        if n < count {
            // Capstone stops at bytes it cannot decode; say so rather than drop them silently.
            let decoded = (0..<n).reduce(0) { $0 + Int(insns[$1].size) }
            if decoded < count { out.append("(\(count - decoded) bytes not decoded)") }
        }
        return out
    }
}
