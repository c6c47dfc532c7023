import Foundation
import Testing
@testable import Loader
import SystemSupport

/// The reference tools: Debian's `dtc` (package device-tree-compiler) must read our blobs and
/// we must read its; QEMU's own `virt` tree must parse, re-serialize and decompile unchanged.
enum Tools {
    static let dtc = "/usr/bin/dtc"
    static let qemu = "/usr/bin/qemu-system-riscv64"
    static var haveDtc: Bool { FileManager.default.isExecutableFile(atPath: dtc) }
    static var haveQemu: Bool { FileManager.default.isExecutableFile(atPath: qemu) }

    /// A fresh directory for one test's files.
    static func temporaryDirectory() throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("swemu-fdt-\(getpid())-\(UInt64.random(in: 0...UInt64.max))")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url
    }

    /// Runs a program (bounded by `timeout` seconds); returns its status and combined output.
    static func run(_ path: String, _ arguments: [String], timeout: Double = 60) throws -> (status: Int32, output: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: path)
        process.arguments = arguments
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        process.standardInput = FileHandle.nullDevice
        try process.run()
        let killer = DispatchWorkItem { process.terminate() }
        DispatchQueue.global().asyncAfter(deadline: .now() + timeout, execute: killer)
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        killer.cancel()
        return (process.terminationStatus, String(decoding: data, as: UTF8.self))
    }

    /// `dtc -I dtb -O dts` of `blob`.
    static func decompile(_ blob: [UInt8], in dir: URL, name: String) throws -> String {
        let input = dir.appendingPathComponent("\(name).dtb")
        let output = dir.appendingPathComponent("\(name).dts")
        try Data(blob).write(to: input)
        let result = try run(dtc, ["-q", "-I", "dtb", "-O", "dts", "-o", output.path, input.path])
        #expect(result.status == 0, "dtc could not decompile \(name): \(result.output)")
        return try String(contentsOf: output, encoding: .utf8)
    }

    /// `dtc -I dts -O dtb` of `source`.
    static func compile(_ source: String, in dir: URL) throws -> [UInt8] {
        let input = dir.appendingPathComponent("in.dts")
        let output = dir.appendingPathComponent("out.dtb")
        try source.write(to: input, atomically: true, encoding: .utf8)
        let result = try run(dtc, ["-q", "-I", "dts", "-O", "dtb", "-o", output.path, input.path])
        #expect(result.status == 0, "dtc could not compile: \(result.output)")
        return [UInt8](try Data(contentsOf: output))
    }

    /// Source text with the layout taken out: trimmed, non-empty lines.
    static func normalized(_ text: String) -> [String] {
        text.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
    }
}

@Suite struct DeviceTreeToolTests {
    @Test(.enabled(if: Tools.haveDtc, "needs /usr/bin/dtc (Debian's device-tree-compiler)"))
    func dtcReadsOurBlob() throws {
        let dir = try Tools.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let tree = sampleTree()
        let text = try Tools.decompile(tree.serialize(), in: dir, name: "sample")
        for expected in ["/memreserve/\t0x0000000080000000 0x0000000000020000;",
                         "compatible = \"riscv-virtio\";",
                         "cpu@0 {",
                         "riscv,isa = \"rv64imafdc_zicsr_zifencei\";",
                         "interrupt-controller;",
                         "phandle = <0x01>;",
                         "reg = <0x00 0x80000000 0x00 0x8000000>;",
                         "linux,initrd-start = <0x00 0x88000000>;",
                         "rng-seed = [01 02 03 04 05 06 07];",
                         "compatible = \"sifive,plic-1.0.0\\0riscv,plic0\";",
                         "interrupts-extended = <0x01 0x0b 0x01 0x09>;",
                         "serial@10000000 {",
                         "ranges;"] {
            #expect(text.contains(expected), "dtc output lacks \(expected):\n\(text)")
        }
        // And our own printer agrees with dtc's, line for line.
        #expect(Tools.normalized(tree.dts()) == Tools.normalized(text))
    }

    @Test(.enabled(if: Tools.haveDtc, "needs /usr/bin/dtc (Debian's device-tree-compiler)"))
    func weReadDtcsBlob() throws {
        let dir = try Tools.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let blob = try Tools.compile("""
            /dts-v1/;
            /memreserve/ 0x80000000 0x10000;
            / {
                #address-cells = <2>;
                #size-cells = <2>;
                compatible = "test,board", "test,generic";
                model = "swemu test";
                chosen {
                    bootargs = "console=ttyS0 root=/dev/vda";
                    stdout-path = &uart;
                };
                intc: interrupt-controller@c000000 {
                    interrupt-controller;
                    #interrupt-cells = <1>;
                    reg = <0x0 0xc000000 0x0 0x4000000>;
                };
                uart: serial@10000000 {
                    compatible = "ns16550a";
                    reg = <0x0 0x10000000 0x0 0x100>;
                    interrupts = <10>;
                    interrupt-parent = <&intc>;
                    big = /bits/ 64 <0x1234567890>;
                    mac = [00 11 22 33 44 55];
                };
            };
            """, in: dir)
        let tree = try DeviceTree(dtb: blob, name: "dtc output")
        #expect(tree.reservedMemory.count == 1)
        #expect(tree.reservedMemory.first?.address == 0x8000_0000 && tree.reservedMemory.first?.size == 0x10000)
        #expect(tree.root.strings("compatible") == ["test,board", "test,generic"])
        #expect(tree.root.u32("#address-cells") == 2)
        #expect(tree.node(at: "/chosen")?.string("stdout-path") == "/serial@10000000")
        #expect(tree.node(at: "/chosen")?.string("bootargs") == "console=ttyS0 root=/dev/vda")
        let intc = try #require(tree.node(at: "/interrupt-controller@c000000"))
        #expect(intc.has("interrupt-controller") && intc.property("interrupt-controller") == [])
        let phandle = try #require(intc.phandle)
        let uart = try #require(tree.node(at: "/serial"))
        #expect(uart.u32("interrupt-parent") == phandle)
        #expect(uart.cells("reg") == [0, 0x1000_0000, 0, 0x100])
        #expect(uart.u64("big") == 0x12_3456_7890)
        #expect(uart.property("mac") == [0, 0x11, 0x22, 0x33, 0x44, 0x55])
        #expect(tree.path(ofPhandle: phandle) == "/interrupt-controller@c000000")

        // Our blob of dtc's tree decompiles as dtc's own does.
        #expect(try Tools.decompile(tree.serialize(), in: dir, name: "ours") == Tools.decompile(blob, in: dir, name: "theirs"))
    }

    /// QEMU's `virt` tree: a real-world blob with free space after the strings block
    /// (totalsize is padded to 1 MiB), string lists, phandles and dozens of nodes.
    @Test(.enabled(if: Tools.haveQemu, "needs /usr/bin/qemu-system-riscv64 (Debian's qemu-system-misc)"),
          .enabled(if: Tools.haveDtc, "needs /usr/bin/dtc (Debian's device-tree-compiler) to compare the decompiled trees"))
    func parsesQemusVirtTree() throws {
        let dir = try Tools.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("virt.dtb").path
        let result = try Tools.run(Tools.qemu, ["-M", "virt", "-smp", "2", "-m", "256M", "-display", "none", "-nodefaults",
                                                "-machine", "dumpdtb=\(path)"])
        #expect(result.status == 0, "qemu failed: \(result.output)")
        let blob = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
        let tree = try DeviceTree(dtb: blob, name: path)

        #expect(tree.root.strings("compatible") == ["riscv-virtio"])
        #expect(tree.node(at: "/cpus")?.u32("timebase-frequency") == 10_000_000)
        #expect(tree.node(at: "/cpus/cpu@1")?.string("device_type") == "cpu")
        #expect(tree.node(at: "/cpus/cpu@0/interrupt-controller")?.phandle != nil)
        #expect(tree.node(at: "/memory@80000000")?.cells("reg") == [0, 0x8000_0000, 0, 0x1000_0000])
        #expect(tree.node(at: "/chosen")?.string("stdout-path") == "/soc/serial@10000000")
        #expect(tree.node(at: "/soc/serial@10000000")?.string("compatible") == "ns16550a")
        #expect(tree.node(at: "/soc/serial")?.name == "serial@10000000")

        // Re-serialized, it is the same tree, compactly.
        let ours = tree.serialize()
        #expect(ours.count < blob.count)
        #expect(try DeviceTree(dtb: ours) == tree)
        #expect(Int(DeviceTree.cell(blob, at: 28)) == Int(tree.bootCPUID))

        let theirs = try Tools.decompile(blob, in: dir, name: "qemu")
        #expect(try Tools.decompile(ours, in: dir, name: "ours") == theirs)
        #expect(Tools.normalized(tree.dts()) == Tools.normalized(theirs))
    }
}
