import DeviceModel
import Block
import Devices
import Dispatch
import Glibc
import GuestMemory
import Loader
import RISCV
import RISCVJIT
import Synchronization
import SystemSupport
import VirtIO

/// RISC-V boards, with QEMU's memory maps so the same firmware, kernels and programs run on
/// both (DESIGN.md §2: the only board code):
/// - `virt` (QEMU hw/riscv/virt.c): boot ROM 0x1000, SiFive test 0x100000, goldfish RTC
///   0x101000, ACLINT 0x2000000, PLIC 0xc000000, ns16550a 0x10000000, virtio-mmio slots from
///   0x10001000, RAM 0x80000000, a generated device tree, OpenSBI fw_dynamic as firmware.
/// - `spike` (hw/riscv/spike.c): boot ROM, CLINT, RAM, and HTIF `tohost`/`fromhost` found
///   through the program's ELF symbols, so riscv-tests binaries run unmodified.
public final class RISCVBoard: @unchecked Sendable {
    // SAFETY: the `var`s (transports, overlays, device tree) are set in init and read-only
    // after; run-time state is in `runControl`, `throttle` and `debugHandler` (atomics and
    // locks). A hart's registers are its own thread's while it runs, another thread's only
    // while `pause()` holds every hart parked (the park and its wake-up order the accesses).
    public enum Kind: String, Sendable {
        case virt, spike

        /// QEMU's name for the board's RAM block (MachineClass default_ram_id): the id
        /// `query-machines` reports and `-machine memory-backend=` takes by default.
        public var ramID: String {
            switch self {
            case .virt: "riscv_virt_board.ram"
            case .spike: "riscv.spike.ram"
            }
        }
    }

    /// QEMU virt's memory map, as data in one place.
    public enum Layout {
        public static let bootROM: UInt64 = 0x1000
        public static let bootROMSize: UInt64 = 0x1000
        public static let test: UInt64 = 0x100000
        public static let rtc: UInt64 = 0x101000
        public static let aclint: UInt64 = 0x200_0000
        public static let plic: UInt64 = 0xc00_0000
        public static let uart0: UInt64 = 0x1000_0000
        public static let virtio: UInt64 = 0x1000_1000
        public static let virtioStride: UInt64 = 0x1000
        public static let virtioSlots = 8
        public static let ram: UInt64 = 0x8000_0000
        // PLIC sources.
        public static let uartIRQ = 10
        public static let rtcIRQ = 11
        public static let virtioFirstIRQ = 1
        public static let timebaseFrequency: UInt64 = 10_000_000
    }

    /// Firmware choice (`-bios`).
    public enum Firmware: Sendable, Equatable {
        /// `-bios none`: the kernel (or program) is entered directly in M-mode.
        case none
        /// A firmware file loaded at the start of RAM (OpenSBI fw_dynamic for `-bios default`).
        case file(String)
    }

    /// A device on a virtio-mmio transport (`-drive if=virtio`, `-device virtio-*-device`).
    public enum VirtioDeviceSpec: Sendable {
        /// `format`: "raw" or "qcow2"; `snapshot`: writes go to a temporary overlay (`-snapshot`).
        /// `locking`: the image's locks (`file.locking=`, `force-share=`); `option`: the option
        /// that asked for the disk, which starts its error messages (QEMU's `-drive ...: `).
        case block(path: String, format: String, readOnly: Bool, snapshot: Bool, cache: BlockCacheMode, serial: String,
                   locking: ImageLocking = .device, option: String = "", accounting: BlockAccounting = BlockAccounting())
        case rng
        /// virtio-input as a keyboard, also the machine's power button (`system_powerdown`).
        case keyboard
        /// virtio-balloon; `deflateOnOOM` offers VIRTIO_BALLOON_F_DEFLATE_ON_OOM.
        case balloon(deflateOnOOM: Bool)
        case console((any CharBackend)?)
        /// virtio-net; the NIC outlives the board (its backend, MAC and link state).
        case net(NetworkInterface)
    }

    /// The execution engine each hart runs (DESIGN.md §3: the engine seam).
    public enum EngineKind: Sendable, Equatable {
        /// The interpreter, the reference.
        case interpreter
        /// The RISC-V → x86-64 JIT, with a code buffer of this many bytes per hart.
        case jit(codeBufferSize: Int)

        /// 128 MiB per hart: a Linux boot emits about 50 MiB and flushes less often than
        /// with 32 (3.6 s against 3.9 s to the ready marker). Only the part in use is
        /// resident; QEMU's default `tb-size` is 1 GiB.
        public static let defaultCodeBufferSize = 128 << 20
    }

    public struct Configuration: Sendable {
        public var kind: Kind
        /// Devices on virtio-mmio transports, in command-line order. As on QEMU's virt, the
        /// first takes the highest slot (0x10008000, IRQ 8) and later ones go downward.
        public var virtio: [VirtioDeviceSpec] = []
        public var ramSize: UInt64
        /// How the RAM is held on the host (`-object memory-backend-*`; default a memfd).
        public var ramBackend = RAMBackendSpec()
        public var firmware: Firmware
        /// `-kernel`: a Linux `Image` or an ELF (bare-metal programs, ELF kernels).
        public var kernel: String?
        public var initrd: String?
        public var append: String?
        /// `-dtb`: a device tree blob to use instead of the generated one.
        public var dtb: String?
        public var serial: (any CharBackend)?
        /// Harts (`-smp`); `virt` takes up to `maxHarts`, `spike` one.
        public var harts: Int
        /// What runs the harts: the interpreter or the JIT (`-accel tcg,jit=on|off`).
        public var engine: EngineKind
        /// qcow2 disks open inactive: an incoming migration's destination, until the machine
        /// is handed over (`MigratableMachine.setDisksActive`).
        public var disksInactive = false
        public init(kind: Kind, ramSize: UInt64, firmware: Firmware = .none, kernel: String?, initrd: String? = nil,
                    append: String? = nil, dtb: String? = nil, serial: (any CharBackend)?, harts: Int = 1,
                    engine: EngineKind = .interpreter) {
            self.kind = kind
            self.harts = harts
            self.engine = engine
            self.ramSize = ramSize
            self.firmware = firmware
            self.kernel = kernel
            self.initrd = initrd
            self.append = append
            self.dtb = dtb
            self.serial = serial
        }
    }

    public let kind: Kind
    public let memory: GuestMemory
    public let mmio: AddressSpace
    /// The harts, hart i with mhartid i; each has its own host thread while running.
    public let harts: [Hart]
    /// Hart 0, the one that boots (and the only one on `spike`).
    public var hart: Hart { harts[0] }
    /// What runs each hart (the hart itself when interpreting).
    let engines: [any ExecutionEngine]

    /// The JIT's statistics per hart, nil when the harts are interpreted. Read it while the
    /// harts are parked (the VMM's `withParkedBoard`).
    public var jitStatistics: [JITEngine.Statistics]? {
        let jits = engines.compactMap { $0 as? JITEngine }
        return jits.isEmpty ? nil : jits.map(\.statistics)
    }
    public let clock = VirtualClock()
    let uart: UART16550?
    let rtc: GoldfishRTC?
    let htif: HTIF?
    let aclint: ACLINT
    let plic: PLIC?
    /// The virtio-mmio transports, in command-line order.
    private(set) var transports: [VirtioMMIO] = []
    /// The temporary overlays of `-snapshot` disks, for Ctrl-A s (commit).
    package private(set) var snapshotOverlays: [SnapshotOverlay] = []
    /// The generated (or `-dtb`) device tree blob, as placed in RAM.
    public private(set) var deviceTreeBlob: [UInt8] = []

    /// The hart threads' run: its exit, parking, the debugger's step and handler.
    private let runControl: VCPURunControl
    /// Told of each debug stop, on the hart's thread (`setDebugHandler`).
    private let debugHandler = Mutex<(@Sendable (Int, DebugEvent) -> Void)?>(nil)

    public init(_ config: Configuration) throws(SystemError) {
        kind = config.kind
        let timeBase = TimeBase(clock: clock, frequency: Layout.timebaseFrequency)
        let rom = try GuestRAM(base: GuestAddress(Layout.bootROM), size: Layout.bootROMSize)
        let backend = try RAMBackend(config.ramBackend, size: config.ramSize, name: config.kind.ramID)
        let ram = try GuestRAM(base: GuestAddress(Layout.ram), size: config.ramSize, backend: backend, offset: 0)
        memory = try GuestMemory(regions: [rom, ram])
        mmio = AddressSpace(name: "memory")
        guard (1...(config.kind == .spike ? 1 : RISCVBoard.maxHarts)).contains(config.harts) else {
            throw .configuration("-M \(config.kind.rawValue) takes 1 to \(config.kind == .spike ? 1 : RISCVBoard.maxHarts) harts (\(config.harts) asked)")
        }
        var created: [Hart] = []
        for id in 0..<config.harts {
            created.append(try Hart(hartID: UInt64(id), memory: PhysicalMemory(ram: memory, mmio: mmio), timeBase: timeBase))
        }
        let harts = created
        self.harts = harts
        switch config.engine {
        case .interpreter:
            engines = harts
        case .jit(let size):
            var jits: [any ExecutionEngine] = []
            for hart in harts { jits.append(try JITEngine(hart: hart, codeBufferSize: size)) }
            engines = jits
        }

        let runControl = try VCPURunControl(vcpus: config.harts)
        runControl.setKick { harts[$0].requestStop() }
        self.runControl = runControl
        aclint = ACLINT(timeBase: timeBase, softwareInterrupts: harts.map { $0.interruptLine(InterruptBits.msip) }) { hart, value in
            harts[hart].setMachineTimerCompare(value)
        }
        try mmio.add(aclint, at: GuestAddress(Layout.aclint), size: ACLINT.size)

        let entry: BootTargets
        switch config.kind {
        case .virt:
            try mmio.add(SiFiveTest { e in
                switch e {
                case .powerOff(let code): runControl.end(.powerOff(exitCode: code))
                case .reset: runControl.end(.reset)
                }
            }, at: GuestAddress(Layout.test), size: 0x1000)
            // PLIC contexts: 2h = hart h's M-mode (MEIP), 2h + 1 = its S-mode (SEIP), as on QEMU virt.
            let plic = PLIC(sources: PLIC.virtSourceCount, contexts: harts.flatMap {
                [$0.interruptLine(InterruptBits.meip), $0.interruptLine(InterruptBits.seip)]
            })
            try mmio.add(plic, at: GuestAddress(Layout.plic), size: PLIC.virtWindowSize)
            self.plic = plic
            let uart = UART16550(name: "serial0", backend: config.serial, irq: plic.sourceLine(Layout.uartIRQ), regShift: 0)
            try mmio.add(uart, at: GuestAddress(Layout.uart0), size: 0x100)
            self.uart = uart
            let rtc = GoldfishRTC(clock: clock, irq: plic.sourceLine(Layout.rtcIRQ))
            try mmio.add(rtc, at: GuestAddress(Layout.rtc), size: 0x1000)
            self.rtc = rtc
            guard config.virtio.count <= Layout.virtioSlots else {
                throw .configuration("at most \(Layout.virtioSlots) virtio devices fit on -M virt (\(config.virtio.count) given)")
            }
            var virtioSlots: [Int] = []
            for (index, spec) in config.virtio.enumerated() {
                let slot = Layout.virtioSlots - 1 - index
                let base = Layout.virtio + UInt64(slot) * Layout.virtioStride
                let device = try spec.makeDevice(overlays: &snapshotOverlays, disksInactive: config.disksInactive, ram: [ram.range])
                let transport = VirtioMMIO(name: "virtio-mmio@\(String(base, radix: 16))", device: device, memory: memory,
                                           irq: plic.sourceLine(Layout.virtioFirstIRQ + slot))
                try mmio.add(transport, at: GuestAddress(base), size: Layout.virtioStride)
                transports.append(transport)
                virtioSlots.append(slot)
            }
            htif = nil
            let (targets, blob) = try RISCVBoard.loadVirt(config, memory: memory) { (initrd) throws(SystemError) in
                if let dtb = config.dtb {
                    // An untrusted blob: refuse a malformed one here with what is wrong, rather
                    // than let firmware or the kernel trip over it.
                    let blob = try FileDescriptor.readWholeFile(dtb, limit: 2 << 20)
                    _ = try DeviceTree(dtb: blob, name: "-dtb \(dtb)")
                    return blob
                }
                return VirtDeviceTree(ramSize: config.ramSize, harts: config.harts, bootargs: config.append, initrd: initrd,
                                      virtioSlots: virtioSlots).blob()
            }
            entry = targets
            deviceTreeBlob = blob
        case .spike:
            uart = nil
            rtc = nil
            plic = nil
            guard let kernel = config.kernel else { throw .configuration("-M spike needs -kernel PROGRAM.elf") }
            let program = try RISCVBoard.loadELF(kernel, into: memory)
            guard let tohost = program.symbol(named: "tohost"), let fromhost = program.symbol(named: "fromhost") else {
                throw .configuration("-M spike: '\(kernel)' has no 'tohost' and 'fromhost' symbols (HTIF needs them)")
            }
            htif = HTIF(memory: memory, tohost: GuestAddress(tohost.value), fromhost: GuestAddress(fromhost.value),
                        console: config.serial)
            entry = BootTargets(start: program.entry)
        }
        try writeResetVector(start: entry.start, fdt: entry.fdt, kernel: entry.kernel)
        // Every hart starts in the boot ROM, which passes it its mhartid; OpenSBI picks the
        // boot hart and parks the others until Linux starts them (SBI HSM).
        for hart in harts { hart.reset(pc: Layout.bootROM) }
    }

    /// The most harts `-M virt` takes: each is a host thread running an interpreter, so more
    /// than the host has cores only slows the guest down; QEMU 7.2's virt allows 512.
    public static let maxHarts = 64

    /// Where the boot ROM goes: `start` (firmware or program), with a1 = `fdt` and
    /// fw_dynamic_info.next_addr = `kernel`.
    struct BootTargets {
        var start: UInt64
        var fdt: UInt64 = 0
        var kernel: UInt64 = 0
    }

    // MARK: - Loading (QEMU hw/riscv/boot.c conventions)

    /// Linux's RISC-V `Image` header (Documentation/arch/riscv/boot-image-header.rst):
    /// magic "RISCV\0\0\0" at 0x30 and "RSC\x05" at 0x38.
    package static func isLinuxImage(_ bytes: [UInt8]) -> Bool {
        bytes.count >= 0x40 && Array(bytes[0x30..<0x35]) == Array("RISCV".utf8) && Array(bytes[0x38..<0x3c]) == [0x52, 0x53, 0x43, 0x05]
    }

    /// Loads firmware, kernel and initrd for `virt` and places the device tree; returns the
    /// boot targets. Placement follows QEMU 7.2 so a guest sees the same addresses:
    /// firmware at the start of RAM, the kernel at the next 2 MiB boundary after it, the
    /// initrd min(RAM/2, 128 MiB) above the kernel, the FDT at the top of RAM below 3 GiB,
    /// 2 MiB aligned.
    private static func loadVirt(_ config: Configuration, memory: GuestMemory,
                                 deviceTree: (_ initrd: (UInt64, UInt64)?) throws(SystemError) -> [UInt8])
        throws(SystemError) -> (BootTargets, [UInt8]) {
        let ramEnd = Layout.ram + config.ramSize
        var firmwareEnd = Layout.ram
        var targets = BootTargets(start: Layout.ram)
        if case .file(let path) = config.firmware {
            let firmware = try FileDescriptor.readWholeFile(path, limit: config.ramSize)
            if ELFFile.isELF(firmware) {
                let elf = try loadELF(path, into: memory)
                targets.start = elf.entry
                firmwareEnd = elf.segments.map { $0.physicalAddress + $0.memorySize }.max() ?? Layout.ram
            } else {
                try copy(firmware, to: GuestAddress(Layout.ram), in: memory, what: "-bios \(path)")
                firmwareEnd = Layout.ram + UInt64(firmware.count)
            }
        }
        var kernelEnd = firmwareEnd
        if let kernel = config.kernel {
            var bytes = try FileDescriptor.readWholeFile(kernel, limit: config.ramSize)
            if Gzip.isGzip(bytes) { bytes = try Gzip.decompress(bytes, name: "-kernel \(kernel)") }
            if ELFFile.isELF(bytes) {
                let elf = try loadELF(bytes, name: kernel, into: memory)
                targets.kernel = elf.entry
                kernelEnd = elf.segments.map { $0.physicalAddress + $0.memorySize }.max() ?? firmwareEnd
            } else {
                // An Image (or any flat binary): at the start of RAM without firmware, else at
                // the first 2 MiB boundary past it (RV64 kernels need 2 MiB alignment).
                let address = config.firmware == .none ? Layout.ram : (firmwareEnd + (2 << 20) - 1) & ~((2 << 20) - 1)
                try copy(bytes, to: GuestAddress(address), in: memory, what: "-kernel \(kernel)")
                targets.kernel = address
                var size = UInt64(bytes.count)
                if isLinuxImage(bytes) {
                    // image_size at 0x10: the memory the kernel needs, bss included.
                    let imageSize = bytes[0x10..<0x18].enumerated().reduce(UInt64(0)) { $0 | UInt64($1.element) << (8 * UInt64($1.offset)) }
                    size = max(size, imageSize)
                }
                kernelEnd = address + size
            }
            if config.firmware == .none { targets.start = targets.kernel }
        } else if config.firmware == .none {
            throw .configuration("-M virt needs -kernel (or -bios with a firmware that has a payload)")
        }
        var initrdRange: (UInt64, UInt64)?
        if let initrd = config.initrd {
            guard config.kernel != nil else { throw .configuration("-initrd needs -kernel") }
            let bytes = try FileDescriptor.readWholeFile(initrd, limit: config.ramSize)
            let start = targets.kernel + min(config.ramSize / 2, 128 << 20)
            guard start >= kernelEnd, start + UInt64(bytes.count) <= ramEnd else {
                throw .configuration("-initrd \(initrd) (\(bytes.count) bytes) does not fit in guest RAM above the kernel; use a larger -m")
            }
            try copy(bytes, to: GuestAddress(start), in: memory, what: "-initrd \(initrd)")
            initrdRange = (start, start + UInt64(bytes.count))
        }
        let blob = try deviceTree(initrdRange)
        let top = min(ramEnd, 3 << 30)
        guard UInt64(blob.count) < top - kernelEnd else { throw .configuration("the device tree does not fit in guest RAM") }
        let fdt = (top - UInt64(blob.count)) & ~((2 << 20) - 1)
        guard fdt >= kernelEnd || config.kernel == nil else {
            throw .configuration("guest RAM is too small for the kernel, initrd and device tree; use a larger -m")
        }
        try copy(blob, to: GuestAddress(fdt), in: memory, what: "the device tree")
        targets.fdt = fdt
        return (targets, blob)
    }

    /// QEMU's reset vector (hw/riscv/boot.c riscv_setup_rom_reset_vec) and fw_dynamic_info
    /// (OpenSBI docs/firmware/fw_dynamic.md) in the boot ROM: a0 = mhartid, a1 = FDT address,
    /// a2 = &fw_dynamic_info, then jump to the start address.
    private func writeResetVector(start: UInt64, fdt: UInt64, kernel: UInt64) throws(SystemError) {
        let code: [UInt32] = [
            0x0000_0297,  // 1: auipc t0, %pcrel_hi(fw_dyn)
            0x0282_8613,  //    addi  a2, t0, %pcrel_lo(1b)   (t0 + 0x28)
            0xf140_2573,  //    csrr  a0, mhartid
            0x0202_b583,  //    ld    a1, 32(t0)
            0x0182_b283,  //    ld    t0, 24(t0)
            0x0002_8067,  //    jr    t0
        ]
        var bytes: [UInt8] = []
        func append64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { bytes += $0 } }
        for word in code { withUnsafeBytes(of: word.littleEndian) { bytes += $0 } }
        append64(start)  // 0x18
        append64(fdt)  // 0x20
        // 0x28: struct fw_dynamic_info { magic, version, next_addr, next_mode, options, boot_hart }
        append64(0x4942_534f)  // "OSBI"
        append64(2)
        append64(kernel)
        append64(1)  // next_mode: S-mode
        append64(0)
        append64(0)  // boot_hart
        try RISCVBoard.copy(bytes, to: GuestAddress(Layout.bootROM), in: memory, what: "the boot ROM")
    }

    /// Loads an ELF program's segments into RAM.
    static func loadELF(_ path: String, into memory: GuestMemory, machine: UInt16 = ELFFile.machineRISCV,
                        machineName: String = "RISC-V") throws(SystemError) -> ELFFile {
        let bytes = try FileDescriptor.readWholeFile(path, limit: memory.totalSize)
        return try loadELF(bytes, name: path, into: memory, machine: machine, machineName: machineName)
    }

    /// Loads the segments of an ELF already in memory (`name` is the file, for messages): a
    /// `-kernel` that was gzip-compressed is loaded from its decompressed bytes.
    package static func loadELF(_ bytes: [UInt8], name path: String, into memory: GuestMemory, machine: UInt16 = ELFFile.machineRISCV,
                        machineName: String = "RISC-V") throws(SystemError) -> ELFFile {
        let elf = try ELFFile(bytes: bytes, name: path)
        guard elf.machine == machine else {
            throw .configuration("\(path): ELF machine \(elf.machine) is not \(machineName) (\(machine))")
        }
        for segment in elf.segments {
            let address = GuestAddress(segment.physicalAddress)
            guard memory.isRAM(address, count: segment.memorySize) else {
                throw .configuration("\(path): segment at \(address) (\(segment.memorySize) bytes) is outside guest RAM")
            }
            try copy(bytes[segment.fileOffset..<(segment.fileOffset + segment.fileSize)], to: address, in: memory, what: path)
            let zeros = segment.memorySize - UInt64(segment.fileSize)
            if zeros > 0 {
                _ = try? memory.withHostBytes(at: GuestAddress(segment.physicalAddress + UInt64(segment.fileSize)),
                                              count: Int(zeros)) { $0.initializeMemory(as: UInt8.self, repeating: 0) }
            }
        }
        return elf
    }

    static func copy(_ bytes: some Collection<UInt8>, to address: GuestAddress, in memory: GuestMemory, what: String) throws(SystemError) {
        do {
            try memory.writeBytes(bytes, at: address)
        } catch {
            throw .configuration("\(what) (\(bytes.count) bytes at \(address)) does not fit in guest RAM; use a larger -m")
        }
    }

    // MARK: - Running

    public typealias Exit = BoardExit

    /// What a hart reports to the debug handler.
    public enum DebugEvent: Sendable {
        /// A breakpoint or watchpoint stopped the hart before an instruction.
        case stop(DebugStop)
        /// `step(vcpu:)` executed its instruction.
        case stepped
    }

    /// Runs every hart, each on a thread of its own (DESIGN.md §4), until the guest powers off
    /// or resets or another thread asks for the end; returns once every hart thread has ended.
    /// The board runs once: a reset builds the next.
    public func run() throws(SystemError) -> Exit {
        try runControl.run(name: { "CPU \($0)/TCG" }) { [self] index in runHart(index) }
    }

    /// One hart's loop: slices of instructions, with the device polls and the checks between
    /// them, parked while the board is paused, until the run ends.
    private func runHart(_ index: Int) {
        let hart = harts[index]
        let engine = engines[index]
        // HTIF is polled between slices: short ones on spike keep its console (one character
        // per tohost round trip) fast.
        let budget = htif == nil ? 1_000_000 : 2_000
        while !runControl.stopping.load(ordering: .sequentiallyConsistent) {
            switch runControl.next(index) {
            case .park:
                runControl.park(index)
                continue
            case .step:
                // A debugger's step: one instruction (`Hart.step`), then the board is paused
                // again, unless the instruction powered the machine off or reset it.
                let stop = hart.step()
                pollDevices()
                if runControl.exit.withLock({ $0 != nil }) { continue }
                debugEvent(index, stop.map(DebugEvent.stop) ?? .stepped)
                continue
            case .run:
                break
            }
            let percent = throttle.load(ordering: .relaxed)
            let sliceStart = percent > 0 ? VirtualClock.hostMonotonicNanoseconds() : 0
            let reason = engine.run(budget: budget)
            if percent > 0 {
                // Auto-converge: asleep `percent` of the time, so the guest dirties RAM slower.
                let ran = VirtualClock.hostMonotonicNanoseconds() - sliceStart
                usleep(UInt32(min(Int64(percent) * ran / Int64(100 - percent) / 1000, 1_000_000)))
            }
            if index == 0 { pollDevices() }
            if reason == .debugStop, let stop = hart.lastDebugStop {
                debugEvent(index, .stop(stop))
            } else if reason == .waitingForInterrupt && !runControl.shouldPark(index) {
                hart.waitForInterrupt()
            }
        }
    }

    /// A debug exit pauses the board (guest time stops with it, as `pause()` stops it) when a
    /// debugger listens; without one the hart runs on.
    private func debugEvent(_ index: Int, _ event: DebugEvent) {
        runControl.debugStop(index) {
            guard let handler = debugHandler.withLock({ $0 }) else { return false }
            clock.stop()
            handler(index, event)
            return true
        }
    }

    /// The devices polled between slices (HTIF, RTC), by hart 0's thread (or the one hart a
    /// debugger steps, the others parked).
    private func pollDevices() {
        if let htif, let code = htif.poll() { runControl.end(.powerOff(exitCode: code)) }
        rtc?.poll()
    }

    /// The share of time each hart sleeps (auto-converge during a migration), 0 to 99.
    private let throttle = Atomic<Int>(0)

    public func setThrottle(percent: Int) {
        throttle.store(min(max(percent, 0), 99), ordering: .relaxed)
    }

    /// Ends the run with `.powerOff(exitCode:)` from another thread (Ctrl-A x, a signal, quit).
    public func requestPowerOff(exitCode: Int32) { runControl.end(.powerOff(exitCode: exitCode)) }

    /// Ends the run with `.reset` from another thread (the monitor's system_reset).
    public func requestReset() { runControl.end(.reset) }

    /// Parks every hart and stops guest time (`VirtualClock`, which the timers and the RTC
    /// count: QEMU's virtual clock stops with its vCPUs, so timers do not fire a burst after
    /// `cont`); returns once all are parked or the run is ending.
    public func pause() {
        runControl.pause()
        clock.stop()
    }

    /// Lets parked harts run again, with guest time going on from where it stopped. Once the
    /// run's exit is decided they stay parked.
    public func resume() {
        guard runControl.exit.withLock({ $0 == nil }) else { return }
        clock.resume()
        runControl.resume()
    }

    /// While paused: hart `index` alone executes one instruction, then reports `.stepped` (or
    /// the watchpoint that held the instruction back) to the debug handler.
    public func step(vcpu index: Int) { runControl.step(index) }

    public func setDebugHandler(_ handler: (@Sendable (Int, DebugEvent) -> Void)?) {
        debugHandler.withLock { $0 = handler }
    }

    /// True when no hart runs guest code: before `run`, after it, or with every hart parked.
    package var isAtRest: Bool { runControl.isAtRest }

    public var vcpuThreadIDs: [Int] { runControl.vcpuThreadIDs }
}
