import Block
import CLinux
import DeviceModel
import Devices
import Glibc
import GuestMemory
import KVM
import Loader
import Synchronization
import SystemSupport
import VirtIO

/// `-M microvm -accel kvm`: an x86-64 board in the style of Firecracker and QEMU's microvm,
/// run by Linux KVM (DESIGN.md §2). No PCI, no firmware: swemu loads the kernel itself and
/// enters it in 64-bit mode (bzImage, ELF) or 32-bit PVH mode (ELF with a PVH note).
///
/// Devices: the 8250/16550A UART at port 0x3f8 / IRQ 4 (the RISC-V board's UART code), the
/// i8042's reset line, the exit port, the boot-time marker, virtio-mmio transports with irqfd
/// interrupts and ioeventfd notifications, and KVM's in-kernel PIC, IOAPIC, local APICs and PIT.
public final class X86MicroVM: @unchecked Sendable {
    /// QEMU's name for the microvm's RAM block (MachineClass default_ram_id).
    public static let ramID = "microvm.ram"
    // SAFETY: set up in init, then read-only; run-time state is in `events` (Mutex/atomics).

    /// The memory map, as data in one place.
    public enum Layout {
        /// boot.rst: the real-mode area below 640 KiB minus the EBDA is usable RAM.
        public static let lowRAMEnd: UInt64 = 0x9_fc00
        public static let gdt: UInt64 = 0x500
        public static let idt: UInt64 = 0x520
        public static let pvhStartInfo: UInt64 = 0x6000
        public static let zeroPage: UInt64 = 0x7000
        public static let bootStack: UInt64 = 0x8ff0
        /// PML4, PDPT and four page directories: 0x9000-0xefff.
        public static let pml4: UInt64 = 0x9000
        public static let commandLine: UInt64 = 0x2_0000
        public static let commandLineMax: UInt64 = 0x1_0000
        /// ACPI tables, in the BIOS area Linux scans for the RSDP (ACPI 6.4 §5.2.5.1).
        public static let acpi: UInt64 = 0xe_0000
        public static let acpiSize: UInt64 = 0x2_0000
        /// Where bzImage's protected-mode kernel and ELF programs go: 1 MiB.
        public static let kernel: UInt64 = 0x10_0000
        /// The 32-bit MMIO hole: RAM beyond 3 GiB continues at 4 GiB.
        public static let mmioHole: UInt64 = 0xc000_0000
        public static let highRAM: UInt64 = 0x1_0000_0000
        /// Firecracker's boot-timer convention: a byte write of 123 here marks "userspace reached".
        public static let bootMarker: UInt64 = 0xc000_0000
        public static let bootMarkerMagic: UInt64 = 123
        public static let virtio: UInt64 = 0xd000_0000
        public static let virtioStride: UInt64 = 0x1000
        public static let virtioFirstIRQ: UInt32 = 5
        public static let virtioSlots = 8
        public static let ioapic: UInt64 = 0xfec0_0000
        public static let localAPIC: UInt64 = 0xfee0_0000
        /// Intel VT-x's real-mode helpers (KVM_SET_TSS_ADDR, _IDENTITY_MAP_ADDR): 4 pages below 4 GiB.
        public static let identityMap: UInt64 = 0xfffb_c000
        public static let tss: UInt64 = 0xfffb_d000
        // Port I/O.
        public static let com1: UInt64 = 0x3f8
        public static let com1IRQ: UInt32 = 4
        public static let i8042Data: UInt64 = 0x60
        public static let i8042Command: UInt64 = 0x64
        /// QEMU's isa-debug-exit default (iobase 0x501): a write of v ends swemu with status
        /// (v << 1) | 1, so the same test programs run on `qemu -device isa-debug-exit`.
        public static let debugExit: UInt64 = 0x501
        /// ACPI fixed hardware of this board (FADT): PM1a event/control and the reset register.
        public static let pm1aEvent: UInt64 = 0x600
        public static let pm1aControl: UInt64 = 0x604
        public static let resetRegister: UInt64 = 0x608
    }

    public struct Configuration: Sendable {
        public var ramSize: UInt64
        /// How the RAM is held on the host (`-object memory-backend-*`; default a memfd).
        public var ramBackend = RAMBackendSpec()
        public var cpus: Int
        /// `-kernel`: a bzImage, an ELF `vmlinux` (PVH when it has the note) or an ELF64 program.
        public var kernel: String
        public var initrd: String?
        public var append: String?
        public var virtio: [RISCVBoard.VirtioDeviceSpec] = []
        /// qcow2 disks open inactive: an incoming migration's destination, until the machine
        /// is handed over (`MigratableMachine.setDisksActive`).
        public var disksInactive = false
        public var serial: (any CharBackend)?
        /// Serves ioeventfd notifications (virtio queue work off the vCPU threads); without
        /// one, notifications arrive as MMIO exits on the vCPU that wrote them.
        public var eventLoop: EventLoop?
        /// Told once when the guest writes the boot marker, with nanoseconds since process start.
        public var onBootMarker: (@Sendable (UInt64) -> Void)?
        public var kvmDevice = "/dev/kvm"

        public init(ramSize: UInt64, cpus: Int, kernel: String, initrd: String? = nil, append: String? = nil,
                    serial: (any CharBackend)? = nil) {
            self.ramSize = ramSize
            self.cpus = cpus
            self.kernel = kernel
            self.initrd = initrd
            self.append = append
            self.serial = serial
        }
    }

    public typealias Exit = BoardExit

    /// A KVM_EXIT_DEBUG, as the debug handler hears it: the exception (1 #DB, 3 #BP) and DR6.
    public struct DebugEvent: Sendable {
        public var exception: UInt32
        public var dr6: UInt64
    }

    /// The VM and the RAM its memory slots point into live exactly as long as the board.
    let vm: KVMVirtualMachine
    public let memory: GuestMemory
    /// The port-I/O bus (UART, i8042, exit port, ACPI PM) and the MMIO bus (virtio, boot marker).
    let ports: AddressSpace
    let mmio: AddressSpace
    public let vcpus: [KVMVcpu]
    /// The devices whose state travels in `State` (X86MicroVM+State.swift): COM1 and the
    /// virtio-mmio transports, in slot order.
    let uart: UART16550
    let virtioTransports: [VirtioMMIO]
    /// The temporary overlays of `-snapshot` disks, for Ctrl-A s (commit).
    package let snapshotOverlays: [SnapshotOverlay]
    /// irqfds, which must live as long as the VM.
    private let irqFDs: [IRQFDLine]
    /// ioeventfds, registered with `eventLoop` until the board ends.
    private let notifyFDs: [Wakeup]
    private let eventLoop: EventLoop?
    let events: Events
    /// Whether the RAM slots log dirty pages, for migration (X86MicroVM+Migration.swift).
    let dirtyLog = Mutex(DirtyLogState())

    /// How the run ends: the first event wins; `wakeup` tells the thread in `run()`.
    final class Events: Sendable {
        /// The vCPU threads' run: its exit, parking, the debugger's step and handler.
        let run: VCPURunControl
        /// Told of each KVM_EXIT_DEBUG, on the vCPU's thread (`setDebugHandler`).
        let debugHandler = Mutex<(@Sendable (Int, DebugEvent) -> Void)?>(nil)
        let bootMarkerSeen = Atomic<Bool>(false)
        init(vcpus: Int) throws(SystemError) { run = try VCPURunControl(vcpus: vcpus) }
        func end(_ exit: Exit) { run.end(exit) }
    }

    public init(_ config: Configuration) throws(SystemError) {
        let kvm = try KVMSystem(path: config.kvmDevice)
        guard config.cpus >= 1, config.cpus <= min(kvm.maxVCPUs, 255) else {
            throw .configuration("-smp \(config.cpus): KVM here runs 1 to \(min(kvm.maxVCPUs, 255)) vCPUs")
        }
        guard config.ramSize >= 32 << 20 else { throw .configuration("-m \(config.ramSize >> 20)M: microvm needs at least 32 MiB") }
        let vm = try kvm.createVM()
        self.vm = vm
        eventLoop = config.eventLoop

        // RAM, split around the MMIO hole (slot 0 below 3 GiB, slot 1 from 4 GiB): two
        // slices of one backend, as QEMU's "microvm.ram" block and its aliases.
        let backend = try RAMBackend(config.ramBackend, size: config.ramSize, name: Self.ramID)
        var regions = [try GuestRAM(base: GuestAddress(0), size: min(config.ramSize, Layout.mmioHole), backend: backend, offset: 0)]
        if config.ramSize > Layout.mmioHole {
            regions.append(try GuestRAM(base: GuestAddress(Layout.highRAM), size: config.ramSize - Layout.mmioHole,
                                        backend: backend, offset: Layout.mmioHole))
        }
        let memory = try GuestMemory(regions: regions)
        self.memory = memory
        for (slot, region) in memory.regions.enumerated() {
            // SAFETY: the pointer covers the whole region, which `memory` keeps mapped as long as
            // this board (and so the VM) lives.
            guard let host = region.hostPointer(at: region.range.base, count: region.size) else { continue }
            try vm.setMemoryRegion(slot: UInt32(slot), guestAddress: region.range.base.rawValue, size: region.size, host: host)
        }
        try vm.setTSSAndIdentityMap(tss: Layout.tss, identityMap: Layout.identityMap)
        try vm.createIRQChip()
        try vm.createPIT()

        let events = try Events(vcpus: config.cpus)
        self.events = events
        var irqFDs: [IRQFDLine] = []
        func irqLine(_ gsi: UInt32) throws(SystemError) -> IRQFDLine {
            let line = try IRQFDLine(vm: vm, gsi: gsi)
            irqFDs.append(line)
            return line
        }
        // Port I/O devices.
        let ports = AddressSpace(name: "io")
        let mmio = AddressSpace(name: "memory")
        let uart = UART16550(name: "serial0", backend: config.serial, irq: try irqLine(Layout.com1IRQ), regShift: 0)
        try ports.add(uart, at: GuestAddress(Layout.com1), size: 8)
        try ports.add(I8042(port: .data) {}, at: GuestAddress(Layout.i8042Data), size: 1)
        try ports.add(I8042(port: .command) { events.end(.reset) }, at: GuestAddress(Layout.i8042Command), size: 1)
        try ports.add(DebugExit { events.end(.powerOff(exitCode: $0)) }, at: GuestAddress(Layout.debugExit), size: 2)
        try ports.add(ACPIPowerManagement(onPowerOff: { events.end(.powerOff(exitCode: 0)) }, onReset: { events.end(.reset) }),
                      at: GuestAddress(Layout.pm1aEvent), size: 12)
        try mmio.add(BootMarker { nanoseconds in
            if !events.bootMarkerSeen.exchange(true, ordering: .sequentiallyConsistent) { config.onBootMarker?(nanoseconds) }
        }, at: GuestAddress(Layout.bootMarker), size: 0x1000)

        // virtio-mmio transports.
        guard config.virtio.count <= Layout.virtioSlots else {
            throw .configuration("at most \(Layout.virtioSlots) virtio devices fit on -M microvm (\(config.virtio.count) given)")
        }
        var virtioSlots: [ACPITables.VirtioSlot] = []
        var virtioTransports: [VirtioMMIO] = []
        var snapshotOverlays: [SnapshotOverlay] = []
        var notifyFDs: [Wakeup] = []
        for (index, spec) in config.virtio.enumerated() {
            let base = Layout.virtio + UInt64(index) * Layout.virtioStride
            let gsi = Layout.virtioFirstIRQ + UInt32(index)
            let device = try spec.makeDevice(overlays: &snapshotOverlays, disksInactive: config.disksInactive, ram: regions.map(\.range))
            let transport = VirtioMMIO(name: "virtio-mmio@\(String(base, radix: 16))", device: device, memory: memory, irq: try irqLine(gsi))
            try mmio.add(transport, at: GuestAddress(base), size: Layout.virtioStride)
            virtioTransports.append(transport)
            if let loop = config.eventLoop {
                // virtio-mmio QueueNotify (offset 0x50) takes the queue index: one eventfd per
                // queue, matched on the value, so each wakes only its own queue's work.
                let queueNotify = VirtioMMIO.Register.queueNotify.rawValue
                for queue in 0..<device.queueMaxSizes.count {
                    let notify = try Wakeup()
                    try vm.attachIOEventFD(notify.fd, mmioAddress: base + queueNotify, length: 4, value: UInt64(queue))
                    try loop.register(fd: notify.fd, events: EventLoop.readable) { [weak transport] _ in
                        notify.wait(timeoutNanoseconds: 0)  // consume the count
                        transport?.write(offset: queueNotify, value: UInt64(queue), size: 4)
                    }
                    notifyFDs.append(notify)
                }
            }
            virtioSlots.append(ACPITables.VirtioSlot(base: base, size: Layout.virtioStride, gsi: gsi))
        }

        // vCPUs: the BSP (APIC id 0) starts at the kernel's entry; the others wait for
        // INIT/SIPI from it, as on a PC (their in-kernel local APIC holds them).
        var vcpus: [KVMVcpu] = []
        let supported = try kvm.supportedCPUID()
        for id in 0..<config.cpus {
            let vcpu = try vm.createVCPU(id: id)
            try vcpu.setCPUID(X86MicroVM.cpuid(supported, apicID: id, cpus: config.cpus))
            try vcpu.setMSRs(X86MicroVM.bootMSRs)
            try vcpu.resetFPU()
            try vcpu.configureLocalInterrupts()
            vcpus.append(vcpu)
        }
        self.vcpus = vcpus
        let kicked = vcpus
        events.run.setKick { kicked[$0].kick() }
        self.ports = ports
        self.mmio = mmio
        self.irqFDs = irqFDs
        self.notifyFDs = notifyFDs
        self.snapshotOverlays = snapshotOverlays
        self.uart = uart
        self.virtioTransports = virtioTransports

        let acpiTables = ACPITables(cpus: config.cpus, virtio: virtioSlots, at: Layout.acpi)
        let entry = try X86MicroVM.load(config, memory: memory, acpi: acpiTables)
        try X86MicroVM.enter(vcpus[0], entry)
    }

    deinit {
        if let loop = eventLoop { for notify in notifyFDs { loop.unregister(fd: notify.fd) } }
    }

    /// What the user should know about this host's KVM before booting on it, or nil: on a PVM
    /// host (kvm_pvm), small guests run but unmodified Linux kernels do not.
    public static func hostNote(sysModule: String = "/sys/module") -> String? {
        switch KVMFlavour.detect(sysModule: sysModule) {
        case .pvm:
            return "/dev/kvm is served by kvm_pvm (PVM, no VT-x/AMD-V): guest kernel mode is emulated instruction by instruction and fails on SSE, cmpxchg16b and xrstors, so unmodified Linux kernels cannot boot here"
        case .unknown:
            return "cannot tell which module serves /dev/kvm (no kvm_intel, kvm_amd or kvm_pvm in /sys/module)"
        case .intel, .amd:
            return nil
        }
    }

    // MARK: - CPU setup

    /// MSRs as the boot protocol leaves them: syscall/sysenter targets zero and fast strings on
    /// (IA32_MISC_ENABLE bit 0), as Linux's own boot code expects from firmware.
    static let bootMSRs: [(index: UInt32, value: UInt64)] = [
        (0x174, 0), (0x175, 0), (0x176, 0),  // IA32_SYSENTER_CS/ESP/EIP
        (0xc000_0081, 0), (0xc000_0082, 0), (0xc000_0083, 0), (0xc000_0084, 0),  // STAR, LSTAR, CSTAR, SFMASK
        (0xc000_0102, 0),  // KERNEL_GS_BASE
        (0x1a0, 1),  // IA32_MISC_ENABLE: fast-string enable
    ]

    /// The host's supported CPUID, adjusted for one vCPU of `cpus` (one socket, `cpus` cores,
    /// one thread each): APIC ids, the hypervisor bit, and topology leaves 4, 0xB and 0x1F
    /// (SDM Vol. 2A CPUID; Vol. 3 10.12.8 x2APIC topology).
    static func cpuid(_ supported: [kvm_cpuid_entry2], apicID: Int, cpus: Int) -> [kvm_cpuid_entry2] {
        let coreBits = UInt32(cpus <= 1 ? 0 : (Int.bitWidth - (cpus - 1).leadingZeroBitCount))
        return supported.map { original in
            var e = original
            switch e.function {
            case 1:
                e.ebx = (e.ebx & 0x0000_ffff) | UInt32(apicID) << 24 | UInt32(min(cpus, 255)) << 16
                if cpus > 1 { e.edx |= 1 << 28 }  // HTT: the count in EBX[23:16] is valid
                e.ecx |= 1 << 31  // hypervisor present
            case 4 where e.eax & 0x1f != 0:
                e.eax = (e.eax & 0x03ff_ffff) | UInt32(cpus - 1) << 26  // cores per package - 1
            case 0xb, 0x1f:
                e.edx = UInt32(apicID)
                switch e.index {
                case 0: e.eax = 0; e.ebx = 1; e.ecx = 1 << 8  // SMT level: one thread
                case 1: e.eax = coreBits; e.ebx = UInt32(cpus); e.ecx = 2 << 8 | 1  // core level
                default: e.eax = 0; e.ebx = 0; e.ecx = e.index  // invalid level ends the list
                }
            default:
                break
            }
            return e
        }
    }

    /// How the BSP enters the kernel.
    enum Entry: Equatable {
        /// boot.rst "64-bit Boot Protocol": long mode, identity paging, RSI = zero page.
        case long(rip: UInt64, zeroPage: UInt64)
        /// PVH (xen start_info.h): 32-bit protected mode, paging off, EBX = hvm_start_info.
        case pvh(eip: UInt64, startInfo: UInt64)
    }

    static func enter(_ vcpu: KVMVcpu, _ entry: Entry) throws(SystemError) {
        var sregs = try vcpu.specialRegisters()
        func segment(_ selector: UInt16, code: Bool, long: Bool) -> kvm_segment {
            var s = kvm_segment()
            s.base = 0
            s.limit = 0xffff_ffff
            s.selector = selector
            s.type = code ? 0xb : 0x3  // execute/read accessed; read/write accessed
            s.present = 1
            s.dpl = 0
            s.db = long ? 0 : 1
            s.s = 1
            s.l = long ? 1 : 0
            s.g = 1
            return s
        }
        var regs = kvm_regs()
        regs.rflags = 2  // bit 1 is reserved and always set
        sregs.gdt.base = Layout.gdt
        sregs.gdt.limit = UInt16(X86Boot.gdt.count * 8 - 1)
        sregs.idt.base = Layout.idt
        sregs.idt.limit = 0
        switch entry {
        case let .long(rip, zeroPage):
            sregs.cs = segment(X86Boot.codeSelector, code: true, long: true)
            let data = segment(X86Boot.dataSelector, code: false, long: false)
            sregs.ds = data; sregs.es = data; sregs.fs = data; sregs.gs = data; sregs.ss = data
            sregs.cr3 = Layout.pml4
            sregs.cr4 = 1 << 5  // PAE
            sregs.cr0 = 1 << 0 | 1 << 4 | 1 << 31  // PE, ET, PG
            sregs.efer = 1 << 8 | 1 << 10  // LME, LMA
            regs.rip = rip
            regs.rsi = zeroPage
            regs.rsp = Layout.bootStack
            regs.rbp = Layout.bootStack
        case let .pvh(eip, startInfo):
            sregs.cs = segment(X86Boot.code32Selector, code: true, long: false)
            let data = segment(X86Boot.dataSelector, code: false, long: false)
            sregs.ds = data; sregs.es = data; sregs.fs = data; sregs.gs = data; sregs.ss = data
            sregs.cr0 = 1 << 0 | 1 << 4  // PE, ET; paging off
            sregs.cr4 = 0
            sregs.efer = 0
            regs.rip = eip
            regs.rbx = startInfo
        }
        try vcpu.setSpecialRegisters(sregs)
        try vcpu.setRegisters(regs)
    }

    // MARK: - Loading

    /// Loads kernel, initrd, command line, zero page (or PVH start info), page tables, GDT and
    /// ACPI tables; returns how to enter.
    static func load(_ config: Configuration, memory: GuestMemory, acpi: ACPITables) throws(SystemError) -> Entry {
        let lowTop = min(config.ramSize, Layout.mmioHole)
        let bytes = try FileDescriptor.readWholeFile(config.kernel, limit: lowTop)
        let commandLine = Array((config.append ?? "").utf8) + [0]
        guard UInt64(commandLine.count) <= Layout.commandLineMax else {
            throw .configuration("-append: the command line has \(commandLine.count - 1) bytes; at most \(Layout.commandLineMax - 1) fit")
        }
        try RISCVBoard.copy(commandLine, to: GuestAddress(Layout.commandLine), in: memory, what: "the command line")
        try RISCVBoard.copy(X86Boot.gdtBytes(), to: GuestAddress(Layout.gdt), in: memory, what: "the GDT")
        try RISCVBoard.copy(X86Boot.identityPageTables(pml4: Layout.pml4), to: GuestAddress(Layout.pml4), in: memory, what: "the page tables")
        guard UInt64(acpi.bytes.count) <= Layout.acpiSize else {
            throw .configuration("the ACPI tables (\(acpi.bytes.count) bytes) do not fit below 1 MiB")
        }
        try RISCVBoard.copy(acpi.bytes, to: GuestAddress(Layout.acpi), in: memory, what: "the ACPI tables")

        var setupHeader: ArraySlice<UInt8>?
        var kernelEnd: UInt64
        var initrdMax = lowTop
        var pvh: UInt64?
        let elfEntry: UInt64
        if X86Boot.BzImage.isBzImage(bytes) {
            let image = try X86Boot.BzImage(bytes, name: config.kernel)
            try RISCVBoard.copy(image.kernel, to: GuestAddress(Layout.kernel), in: memory, what: "-kernel \(config.kernel)")
            setupHeader = image.setupHeader
            kernelEnd = Layout.kernel + max(UInt64(image.kernel.count), UInt64(image.initSize))
            initrdMax = min(initrdMax, UInt64(image.initrdAddressMax) + 1)
            elfEntry = Layout.kernel + 0x200  // boot.rst: the 64-bit entry is 0x200 past the load address
        } else if ELFFile.isELF(bytes) {
            let elf = try RISCVBoard.loadELF(config.kernel, into: memory, machine: ELFFile.machineX86_64, machineName: "x86-64")
            kernelEnd = elf.segments.map { $0.physicalAddress + $0.memorySize }.max() ?? Layout.kernel
            elfEntry = elf.entry
            pvh = X86Boot.pvhEntry(elf).map(UInt64.init)
        } else {
            throw .configuration("-kernel \(config.kernel): neither a bzImage (\"HdrS\" at 0x202) nor an x86-64 ELF")
        }
        guard kernelEnd <= lowTop else { throw .configuration("-kernel \(config.kernel) does not fit in guest RAM below 3 GiB; use a larger -m") }

        var initrd: (address: UInt64, size: UInt64)?
        if let path = config.initrd {
            let data = try FileDescriptor.readWholeFile(path, limit: lowTop)
            // boot.rst: as high as possible below initrd_addr_max, page aligned.
            let size = UInt64(data.count)
            guard size < initrdMax, (initrdMax - size) & ~0xfff >= kernelEnd else {
                throw .configuration("-initrd \(path) (\(data.count) bytes) does not fit in guest RAM above the kernel; use a larger -m")
            }
            let address = (initrdMax - size) & ~0xfff
            try RISCVBoard.copy(data, to: GuestAddress(address), in: memory, what: "-initrd \(path)")
            initrd = (address, size)
        }

        let map = e820(ramSize: config.ramSize)
        if let pvhEntry = pvh {
            let info = X86Boot.pvhStartInfo(at: Layout.pvhStartInfo, commandLine: Layout.commandLine, rsdp: Layout.acpi,
                                            e820: map, initrd: initrd)
            try RISCVBoard.copy(info, to: GuestAddress(Layout.pvhStartInfo), in: memory, what: "the PVH start info")
            return .pvh(eip: pvhEntry, startInfo: Layout.pvhStartInfo)
        }
        var zeroPage = X86Boot.ZeroPage(setupHeader: setupHeader)
        zeroPage.setCommandLine(address: UInt32(Layout.commandLine), size: UInt32(commandLine.count))
        if let initrd { zeroPage.setInitrd(address: UInt32(initrd.address), size: UInt32(initrd.size)) }
        zeroPage.setRSDP(Layout.acpi)
        zeroPage.setE820(map)
        try RISCVBoard.copy(zeroPage.bytes, to: GuestAddress(Layout.zeroPage), in: memory, what: "the zero page")
        return .long(rip: elfEntry, zeroPage: Layout.zeroPage)
    }

    /// The e820 map: low RAM below the EBDA, the BIOS area reserved (ACPI tables live there),
    /// RAM from 1 MiB to the hole, and RAM above 4 GiB.
    static func e820(ramSize: UInt64) -> [X86Boot.E820Entry] {
        var map = [X86Boot.E820Entry(address: 0, size: Layout.lowRAMEnd, type: X86Boot.E820Entry.ram),
                   X86Boot.E820Entry(address: Layout.lowRAMEnd, size: Layout.kernel - Layout.lowRAMEnd, type: X86Boot.E820Entry.reserved),
                   X86Boot.E820Entry(address: Layout.kernel, size: min(ramSize, Layout.mmioHole) - Layout.kernel, type: X86Boot.E820Entry.ram)]
        if ramSize > Layout.mmioHole {
            map.append(X86Boot.E820Entry(address: Layout.highRAM, size: ramSize - Layout.mmioHole, type: X86Boot.E820Entry.ram))
        }
        return map
    }

    // MARK: - Running

    /// Runs every vCPU on its own thread until the guest powers off, resets or fails, or
    /// `requestPowerOff` is called; returns why. The board cannot run twice: a reset builds a
    /// new one.
    public func run() throws(SystemError) -> Exit {
        try events.run.run(name: { "CPU \($0)/KVM" }) { [self] index in
            vcpus[index].bindToCurrentThread()
            runLoop(vcpus[index])
        }
    }

    /// Ends the run from another thread (Ctrl-A x, a signal, the monitor's quit).
    public func requestPowerOff(exitCode: Int32) { events.end(.powerOff(exitCode: exitCode)) }

    /// Ends the run with `.reset` from another thread (the monitor's system_reset).
    public func requestReset() { events.end(.reset) }

    /// Parks every vCPU outside KVM_RUN (the monitor's `stop`) and returns once all are parked
    /// or the run is ending. Their registers can then be read from this thread.
    public func pause() { events.run.pause() }

    /// Lets parked vCPUs run again (the monitor's `cont`). Once the run's exit is decided (a
    /// reset or power-off is pending) they stay parked: the old board must not run guest code
    /// after `system_reset` while the new one is being built.
    public func resume() { events.run.resume() }

    /// Who hears of debug exits (the GDB stub). Each one pauses the board before it is told:
    /// the reporting vCPU parks after the handler returns, the others are kicked.
    public func setDebugHandler(_ handler: (@Sendable (Int, DebugEvent) -> Void)?) { events.debugHandler.withLock { $0 = handler } }

    /// While paused: lets vCPU `index` alone run (a debugger's single step; its guest debug
    /// flags end the run with a debug exit, which pauses the board again).
    public func step(vcpu index: Int) { events.run.step(index) }

    public var vcpuThreadIDs: [Int] { vcpus.map(\.threadID) }

    /// One vCPU thread: KVM_RUN and the exits the kernel leaves to us.
    private func runLoop(_ vcpu: KVMVcpu) {
        // The last exit was port or MMIO I/O, whose instruction KVM finishes only at the next KVM_RUN.
        var exitPending = false
        while !events.run.stopping.load(ordering: .sequentiallyConsistent) {
            if events.run.shouldPark(vcpu.id) {
                if exitPending {
                    // Park only with the instruction complete, so that the state saved while
                    // parked is whole: this KVM_RUN finishes it (an `in`'s value into RAX, RIP
                    // past it) and returns .interrupted before the next instruction (api.rst 5).
                    // A string instruction may exit again; that exit is handled as any other.
                    vcpu.requestCompletionOnly()
                } else {
                    events.run.park(vcpu.id)
                    continue
                }
            }
            let exit: KVMExit
            do {
                exit = try vcpu.runOnce()
            } catch {
                events.end(.failed("vCPU \(vcpu.id): \(error)"))
                return
            }
            exitPending = false
            switch exit {
            case let .io(port, size, count, isWrite):
                exitPending = true
                for i in 0..<count {
                    if isWrite {
                        ports.write(at: GuestAddress(UInt64(port)), value: vcpu.ioValue(at: i, size: size), size: size)
                    } else {
                        let value = ports.read(at: GuestAddress(UInt64(port)), size: size) ?? X86MicroVM.openBus(size)
                        vcpu.setIOValue(value, at: i, size: size)
                    }
                }
            case let .mmio(address, size, isWrite, value):
                exitPending = true
                if isWrite {
                    mmio.write(at: GuestAddress(address), value: value, size: size)
                } else {
                    vcpu.setMMIOReadValue(mmio.read(at: GuestAddress(address), size: size) ?? X86MicroVM.openBus(size))
                }
            case .halt, .interrupted:
                continue
            case let .debug(exception, _, dr6, _):
                let event = DebugEvent(exception: exception, dr6: dr6)
                events.run.debugStop(vcpu.id) {
                    guard let handler = events.debugHandler.withLock({ $0 }) else { return false }
                    handler(vcpu.id, event)
                    return true
                }
            case .shutdown:
                events.end(.failed("guest triple fault on vCPU \(vcpu.id) (KVM_EXIT_SHUTDOWN); registers:\n\(vcpu.registerDump())"))
                return
            case .systemEvent(let type):
                switch Int32(type) {
                case KVM_SYSTEM_EVENT_SHUTDOWN: events.end(.powerOff(exitCode: 0))
                case KVM_SYSTEM_EVENT_RESET: events.end(.reset)
                default: events.end(.failed("vCPU \(vcpu.id): KVM system event \(type) (crash)\n\(vcpu.registerDump())"))
                }
                return
            case .internalError(let suberror):
                let what = suberror == KVM_INTERNAL_ERROR_EMULATION ? "an instruction KVM cannot emulate" : "suberror \(suberror)"
                events.end(.failed("KVM internal error on vCPU \(vcpu.id): \(what); registers:\n\(vcpu.registerDump())"))
                return
            case .failEntry(let reason):
                events.end(.failed("KVM could not enter vCPU \(vcpu.id) (hardware reason 0x\(String(reason, radix: 16))); registers:\n\(vcpu.registerDump())"))
                return
            case .unknown(let reason):
                events.end(.failed("vCPU \(vcpu.id): unhandled KVM exit reason \(reason); registers:\n\(vcpu.registerDump())"))
                return
            }
        }
    }

    /// What a read from nothing returns on a PC: all ones (the bus floats high).
    static func openBus(_ size: Int) -> UInt64 { size >= 8 ? ~0 : (1 << (8 * UInt64(size))) - 1 }
}

/// A GSI of KVM's in-kernel IOAPIC/PIC, raised through an irqfd on each rising edge (the ISA
/// and virtio-mmio interrupts are edge-triggered on this board, as on Firecracker).
final class IRQFDLine: InterruptLine {
    let eventFD: Wakeup
    private let level = Atomic<Bool>(false)

    init(vm: KVMVirtualMachine, gsi: UInt32) throws(SystemError) {
        eventFD = try Wakeup()
        try vm.attachIRQFD(eventFD.fd, gsi: gsi)
    }

    func set(level: Bool) {
        if self.level.exchange(level, ordering: .sequentiallyConsistent) == false && level { eventFD.signal() }
    }
}

/// The exit port (QEMU's isa-debug-exit semantics): a write of `v` ends the run with status
/// `(v << 1) | 1`, so a program's status can never be mistaken for swemu's own success.
final class DebugExit: BusDevice {
    let name = "isa-debug-exit"
    private let onExit: @Sendable (Int32) -> Void
    init(onExit: @escaping @Sendable (Int32) -> Void) { self.onExit = onExit }
    func read(offset: UInt64, size: Int) -> UInt64 { X86MicroVM.openBus(size) }
    func write(offset: UInt64, value: UInt64, size: Int) {
        guard offset == 0 else { return }
        onExit(Int32(truncatingIfNeeded: (value & 0x7fff_ffff) << 1 | 1) & 0xff)
    }
}

/// Firecracker's boot timer: the guest writes 123 to mark that userspace is running.
final class BootMarker: BusDevice {
    let name = "boot-marker"
    private let onMark: @Sendable (UInt64) -> Void
    init(onMark: @escaping @Sendable (UInt64) -> Void) { self.onMark = onMark }
    func read(offset: UInt64, size: Int) -> UInt64 { 0 }
    func write(offset: UInt64, value: UInt64, size: Int) {
        if offset == 0 && value & 0xff == X86MicroVM.Layout.bootMarkerMagic { onMark(ProcessClock.nanosecondsSinceStart()) }
    }
}

/// The board's ACPI fixed hardware (FADT), in port I/O from `pm1aEvent`: PM1a event (status +
/// enable, 4 bytes), PM1a control (SLP_TYP in bits 10-12, SLP_EN bit 13: ACPI 6.4 §4.8.3.2.1)
/// and the reset register (ACPI 6.4 §4.8.3.6).
final class ACPIPowerManagement: BusDevice {
    let name = "acpi-pm"
    private let onPowerOff: @Sendable () -> Void
    private let onReset: @Sendable () -> Void
    init(onPowerOff: @escaping @Sendable () -> Void, onReset: @escaping @Sendable () -> Void) {
        self.onPowerOff = onPowerOff
        self.onReset = onReset
    }
    func read(offset: UInt64, size: Int) -> UInt64 { 0 }
    func write(offset: UInt64, value: UInt64, size: Int) {
        switch offset {
        case 4 where value & (1 << 13) != 0:
            // SLP_TYP 5 is our \_S5 (the DSDT's package): soft off. Other states are not offered.
            if (value >> 10) & 7 == ACPITables.s5SleepType { onPowerOff() }
        case 8 where value & 0xff == ACPITables.resetValue:
            onReset()
        default:
            break
        }
    }
}

/// Time since this process started, from /proc/self/stat's starttime (clock ticks since boot)
/// against CLOCK_BOOTTIME, so it counts the exec and swemu's own start-up too. starttime counts
/// USER_HZ ticks (10 ms), so the figure may be up to 10 ms long.
enum ProcessClock {
    static func nanosecondsSinceStart() -> UInt64 {
        var now = timespec()
        clock_gettime(CLOCK_BOOTTIME, &now)
        let nowNanoseconds = UInt64(now.tv_sec) * 1_000_000_000 + UInt64(now.tv_nsec)
        guard let stat = try? FileDescriptor.readWholeFile("/proc/self/stat", limit: 4096),
              let close = stat.lastIndex(of: UInt8(ascii: ")")) else { return 0 }
        // Fields after "(comm)": state is field 3, starttime field 22.
        let fields = stat[(close + 2)...].split(separator: UInt8(ascii: " "))
        guard fields.count > 19, let ticks = UInt64(String(decoding: fields[19], as: UTF8.self)) else { return 0 }
        let hz = UInt64(max(1, sysconf(Int32(_SC_CLK_TCK))))
        let start = ticks * (1_000_000_000 / hz)
        return nowNanoseconds > start ? nowNanoseconds - start : 0
    }
}
