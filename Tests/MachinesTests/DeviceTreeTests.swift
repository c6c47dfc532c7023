import Foundation
import Loader
import Testing
@testable import Machines

/// The `virt` device tree against the one QEMU 7.2 generates for the same configuration.
@Suite struct DeviceTreeTests {
    static let firmware = "/usr/lib/riscv64-linux-gnu/opensbi/generic/fw_dynamic.bin"

    /// Nodes QEMU has and swemu does not (yet): documented differences.
    static let onlyInQEMU: Set<String> = [
        "pci", "fw-cfg", "flash", "pmu", "platform-bus",  // devices swemu's virt does not model
        "virtio_mmio",  // QEMU maps all eight transports; swemu maps those with a device
    ]

    /// The path of the node whose phandle is `handle`.
    static func path(of handle: UInt32, in nodes: [String: DeviceTree.Node]) -> String? {
        nodes.first { $0.value.u32("phandle") == handle }?.key
    }

    /// `interrupts-extended` as (controller path, cause) pairs.
    static func wiring(_ node: DeviceTree.Node, in nodes: [String: DeviceTree.Node]) -> [String] {
        let cells = node.cells("interrupts-extended") ?? []
        return stride(from: 0, to: cells.count - 1, by: 2).map { "\(path(of: cells[$0], in: nodes) ?? "?"):\(cells[$0 + 1])" }
    }

    static func flatten(_ node: DeviceTree.Node, path: String = "") -> [String: DeviceTree.Node] {
        var out: [String: DeviceTree.Node] = [path.isEmpty ? "/" : path: node]
        for child in node.children {
            out.merge(flatten(child, path: path + "/" + child.name)) { a, _ in a }
        }
        return out
    }

    @Test(.enabled(if: FileManager.default.isExecutableFile(atPath: GuestProgram.qemu)
                   && FileManager.default.fileExists(atPath: firmware),
                   "needs qemu-system-riscv64 (qemu-system-misc) and OpenSBI (opensbi); scripts/setup installs both"),
          arguments: [1, 4])
    func describesTheSameDevicesAsQEMU(harts: Int) throws {
        // Both need a kernel for -append; any file will do, neither runs.
        let scratch = FileManager.default.temporaryDirectory.appendingPathComponent("swemu-dt-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: scratch, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: scratch) }
        let kernel = scratch.appendingPathComponent("kernel.bin")
        try Data(repeating: 0, count: 4096).write(to: kernel)
        let board = try RISCVBoard(.init(kind: .virt, ramSize: 512 << 20, firmware: .file(Self.firmware), kernel: kernel.path,
                                         append: "console=ttyS0", serial: nil, harts: harts))
        defer { board.close() }
        let ours = try DeviceTree(dtb: board.deviceTreeBlob, name: "swemu")
        let dump = scratch.appendingPathComponent("qemu.dtb")
        let run = try GuestProgram.run(GuestProgram.qemu, ["-M", "virt,dumpdtb=\(dump.path)", "-m", "512M", "-smp", "\(harts)", "-display", "none",
                                                           "-kernel", kernel.path, "-append", "console=ttyS0"])
        try #require(run.status == 0, "QEMU: \(run.output)")
        let theirs = try DeviceTree(dtb: [UInt8](Data(contentsOf: dump)), name: "QEMU")

        let ourNodes = Self.flatten(ours.root)
        let qemuNodes = Self.flatten(theirs.root)
        // Every node we generate exists in QEMU's tree with the same device properties.
        for (path, node) in ourNodes {
            guard let other = qemuNodes[path] else {
                Issue.record("\(path) is not in QEMU's tree")
                continue
            }
            for property in ["compatible", "reg", "interrupts", "device_type", "#address-cells", "#size-cells",
                             "#interrupt-cells", "timebase-frequency", "value", "offset", "bootargs",
                             "stdout-path", "clock-frequency"] where node.has(property) || other.has(property) {
                #expect(node.property(property) == other.property(property), "\(path): '\(property)' differs")
            }
            // Phandle references differ in number; compare what they point to.
            for property in ["interrupts-extended", "interrupt-parent", "regmap"] where node.has(property) {
                #expect(other.has(property), "\(path): QEMU lacks '\(property)'")
            }
            // Interrupt wiring: (controller node, cause) pairs, hart by hart, in the same order.
            if node.has("interrupts-extended") {
                #expect(Self.wiring(node, in: ourNodes) == Self.wiring(other, in: qemuNodes), "\(path): interrupts-extended differs")
            }
            if let cpu = node.u32("cpu") {  // cpu-map entries
                #expect(Self.path(of: cpu, in: ourNodes) == other.u32("cpu").flatMap { Self.path(of: $0, in: qemuNodes) }, "\(path): cpu differs")
            }
        }
        // Every QEMU device node is ours too, unless it is a documented difference.
        for path in qemuNodes.keys where ourNodes[path] == nil {
            let name = path.split(separator: "/").last.map { String($0.split(separator: "@")[0]) } ?? path
            if Self.onlyInQEMU.contains(name) || path.hasPrefix("/flash") || path.contains("/pci@") { continue }
            Issue.record("QEMU's \(path) is missing from swemu's tree")
        }
        // Documented differences in values:
        // - mmu-type: swemu implements Sv57, QEMU 7.2's default hart stops at Sv48.
        #expect(ours.node(at: "/cpus/cpu@0")?.string("mmu-type") == "riscv,sv57")
        #expect(theirs.node(at: "/cpus/cpu@0")?.string("mmu-type") == "riscv,sv48")
        // - riscv,ndev: both PLICs have sources 1-95; QEMU 7.2 advertises 96 (one past its last
        //   source), swemu the highest source that exists.
        #expect(ours.node(at: "/soc/plic@c000000")?.u32("riscv,ndev") == 95)
        #expect(theirs.node(at: "/soc/plic@c000000")?.u32("riscv,ndev") == 96)
        // The CPU node differs in what the hart implements: QEMU 7.2's rv64 has H, swemu has
        // Zba/Zbb/Zbs and Sstc. Both say rv64 with the G and C extensions.
        let isa = ours.node(at: "/cpus/cpu@0")?.string("riscv,isa")
        #expect(isa?.hasPrefix("rv64imafdc") == true)
        #expect(theirs.node(at: "/cpus/cpu@0")?.string("riscv,isa")?.hasPrefix("rv64imafdc") == true)
    }
}
