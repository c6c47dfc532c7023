import CZlib
import GuestMemory
import Loader
import Machines
import SystemSupport

/// The loaders of untrusted files: the flattened device tree (`-dtb`), ELF (`-kernel`,
/// `-bios`), gzip (`-kernel Image.gz`), and the kernel formats the boards take apart:
/// RISC-V's Linux `Image` header and x86's bzImage setup header (with the zero page built
/// from it) and PVH note.
enum LoaderFuzz {
    static let ramBase: UInt64 = 0x8000_0000
    /// 1 MiB of guest RAM for the segments (x86 ELF programs load at 1 MiB: RAM from 0 too).
    static let memory: GuestMemory = {
        do throws(SystemError) {
            return try GuestMemory(regions: [GuestRAM(base: GuestAddress(0), size: 2 << 20), GuestRAM(base: GuestAddress(ramBase), size: 1 << 20)])
        } catch {
            fatalError("cannot allocate the loader's RAM: \(error)")
        }
    }()

    static let fdt = FuzzTarget(name: "fdt", summary: "the flattened device tree parser (-dtb), serializer and dts printer", maxLength: 16384,
                                run: { data in
        guard let tree = try? DeviceTree(dtb: Array(data), name: "fuzz") else { return }
        // What parses serializes to a blob that parses to the same tree.
        let blob = tree.serialize()
        guard let again = try? DeviceTree(dtb: blob, name: "fuzz again") else { fatalError("a serialized tree does not parse") }
        precondition(again == tree, "device tree round trip differs")
        _ = tree.dts()
        _ = tree.node(at: "/chosen")
        _ = tree.path(ofPhandle: 1)
    }, seeds: { fdtSeeds() })

    static let elf = FuzzTarget(name: "elf", summary: "the ELF parser and segment loader", maxLength: 8192,
                                run: { data in
        let bytes = Array(data)
        guard let file = try? ELFFile(bytes: bytes, name: "fuzz") else { return }
        _ = file.symbol(named: "tohost")
        _ = X86Boot.pvhEntry(file)
        _ = try? RISCVBoard.loadELF(bytes, name: "fuzz", into: memory, machine: file.machine, machineName: "fuzz")
    }, seeds: { [("riscv", elfSeed(machine: ELFFile.machineRISCV, address: ramBase)), ("x86-pvh", elfSeed(machine: ELFFile.machineX86_64, address: 1 << 20))] })

    static let gzip = FuzzTarget(name: "gzip", summary: "gzip/zlib decompression with its output limit", maxLength: 4096,
                                 run: { data in
        _ = try? Gzip.decompress(Array(data), name: "fuzz", limit: 1 << 20)
    }, seeds: { [("text", gzipped(Array(String(repeating: "swemu gzip seed ", count: 40).utf8))), ("elf", gzipped(elfSeed(machine: ELFFile.machineRISCV, address: ramBase)))] })

    /// A `-kernel` file as the boards take it apart: gunzipped when gzip, then a bzImage (its
    /// header checked, the zero page built from it), an ELF (loaded, its PVH note read) or
    /// a RISC-V Image (its image_size read).
    static let kernel = FuzzTarget(name: "kernel", summary: "-kernel formats: bzImage, Linux Image, gzip-compressed ELF", maxLength: 8192,
                                   run: { data in
        var bytes = Array(data)
        if Gzip.isGzip(bytes) {
            guard let plain = try? Gzip.decompress(bytes, name: "fuzz", limit: 1 << 20) else { return }
            bytes = plain
        }
        if X86Boot.BzImage.isBzImage(bytes) {
            guard let image = try? X86Boot.BzImage(bytes, name: "fuzz") else { return }
            var zeroPage = X86Boot.ZeroPage(setupHeader: image.setupHeader)
            zeroPage.setCommandLine(address: 0x20000, size: 64)
            _ = image.kernel.count + Int(image.initSize) + Int(image.initrdAddressMax)
        } else if ELFFile.isELF(bytes) {
            guard let file = try? RISCVBoard.loadELF(bytes, name: "fuzz", into: memory, machine: ELFFile.machineX86_64, machineName: "x86-64") else { return }
            _ = X86Boot.pvhEntry(file)
        } else if RISCVBoard.isLinuxImage(bytes) {
            _ = bytes[0x10..<0x18].reduce(0) { $0 &+ UInt64($1) }
        }
    }, seeds: { [("bzimage", bzImageSeed()), ("image", linuxImageSeed()), ("bzimage.gz", gzipped(bzImageSeed())),
                 ("pvh", elfSeed(machine: ELFFile.machineX86_64, address: 1 << 20))] })

    // MARK: Seeds

    /// The virt board's own tree (two harts, virtio slots, an initrd) and an empty one.
    static func fdtSeeds() -> [(String, [UInt8])] {
        let virt = VirtDeviceTree(ramSize: 128 << 20, harts: 2, bootargs: "console=ttyS0", initrd: (0x8800_0000, 0x8810_0000), virtioSlots: [0, 1])
        return [("virt", virt.blob()), ("empty", DeviceTree().serialize())]
    }

    /// A 64-bit little-endian executable: one PT_LOAD of 16 bytes (32 in memory), a PT_NOTE
    /// with Xen's PVH entry note, and a symbol table with `tohost` and `fromhost`.
    static func elfSeed(machine: UInt16, address: UInt64) -> [UInt8] {
        var b = [UInt8](repeating: 0, count: 0x200)
        func put<T: FixedWidthInteger>(_ v: T, _ at: Int) { for i in 0..<MemoryLayout<T>.size { b[at + i] = UInt8(truncatingIfNeeded: v >> (8 * i)) } }
        b[0..<8] = [0x7f, 0x45, 0x4c, 0x46, 2, 1, 1, 0]
        put(UInt16(2), 16)  // ET_EXEC
        put(machine, 18)
        put(UInt32(1), 20)
        put(address, 24)  // entry
        put(UInt64(64), 32)  // phoff
        put(UInt64(0x100), 40)  // shoff
        put(UInt16(64), 52)
        put(UInt16(56), 54)
        put(UInt16(2), 56)  // phnum
        put(UInt16(64), 58)
        put(UInt16(3), 60)  // shnum
        // PT_LOAD at file 0x1c0, 16 bytes, 32 in memory.
        put(UInt32(1), 64); put(UInt32(5), 68); put(UInt64(0x1c0), 72); put(address, 80); put(address, 88)
        put(UInt64(16), 96); put(UInt64(32), 104); put(UInt64(16), 112)
        // PT_NOTE at 0xb0: namesz 4 "Xen\0", descsz 4, type 18.
        put(UInt32(4), 120); put(UInt64(0xb0), 128); put(UInt64(20), 160)
        put(UInt32(4), 0xb0); put(UInt32(4), 0xb4); put(UInt32(18), 0xb8); b[0xbc..<0xc0] = [0x58, 0x65, 0x6e, 0]
        put(UInt32(address), 0xc0)
        // Sections: null, .symtab (at 0x1d0, 3 entries of 24), .strtab (at 0x180).
        let symtab = 0x100 + 64, strtab = 0x100 + 128
        put(UInt32(2), symtab + 4); put(UInt64(0x1d0), symtab + 24); put(UInt64(72), symtab + 32); put(UInt32(2), symtab + 40); put(UInt64(24), symtab + 56)
        put(UInt32(3), strtab + 4); put(UInt64(0x1a0), strtab + 24); put(UInt64(32), strtab + 32)
        let names = Array("\0tohost\0fromhost\0".utf8)
        b.replaceSubrange(0x1a0..<(0x1a0 + names.count), with: names)
        b += [UInt8](repeating: 0, count: 0x218 - b.count)
        put(UInt32(1), 0x1d0 + 24); put(address + 8, 0x1d0 + 32)
        put(UInt32(8), 0x1d0 + 48); put(address + 16, 0x1d0 + 56)
        for i in 0..<16 { b[0x1c0 + i] = 0x13 }
        return b
    }

    /// A bzImage: boot protocol 2.15, XLF_KERNEL_64, one setup sector, 512 bytes of kernel.
    static func bzImageSeed() -> [UInt8] {
        var b = [UInt8](repeating: 0, count: 1024)
        func put<T: FixedWidthInteger>(_ v: T, _ at: Int) { for i in 0..<MemoryLayout<T>.size { b[at + i] = UInt8(truncatingIfNeeded: v >> (8 * i)) } }
        b[0x1f1] = 1  // setup_sects
        put(UInt16(0xaa55), 0x1fe)
        b[0x201] = 0x6a  // the header's length past 0x202
        put(UInt32(0x5372_6448), 0x202)
        put(UInt16(0x020f), 0x206)
        put(UInt32(0x7fff_ffff), 0x22c)
        put(UInt32(0x20_0000), 0x230)
        put(UInt16(1), 0x236)  // XLF_KERNEL_64
        put(UInt32(2048), 0x238)
        put(UInt32(0x10_0000), 0x260)
        return b
    }

    /// A RISC-V Linux `Image`: the header's magic and an image_size past the file.
    static func linuxImageSeed() -> [UInt8] {
        var b = [UInt8](repeating: 0, count: 256)
        b[0x10..<0x18] = [0, 0, 0x10, 0, 0, 0, 0, 0]
        b[0x30..<0x38] = [0x52, 0x49, 0x53, 0x43, 0x56, 0, 0, 0]
        b[0x38..<0x3c] = [0x52, 0x53, 0x43, 0x05]
        return b
    }

    /// `bytes` gzip-compressed (zlib's deflate with a gzip wrapper).
    static func gzipped(_ bytes: [UInt8]) -> [UInt8] {
        var stream = z_stream()
        // 15 + 16: a gzip header and trailer.
        guard deflateInit2_(&stream, 9, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY, ZLIB_VERSION, Int32(MemoryLayout<z_stream>.size)) == Z_OK else { return [] }
        defer { deflateEnd(&stream) }
        var input = bytes
        var output = [UInt8](repeating: 0, count: bytes.count + 256)
        let produced: Int = input.withUnsafeMutableBufferPointer { i in
            output.withUnsafeMutableBufferPointer { o in
                // SAFETY: zlib reads `avail_in` bytes from `next_in` and writes at most
                // `avail_out` bytes at `next_out`; both buffers outlive the call.
                stream.next_in = i.baseAddress
                stream.avail_in = UInt32(i.count)
                stream.next_out = o.baseAddress
                stream.avail_out = UInt32(o.count)
                guard deflate(&stream, Z_FINISH) == Z_STREAM_END else { return 0 }
                return o.count - Int(stream.avail_out)
            }
        }
        return Array(output.prefix(produced))
    }
}
