import CLinux
import KVM

/// x86-64 registers as GDB numbers and describes them for a KVM vCPU. The numbering is GDB's
/// amd64 one (amd64-tdep's register order, the order of its features `64bit-core.xml` and
/// `64bit-sse.xml`): rax, rbx, rcx, rdx, rsi, rdi, rbp, rsp, r8-r15 = 0-15, rip = 16,
/// eflags = 17, cs, ss, ds, es, fs, gs = 18-23, st0-st7 = 24-31, fctrl, fstat, ftag, fiseg,
/// fioff, foseg, fooff, fop = 32-39, xmm0-15 = 40-55, mxcsr = 56; then fs_base and gs_base
/// (GDB's `org.gnu.gdb.i386.segments`) = 57-58 and the system registers cr0, cr2, cr3, cr4,
/// cr8, efer = 59-64, read-only, in a feature of our own.
///
/// Values come from KVM_GET_REGS, KVM_GET_SREGS, KVM_GET_FPU (FXSAVE layout) and, for MXCSR,
/// KVM_GET_XSAVE. One
/// approximation: FXSAVE keeps an abridged tag word (one bit per register: empty or not), so
/// `ftag` reports each non-empty register as valid (00b), never zero (01b) or special (10b).
enum X86DebugRegisters {
    static let rip = 16
    static let eflags = 17
    static let firstSegment = 18
    static let firstST = 24
    static let fctrl = 32, fstat = 33, ftag = 34, fiseg = 35, fioff = 36, foseg = 37, fooff = 38, fop = 39
    static let firstXMM = 40
    static let mxcsr = 56
    static let fsBase = 57, gsBase = 58
    static let firstSystem = 59
    static let systemNames = ["cr0", "cr2", "cr3", "cr4", "cr8", "efer"]
    static let count = firstSystem + systemNames.count

    static let gprNames = ["rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp",
                           "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15", "rip"]
    static let segmentNames = ["cs", "ss", "ds", "es", "fs", "gs"]
    static let fpControlNames = ["fctrl", "fstat", "ftag", "fiseg", "fioff", "foseg", "fooff", "fop"]

    /// The register's size in bytes; nil if there is no such register.
    static func size(_ number: Int) -> Int? {
        switch number {
        case 0...rip, fsBase, gsBase, firstSystem..<count: return 8
        case eflags, firstSegment..<firstST, fctrl...fop, mxcsr: return 4
        case firstST..<fctrl: return 10
        case firstXMM..<mxcsr: return 16
        default: return nil
        }
    }

    // MARK: - Access (vCPU parked)

    private static func gpr(_ number: Int) -> WritableKeyPath<kvm_regs, UInt64> {
        let paths: [WritableKeyPath<kvm_regs, UInt64>] = [\.rax, \.rbx, \.rcx, \.rdx, \.rsi, \.rdi, \.rbp, \.rsp,
                                                          \.r8, \.r9, \.r10, \.r11, \.r12, \.r13, \.r14, \.r15, \.rip]
        return paths[number]
    }

    private static func segment(_ number: Int) -> WritableKeyPath<kvm_sregs, kvm_segment> {
        let paths: [WritableKeyPath<kvm_sregs, kvm_segment>] = [\.cs, \.ss, \.ds, \.es, \.fs, \.gs]
        return paths[number - firstSegment]
    }

    private static func system(_ sregs: kvm_sregs, _ number: Int) -> UInt64 {
        [sregs.cr0, sregs.cr2, sregs.cr3, sregs.cr4, sregs.cr8, sregs.efer][number - firstSystem]
    }

    /// Register `number` of `vcpu` in little-endian bytes of its size; nil if there is none or
    /// KVM refused to tell.
    static func read(_ vcpu: KVMVcpu, _ number: Int) -> [UInt8]? {
        guard let size = size(number) else { return nil }
        switch number {
        case 0...rip:
            return (try? vcpu.registers()).map { bytes($0[keyPath: gpr(number)], count: size) }
        case eflags:
            return (try? vcpu.registers()).map { bytes($0.rflags, count: size) }
        case firstSegment..<firstST, fsBase, gsBase, firstSystem..<count:
            guard let sregs = try? vcpu.specialRegisters() else { return nil }
            switch number {
            case fsBase: return bytes(sregs.fs.base, count: size)
            case gsBase: return bytes(sregs.gs.base, count: size)
            case firstSystem..<count: return bytes(system(sregs, number), count: size)
            default: return bytes(UInt64(sregs[keyPath: segment(number)].selector), count: size)
            }
        case mxcsr:
            return (try? vcpu.mxcsr()).map { bytes(UInt64($0), count: size) }
        default:
            guard var fpu = try? vcpu.fpu() else { return nil }
            return withFPUField(&fpu, number) { Array($0) }
        }
    }

    /// Sets register `number` of `vcpu` from little-endian `value` of the register's size.
    /// Segment selectors and system registers are read-only (a selector alone does not load a
    /// descriptor); writing their current value succeeds, so GDB's `G` packet goes through.
    static func write(_ vcpu: KVMVcpu, _ number: Int, _ value: [UInt8]) -> Bool {
        guard let size = size(number), value.count == size else { return false }
        if read(vcpu, number) == value { return true }
        let v = value.prefix(8).reversed().reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
        do {
            switch number {
            case 0...rip, eflags:
                var regs = try vcpu.registers()
                if number == eflags { regs.rflags = v } else { regs[keyPath: gpr(number)] = v }
                try vcpu.setRegisters(regs)
            case fsBase, gsBase:
                var sregs = try vcpu.specialRegisters()
                if number == fsBase { sregs.fs.base = v } else { sregs.gs.base = v }
                try vcpu.setSpecialRegisters(sregs)
            case firstSegment..<firstST, firstSystem..<count:
                return false
            case mxcsr:
                try vcpu.setMXCSR(UInt32(truncatingIfNeeded: v))
            default:
                var fpu = try vcpu.fpu()
                withFPUField(&fpu, number) { field in
                    for (i, byte) in value.enumerated() { field[i] = byte }
                }
                try vcpu.setFPU(fpu)
            }
            return true
        } catch {
            return false
        }
    }

    /// Runs `body` on the bytes of an FPU register as GDB sees them, with the FXSAVE fields
    /// converted (SDM Vol. 1 10.5.1, Table 10-2: FCW, FSW, abridged FTW, FOP, FPU IP, FPU DP,
    /// ST0-7 in 16-byte slots, XMM0-15); changes made by `body` are stored back. (MXCSR is not
    /// among them: see `KVMVcpu.mxcsr()`.)
    private static func withFPUField<R>(_ fpu: inout kvm_fpu, _ number: Int, _ body: (inout [UInt8]) -> R) -> R {
        switch number {
        case firstST..<fctrl, firstXMM..<mxcsr:
            let isST = number < fctrl
            let base = isST ? MemoryLayout<kvm_fpu>.offset(of: \.fpr)! : MemoryLayout<kvm_fpu>.offset(of: \.xmm)!
            let offset = base + 16 * (number - (isST ? firstST : firstXMM))
            let count = isST ? 10 : 16
            var field = withUnsafeBytes(of: fpu) { Array($0[offset..<offset + count]) }
            let result = body(&field)
            withUnsafeMutableBytes(of: &fpu) { raw in
                for (i, byte) in field.enumerated() { raw[offset + i] = byte }
            }
            return result
        default:
            // 32-bit fields GDB shows as integers.
            var value: UInt64
            switch number {
            case fctrl: value = UInt64(fpu.fcw)
            case fstat: value = UInt64(fpu.fsw)
            case ftag: value = fullTagWord(abridged: fpu.ftwx)
            case fiseg: value = (fpu.last_ip >> 32) & 0xffff
            case fioff: value = fpu.last_ip & 0xffff_ffff
            case foseg: value = (fpu.last_dp >> 32) & 0xffff
            case fooff: value = fpu.last_dp & 0xffff_ffff
            default: value = UInt64(fpu.last_opcode)
            }
            var field = bytes(value, count: 4)
            let result = body(&field)
            value = field.reversed().reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
            switch number {
            case fctrl: fpu.fcw = UInt16(truncatingIfNeeded: value)
            case fstat: fpu.fsw = UInt16(truncatingIfNeeded: value)
            case ftag: fpu.ftwx = abridgedTagWord(full: value)
            case fiseg: fpu.last_ip = fpu.last_ip & 0xffff_ffff | (value & 0xffff) << 32
            case fioff: fpu.last_ip = fpu.last_ip & ~0xffff_ffff | value
            case foseg: fpu.last_dp = fpu.last_dp & 0xffff_ffff | (value & 0xffff) << 32
            case fooff: fpu.last_dp = fpu.last_dp & ~0xffff_ffff | value
            default: fpu.last_opcode = UInt16(truncatingIfNeeded: value & 0x7ff)
            }
            return result
        }
    }

    /// SDM Vol. 1 8.1.7: two tag bits per physical register, 11b = empty; FXSAVE's abridged
    /// byte has one bit per register, 1 = not empty (10.5.1.1).
    static func fullTagWord(abridged: UInt8) -> UInt64 {
        (0..<8).reduce(UInt64(0)) { word, i in abridged & (1 << i) != 0 ? word : word | 0b11 << (2 * UInt64(i)) }
    }

    static func abridgedTagWord(full: UInt64) -> UInt8 {
        (0..<8).reduce(UInt8(0)) { byte, i in (full >> (2 * UInt64(i))) & 0b11 == 0b11 ? byte : byte | 1 << i }
    }

    private static func bytes(_ value: UInt64, count: Int) -> [UInt8] {
        (0..<count).map { $0 < 8 ? UInt8(truncatingIfNeeded: value >> (8 * UInt64($0))) : 0 }
    }

    // MARK: - Target description (GDB manual, "Target Descriptions", "i386 Features")

    static func description(annex: String) -> [UInt8]? {
        let text: String
        switch annex {
        case "target.xml":
            text = """
            <?xml version="1.0"?>
            <!DOCTYPE target SYSTEM "gdb-target.dtd">
            <target version="1.0">
              <architecture>i386:x86-64</architecture>
              <xi:include href="64bit-core.xml"/>
              <xi:include href="64bit-sse.xml"/>
              <xi:include href="64bit-segments.xml"/>
              <xi:include href="64bit-system.xml"/>
            </target>

            """
        case "64bit-core.xml":
            var lines = ["  <flags id=\"i386_eflags\" size=\"4\">"]
            let flags = [(0, "CF"), (1, ""), (2, "PF"), (4, "AF"), (6, "ZF"), (7, "SF"), (8, "TF"), (9, "IF"), (10, "DF"),
                         (11, "OF"), (14, "NT"), (16, "RF"), (17, "VM"), (18, "AC"), (19, "VIF"), (20, "VIP"), (21, "ID")]
            lines += flags.map { "    <field name=\"\($0.1)\" start=\"\($0.0)\" end=\"\($0.0)\"/>" }
            lines.append("  </flags>")
            let pointerTypes = ["rbp": "data_ptr", "rsp": "data_ptr", "rip": "code_ptr"]
            lines += gprNames.enumerated().map { i, name in reg(name, 64, pointerTypes[name] ?? "int64", i) }
            lines.append(reg("eflags", 32, "i386_eflags", eflags))
            lines += segmentNames.enumerated().map { i, name in reg(name, 32, "int32", firstSegment + i) }
            lines += (0..<8).map { reg("st\($0)", 80, "i387_ext", firstST + $0) }
            lines += fpControlNames.enumerated().map { i, name in reg(name, 32, "int", fctrl + i, group: "float") }
            text = feature("org.gnu.gdb.i386.core", lines)
        case "64bit-sse.xml":
            var lines = [
                "  <vector id=\"v8bf16\" type=\"bfloat16\" count=\"8\"/>",
                "  <vector id=\"v8h\" type=\"ieee_half\" count=\"8\"/>",
                "  <vector id=\"v4f\" type=\"ieee_single\" count=\"4\"/>",
                "  <vector id=\"v2d\" type=\"ieee_double\" count=\"2\"/>",
                "  <vector id=\"v16i8\" type=\"int8\" count=\"16\"/>",
                "  <vector id=\"v8i16\" type=\"int16\" count=\"8\"/>",
                "  <vector id=\"v4i32\" type=\"int32\" count=\"4\"/>",
                "  <vector id=\"v2i64\" type=\"int64\" count=\"2\"/>",
                "  <union id=\"vec128\">",
            ]
            lines += [("v8_bfloat16", "v8bf16"), ("v8_half", "v8h"), ("v4_float", "v4f"), ("v2_double", "v2d"),
                      ("v16_int8", "v16i8"), ("v8_int16", "v8i16"), ("v4_int32", "v4i32"), ("v2_int64", "v2i64"),
                      ("uint128", "uint128")].map { "    <field name=\"\($0.0)\" type=\"\($0.1)\"/>" }
            lines.append("  </union>")
            // SDM Vol. 1 10.2.3: MXCSR's exception flags, DAZ, masks, rounding control, FZ.
            lines.append("  <flags id=\"i386_mxcsr\" size=\"4\">")
            let mxcsrFlags = ["IE", "DE", "ZE", "OE", "UE", "PE", "DAZ", "IM", "DM", "ZM", "OM", "UM", "PM"]
            lines += mxcsrFlags.enumerated().map { "    <field name=\"\($0.1)\" start=\"\($0.0)\" end=\"\($0.0)\"/>" }
            lines.append("    <field name=\"FZ\" start=\"15\" end=\"15\"/>")
            lines.append("  </flags>")
            lines += (0..<16).map { reg("xmm\($0)", 128, "vec128", firstXMM + $0) }
            lines.append(reg("mxcsr", 32, "i386_mxcsr", mxcsr, group: "vector"))
            text = feature("org.gnu.gdb.i386.sse", lines)
        case "64bit-segments.xml":
            text = feature("org.gnu.gdb.i386.segments", [reg("fs_base", 64, "int", fsBase), reg("gs_base", 64, "int", gsBase)])
        case "64bit-system.xml":
            text = feature("org.swemu.gdb.i386.system", systemNames.enumerated().map { i, name in
                reg(name, 64, "int", firstSystem + i, group: "system")
            })
        default:
            return nil
        }
        return Array(text.utf8)
    }

    private static func reg(_ name: String, _ bits: Int, _ type: String, _ number: Int, group: String? = nil) -> String {
        "  <reg name=\"\(name)\" bitsize=\"\(bits)\" type=\"\(type)\" regnum=\"\(number)\"\(group.map { " group=\"\($0)\"" } ?? "")/>"
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
