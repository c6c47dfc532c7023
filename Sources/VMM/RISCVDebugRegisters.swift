import RISCV

/// RISC-V registers as GDB numbers and describes them (GDB's riscv-tdep numbering, which the
/// target description below states with `regnum`): x0-x31 = 0-31, pc = 32, f0-f31 = 33-64,
/// CSR n = 65 + n (so fflags/frm/fcsr are 66/67/68, as in GDB's own FPU feature file), and
/// the virtual `priv` register (the privilege mode) = 65 + 4096.
enum RISCVDebugRegisters {
    static let pc = 32
    static let firstFloat = 33
    static let firstCSR = 65
    static let privilege = firstCSR + 4096
    /// What the `g` packet carries: x0-x31 and pc; GDB reads the rest with `p`.
    static let generalCount = 33

    /// The CSRs this hart implements, in the target description's CSR feature (the FPU
    /// feature lists fflags, frm and fcsr).
    static let csrs: [(name: String, number: UInt16)] = {
        var list: [(String, UInt16)] = [
            ("cycle", CSRNumber.cycle), ("time", CSRNumber.time), ("instret", CSRNumber.instret),
            ("sstatus", CSRNumber.sstatus), ("sie", CSRNumber.sie), ("stvec", CSRNumber.stvec),
            ("scounteren", CSRNumber.scounteren), ("senvcfg", CSRNumber.senvcfg), ("sscratch", CSRNumber.sscratch),
            ("sepc", CSRNumber.sepc), ("scause", CSRNumber.scause), ("stval", CSRNumber.stval), ("sip", CSRNumber.sip),
            ("stimecmp", CSRNumber.stimecmp), ("satp", CSRNumber.satp),
            ("mvendorid", CSRNumber.mvendorid), ("marchid", CSRNumber.marchid), ("mimpid", CSRNumber.mimpid),
            ("mhartid", CSRNumber.mhartid), ("mconfigptr", CSRNumber.mconfigptr),
            ("mstatus", CSRNumber.mstatus), ("misa", CSRNumber.misa), ("medeleg", CSRNumber.medeleg),
            ("mideleg", CSRNumber.mideleg), ("mie", CSRNumber.mie), ("mtvec", CSRNumber.mtvec),
            ("mcounteren", CSRNumber.mcounteren), ("menvcfg", CSRNumber.menvcfg), ("mcountinhibit", CSRNumber.mcountinhibit),
            ("mscratch", CSRNumber.mscratch), ("mepc", CSRNumber.mepc), ("mcause", CSRNumber.mcause),
            ("mtval", CSRNumber.mtval), ("mip", CSRNumber.mip),
            ("mcycle", CSRNumber.mcycle), ("minstret", CSRNumber.minstret),
        ]
        // pmpcfg0 and pmpcfg2 (RV64 has only the even ones), pmpaddr0-15.
        list.append(("pmpcfg0", CSRNumber.pmpcfg0))
        list.append(("pmpcfg2", CSRNumber.pmpcfg0 + 2))
        for i in 0..<16 { list.append(("pmpaddr\(i)", CSRNumber.pmpaddr0 + UInt16(i))) }
        return list
    }()

    static let floatingPointCSRs: [(name: String, number: UInt16)] = [
        ("fflags", CSRNumber.fflags), ("frm", CSRNumber.frm), ("fcsr", CSRNumber.fcsr),
    ]

    // MARK: - Access (vCPU thread)

    /// Register `number` in little-endian bytes of its size; nil if there is none.
    static func read(_ hart: Hart, _ number: Int) -> [UInt8]? {
        let s = hart.state.pointee
        switch number {
        case 0..<32: return bytes(s.x[number], count: 8)
        case pc: return bytes(s.pc, count: 8)
        case firstFloat..<(firstFloat + 32): return bytes(s.f[number - firstFloat], count: 8)
        case privilege: return bytes(UInt64(s.privilege.rawValue), count: 8)
        case firstCSR..<privilege:
            let csr = UInt16(number - firstCSR)
            guard let size = csrSize(csr), let value = hart.debugReadCSR(csr) else { return nil }
            return bytes(value, count: size)
        default: return nil
        }
    }

    /// Sets register `number` from little-endian `value` of the register's size.
    static func write(_ hart: Hart, _ number: Int, _ value: [UInt8]) -> Bool {
        let s = hart.state
        let expected: Int?
        switch number {
        case firstCSR..<privilege: expected = csrSize(UInt16(number - firstCSR))
        case 0...pc, firstFloat..<(firstFloat + 32), privilege: expected = 8
        default: expected = nil
        }
        guard value.count == expected else { return false }
        let v = value.reversed().reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
        switch number {
        case 0: return true  // x0 stays zero
        case 1..<32: s.pointee.x[number] = v
        case pc: s.pointee.pc = v
        case firstFloat..<(firstFloat + 32): s.pointee.f[number - firstFloat] = v
        case privilege:
            // Privileged §1.2: 0 U, 1 S, 3 M; 2 is reserved.
            guard v != 2, let mode = PrivilegeMode(rawValue: UInt8(truncatingIfNeeded: v)), v <= 3 else { return false }
            hart.debugSetPrivilege(mode)
        default:
            return hart.debugWriteCSR(UInt16(number - firstCSR), v)
        }
        return true
    }

    /// The size GDB is told for a CSR (fflags/frm/fcsr are 32-bit in GDB's FPU feature).
    private static func csrSize(_ csr: UInt16) -> Int? {
        if floatingPointCSRs.contains(where: { $0.number == csr }) { return 4 }
        return csrs.contains(where: { $0.number == csr }) ? 8 : nil
    }

    private static func bytes(_ value: UInt64, count: Int) -> [UInt8] {
        (0..<count).map { UInt8(truncatingIfNeeded: value >> (8 * UInt64($0))) }
    }

    // MARK: - Target description (GDB manual, "Target Descriptions"; features "RISC-V Features")

    static func description(annex: String) -> [UInt8]? {
        let text: String
        switch annex {
        case "target.xml":
            text = """
            <?xml version="1.0"?>
            <!DOCTYPE target SYSTEM "gdb-target.dtd">
            <target version="1.0">
              <architecture>riscv:rv64</architecture>
              <xi:include href="riscv-64bit-cpu.xml"/>
              <xi:include href="riscv-64bit-fpu.xml"/>
              <xi:include href="riscv-64bit-csr.xml"/>
              <xi:include href="riscv-64bit-virtual.xml"/>
            </target>

            """
        case "riscv-64bit-cpu.xml":
            let names = ["zero", "ra", "sp", "gp", "tp", "t0", "t1", "t2", "fp", "s1", "a0", "a1", "a2", "a3", "a4", "a5",
                         "a6", "a7", "s2", "s3", "s4", "s5", "s6", "s7", "s8", "s9", "s10", "s11", "t3", "t4", "t5", "t6"]
            let types: [String: String] = ["ra": "code_ptr", "sp": "data_ptr", "gp": "data_ptr", "tp": "data_ptr"]
            var regs = names.enumerated().map { i, name in
                "  <reg name=\"\(name)\" bitsize=\"64\" type=\"\(types[name] ?? "int")\" regnum=\"\(i)\"/>"
            }
            regs.append("  <reg name=\"pc\" bitsize=\"64\" type=\"code_ptr\" regnum=\"\(pc)\"/>")
            text = feature("org.gnu.gdb.riscv.cpu", regs)
        case "riscv-64bit-fpu.xml":
            let names = ["ft0", "ft1", "ft2", "ft3", "ft4", "ft5", "ft6", "ft7", "fs0", "fs1", "fa0", "fa1", "fa2", "fa3",
                         "fa4", "fa5", "fa6", "fa7", "fs2", "fs3", "fs4", "fs5", "fs6", "fs7", "fs8", "fs9", "fs10", "fs11",
                         "ft8", "ft9", "ft10", "ft11"]
            var lines = [
                "  <union id=\"riscv_double\">",
                "    <field name=\"float\" type=\"ieee_single\"/>",
                "    <field name=\"double\" type=\"ieee_double\"/>",
                "  </union>",
            ]
            lines += names.enumerated().map { i, name in
                "  <reg name=\"\(name)\" bitsize=\"64\" type=\"riscv_double\" regnum=\"\(firstFloat + i)\"/>"
            }
            lines += floatingPointCSRs.map {
                "  <reg name=\"\($0.name)\" bitsize=\"32\" type=\"int\" regnum=\"\(firstCSR + Int($0.number))\"/>"
            }
            text = feature("org.gnu.gdb.riscv.fpu", lines)
        case "riscv-64bit-csr.xml":
            text = feature("org.gnu.gdb.riscv.csr", csrs.map {
                "  <reg name=\"\($0.name)\" bitsize=\"64\" type=\"int\" regnum=\"\(firstCSR + Int($0.number))\"/>"
            })
        case "riscv-64bit-virtual.xml":
            text = feature("org.gnu.gdb.riscv.virtual", ["  <reg name=\"priv\" bitsize=\"64\" type=\"int\" regnum=\"\(privilege)\"/>"])
        default:
            return nil
        }
        return Array(text.utf8)
    }

    private static func feature(_ name: String, _ lines: [String]) -> String {
        """
        <?xml version="1.0"?>
        <!DOCTYPE feature SYSTEM "gdb-target.dtd">
        <feature name="\(name)">
        \(lines.joined(separator: "\n"))
        </feature>

        """
    }
}
