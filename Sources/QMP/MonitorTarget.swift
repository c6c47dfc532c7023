import DeviceModel

/// What the monitors (QMP and the human monitor) control: the running machine, seen through
/// the VMM's command channel (DESIGN.md §1, §4). Implemented by the VMM/board layer; every
/// method may be called from the monitor's I/O thread and returns after the machine acted.
public protocol MonitorTarget: AnyObject, Sendable {
    /// QEMU's RunState names: "running", "paused", "shutdown", "prelaunch", ...
    var runState: String { get }
    var isRunning: Bool { get }
    /// `-name`, if given.
    var guestName: String? { get }
    /// `-uuid`, if given.
    var uuid: String? { get }
    /// The machine type ("virt") and its description.
    var machineType: String { get }
    /// `query-machines`: every machine type of this binary.
    var machineList: [MonitorMachineType] { get }
    /// The accelerators this binary has ("tcg", "kvm"), each a QOM type "NAME-accel". Has a
    /// default (none).
    var accelerators: [String] { get }
    /// `query-command-line-options`: the options this binary takes and their keys. Has a
    /// default (none).
    var commandLineOptions: [MonitorCommandLineOption] { get }
    /// `qom-list /machine/peripheral`: the devices given an `id=`, and their QOM types. Has a
    /// default (none).
    var peripherals: [(id: String, type: String)] { get }
    /// `query-cpus-fast`: one entry per vCPU.
    var cpus: [MonitorCPU] { get }
    /// `query-target`: the SysEmuTarget name ("riscv64", "x86_64"). Has a default: the first
    /// CPU's target.
    var targetArch: String { get }
    /// `query-kvm`: whether the machine runs on KVM (then KVM is also present). Has a default
    /// (false: this binary's machines run in software, as qemu-system-riscv64's on an x86 host).
    var kvmEnabled: Bool { get }
    /// `query-block`: one entry per disk.
    var blockDevices: [MonitorBlockDevice] { get }
    /// `query-chardev`: (label, filename) of each chardev.
    var chardevs: [(label: String, filename: String)] { get }

    /// Carries out a command (QMP's and the human monitor's `stop`, `cont`, `system_reset`,
    /// `system_powerdown`, `quit`; the console's Ctrl-A x; signals) and returns once the
    /// machine has acted on it.
    func execute(_ command: VMCommand)

    /// The human monitor's views of machine state (`info registers`, `x`...), with the
    /// monitor's current CPU (`cpu N`, or QMP `human-monitor-command`'s `cpu-index`): the text
    /// QEMU would print, or nil where this machine has no such view.
    func machineView(_ view: MachineView, cpuIndex: Int) -> String?

    /// Snapshots and migration, where the target supports them. Has a default (nil).
    var migration: (any MigrationControl)? { get }

    /// The NICs and network backends, where the machine has any. Has a default (nil).
    var network: (any NetworkControl)? { get }

    /// The memory balloon, where the machine has one. Has a default (nil).
    var balloon: (any BalloonControl)? { get }

    /// The keyboard, where the machine has one (`send-key`). Has a default (nil).
    var keyboard: (any KeyboardControl)? { get }

    /// Registers the sink for asynchronous events (STOP, RESUME, RESET, SHUTDOWN, POWERDOWN).
    func addEventListener(_ listener: @escaping @Sendable (MonitorEvent) -> Void)
}

/// A machine type as `query-machines` reports it (QEMU's MachineInfo).
public struct MonitorMachineType: Sendable, Equatable {
    public var name: String
    public var description: String
    public var isDefault: Bool
    /// cpu-max: the most CPUs the machine takes (`-smp` refuses more).
    public var maxCPUs: Int
    /// default-ram-id: its RAM block's name, the memory backend `-machine memory-backend=`
    /// names by default (libvirt gives its RAM object this id); nil for machines without RAM.
    public var defaultRAMID: String?

    public init(name: String, description: String, isDefault: Bool, maxCPUs: Int, defaultRAMID: String?) {
        self.name = name
        self.description = description
        self.isDefault = isDefault
        self.maxCPUs = maxCPUs
        self.defaultRAMID = defaultRAMID
    }
}

/// A command-line option as `query-command-line-options` reports it (QEMU's
/// CommandLineOptionInfo): its QemuOpts group name and keys.
public struct MonitorCommandLineOption: Sendable, Equatable {
    /// CommandLineParameterType.
    public enum ParameterType: String, Sendable {
        case string, boolean, number, size
    }
    public struct Parameter: Sendable, Equatable {
        public var name: String
        public var type: ParameterType
        public init(name: String, type: ParameterType) {
            self.name = name
            self.type = type
        }
    }
    public var option: String
    public var parameters: [Parameter]
    public init(option: String, parameters: [Parameter]) {
        self.option = option
        self.parameters = parameters
    }
}

/// The commands every control path sends a machine (DESIGN.md §3, "The machine core"): QMP,
/// the human monitor, the console's keys and signals all speak these, and each VMM carries
/// them out the one way, whatever sent them.
public enum VMCommand: Sendable, Equatable {
    /// Stop the vCPUs (STOP). Idempotent.
    case stop
    /// Run them again (RESUME); during an incoming migration, run once it is loaded.
    case cont
    /// The machine restarts (RESET).
    case systemReset
    /// Ask the guest to power off through what the board offers (POWERDOWN).
    case systemPowerdown
    /// swemu ends (SHUTDOWN with guest=false); `reason` is QEMU's ShutdownCause:
    /// "host-qmp-quit", "host-ui" (Ctrl-A x), "host-signal".
    case quit(reason: String)
}

public struct MonitorCPU: Sendable, Equatable {
    public var index: Int
    public var threadID: Int
    public var target: String  // "riscv64"
    public var qomPath: String
    /// CpuInstanceProperties `core-id` (QEMU's riscv virt gives each hart its index); nil: no
    /// `props` member.
    public var coreID: Int?
    public init(index: Int, threadID: Int, target: String, qomPath: String, coreID: Int? = nil) {
        self.index = index
        self.threadID = threadID
        self.target = target
        self.qomPath = qomPath
        self.coreID = coreID
    }
}

public struct MonitorBlockDevice: Sendable, Equatable {
    public var device: String  // "virtio0"
    public var file: String
    public var format: String  // "raw"
    public var readOnly: Bool
    public var sizeBytes: UInt64
    /// What the disk's device did, read when asked (`query-blockstats`); nil: nothing counted.
    public var accounting: BlockAccounting?
    /// -blockdev's names of the format node and of the file node under it (QEMU's
    /// auto-generated "#blockN" names for a -drive); nil for a disk without a block graph.
    public var nodeName: String?
    public var fileNodeName: String?
    /// The device's QOM path ("/machine/peripheral/virtio-disk0/virtio-backend"), which
    /// libvirt matches its disks by when `device` is empty (a -blockdev disk).
    public var qdev: String?
    public init(device: String, file: String, format: String, readOnly: Bool, sizeBytes: UInt64, accounting: BlockAccounting? = nil) {
        self.device = device
        self.file = file
        self.format = format
        self.readOnly = readOnly
        self.sizeBytes = sizeBytes
        self.accounting = accounting
    }

    public static func == (a: Self, b: Self) -> Bool {
        a.device == b.device && a.file == b.file && a.format == b.format && a.readOnly == b.readOnly && a.sizeBytes == b.sizeBytes
            && a.accounting === b.accounting && a.nodeName == b.nodeName && a.fileNodeName == b.fileNodeName && a.qdev == b.qdev
    }
}

/// Asynchronous events (qapi/run-state.json).
public enum MonitorEvent: Sendable, Equatable {
    case stop
    case resume
    /// `guest`: whether the guest asked; `reason`: QEMU's ShutdownCause ("guest-reset", "host-qmp-system-reset").
    case reset(guest: Bool, reason: String)
    case shutdown(guest: Bool, reason: String)
    case powerdown
    /// MIGRATION: the migration's status changed ("setup", "active", "device", "completed",
    /// "failed", "cancelling", "cancelled"), on both ends.
    case migration(status: String)
    /// MIGRATION_PASS: a pre-copy pass over dirty RAM began.
    case migrationPass(Int)
    /// JOB_STATUS_CHANGE of a snapshot job.
    case jobStatusChange(id: String, status: String)
    /// BALLOON_CHANGE: the guest changed the balloon's size; `actual` is its RAM now, in
    /// bytes (as `query-balloon`).
    case balloonChange(actual: UInt64)
}

/// What the human monitor asks a machine to show: views only the board can produce. The
/// monitor parses and checks the command line; the machine gets this typed request, never the
/// line (DESIGN.md §3), and answers with QEMU's text.
public enum MachineView: Sendable, Equatable {
    /// `info registers [-a]`: the current CPU's registers, or every CPU's.
    case registers(allCPUs: Bool)
    /// `info jit`: the dynamic translator's state.
    case jit
    /// `info mtree`: the memory map.
    case memoryTree
    /// `info qtree`: the devices.
    case deviceTree
    /// `x` and `xp`, checked, with format and size resolved (`MemoryDump`).
    case memory(MemoryDump)
}

// Defaults for the requirements added with the QMP/HMP codecs, so a target need not
// implement them.
extension MonitorTarget {
    public var targetArch: String { cpus.first?.target ?? "" }
    public var commandLineOptions: [MonitorCommandLineOption] { [] }
    public var accelerators: [String] { [] }
    public var peripherals: [(id: String, type: String)] { [] }
    public var kvmEnabled: Bool { false }
    public var uuid: String? { nil }
    public var migration: (any MigrationControl)? { nil }
    public var network: (any NetworkControl)? { nil }
    public var balloon: (any BalloonControl)? { nil }
    public var keyboard: (any KeyboardControl)? { nil }
}
