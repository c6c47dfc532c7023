import Foundation
import Testing
import TestSupport

/// `-kernel` on `-M virt` takes a gzip-compressed kernel and an ELF one, not only the plain
/// `Image` that LinuxBootTests boots (README: "Linux `Image`/gzip/ELF").
///
/// Debian ships the riscv64 kernel only as an `Image` (its `/boot/vmlinux-*` is an `Image` with
/// an EFI stub, not an ELF; the real ELF `vmlinux` is in the 1 GB -dbg package, which
/// scripts/guests does not fetch). So the ELF kernel here is made at test time from that
/// `Image`: an ELF64 RISC-V executable with one PT_LOAD segment holding the `Image` at physical
/// 0x80400000 (2 MiB aligned, as RV64 Linux needs, and not where swemu puts an `Image`:
/// 0x80200000), p_memsz = the header's image_size (bss included), entry = the segment's start.
/// That exercises swemu's ELF kernel path (segments placed at their physical address, OpenSBI
/// handed the ELF's entry, the initrd placed above the ELF's end); it is not a linker-made
/// vmlinux. The gzip copies are made by the host's gzip(1).
///
/// Each kernel boots (OpenSBI, JIT) with the project's initramfs; a script on a virtio disk
/// prints where Linux found itself in physical memory (/proc/iomem "Kernel image"), which
/// tells that each kernel ran from the address its format put it at. The plain `Image` runs
/// too, as the baseline the others are compared with.
@Suite(.serialized, .oneLinuxBootAtATime) struct KernelFormatTests {
    static let gzip = "/bin/gzip"

    static var missing: String? {
        if let missing = LinuxBootTests.missing { return missing }
        if !FileManager.default.isExecutableFile(atPath: gzip) { return "needs \(gzip) (Debian's gzip)" }
        return nil
    }

    /// Where the made-up ELF kernel's segment is loaded, and its entry.
    static let elfAddress: UInt64 = 0x8040_0000
    /// Where swemu puts an `Image` after OpenSBI's fw_dynamic (the next 2 MiB boundary), as QEMU does.
    static let imageAddress: UInt64 = 0x8020_0000

    /// An ELF64 RISC-V executable holding `image` as one loadable segment at `address`.
    static func elfKernel(wrapping image: [UInt8], at address: UInt64) throws -> [UInt8] {
        try #require(image.count >= 0x40 && Array(image[0x38..<0x3c]) == [0x52, 0x53, 0x43, 0x05], "not a RISC-V Linux Image")
        let imageSize = image[0x10..<0x18].enumerated().reduce(UInt64(0)) { $0 | UInt64($1.element) << (8 * UInt64($1.offset)) }
        let fileSize = UInt64(image.count)
        let memorySize = max(fileSize, imageSize)
        let dataOffset: UInt64 = 0x1000
        var bytes: [UInt8] = []
        func u8(_ v: UInt8) { bytes.append(v) }
        func u16(_ v: UInt16) { for i in 0..<2 { bytes.append(UInt8(truncatingIfNeeded: v >> (8 * i))) } }
        func u32(_ v: UInt32) { for i in 0..<4 { bytes.append(UInt8(truncatingIfNeeded: v >> (8 * i))) } }
        func u64(_ v: UInt64) { for i in 0..<8 { bytes.append(UInt8(truncatingIfNeeded: v >> (8 * i))) } }
        // Elf64_Ehdr
        bytes += [0x7f, 0x45, 0x4c, 0x46, 2, 1, 1, 0]  // ELFCLASS64, ELFDATA2LSB, EV_CURRENT, System V
        bytes += [UInt8](repeating: 0, count: 8)
        u16(2)  // e_type: ET_EXEC
        u16(243)  // e_machine: EM_RISCV
        u32(1)  // e_version
        u64(address)  // e_entry
        u64(64)  // e_phoff
        u64(0)  // e_shoff: no sections
        u32(0x5)  // e_flags: RVC, double-float ABI (as Debian's kernel is built)
        u16(64)  // e_ehsize
        u16(56)  // e_phentsize
        u16(1)  // e_phnum
        u16(64)  // e_shentsize
        u16(0)  // e_shnum
        u16(0)  // e_shstrndx
        // Elf64_Phdr
        u32(1)  // p_type: PT_LOAD
        u32(7)  // p_flags: RWX
        u64(dataOffset)  // p_offset
        u64(address)  // p_vaddr
        u64(address)  // p_paddr
        u64(fileSize)  // p_filesz
        u64(memorySize)  // p_memsz
        u64(0x1000)  // p_align
        bytes += [UInt8](repeating: 0, count: Int(dataOffset) - bytes.count)
        return bytes + image
    }

    /// `file` compressed by the host's gzip into `output`.
    static func gzipped(_ file: URL, to output: URL) throws -> URL {
        let made = try GuestProgram.run("/bin/sh", ["-c", "\"$0\" -9 -n -c < \"$1\" > \"$2\"", gzip, file.path, output.path])
        try #require(made.status == 0, "gzip: \(made.output)")
        return output
    }

    /// The kernels under test, by name: made in `dir`; with the address each must run from.
    static func kernel(_ name: String, in dir: URL) throws -> (path: URL, address: UInt64) {
        let image = URL(fileURLWithPath: LinuxBootTests.kernel)
        let elf = dir.appendingPathComponent("vmlinux.elf")
        switch name {
        case "Image":
            return (image, imageAddress)
        case "Image.gz":
            return (try gzipped(image, to: dir.appendingPathComponent("Image.gz")), imageAddress)
        case "vmlinux.elf", "vmlinux.elf.gz":
            try Data(elfKernel(wrapping: Array(Data(contentsOf: image)), at: elfAddress)).write(to: elf)
            if name == "vmlinux.elf" { return (elf, elfAddress) }
            return (try gzipped(elf, to: dir.appendingPathComponent("vmlinux.elf.gz")), elfAddress)
        default:
            throw GuestProgram.BuildError(message: "no kernel format \(name)")
        }
    }

    @Test(.enabled(if: missing == nil, "\(missing ?? "")"), arguments: ["Image", "Image.gz", "vmlinux.elf", "vmlinux.elf.gz"])
    func bootsTheKernel(format: String) throws {
        let disk = try LinuxBootTests.makeDisk(["iomem": "echo \"KERNEL_IMAGE=$(grep -m1 ' : Kernel image$' /proc/iomem | sed 's/^ *//; s/-.*//')\"\n"])
        let dir = disk.deletingLastPathComponent()
        defer { try? FileManager.default.removeItem(at: dir) }
        let kernel = try Self.kernel(format, in: dir)
        let header = try FileHandle(forReadingFrom: kernel.path).read(upToCount: 4) ?? Data()
        if format == "Image" {
            #expect(Array(header.prefix(2)) == [0x4d, 0x5a], "\(kernel.path) is not an Image with an EFI stub")
        } else if format.hasSuffix(".gz") {
            #expect(Array(header.prefix(2)) == [0x1f, 0x8b], "\(kernel.path) is not gzip")
        } else {
            #expect(Array(header) == [0x7f, 0x45, 0x4c, 0x46], "\(kernel.path) is not an ELF")
        }
        let run = try GuestProgram.run(LinuxBootTests.binary, [
            "-M", "virt", "-m", "512M", "-nographic", "-kernel", kernel.path.path, "-initrd", LinuxBootTests.initrd,
            "-append", "console=ttyS0 quiet swemu.test=/mnt/iomem", "-drive", "file=\(disk.path),format=raw,if=virtio",
        ], timeout: 300)
        #expect(run.status == 0, "swemu exited \(run.status):\n\(run.output.suffix(3000))")
        #expect(run.output.contains("SWEMU-GUEST-READY"), "\(run.output.suffix(3000))")
        #expect(LinuxBootTests.value("SWEMU-TEST-EXIT", in: run.output) == "0", "\(run.output.suffix(3000))")
        // "Kernel image" starts at _text, a few pages into the image (0x2000 for Debian's 6.12,
        // after the EFI/PE header): it must lie in the 2 MiB slot the format put the kernel in.
        // The Image's slot and the ELF's are 2 MiB apart, so this tells them apart exactly.
        let start = try #require(LinuxBootTests.value("KERNEL_IMAGE", in: run.output).flatMap { UInt64($0, radix: 16) },
                                 "\(run.output.suffix(3000))")
        #expect(start >= kernel.address && start < kernel.address + 0x20_0000,
                "Kernel image at \(String(start, radix: 16)), loaded at \(String(kernel.address, radix: 16))")
    }
}
