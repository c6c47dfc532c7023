import DeviceModel
import Devices
import GuestMemory
import Loader
import RISCV
import Synchronization
import SystemSupport

/// RISC-V boards, with QEMU's memory maps so the same programs run on both:
/// - `virt` (hw/riscv/virt.c): boot ROM at 0x1000, SiFive test at 0x100000, ACLINT at
///   0x2000000, ns16550a at 0x10000000, RAM at 0x80000000. The PLIC, RTC, virtio slots and
///   device tree come with the Linux-capable board.
/// - `spike` (hw/riscv/spike.c): boot ROM at 0x1000, CLINT at 0x2000000, RAM at 0x80000000,
///   and HTIF `tohost`/`fromhost` found through the program's ELF symbols, so riscv-tests
///   binaries run unmodified.
public final class RISCVBoard: @unchecked Sendable {
    // SAFETY: mutable state (`exitCode`, `htif`) is touched only by the thread in `run()`;
    // devices report through the `event` atomic and the hart's stop request.
    public enum Kind: String, Sendable {
        case virt, spike
    }

    /// The layout, as data in one place.
    public struct Layout: Sendable {
        public static let bootROM: UInt64 = 0x1000
        public static let bootROMSize: UInt64 = 0x1000
        public static let test: UInt64 = 0x100000
        public static let aclint: UInt64 = 0x200_0000
        public static let uart0: UInt64 = 0x1000_0000
        public static let ram: UInt64 = 0x8000_0000
    }

    public struct Configuration: Sendable {
        public var kind: Kind
        public var ramSize: UInt64
        /// `-kernel`: an ELF program (bare metal) loaded at its physical addresses.
        public var kernel: String
        public var serial: (any CharBackend)?
        public init(kind: Kind, ramSize: UInt64, kernel: String, serial: (any CharBackend)?) {
            self.kind = kind
            self.ramSize = ramSize
            self.kernel = kernel
            self.serial = serial
        }
    }

    public let kind: Kind
    public let memory: GuestMemory
    public let mmio: AddressSpace
    public let hart: Hart
    public let clock = VirtualClock()
    let uart: UART16550?
    let htif: HTIF?
    let entry: UInt64

    /// What devices and other threads asked of the machine.
    final class Events: Sendable {
        /// 0: running; otherwise (exit code << 1 | 1) for power-off, or 2 for reset.
        let value = Atomic<Int64>(0)
        func powerOff(_ code: Int32) { value.store(Int64(code) << 1 | 1, ordering: .sequentiallyConsistent) }
        func reset() { value.store(2, ordering: .sequentiallyConsistent) }
    }
    private let event = Events()

    public init(_ config: Configuration) throws(SystemError) {
        kind = config.kind
        let timeBase = TimeBase(clock: clock)
        let rom = try GuestRAM(base: GuestAddress(Layout.bootROM), size: Layout.bootROMSize)
        let ram = try GuestRAM(base: GuestAddress(Layout.ram), size: config.ramSize)
        memory = try GuestMemory(regions: [rom, ram])
        mmio = AddressSpace(name: "memory")
        hart = try Hart(hartID: 0, memory: PhysicalMemory(ram: memory, mmio: mmio), timeBase: timeBase)

        let hart = self.hart
        let event = self.event
        try mmio.add(ACLINT(timeBase: timeBase, softwareInterrupts: [hart.interruptLine(InterruptBits.msip)]) { _, value in
            hart.setMachineTimerCompare(value)
        }, at: GuestAddress(Layout.aclint), size: ACLINT.size)

        let program = try RISCVBoard.loadELF(config.kernel, into: memory)
        entry = program.entry
        switch config.kind {
        case .virt:
            try mmio.add(SiFiveTest { e in
                switch e {
                case .powerOff(let code): event.powerOff(code)
                case .reset: event.reset()
                }
                hart.requestStop()
            }, at: GuestAddress(Layout.test), size: 0x1000)
            // The PLIC arrives with the Linux board; until then the UART's line is unconnected
            // and bare-metal programs poll LSR.
            let uart = UART16550(name: "serial0", backend: config.serial, irq: LevelInterruptLine(), regShift: 0)
            try mmio.add(uart, at: GuestAddress(Layout.uart0), size: 0x100)
            self.uart = uart
            htif = nil
        case .spike:
            uart = nil
            guard let tohost = program.symbol(named: "tohost"), let fromhost = program.symbol(named: "fromhost") else {
                throw .configuration("-M spike: '\(config.kernel)' has no 'tohost' and 'fromhost' symbols (HTIF needs them)")
            }
            htif = HTIF(memory: memory, tohost: GuestAddress(tohost.value), fromhost: GuestAddress(fromhost.value),
                        console: config.serial)
        }
        try writeResetVector(fdt: 0)
        hart.reset(pc: Layout.bootROM)
    }

    /// QEMU's reset vector (hw/riscv/boot.c, riscv_setup_rom_reset_vec): a0 = mhartid,
    /// a1 = FDT address, a2 = fw_dynamic_info, then jump to the start address.
    private func writeResetVector(fdt: UInt64) throws(SystemError) {
        let code: [UInt32] = [
            0x0000_0297,  // 1: auipc t0, %pcrel_hi(fw_dyn)
            0x0282_8613,  //    addi  a2, t0, %pcrel_lo(1b)  (t0 + 0x28)
            0xf140_2573,  //    csrr  a0, mhartid
            0x0202_b583,  //    ld    a1, 32(t0)
            0x0182_b283,  //    ld    t0, 24(t0)
            0x0002_8067,  //    jr    t0
        ]
        var bytes: [UInt8] = []
        for word in code { withUnsafeBytes(of: word.littleEndian) { bytes += $0 } }
        bytes += [UInt8](repeating: 0, count: 0x18 - bytes.count)
        withUnsafeBytes(of: entry.littleEndian) { bytes += $0 }  // 0x18: start address
        withUnsafeBytes(of: fdt.littleEndian) { bytes += $0 }  // 0x20: FDT address
        do {
            try memory.writeBytes(bytes, at: GuestAddress(Layout.bootROM))
        } catch {
            throw .configuration("boot ROM does not fit: \(error)")
        }
    }

    /// Loads an ELF program's segments into RAM.
    static func loadELF(_ path: String, into memory: GuestMemory) throws(SystemError) -> ELFFile {
        let bytes = try FileDescriptor.readWholeFile(path)
        let elf = try ELFFile(bytes: bytes, name: path)
        guard elf.machine == ELFFile.machineRISCV else {
            throw .configuration("-kernel \(path): ELF machine \(elf.machine) is not RISC-V (243)")
        }
        for segment in elf.segments {
            let address = GuestAddress(segment.physicalAddress)
            guard memory.isRAM(address, count: segment.memorySize) else {
                throw .configuration("-kernel \(path): segment at \(address) (\(segment.memorySize) bytes) is outside RAM")
            }
            do {
                try memory.writeBytes(bytes[segment.fileOffset..<(segment.fileOffset + segment.fileSize)], at: address)
                let zeros = segment.memorySize - UInt64(segment.fileSize)
                if zeros > 0 {
                    try memory.withHostBytes(at: GuestAddress(segment.physicalAddress + UInt64(segment.fileSize)),
                                             count: Int(zeros)) { $0.initializeMemory(as: UInt8.self, repeating: 0) }
                }
            } catch {
                throw .configuration("-kernel \(path): \(error)")
            }
        }
        return elf
    }

    /// What ended the run.
    public enum Exit: Equatable, Sendable {
        case powerOff(exitCode: Int32)
        case reset
    }

    /// Runs the hart on the calling thread until the guest powers off or resets
    /// (`-no-reboot` handling is the caller's: a reset is returned, not performed).
    public func run() -> Exit {
        while true {
            let reason = hart.run(budget: htif == nil ? 1_000_000 : 20_000)
            if let htif, let code = htif.poll() {
                return .powerOff(exitCode: code)
            }
            let e = event.value.load(ordering: .sequentiallyConsistent)
            if e & 1 != 0 { return .powerOff(exitCode: Int32(truncatingIfNeeded: e >> 1)) }
            if e == 2 { return .reset }
            if reason == .waitingForInterrupt { hart.waitForInterrupt() }
        }
    }

    /// Stops the hart from another thread (Ctrl-A x, a signal): `run` returns `.powerOff(code)`.
    public func requestPowerOff(exitCode: Int32) {
        event.powerOff(exitCode)
        hart.requestStop()
    }
}
