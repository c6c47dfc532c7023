import Testing
@testable import Loader
import SystemSupport

/// A small board in the shape of QEMU's `virt`: the tree the other tests build, print and parse.
func sampleTree() -> DeviceTree {
    var tree = DeviceTree(bootCPUID: 0, reservedMemory: [(address: 0x8000_0000, size: 0x20000)])
    let intc = tree.allocatePhandle()
    let plic = tree.allocatePhandle()

    var root = DeviceTree.Node(name: "")
    root.set("#address-cells", u32: 2)
    root.set("#size-cells", u32: 2)
    root.set("compatible", strings: ["riscv-virtio"])
    root.set("model", string: "riscv-virtio,swemu")

    var chosen = DeviceTree.Node(name: "chosen")
    chosen.set("bootargs", string: "console=ttyS0 earlycon")
    chosen.set("stdout-path", string: "/soc/serial@10000000")
    chosen.set("linux,initrd-start", u64: 0x8800_0000)
    chosen.set("rng-seed", bytes: [1, 2, 3, 4, 5, 6, 7])
    root.add(chosen)

    var memory = DeviceTree.Node(name: "memory", unitAddress: 0x8000_0000)
    memory.set("device_type", string: "memory")
    memory.set("reg", cells: DeviceTree.cells(0x8000_0000, count: 2) + DeviceTree.cells(0x800_0000, count: 2))
    root.add(memory)

    var cpus = DeviceTree.Node(name: "cpus")
    cpus.set("#address-cells", u32: 1)
    cpus.set("#size-cells", u32: 0)
    cpus.set("timebase-frequency", u32: 10_000_000)
    var cpu = DeviceTree.Node(name: "cpu", unitAddress: 0)
    cpu.set("device_type", string: "cpu")
    cpu.set("reg", u32: 0)
    cpu.set("compatible", string: "riscv")
    cpu.set("riscv,isa", string: "rv64imafdc_zicsr_zifencei")
    var cpuIntc = DeviceTree.Node(name: "interrupt-controller")
    cpuIntc.set("#interrupt-cells", u32: 1)
    cpuIntc.set("interrupt-controller")
    cpuIntc.set("compatible", string: "riscv,cpu-intc")
    cpuIntc.set(phandle: intc)
    cpu.add(cpuIntc)
    cpus.add(cpu)
    root.add(cpus)

    var soc = DeviceTree.Node(name: "soc")
    soc.set("#address-cells", u32: 2)
    soc.set("#size-cells", u32: 2)
    soc.set("compatible", string: "simple-bus")
    soc.set("ranges")
    var uart = DeviceTree.Node(name: "serial", unitAddress: 0x1000_0000)
    uart.set("interrupts", u32: 10)
    uart.set("interrupt-parent", u32: plic)
    uart.set("clock-frequency", u32: 0x384000)
    uart.set("reg", cells: [0, 0x1000_0000, 0, 0x100])
    uart.set("compatible", string: "ns16550a")
    soc.add(uart)
    var plicNode = DeviceTree.Node(name: "plic", unitAddress: 0xc00_0000)
    plicNode.set(phandle: plic)
    plicNode.set("riscv,ndev", u32: 0x5f)
    plicNode.set("reg", cells: [0, 0xc00_0000, 0, 0x60_0000])
    plicNode.set("interrupts-extended", cells: [intc, 11, intc, 9])
    plicNode.set("interrupt-controller")
    plicNode.set("compatible", strings: ["sifive,plic-1.0.0", "riscv,plic0"])
    plicNode.set("#interrupt-cells", u32: 1)
    soc.add(plicNode)
    root.add(soc)

    var aliases = DeviceTree.Node(name: "aliases")
    aliases.set("serial0", string: "/soc/serial@10000000")
    root.add(aliases)

    tree.root = root
    return tree
}

func words(_ w: [UInt32]) -> [UInt8] { w.flatMap { [UInt8($0 >> 24), UInt8($0 >> 16 & 0xff), UInt8($0 >> 8 & 0xff), UInt8($0 & 0xff)] } }

@Suite struct DeviceTreeModelTests {
    @Test func settersEncodeBigEndianValues() {
        var n = DeviceTree.Node(name: "n")
        n.set("flag")
        n.set("one", u32: 0x1234_5678)
        n.set("wide", u64: 0x0102_0304_0506_0708)
        n.set("cells", cells: [1, 0xffff_ffff])
        n.set("text", string: "ab")
        n.set("list", strings: ["x", "", "yz"])
        n.set("raw", bytes: [9, 8, 7])
        #expect(n.property("flag") == [])
        #expect(n.property("one") == [0x12, 0x34, 0x56, 0x78])
        #expect(n.property("wide") == [1, 2, 3, 4, 5, 6, 7, 8])
        #expect(n.property("cells") == [0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff])
        #expect(n.property("text") == [0x61, 0x62, 0])
        #expect(n.property("list") == [0x78, 0, 0, 0x79, 0x7a, 0])
        #expect(n.property("raw") == [9, 8, 7])

        #expect(n.u32("one") == 0x1234_5678)
        #expect(n.u64("wide") == 0x0102_0304_0506_0708)
        #expect(n.cells("cells") == [1, 0xffff_ffff])
        #expect(n.string("text") == "ab")
        #expect(n.strings("list") == ["x", "", "yz"])
        #expect(n.string("list") == nil)
        #expect(n.u32("wide") == nil && n.u64("one") == nil && n.cells("raw") == nil && n.strings("raw") == nil)
        #expect(n.has("flag") && !n.has("missing") && n.property("missing") == nil)
        #expect(n.properties.map(\.name) == ["flag", "one", "wide", "cells", "text", "list", "raw"])
    }

    @Test func setReplacesInPlaceAndRemoveRemoves() {
        var n = DeviceTree.Node(name: "n")
        n.set("a", u32: 1)
        n.set("b", u32: 2)
        n.set("a", string: "again")
        #expect(n.properties.map(\.name) == ["a", "b"])
        #expect(n.string("a") == "again")
        #expect(n.remove(property: "a") == Array("again\0".utf8))
        #expect(n.remove(property: "a") == nil)
        #expect(n.properties.map(\.name) == ["b"])

        var c1 = DeviceTree.Node(name: "c")
        c1.set("v", u32: 1)
        var c2 = DeviceTree.Node(name: "c")
        c2.set("v", u32: 2)
        n.add(c1)
        n.add(DeviceTree.Node(name: "d"))
        n.add(c2)
        #expect(n.children.map(\.name) == ["c", "d"])
        #expect(n[child: "c"]?.u32("v") == 2)
        #expect(n.remove(child: "c")?.u32("v") == 2)
        #expect(n.children.map(\.name) == ["d"])
    }

    @Test func namesSplitIntoNodeNameAndUnitAddress() {
        let n = DeviceTree.Node(name: "serial", unitAddress: 0x1000_0000)
        #expect(n.name == "serial@10000000")
        #expect(n.nodeName == "serial")
        #expect(n.unitAddress == "10000000")
        #expect(DeviceTree.Node(name: "cpus").unitAddress == nil)
        #expect(DeviceTree.Node(name: "").nodeName == "")
        #expect(DeviceTree.cells(0x1_2345_6789, count: 2) == [1, 0x2345_6789])
        #expect(DeviceTree.cells(7, count: 1) == [7])
    }

    @Test func phandlesStartAtOneAndContinuePastExistingOnes() throws {
        var tree = DeviceTree()
        #expect(tree.allocatePhandle() == 1)
        #expect(tree.allocatePhandle() == 2)
        #expect(tree.allocatePhandle() == 3)

        var parsed = try DeviceTree(dtb: sampleTree().serialize())
        #expect(parsed.allocatePhandle() == 3)
        var node = DeviceTree.Node(name: "x")
        node.set("linux,phandle", u32: 40)
        var root = DeviceTree.Node(name: "")
        root.add(node)
        var legacy = DeviceTree(root: root)
        #expect(legacy.allocatePhandle() == 41)

        let sample = sampleTree()
        #expect(sample.path(ofPhandle: 1) == "/cpus/cpu@0/interrupt-controller")
        #expect(sample.path(ofPhandle: 2) == "/soc/plic@c000000")
        #expect(sample.path(ofPhandle: 3) == nil)
        #expect(sample.node(at: "/soc/plic@c000000")?.phandle == 2)
    }

    @Test func pathsFindNodesByFullNameNodeNameOrAlias() {
        var tree = sampleTree()
        #expect(tree.node(at: "/")?.name == "")
        #expect(tree.node(at: "/cpus/cpu@0")?.string("riscv,isa") == "rv64imafdc_zicsr_zifencei")
        #expect(tree.node(at: "/cpus/cpu")?.name == "cpu@0")
        #expect(tree.node(at: "/cpus/cpu@0/interrupt-controller")?.phandle == 1)
        #expect(tree.node(at: "//soc//serial@10000000/")?.string("compatible") == "ns16550a")
        #expect(tree.node(at: "serial0")?.name == "serial@10000000")
        #expect(tree.node(at: "/cpus/cpu@1") == nil)
        #expect(tree.node(at: "/nowhere/cpu@0") == nil)
        #expect(tree.node(at: "nosuchalias") == nil)

        tree[path: "/chosen"]?.set("bootargs", string: "quiet")
        #expect(tree.node(at: "/chosen")?.string("bootargs") == "quiet")
        tree[path: "/soc/rtc@101000"] = DeviceTree.Node(name: "rtc@101000")
        #expect(tree.node(at: "/soc")?.children.last?.name == "rtc@101000")
        tree[path: "/soc/rtc@101000"] = nil
        #expect(tree.node(at: "/soc/rtc") == nil)
        tree[path: "/missing/child"] = DeviceTree.Node(name: "child")
        #expect(tree.node(at: "/missing/child") == nil)
    }
}

@Suite struct DeviceTreeBlobTests {
    /// Spec 5.2-5.5, byte for byte: the smallest interesting tree.
    @Test func serializesTheExactLayout() {
        var root = DeviceTree.Node(name: "")
        root.set("a", u32: 1)
        root.add(DeviceTree.Node(name: "c"))
        let blob = DeviceTree(root: root, bootCPUID: 3).serialize()
        let header = words([0xd00d_feed, 102, 56, 100, 40, 17, 16, 3, 2, 44])
        let rsvmap = [UInt8](repeating: 0, count: 16)
        let structure = words([1, 0, 3, 4, 0, 1, 1, 0x6300_0000, 2, 2, 9])
        #expect(blob == header + rsvmap + structure + [0x61, 0])
    }

    @Test func headerFieldsDescribeTheBlocks() throws {
        let tree = sampleTree()
        let blob = tree.serialize()
        func field(_ i: Int) -> Int { Int(DeviceTree.cell(blob, at: 4 * i)) }
        #expect(field(0) == 0xd00d_feed)
        #expect(field(1) == blob.count)
        let (offStruct, offStrings, offRsv) = (field(2), field(3), field(4))
        #expect(field(5) == 17 && field(6) == 16 && field(7) == 0)
        #expect(offRsv == 40)
        #expect(offStruct == 40 + 16 * 2)
        #expect(offStrings == offStruct + field(9))
        #expect(offStrings + field(8) == blob.count)
        // One reservation, then the terminator.
        #expect(Array(blob[40..<72]) == words([0, 0x8000_0000, 0, 0x20000, 0, 0, 0, 0]))
        // Property names are stored once each: "reg", "compatible", "#address-cells" appear
        // in several nodes but once in the strings block.
        let strings = blob[offStrings...].split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
        #expect(Set(strings).count == strings.count)
        #expect(strings.contains("reg") && strings.contains("interrupts-extended"))
        // The structure block ends with FDT_END_NODE, FDT_END.
        #expect(Array(blob[(offStrings - 8)..<offStrings]) == words([2, 9]))
    }

    @Test func roundTripsThroughTheParser() throws {
        let tree = sampleTree()
        let blob = tree.serialize()
        let parsed = try DeviceTree(dtb: blob)
        #expect(parsed == tree)
        #expect(parsed.reservedMemory.count == 1 && parsed.reservedMemory[0].address == 0x8000_0000)
        #expect(parsed.node(at: "/cpus/cpu@0/interrupt-controller")?.has("interrupt-controller") == true)
        #expect(parsed.node(at: "/chosen")?.property("rng-seed") == [1, 2, 3, 4, 5, 6, 7])
        #expect(parsed.serialize() == blob)

        // The serialize arguments override the tree's own.
        let other = try DeviceTree(dtb: tree.serialize(bootCPUID: 5, reservedMemory: []))
        #expect(other.bootCPUID == 5 && other.reservedMemory.isEmpty && other.root == tree.root)
        #expect(other != tree)
    }

    @Test func parsesVersion16AndSkipsNopsAndTrailingBytes() throws {
        let tree = sampleTree()
        var blob = tree.serialize()
        blob[23] = 16  // version 16: no size_dt_struct; the struct block runs to totalsize
        #expect(try DeviceTree(dtb: blob) == tree)

        // FDT_NOP tokens between others are skipped (spec 5.4.1), and bytes past totalsize
        // (free space QEMU leaves, or a file padded on disk) are not looked at.
        var root = DeviceTree.Node(name: "")
        root.set("a", u32: 1)
        let padded = RawBlob(structure: words([4, 1, 0, 4, 3, 4, 0, 1, 4, 2, 4, 9]), strings: Array("a\0".utf8)).bytes + [0xff, 0xff]
        #expect(try DeviceTree(dtb: padded) == DeviceTree(root: root))
    }

    @Test func printsSourceLikeDtc() {
        var root = DeviceTree.Node(name: "")
        root.set("empty")
        root.set("str", string: "a\"b\\c\td")
        root.set("list", strings: ["one", "two"])
        root.set("slash", string: "/")
        root.set("cells", cells: [0, 0x10, 0xdead_beef])
        root.set("odd", bytes: [0, 0xab, 0x1])
        root.set("notext", bytes: [0x41, 0x80, 0x42, 0x00])
        root.set("nuls", bytes: [0x41, 0, 0, 0])
        var child = DeviceTree.Node(name: "child", unitAddress: 0x10)
        child.set("x", u32: 1)
        root.add(child)
        root.add(DeviceTree.Node(name: "leaf"))
        let text = DeviceTree(root: root, reservedMemory: [(address: 0x1000, size: 0x2000)]).dts()
        #expect(text == """
            /dts-v1/;

            /memreserve/\t0x0000000000001000 0x0000000000002000;
            / {
            \tempty;
            \tstr = "a\\"b\\\\c\\td";
            \tlist = "one\\0two";
            \tslash = "/";
            \tcells = <0x00 0x10 0xdeadbeef>;
            \todd = [00 ab 01];
            \tnotext = <0x41804200>;
            \tnuls = <0x41000000>;

            \tchild@10 {
            \t\tx = <0x01>;
            \t};

            \tleaf {
            \t};
            };

            """)
    }
}

/// A hand-assembled blob for the tests that need a structure block the writer would never make.
struct RawBlob {
    var structure: [UInt8]
    var strings: [UInt8]
    var reservations: [UInt8] = [UInt8](repeating: 0, count: 16)

    var bytes: [UInt8] {
        let offStruct = 40 + reservations.count
        let offStrings = offStruct + structure.count
        let total = offStrings + strings.count
        return words([0xd00d_feed, UInt32(total), UInt32(offStruct), UInt32(offStrings), 40, 17, 16, 0,
                             UInt32(strings.count), UInt32(structure.count)]) + reservations + structure + strings
    }
}
