import Devices
import Loader
import RISCV

/// The device tree of the RISC-V `virt` board, generated from what the machine has, in the
/// shape QEMU 7.2's hw/riscv/virt.c gives it (so OpenSBI and Linux see the same platform).
package struct VirtDeviceTree {
    typealias Layout = RISCVBoard.Layout

    var ramSize: UInt64
    /// Harts (`-smp`), each with its interrupt controller, PLIC contexts and CLINT lines.
    var harts = 1
    var bootargs: String?
    var initrd: (start: UInt64, end: UInt64)?
    /// The virtio-mmio slots that have a transport (QEMU maps all eight, empty ones with
    /// device ID 0; swemu maps only those with a device).
    var virtioSlots: [Int] = []

    /// The board's tree with `harts` harts, `ramSize` bytes of RAM and these `bootargs`, as
    /// `-machine dumpdtb` writes it (the fuzz targets seed `-dtb`'s parser with it).
    package init(ramSize: UInt64, harts: Int = 1, bootargs: String? = nil, initrd: (start: UInt64, end: UInt64)? = nil, virtioSlots: [Int] = []) {
        self.ramSize = ramSize
        self.harts = harts
        self.bootargs = bootargs
        self.initrd = initrd
        self.virtioSlots = virtioSlots
    }

    /// `riscv,isa-extensions` (the DT binding's lower-case names), matching `isaString`.
    static let isaExtensions = ["i", "m", "a", "f", "d", "c", "zicntr", "zicsr", "zifencei", "zihpm", "zba", "zbb", "zbs", "sstc"]

    static func reg(_ base: UInt64, _ size: UInt64) -> [UInt32] {
        [UInt32(base >> 32), UInt32(truncatingIfNeeded: base), UInt32(size >> 32), UInt32(truncatingIfNeeded: size)]
    }

    func tree() -> DeviceTree {
        var tree = DeviceTree()
        let cpuIntcs = (0..<harts).map { _ in tree.allocatePhandle() }
        let plicHandle = tree.allocatePhandle()
        let testHandle = tree.allocatePhandle()
        let cpuHandles = (0..<harts).map { _ in tree.allocatePhandle() }

        var root = DeviceTree.Node(name: "")
        root.set("#address-cells", u32: 2)
        root.set("#size-cells", u32: 2)
        root.set("compatible", string: "riscv-virtio")
        root.set("model", string: "riscv-virtio,qemu")

        var chosen = DeviceTree.Node(name: "chosen")
        if let bootargs { chosen.set("bootargs", string: bootargs) }
        chosen.set("stdout-path", string: "/soc/serial@\(String(Layout.uart0, radix: 16))")
        if let initrd {
            chosen.set("linux,initrd-start", u64: initrd.start)
            chosen.set("linux,initrd-end", u64: initrd.end)
        }
        root.add(chosen)

        var memory = DeviceTree.Node(name: "memory", unitAddress: Layout.ram)
        memory.set("device_type", string: "memory")
        memory.set("reg", cells: VirtDeviceTree.reg(Layout.ram, ramSize))
        root.add(memory)

        var cpus = DeviceTree.Node(name: "cpus")
        cpus.set("#address-cells", u32: 1)
        cpus.set("#size-cells", u32: 0)
        cpus.set("timebase-frequency", u32: UInt32(Layout.timebaseFrequency))
        var map = DeviceTree.Node(name: "cpu-map")
        var cluster = DeviceTree.Node(name: "cluster0")
        for hart in 0..<harts {
            var cpu = DeviceTree.Node(name: "cpu", unitAddress: UInt64(hart))
            cpu.set(phandle: cpuHandles[hart])
            cpu.set("device_type", string: "cpu")
            cpu.set("reg", u32: UInt32(hart))
            cpu.set("status", string: "okay")
            cpu.set("compatible", string: "riscv")
            cpu.set("riscv,isa", string: isaString)
            cpu.set("riscv,isa-base", string: "rv64i")
            cpu.set("riscv,isa-extensions", strings: VirtDeviceTree.isaExtensions)
            cpu.set("mmu-type", string: "riscv,sv57")
            var intc = DeviceTree.Node(name: "interrupt-controller")
            intc.set("#interrupt-cells", u32: 1)
            intc.set("interrupt-controller")
            intc.set("compatible", string: "riscv,cpu-intc")
            intc.set(phandle: cpuIntcs[hart])
            cpu.add(intc)
            cpus.add(cpu)
            var core = DeviceTree.Node(name: "core\(hart)")
            core.set("cpu", u32: cpuHandles[hart])
            cluster.add(core)
        }
        map.add(cluster)
        cpus.add(map)
        root.add(cpus)

        var soc = DeviceTree.Node(name: "soc")
        soc.set("#address-cells", u32: 2)
        soc.set("#size-cells", u32: 2)
        soc.set("compatible", string: "simple-bus")
        soc.set("ranges")

        var rtc = DeviceTree.Node(name: "rtc", unitAddress: Layout.rtc)
        rtc.set("interrupts", u32: UInt32(Layout.rtcIRQ))
        rtc.set("interrupt-parent", u32: plicHandle)
        rtc.set("reg", cells: VirtDeviceTree.reg(Layout.rtc, 0x1000))
        rtc.set("compatible", string: "google,goldfish-rtc")
        soc.add(rtc)

        var serial = DeviceTree.Node(name: "serial", unitAddress: Layout.uart0)
        serial.set("interrupts", u32: UInt32(Layout.uartIRQ))
        serial.set("interrupt-parent", u32: plicHandle)
        serial.set("clock-frequency", u32: 0x384000)
        serial.set("reg", cells: VirtDeviceTree.reg(Layout.uart0, 0x100))
        serial.set("compatible", string: "ns16550a")
        soc.add(serial)

        var test = DeviceTree.Node(name: "test", unitAddress: Layout.test)
        test.set(phandle: testHandle)
        test.set("reg", cells: VirtDeviceTree.reg(Layout.test, 0x1000))
        test.set("compatible", strings: ["sifive,test1", "sifive,test0", "syscon"])
        soc.add(test)

        for slot in virtioSlots.sorted(by: >) {
            let base = Layout.virtio + UInt64(slot) * Layout.virtioStride
            var virtio = DeviceTree.Node(name: "virtio_mmio", unitAddress: base)
            virtio.set("interrupts", u32: UInt32(Layout.virtioFirstIRQ + slot))
            virtio.set("interrupt-parent", u32: plicHandle)
            virtio.set("reg", cells: VirtDeviceTree.reg(base, Layout.virtioStride))
            virtio.set("compatible", string: "virtio,mmio")
            soc.add(virtio)
        }

        var plic = DeviceTree.Node(name: "plic", unitAddress: Layout.plic)
        plic.set(phandle: plicHandle)
        plic.set("riscv,ndev", u32: UInt32(PLIC.virtSourceCount - 1))
        plic.set("reg", cells: VirtDeviceTree.reg(Layout.plic, PLIC.virtWindowSize))
        // Context 2h: hart h's M-mode external (cause 11), 2h + 1: its S-mode external (cause 9).
        plic.set("interrupts-extended", cells: cpuIntcs.flatMap { [$0, 11, $0, 9] })
        plic.set("interrupt-controller")
        plic.set("compatible", strings: PLIC.compatible)
        plic.set("#address-cells", u32: 0)
        plic.set("#interrupt-cells", u32: 1)
        soc.add(plic)

        var clint = DeviceTree.Node(name: "clint", unitAddress: Layout.aclint)
        // Each hart's MSIP (cause 3) and MTIP (cause 7).
        clint.set("interrupts-extended", cells: cpuIntcs.flatMap { [$0, 3, $0, 7] })
        clint.set("reg", cells: VirtDeviceTree.reg(Layout.aclint, ACLINT.size))
        clint.set("compatible", strings: ["sifive,clint0", "riscv,clint0"])
        soc.add(clint)
        root.add(soc)

        var poweroff = DeviceTree.Node(name: "poweroff")
        poweroff.set("value", u32: 0x5555)
        poweroff.set("offset", u32: 0)
        poweroff.set("regmap", u32: testHandle)
        poweroff.set("compatible", string: "syscon-poweroff")
        root.add(poweroff)
        var reboot = DeviceTree.Node(name: "reboot")
        reboot.set("value", u32: 0x7777)
        reboot.set("offset", u32: 0)
        reboot.set("regmap", u32: testHandle)
        reboot.set("compatible", string: "syscon-reboot")
        root.add(reboot)

        tree.root = root
        return tree
    }

    package func blob() -> [UInt8] { tree().serialize() }
}
