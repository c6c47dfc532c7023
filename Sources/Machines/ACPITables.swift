/// The microvm's ACPI tables (ACPI 6.4 §5): RSDP → XSDT → FADT (→ FACS, DSDT) and MADT, laid
/// out from one guest-physical base. Linux learns from them how many CPUs there are (MADT, so
/// `-smp N` gives N CPUs), where the virtio-mmio devices are (DSDT `LNRO0005` devices, as QEMU's
/// microvm announces them, because Debian's kernel has no VIRTIO_MMIO_CMDLINE_DEVICES), and how
/// to power off and reset (FADT PM1a control with `\_S5`, the reset register).
public struct ACPITables: Sendable {
    /// One virtio-mmio transport as the DSDT describes it.
    public struct VirtioSlot: Sendable, Equatable {
        public var base: UInt64
        public var size: UInt64
        public var gsi: UInt32
    }

    /// SLP_TYP of `\_S5` (soft off); the PM1a control device acts on it.
    static let s5SleepType: UInt64 = 5
    /// RESET_VALUE of the FADT's reset register.
    static let resetValue: UInt64 = 1
    static let oemID = Array("SWEMU ".utf8)
    static let oemTableID = Array("SWEMUMVM".utf8)

    /// All tables, to copy to `base`; the RSDP is first.
    public let bytes: [UInt8]
    /// Where each table starts (guest-physical), by signature.
    public let addresses: [String: UInt64]

    public init(cpus: Int, virtio: [VirtioSlot], at base: UInt64) {
        var out: [UInt8] = []
        var addresses: [String: UInt64] = [:]
        func place(_ name: String, _ table: [UInt8], align: Int = 16) -> UInt64 {
            while out.count % align != 0 { out.append(0) }
            let address = base + UInt64(out.count)
            out += table
            addresses[name] = address
            return address
        }
        // The RSDP goes first, at a 16-byte boundary (§5.2.5.1); its XSDT address is patched in.
        _ = place("RSDP", [UInt8](repeating: 0, count: 36))
        let facs = place("FACS", ACPITables.facs(), align: 64)
        let dsdt = place("DSDT", ACPITables.dsdt(virtio: virtio))
        let fadt = place("FACP", ACPITables.fadt(facs: facs, dsdt: dsdt))
        let madt = place("APIC", ACPITables.madt(cpus: cpus))
        let xsdt = place("XSDT", ACPITables.table("XSDT", revision: 1, body: [fadt, madt].flatMap(ACPITables.le64)))
        out.replaceSubrange(0..<36, with: ACPITables.rsdp(xsdt: xsdt))
        bytes = out
        self.addresses = addresses
    }

    // MARK: - Tables

    /// RSDP, revision 2 (§5.2.5.3): checksum over the first 20 bytes, extended over all 36.
    static func rsdp(xsdt: UInt64) -> [UInt8] {
        var b = Array("RSD PTR ".utf8) + [0] + oemID + [2] + le32(0) + le32(36) + le64(xsdt) + [0, 0, 0, 0]
        b[8] = checksum(b[0..<20])
        b[32] = checksum(b[0..<36])
        return b
    }

    /// The common header (§5.2.6) around `body`, with the checksum set.
    static func table(_ signature: String, revision: UInt8, body: [UInt8]) -> [UInt8] {
        var b = Array(signature.utf8) + le32(UInt32(36 + body.count)) + [revision, 0] + oemID + oemTableID
            + le32(1) + Array("SWMU".utf8) + le32(1) + body
        b[9] = checksum(b[...])
        return b
    }

    /// FACS (§5.2.10): required outside hardware-reduced mode; holds the global lock.
    static func facs() -> [UInt8] {
        var b = Array("FACS".utf8) + le32(64) + le32(0) + le32(0) + le32(0) + le32(0) + le64(0) + [2]
        b += [UInt8](repeating: 0, count: 64 - b.count)
        return b
    }

    /// A Generic Address Structure (§5.2.3.2) in system I/O space.
    static func ioGAS(_ port: UInt64, bits: UInt8) -> [UInt8] {
        let access: UInt8 = bits <= 8 ? 1 : bits <= 16 ? 2 : 3
        return [1, bits, 0, access] + le64(port)
    }

    /// FADT revision 6 (§5.2.9, 276 bytes). Not hardware-reduced: PM1a event/control blocks
    /// give Linux the S5 (power off) path and the reset register its reboot path; SMI_CMD 0
    /// says the machine is always in ACPI mode.
    static func fadt(facs: UInt64, dsdt: UInt64) -> [UInt8] {
        typealias L = X86MicroVM.Layout
        var b = [UInt8](repeating: 0, count: 276 - 36)
        func put(_ bytes: [UInt8], at offset: Int) { b.replaceSubrange((offset - 36)..<(offset - 36 + bytes.count), with: bytes) }
        put(le32(UInt32(facs)), at: 36)  // FIRMWARE_CTRL
        put(le32(UInt32(dsdt)), at: 40)  // DSDT
        put(le16(9), at: 46)  // SCI_INT: ISA IRQ 9, as on PCs
        put(le32(UInt32(L.pm1aEvent)), at: 56)  // PM1a_EVT_BLK
        put(le32(UInt32(L.pm1aControl)), at: 64)  // PM1a_CNT_BLK
        put([4, 2], at: 88)  // PM1_EVT_LEN, PM1_CNT_LEN
        put(le16(0), at: 109)  // IAPC_BOOT_ARCH: no legacy devices, no 8042 (the reset line is all it has)
        // Flags: WBINVD (0), PROC_C1 (2), SLP_BUTTON (5: no sleep button), RESET_REG_SUP (10).
        put(le32(1 << 0 | 1 << 2 | 1 << 5 | 1 << 10), at: 112)
        put(ioGAS(L.resetRegister, bits: 8), at: 116)  // RESET_REG
        put([UInt8(resetValue)], at: 128)  // RESET_VALUE
        put([4], at: 131)  // FADT minor version: 6.4
        put(le64(facs), at: 132)  // X_FIRMWARE_CTRL
        put(le64(dsdt), at: 140)  // X_DSDT
        put(ioGAS(L.pm1aEvent, bits: 32), at: 148)  // X_PM1a_EVT_BLK
        put(ioGAS(L.pm1aControl, bits: 16), at: 172)  // X_PM1a_CNT_BLK
        put(Array("SWEMUKVM".utf8), at: 268)  // hypervisor vendor identity
        return table("FACP", revision: 6, body: b)
    }

    /// MADT (§5.2.12): one enabled local APIC per vCPU (processor UID = APIC id), the IOAPIC
    /// with GSI base 0, the SCI (IRQ 9) as level-triggered active high (an Interrupt Source
    /// Override, as QEMU writes it: KVM's IOAPIC does not invert active-low inputs), and LINT1 as
    /// NMI on every processor. ISA IRQs 0-15 are otherwise identity-mapped to GSIs, which is KVM's
    /// default routing.
    static func madt(cpus: Int) -> [UInt8] {
        var b = le32(UInt32(X86MicroVM.Layout.localAPIC)) + le32(1)  // PCAT_COMPAT: 8259s present
        for id in 0..<cpus {
            b += [0, 8, UInt8(id), UInt8(id)] + le32(1)  // Processor Local APIC, enabled
        }
        b += [1, 12, 0, 0] + le32(UInt32(X86MicroVM.Layout.ioapic)) + le32(0)  // I/O APIC id 0
        b += [2, 10, 0, 9] + le32(9) + le16(0x000d)  // ISO: bus ISA, IRQ 9 -> GSI 9, active high, level
        b += [4, 6, 0xff] + le16(0) + [1]  // Local APIC NMI: all processors, LINT1
        return table("APIC", revision: 5, body: b)
    }

    /// DSDT (§5.2.11.1) in AML (§20): a `\_SB` scope with one `LNRO0005` device per virtio-mmio
    /// transport (its window and edge-triggered interrupt), and `\_S5`.
    static func dsdt(virtio: [VirtioSlot]) -> [UInt8] {
        var devices: [UInt8] = []
        for (index, slot) in virtio.enumerated() {
            let resources = AML.memory32Fixed(base: UInt32(slot.base), size: UInt32(slot.size))
                + AML.extendedInterrupt(slot.gsi, edge: true) + AML.endTag
            let hex = Array("0123456789ABCDEF".utf8)
            let name = [UInt8(ascii: "V"), UInt8(ascii: "R"), hex[index >> 4 & 0xf], hex[index & 0xf]]
            devices += AML.device(name, AML.name("_HID", AML.string("LNRO0005"))
                + AML.name("_UID", AML.integer(UInt64(index)))
                + AML.name("_CCA", AML.integer(1))  // cache-coherent DMA
                + AML.name("_CRS", AML.buffer(resources)))
        }
        let s5 = AML.name("_S5_", AML.package([AML.integer(s5SleepType), AML.integer(s5SleepType), AML.integer(0), AML.integer(0)]))
        return table("DSDT", revision: 2, body: AML.scope("\\_SB_", devices) + s5)
    }

    // MARK: - Bytes

    static func le16(_ v: UInt16) -> [UInt8] { [UInt8(v & 0xff), UInt8(v >> 8)] }
    static func le32(_ v: UInt32) -> [UInt8] { (0..<4).map { UInt8(truncatingIfNeeded: v >> (8 * $0)) } }
    static func le64(_ v: UInt64) -> [UInt8] { (0..<8).map { UInt8(truncatingIfNeeded: v >> (8 * UInt64($0))) } }
    /// The byte that makes `bytes` sum to zero (mod 256) when it replaces a zero among them.
    static func checksum(_ bytes: ArraySlice<UInt8>) -> UInt8 { 0 &- bytes.reduce(0, &+) }
}

/// ACPI Machine Language encodings (ACPI 6.4 §20.2), the few a DSDT of fixed devices needs.
enum AML {
    /// PkgLength (§20.2.4): the length of what follows plus its own bytes; one byte up to 63,
    /// else a lead byte (count of extra bytes in bits 7-6, low nibble in bits 3-0) and bytes
    /// carrying the next 8 bits each.
    static func pkgLength(_ contentLength: Int) -> [UInt8] {
        if contentLength + 1 < 64 { return [UInt8(contentLength + 1)] }
        for extra in 1...3 {
            let total = contentLength + 1 + extra
            if total < 1 << (4 + 8 * extra) {
                var b = [UInt8(extra << 6 | total & 0xf)]
                for i in 0..<extra { b.append(UInt8(truncatingIfNeeded: total >> (4 + 8 * i))) }
                return b
            }
        }
        preconditionFailure("AML package of \(contentLength) bytes exceeds PkgLength's 2^28")  // our tables are a few KiB
    }

    /// A NameString: a root prefix and/or 4-character segments ("\\_SB_", "VR00").
    static func nameString(_ name: String) -> [UInt8] { Array(name.utf8) }
    static func name(_ name: String, _ value: [UInt8]) -> [UInt8] { [0x08] + nameString(name) + value }  // NameOp
    static func scope(_ name: String, _ body: [UInt8]) -> [UInt8] {
        let content = nameString(name) + body
        return [0x10] + pkgLength(content.count) + content  // ScopeOp
    }
    static func device(_ name: [UInt8], _ body: [UInt8]) -> [UInt8] {
        let content = name + body
        return [0x5b, 0x82] + pkgLength(content.count) + content  // ExtOpPrefix DeviceOp
    }
    static func string(_ s: String) -> [UInt8] { [0x0d] + Array(s.utf8) + [0] }  // StringPrefix
    static func integer(_ v: UInt64) -> [UInt8] {
        switch v {
        case 0: return [0x00]  // ZeroOp
        case 1: return [0x01]  // OneOp
        case ..<0x100: return [0x0a, UInt8(v)]  // BytePrefix
        case ..<0x1_0000: return [0x0b] + ACPITables.le16(UInt16(v))  // WordPrefix
        case ..<0x1_0000_0000: return [0x0c] + ACPITables.le32(UInt32(v))  // DWordPrefix
        default: return [0x0e] + ACPITables.le64(v)  // QWordPrefix
        }
    }
    static func buffer(_ bytes: [UInt8]) -> [UInt8] {
        let content = integer(UInt64(bytes.count)) + bytes
        return [0x11] + pkgLength(content.count) + content  // BufferOp
    }
    static func package(_ elements: [[UInt8]]) -> [UInt8] {
        let content = [UInt8(elements.count)] + elements.flatMap { $0 }
        return [0x12] + pkgLength(content.count) + content  // PackageOp
    }

    // Resource descriptors (§6.4).
    /// 32-bit Fixed Memory Range Descriptor (§6.4.3.4), read/write.
    static func memory32Fixed(base: UInt32, size: UInt32) -> [UInt8] {
        [0x86, 9, 0, 1] + ACPITables.le32(base) + ACPITables.le32(size)
    }
    /// Extended Interrupt Descriptor (§6.4.3.6): consumer, active high, exclusive, one GSI.
    static func extendedInterrupt(_ gsi: UInt32, edge: Bool) -> [UInt8] {
        [0x89, 6, 0, 1 | (edge ? 2 : 0), 1] + ACPITables.le32(gsi)
    }
    /// End Tag (§6.4.2.9), checksum 0 ("treated as if the checksum operation succeeded").
    static let endTag: [UInt8] = [0x79, 0]
}
