import QMP
import SystemSupport

/// What a VMM (`VirtualMachine`, `KVMMachine`) is given to run a machine: how to build its
/// board (again on every reset) and what the monitors report about it.
public struct MachineSetup<Board>: Sendable {
    public var machineType: String
    public var machineList: [(name: String, description: String, isDefault: Bool)]
    /// `query-machines` cpu-max: the most CPUs each machine of `machineList` takes.
    public var maxCPUs: [String: Int] = [:]
    public var name: String?
    public var noReboot: Bool
    /// Start stopped (`-S`).
    public var startPaused: Bool
    public var chardevs: [(label: String, filename: String)]
    public var blockDevices: [MonitorBlockDevice]
    /// The CPUs every board `makeBoard` builds has (`-smp`).
    public var cpus: Int
    /// `-loadvm`: the machine starts from this snapshot of its qcow2 disks.
    public var loadvm: String?
    /// `-incoming`: the machine waits, stopped, for a migration stream from here.
    public var incoming: MigrationURI?
    /// Builds the machine; called again for every reset.
    public var makeBoard: @Sendable () throws(SystemError) -> Board

    public init(machineType: String, machineList: [(name: String, description: String, isDefault: Bool)], name: String?,
                noReboot: Bool, startPaused: Bool = false, chardevs: [(label: String, filename: String)] = [],
                blockDevices: [MonitorBlockDevice] = [], cpus: Int = 1,
                makeBoard: @escaping @Sendable () throws(SystemError) -> Board) {
        self.machineType = machineType
        self.machineList = machineList
        self.name = name
        self.noReboot = noReboot
        self.startPaused = startPaused
        self.chardevs = chardevs
        self.blockDevices = blockDevices
        self.cpus = cpus
        self.makeBoard = makeBoard
    }
}
