import Loader
import SystemSupport

/// Linux's x86 boot structures (Documentation/arch/x86/boot.rst, zero-page.rst), the PVH start
/// info (xen/include/public/arch-x86/hvm/start_info.h) and the page tables and GDT the 64-bit
/// boot protocol requires. Pure values: the board copies them into guest RAM.
package enum X86Boot {
    /// One BIOS e820 entry (zero-page.rst: `struct boot_e820_entry`, 20 bytes packed).
    struct E820Entry: Equatable, Sendable {
        static let ram: UInt32 = 1
        static let reserved: UInt32 = 2
        var address: UInt64
        var size: UInt64
        var type: UInt32
    }

    /// `struct boot_params` offsets (zero-page.rst and boot.rst "The real-mode kernel header").
    enum ZeroPageOffset {
        static let acpiRSDPAddress = 0x070
        static let e820Entries = 0x1e8
        static let setupHeader = 0x1f1
        static let setupSects = 0x1f1
        static let bootFlag = 0x1fe
        static let header = 0x202
        static let version = 0x206
        static let typeOfLoader = 0x210
        static let ramdiskImage = 0x218
        static let ramdiskSize = 0x21c
        static let cmdLinePointer = 0x228
        static let initrdAddressMax = 0x22c
        static let kernelAlignment = 0x230
        static let xloadflags = 0x236
        static let cmdlineSize = 0x238
        static let initSize = 0x260
        static let e820Table = 0x2d0
    }
    static let e820MaxEntries = 128
    static let headerMagic: UInt32 = 0x5372_6448  // "HdrS"

    /// The zero page (`struct boot_params`, 4 KiB) of the 64-bit boot protocol (boot.rst
    /// "64-bit Boot Protocol"): a copy of the kernel's setup header when it has one, the loader's
    /// fields, and the e820 map.
    package struct ZeroPage {
        private(set) var bytes = [UInt8](repeating: 0, count: 4096)

        /// `setupHeader`: bytes 0x1f1 up to the header's end, from a bzImage; nil for an ELF,
        /// which gets a minimal header as Firecracker writes one for vmlinux.
        package init(setupHeader: ArraySlice<UInt8>?) {
            if let setupHeader {
                bytes.replaceSubrange(ZeroPageOffset.setupHeader..<(ZeroPageOffset.setupHeader + setupHeader.count), with: setupHeader)
            } else {
                put16(0xaa55, at: ZeroPageOffset.bootFlag)
                put32(X86Boot.headerMagic, at: ZeroPageOffset.header)
                put16(0x020f, at: ZeroPageOffset.version)
                put32(0x0100_0000, at: ZeroPageOffset.kernelAlignment)
            }
            // boot.rst: type_of_loader 0xff = "undefined" boot loader. loadflags stay as the
            // kernel's header has them: no CAN_USE_HEAP, as the 16-bit setup code never runs.
            bytes[ZeroPageOffset.typeOfLoader] = 0xff
        }

        mutating func put16(_ v: UInt16, at offset: Int) { for i in 0..<2 { bytes[offset + i] = UInt8(truncatingIfNeeded: v >> (8 * i)) } }
        mutating func put32(_ v: UInt32, at offset: Int) { for i in 0..<4 { bytes[offset + i] = UInt8(truncatingIfNeeded: v >> (8 * i)) } }
        mutating func put64(_ v: UInt64, at offset: Int) { for i in 0..<8 { bytes[offset + i] = UInt8(truncatingIfNeeded: v >> (8 * i)) } }

        package mutating func setCommandLine(address: UInt32, size: UInt32) {
            put32(address, at: ZeroPageOffset.cmdLinePointer)
            if X86Boot.get16(bytes, ZeroPageOffset.version) < 0x0206 || X86Boot.get32(bytes, ZeroPageOffset.cmdlineSize) == 0 {
                put32(size, at: ZeroPageOffset.cmdlineSize)
            }
        }

        mutating func setInitrd(address: UInt32, size: UInt32) {
            put32(address, at: ZeroPageOffset.ramdiskImage)
            put32(size, at: ZeroPageOffset.ramdiskSize)
        }

        mutating func setRSDP(_ address: UInt64) { put64(address, at: ZeroPageOffset.acpiRSDPAddress) }

        mutating func setE820(_ entries: [E820Entry]) {
            let count = min(entries.count, X86Boot.e820MaxEntries)
            bytes[ZeroPageOffset.e820Entries] = UInt8(count)
            for (i, entry) in entries.prefix(count).enumerated() {
                let at = ZeroPageOffset.e820Table + 20 * i
                put64(entry.address, at: at)
                put64(entry.size, at: at + 8)
                put32(entry.type, at: at + 16)
            }
        }
    }

    static func get16(_ b: [UInt8], _ at: Int) -> UInt16 { UInt16(b[at]) | UInt16(b[at + 1]) << 8 }
    static func get32(_ b: [UInt8], _ at: Int) -> UInt32 { (0..<4).reduce(0) { $0 | UInt32(b[at + $1]) << (8 * $1) } }

    /// A bzImage as the 64-bit boot protocol uses it (boot.rst "Loading the rest of the kernel").
    package struct BzImage {
        /// Bytes 0x1f1 up to the end of the setup header, to copy into the zero page.
        package let setupHeader: ArraySlice<UInt8>
        /// The protected-mode kernel, loaded at 1 MiB; the 64-bit entry is 0x200 into it.
        package let kernel: ArraySlice<UInt8>
        package let version: UInt16
        package let initrdAddressMax: UInt32
        /// Memory the kernel needs from its load address while it decompresses (init_size).
        package let initSize: UInt32

        package static func isBzImage(_ bytes: [UInt8]) -> Bool {
            bytes.count >= 0x264 && get32(bytes, ZeroPageOffset.header) == headerMagic
        }

        package init(_ bytes: [UInt8], name: String) throws(SystemError) {
            guard BzImage.isBzImage(bytes) else { throw .badInput("\(name): not a bzImage (no \"HdrS\" at 0x202)") }
            version = get16(bytes, ZeroPageOffset.version)
            // 2.12 brought xloadflags, whose bit 0 (XLF_KERNEL_64) says the 64-bit entry at
            // +0x200 exists.
            guard version >= 0x020c, get16(bytes, ZeroPageOffset.xloadflags) & 1 != 0 else {
                throw .badInput("\(name): boot protocol \(version >> 8).\(version & 0xff) without a 64-bit entry (XLF_KERNEL_64); swemu needs 2.12 or later")
            }
            let headerEnd = 0x202 + Int(bytes[0x201])
            var setupSects = Int(bytes[ZeroPageOffset.setupSects])
            if setupSects == 0 { setupSects = 4 }  // boot.rst: "if this field is 0, the real value is 4"
            let kernelStart = (setupSects + 1) * 512
            guard headerEnd <= 0x1f1 + 0x7f + 0x80, headerEnd <= bytes.count, kernelStart < bytes.count else {
                throw .badInput("\(name): setup header or setup sectors run past the file's \(bytes.count) bytes")
            }
            setupHeader = bytes[ZeroPageOffset.setupHeader..<headerEnd]
            kernel = bytes[kernelStart...]
            initrdAddressMax = get32(bytes, ZeroPageOffset.initrdAddressMax)
            initSize = get32(bytes, ZeroPageOffset.initSize)
        }
    }

    /// The PVH entry of an ELF kernel: note XEN_ELFNOTE_PHYS32_ENTRY (18) with owner "Xen",
    /// a 32-bit physical address (xen/include/public/elfnote.h).
    package static func pvhEntry(_ elf: ELFFile) -> UInt32? {
        guard let note = elf.notes.first(where: { $0.type == 18 && $0.name == "Xen" }), note.descriptor.count >= 4 else { return nil }
        return get32(note.descriptor, 0)
    }

    /// `struct hvm_start_info` version 1 (56 bytes) followed by the memory map and the module
    /// (initrd) list it points to, laid out from `address`.
    static func pvhStartInfo(at address: UInt64, commandLine: UInt64, rsdp: UInt64, e820: [E820Entry],
                             initrd: (address: UInt64, size: UInt64)?) -> [UInt8] {
        var b: [UInt8] = []
        func p32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { b += $0 } }
        func p64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { b += $0 } }
        let modlist = address + 56
        let memmap = modlist + (initrd == nil ? 0 : 32)
        p32(0x336e_c578)  // XEN_HVM_START_MAGIC_VALUE
        p32(1)  // version 1: has memmap_paddr/memmap_entries
        p32(0)  // flags
        p32(initrd == nil ? 0 : 1)  // nr_modules
        p64(initrd == nil ? 0 : modlist)
        p64(commandLine)
        p64(rsdp)
        p64(memmap)
        p32(UInt32(e820.count))
        p32(0)
        if let initrd {  // struct hvm_modlist_entry
            p64(initrd.address); p64(initrd.size); p64(0); p64(0)
        }
        for entry in e820 {  // struct hvm_memmap_table_entry
            p64(entry.address); p64(entry.size); p32(entry.type); p32(0)
        }
        return b
    }

    /// Identity-mapped page tables for the first 4 GiB with 2 MiB pages (Intel SDM Vol. 3 4.5,
    /// "4-level paging"): a PML4, one PDPT and four page directories in six consecutive pages
    /// from `pml4`. Low memory for the kernel, the MMIO hole for devices and the local APIC.
    static func identityPageTables(pml4: UInt64) -> [UInt8] {
        var b = [UInt8](repeating: 0, count: 6 * 4096)
        func put(_ v: UInt64, _ at: Int) { for i in 0..<8 { b[at + i] = UInt8(truncatingIfNeeded: v >> (8 * UInt64(i))) } }
        let present: UInt64 = 1, writable: UInt64 = 2, pageSize: UInt64 = 0x80
        put((pml4 + 0x1000) | present | writable, 0)
        for gib in 0..<4 {
            put((pml4 + 0x2000 + UInt64(gib) * 0x1000) | present | writable, 0x1000 + 8 * gib)
            for entry in 0..<512 {
                let physical = UInt64(gib) << 30 | UInt64(entry) << 21
                put(physical | present | writable | pageSize, 0x2000 + gib * 0x1000 + 8 * entry)
            }
        }
        return b
    }

    /// Segment selectors the boot protocols require: boot.rst "64-bit Boot Protocol" wants
    /// __BOOT_CS = 0x10 and __BOOT_DS = 0x18 with 4 GiB flat descriptors; PVH a flat 32-bit code
    /// segment (start_info.h). Index 4 holds the 32-bit code segment.
    static let codeSelector: UInt16 = 0x10
    static let dataSelector: UInt16 = 0x18
    static let code32Selector: UInt16 = 0x20

    /// The GDT: null, null, 64-bit code, data, 32-bit code (SDM Vol. 3 3.4.5 descriptor format).
    static let gdt: [UInt64] = [0, 0, 0x00af_9b00_0000_ffff, 0x00cf_9300_0000_ffff, 0x00cf_9b00_0000_ffff]

    static func gdtBytes() -> [UInt8] {
        gdt.flatMap { d in (0..<8).map { UInt8(truncatingIfNeeded: d >> (8 * UInt64($0))) } }
    }
}
