import CLinux
import Foundation
import Loader
@testable import Machines
import Testing

/// The microvm's boot data, checked against the specifications' layouts without running a guest:
/// the zero page (Documentation/arch/x86/zero-page.rst, boot.rst), the e820 map, the page
/// tables, PVH start info, CPUID topology, and the ACPI tables (also disassembled by iasl).
@Suite struct BootDataTests {
    static func u16(_ b: [UInt8], _ at: Int) -> UInt16 { UInt16(b[at]) | UInt16(b[at + 1]) << 8 }
    static func u32(_ b: [UInt8], _ at: Int) -> UInt32 { (0..<4).reduce(0) { $0 | UInt32(b[at + $1]) << (8 * $1) } }
    static func u64(_ b: [UInt8], _ at: Int) -> UInt64 { (0..<8).reduce(0) { $0 | UInt64(b[at + $1]) << (8 * UInt64($1)) } }

    /// A minimal bzImage: 2 setup sectors (plus the boot sector), header version 2.15 with
    /// XLF_KERNEL_64, and a recognisable protected-mode payload.
    static func bzImage(version: UInt16 = 0x020f, xloadflags: UInt16 = 1) -> [UInt8] {
        var b = [UInt8](repeating: 0, count: 3 * 512 + 64)
        b[0x1f1] = 2  // setup_sects
        b[0x1fe] = 0x55; b[0x1ff] = 0xaa
        b[0x200] = 0xeb; b[0x201] = 0x66  // jmp: the header ends at 0x202 + 0x66 = 0x268
        for (i, c) in "HdrS".utf8.enumerated() { b[0x202 + i] = c }
        b[0x206] = UInt8(version & 0xff); b[0x207] = UInt8(version >> 8)
        b[0x211] = 0x01  // loadflags: LOADED_HIGH
        b[0x22c] = 0xff; b[0x22d] = 0xff; b[0x22e] = 0xff; b[0x22f] = 0x7f  // initrd_addr_max
        b[0x236] = UInt8(xloadflags & 0xff)
        b[0x238] = 0x00; b[0x239] = 0x08  // cmdline_size 2048
        b[0x260] = 0x00; b[0x261] = 0x00; b[0x262] = 0x10  // init_size 1 MiB
        for i in 0..<64 { b[3 * 512 + i] = UInt8(i) }
        return b
    }

    @Test func bzImageSetupHeaderAndPayload() throws {
        let image = try X86Boot.BzImage(Self.bzImage(), name: "test")
        #expect(image.setupHeader.startIndex == 0x1f1 && image.setupHeader.endIndex == 0x268)
        #expect(Array(image.kernel) == (0..<64).map(UInt8.init))
        #expect(image.initrdAddressMax == 0x7fff_ffff)
        #expect(image.initSize == 0x10_0000)
    }

    @Test func bzImageWithoutA64BitEntryIsRefused() {
        #expect(throws: (any Error).self) { try X86Boot.BzImage(Self.bzImage(xloadflags: 0), name: "old") }
        #expect(throws: (any Error).self) { try X86Boot.BzImage(Self.bzImage(version: 0x020b), name: "old") }
        #expect(throws: (any Error).self) { try X86Boot.BzImage(Array(Self.bzImage().prefix(0x300)), name: "short") }
        #expect(!X86Boot.BzImage.isBzImage([UInt8](repeating: 0, count: 4096)))
    }

    @Test func zeroPageFieldsAtTheBootProtocolsOffsets() throws {
        let image = try X86Boot.BzImage(Self.bzImage(), name: "test")
        var page = X86Boot.ZeroPage(setupHeader: image.setupHeader)
        page.setCommandLine(address: 0x20000, size: 12)
        page.setInitrd(address: 0x0800_0000, size: 0x1234)
        page.setRSDP(0xe0000)
        page.setE820(X86MicroVM.e820(ramSize: 512 << 20))
        let b = page.bytes
        #expect(b.count == 4096)
        #expect(Self.u32(b, 0x202) == 0x5372_6448)  // header "HdrS", copied from the image
        #expect(Self.u16(b, 0x206) == 0x020f)
        #expect(b[0x210] == 0xff)  // type_of_loader
        #expect(Self.u32(b, 0x228) == 0x20000)  // cmd_line_ptr
        #expect(Self.u32(b, 0x238) == 2048)  // cmdline_size: the kernel's own, kept
        #expect(Self.u32(b, 0x218) == 0x0800_0000 && Self.u32(b, 0x21c) == 0x1234)  // ramdisk_image, ramdisk_size
        #expect(Self.u64(b, 0x070) == 0xe0000)  // acpi_rsdp_addr
        #expect(b[0x1e8] == 3)  // e820_entries
        #expect(Self.u64(b, 0x2d0 + 40) == 0x10_0000 && Self.u64(b, 0x2d0 + 48) == (512 << 20) - 0x10_0000 && Self.u32(b, 0x2d0 + 56) == 1)
    }

    @Test func zeroPageForAnELFHasAMinimalHeader() {
        var page = X86Boot.ZeroPage(setupHeader: nil)
        page.setCommandLine(address: 0x20000, size: 5)
        let b = page.bytes
        #expect(Self.u16(b, 0x1fe) == 0xaa55 && Self.u32(b, 0x202) == 0x5372_6448)
        #expect(Self.u32(b, 0x238) == 5)
    }

    @Test func e820SplitsAroundTheMMIOHole() {
        let map = X86MicroVM.e820(ramSize: 4 << 30)
        #expect(map.last == X86Boot.E820Entry(address: 1 << 32, size: 1 << 30, type: 1))
        #expect(map[2] == X86Boot.E820Entry(address: 0x10_0000, size: 0xc000_0000 - 0x10_0000, type: 1))
        #expect(map.count == 4)
    }

    @Test func pageTablesIdentityMapFourGiBWithLargePages() {
        let t = X86Boot.identityPageTables(pml4: 0x9000)
        #expect(Self.u64(t, 0) == 0xa003)  // PML4[0] -> PDPT
        #expect(Self.u64(t, 0x1000 + 3 * 8) == 0xe003)  // PDPT[3] -> the fourth directory
        #expect(Self.u64(t, 0x2000) == 0x83)  // 0-2 MiB, present, writable, 2 MiB page
        // The local APIC's page, 0xfee00000: directory 3, entry 0x1f7.
        #expect(Self.u64(t, 0x2000 + 3 * 0x1000 + 0x1f7 * 8) == 0xfee0_0000 | 0x83)
    }

    @Test func gdtHasTheSelectorsTheBootProtocolsRequire() {
        let gdt = X86Boot.gdt
        #expect(gdt[Int(X86Boot.codeSelector) / 8] & (1 << 53) != 0)  // L: 64-bit code
        #expect(gdt[Int(X86Boot.dataSelector) / 8] >> 40 & 0xff == 0x93)  // present, data, read/write
        #expect(gdt[Int(X86Boot.code32Selector) / 8] & (1 << 54) != 0)  // D: 32-bit code for PVH
    }

    @Test func pvhStartInfoLayout() {
        let info = X86Boot.pvhStartInfo(at: 0x6000, commandLine: 0x20000, rsdp: 0xe0000,
                                        e820: X86MicroVM.e820(ramSize: 256 << 20), initrd: (0x800_0000, 0x1000))
        #expect(Self.u32(info, 0) == 0x336e_c578 && Self.u32(info, 4) == 1)  // magic, version
        #expect(Self.u32(info, 12) == 1 && Self.u64(info, 16) == 0x6000 + 56)  // nr_modules, modlist_paddr
        #expect(Self.u64(info, 24) == 0x20000 && Self.u64(info, 32) == 0xe0000)  // cmdline, rsdp
        #expect(Self.u64(info, 40) == 0x6000 + 56 + 32 && Self.u32(info, 48) == 3)  // memmap, entries
        #expect(Self.u64(info, 56) == 0x800_0000 && Self.u64(info, 64) == 0x1000)  // the module
        #expect(info.count == 56 + 32 + 3 * 24)
    }

    /// Debian's x86_64 vmlinux in the guest cache (scripts/guests), where the Linux boot tests find it.
    static let debianVmlinux = X86LinuxBootTests.guests + "/vmlinux"

    @Test(.enabled(if: FileManager.default.fileExists(atPath: debianVmlinux), "needs \(debianVmlinux) (run scripts/guests)"))
    func pvhNoteOfDebiansVmlinux() throws {
        let path = Self.debianVmlinux
        let bytes = try #require(FileManager.default.contents(atPath: path), "cannot read \(path)")
        let elf = try ELFFile(bytes: [UInt8](bytes), name: path)
        let entry = try #require(X86Boot.pvhEntry(elf))
        #expect(entry >= 0x100_0000 && entry < 0x400_0000, "PVH entry \(entry) is not in the kernel's physical image")
    }

    @Test func cpuidTopologyFollowsSMP() {
        var leaf1 = kvm_cpuid_entry2()
        leaf1.function = 1
        leaf1.ebx = 0xff00_0800
        var leafB0 = kvm_cpuid_entry2()
        leafB0.function = 0xb
        var leafB1 = leafB0
        leafB1.index = 1
        let entries = X86MicroVM.cpuid([leaf1, leafB0, leafB1], apicID: 3, cpus: 4)
        #expect(entries[0].ebx >> 24 == 3 && entries[0].ebx >> 16 & 0xff == 4 && entries[0].ebx & 0xffff == 0x0800)
        #expect(entries[0].ecx & (1 << 31) != 0)  // hypervisor
        #expect(entries[1].edx == 3 && entries[1].ebx == 1 && entries[1].ecx == 0x100)
        #expect(entries[2].edx == 3 && entries[2].ebx == 4 && entries[2].eax == 2 && entries[2].ecx == 0x201)
    }

    // MARK: - ACPI

    static let slots = [ACPITables.VirtioSlot(base: 0xd000_0000, size: 0x1000, gsi: 5),
                        ACPITables.VirtioSlot(base: 0xd000_1000, size: 0x1000, gsi: 6)]

    /// Each table in `tables.bytes` at its address, by signature.
    static func table(_ tables: ACPITables, _ signature: String, base: UInt64) -> [UInt8] {
        let start = Int(tables.addresses[signature]! - base)
        let length = signature == "RSDP" ? 36 : Int(u32(tables.bytes, start + 4))
        return Array(tables.bytes[start..<(start + length)])
    }

    @Test func everyTableChecksumsToZeroAndTheRSDPReachesThem() {
        let tables = ACPITables(cpus: 4, virtio: Self.slots, at: 0xe0000)
        #expect(tables.addresses["RSDP"] == 0xe0000)
        let rsdp = Self.table(tables, "RSDP", base: 0xe0000)
        #expect(Array(rsdp[0..<8]) == Array("RSD PTR ".utf8))
        #expect(rsdp[0..<20].reduce(0, &+) == 0 && rsdp.reduce(0, &+) == 0)
        #expect(Self.u64(rsdp, 24) == tables.addresses["XSDT"])
        for signature in ["XSDT", "FACP", "APIC", "DSDT"] {
            let t = Self.table(tables, signature, base: 0xe0000)
            #expect(Array(t[0..<4]) == Array(signature.utf8))
            #expect(t.reduce(0, &+) == 0, "\(signature) checksum")
        }
        let xsdt = Self.table(tables, "XSDT", base: 0xe0000)
        #expect(Self.u64(xsdt, 36) == tables.addresses["FACP"] && Self.u64(xsdt, 44) == tables.addresses["APIC"])
        let fadt = Self.table(tables, "FACP", base: 0xe0000)
        #expect(fadt.count == 276)
        #expect(Self.u64(fadt, 140) == tables.addresses["DSDT"] && Self.u64(fadt, 132) == tables.addresses["FACS"])
        #expect(tables.addresses["FACS"]! % 64 == 0)
        #expect(UInt64(tables.bytes.count) <= X86MicroVM.Layout.acpiSize)
    }

    @Test func madtListsOneLocalAPICPerVCPU() {
        let tables = ACPITables(cpus: 4, virtio: [], at: 0xe0000)
        let madt = Self.table(tables, "APIC", base: 0xe0000)
        var ids: [UInt8] = []
        var ioapics = 0
        var overrides: [[UInt8]] = []
        var p = 44
        while p < madt.count {
            if madt[p] == 0 { ids.append(madt[p + 3]); #expect(Self.u32(madt, p + 4) == 1) }
            if madt[p] == 1 { ioapics += 1; #expect(Self.u32(madt, p + 4) == 0xfec0_0000) }
            if madt[p] == 2 { overrides.append(Array(madt[p..<(p + 10)])) }
            p += Int(madt[p + 1])
        }
        #expect(ids == [0, 1, 2, 3] && ioapics == 1 && p == madt.count)
        #expect(overrides == [[2, 10, 0, 9, 9, 0, 0, 0, 0x0d, 0]])  // the SCI: level, active high
    }

    @Test func amlPackageLengths() {
        #expect(AML.pkgLength(0) == [1])
        #expect(AML.pkgLength(62) == [63])
        #expect(AML.pkgLength(63) == [0x41, 0x04])  // 63 + 2 = 65 = 0x41: lead 0x41, then 0x04
        #expect(AML.pkgLength(4000) == [0x42, 0xfa])  // 4002: low nibble 2 in the lead, then 4002 >> 4 = 250
        #expect(AML.pkgLength(5000) == [0x8b, 0x38, 0x01])  // 5003 = 0x138b needs two more bytes
        #expect(AML.integer(0) == [0] && AML.integer(0xd000_0000) == [0x0c, 0, 0, 0, 0xd0])
    }

    /// iasl (ACPICA, Debian's acpica-tools) disassembles the DSDT into the ASL a person would write.
    @Test(.enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/iasl"),
                   "needs /usr/bin/iasl (Debian's acpica-tools; scripts/setup installs it)"))
    func iaslDisassemblesTheDSDT() throws {
        let tables = ACPITables(cpus: 2, virtio: Self.slots, at: 0xe0000)
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("swemu-acpi-\(getpid())")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        var asl: [String: String] = [:]
        for signature in ["DSDT", "APIC", "FACP"] {
            let file = dir.appendingPathComponent("\(signature).dat")
            try Data(Self.table(tables, signature, base: 0xe0000)).write(to: file)
            let run = try Subprocess.run("/usr/bin/iasl", ["-d", file.path])
            #expect(run.status == 0, "iasl -d \(signature): \(run.output)")
            asl[signature] = try String(contentsOf: dir.appendingPathComponent("\(signature).dsl"), encoding: .utf8)
        }
        let dsdt = asl["DSDT"] ?? ""
        #expect(dsdt.contains("Device (VR00)") && dsdt.contains("Device (VR01)"))
        #expect(dsdt.contains("Name (_HID, \"LNRO0005\")"))
        #expect(dsdt.contains("0xD0001000") && dsdt.contains("0x00001000"))
        #expect(dsdt.contains("Interrupt (ResourceConsumer, Edge, ActiveHigh, Exclusive, ,, )"))
        #expect(dsdt.contains("Name (_S5, Package"))
        #expect(asl["APIC"]?.contains("Local Apic ID : 01") == true, "\(asl["APIC"] ?? "")")
        #expect(asl["APIC"]?.contains("Interrupt : 00000009") == true, "\(asl["APIC"] ?? "")")
        #expect(asl["FACP"]?.contains("Reset Register") == true)
        #expect(!(asl.values.contains { $0.contains("Invalid") || $0.contains("Error") }))
    }
}
