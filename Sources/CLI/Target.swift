import Machines

/// The guest architecture a `swemu-system-*` binary emulates, as QEMU has one binary per target.
public enum EmulatorTarget: String, Sendable, CaseIterable {
    case riscv64
    case x86_64

    public var programName: String { "swemu-system-\(rawValue)" }

    /// Machines this target knows. `available` is false for boards that later work will add;
    /// asking for one is refused with a line that lists what is available.
    var machines: [MachineInfo] {
        switch self {
        case .riscv64:
            return [
                MachineInfo(name: "none", description: "empty machine", available: true, maxCPUs: 1, defaultRAM: 0),
                MachineInfo(name: "spike", description: "RISC-V Spike board (HTIF, for riscv-tests)", available: true,
                            maxCPUs: 1, defaultRAM: 128 << 20),
                MachineInfo(name: "virt", description: "RISC-V VirtIO board", available: true,
                            maxCPUs: RISCVBoard.maxHarts, defaultRAM: 128 << 20),
            ]
        case .x86_64:
            return [
                MachineInfo(name: "none", description: "empty machine", available: true, maxCPUs: 1, defaultRAM: 0),
                MachineInfo(name: "microvm", description: "microvm (x86-64 on KVM: 8250 UART, i8042 reset, virtio-mmio, ACPI)",
                            available: true, maxCPUs: 255, defaultRAM: 128 << 20),
            ]
        }
    }

    /// The machine used when `-M` is not given (QEMU's default for the target).
    var defaultMachine: String {
        switch self {
        case .riscv64: return "virt"
        case .x86_64: return "microvm"
        }
    }

    /// CPU models `-cpu` accepts.
    var cpuModels: [(name: String, description: String)] {
        switch self {
        case .riscv64: return [("rv64", "RV64GC with Zba, Zbb, Zbs, Sstc"), ("max", "every extension swemu implements")]
        case .x86_64: return [("host", "the host CPU's features, as KVM reports them"), ("max", "same as host")]
        }
    }

    /// Accelerators `-accel` names, and whether this build provides them for this target.
    var accelerators: [(name: String, available: Bool, note: String)] {
        switch self {
        case .riscv64:
            return [("tcg", true, "software emulation"),
                    ("kvm", false, "RISC-V KVM needs a RISC-V host")]
        case .x86_64:
            return [("kvm", true, "Linux KVM (Intel VT-x, AMD-V)"),
                    ("tcg", false, "swemu does not emulate x86 in software; use -accel kvm")]
        }
    }
}

struct MachineInfo: Sendable {
    let name: String
    let description: String
    let available: Bool
    let maxCPUs: Int
    /// RAM when `-m` is not given (QEMU's `default_ram_size`); 0 = none.
    let defaultRAM: UInt64
    /// QEMU's name for the machine's RAM block (`default_ram_id`), the memory backend
    /// `-machine memory-backend=` replaces it with; "ram" for `none`, as QEMU's.
    var ramID: String? {
        switch name {
        case "virt": RISCVBoard.Kind.virt.ramID
        case "spike": RISCVBoard.Kind.spike.ramID
        case "microvm": X86MicroVM.ramID
        case "none": "ram"
        default: nil
        }
    }
}

/// swemu's version, printed by `--version` in QEMU's layout.
public let swemuVersion = "0.1.0"
