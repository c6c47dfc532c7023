import DeviceModel
import QMP
import Synchronization
import SystemSupport

/// See `MachineSetup.incomingDisks`.
public final class IncomingDisks: Sendable {
    let pending: Atomic<Bool>
    public init(pending: Bool) { self.pending = Atomic(pending) }
    public var inactive: Bool { pending.load(ordering: .sequentiallyConsistent) }
}

/// What a VMM (`VMM<Board>`, `EmptyMachine`) is given to run a machine: how to build its
/// board (again on every reset) and what the monitors report about it.
public struct MachineSetup<Board>: Sendable {
    public var machineType: String
    public var machineList: [MonitorMachineType]
    /// `query-command-line-options`: what the command line takes.
    public var commandLineOptions: [MonitorCommandLineOption] = []
    /// The accelerators this binary has (QOM "NAME-accel" types).
    public var accelerators: [String] = []
    /// The devices given an id (`qom-list /machine/peripheral`).
    public var peripherals: [(id: String, type: String)] = []
    public var name: String?
    /// `-uuid`.
    public var uuid: String?
    public var noReboot: Bool
    /// `-no-shutdown` (`-action shutdown=pause`): a guest power-off stops the machine in
    /// "shutdown" instead of ending the process; `system_reset` then `cont` start it again.
    public var noShutdown = false
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
    /// Whether boards are built with their qcow2 disks inactive: from `-incoming` until the
    /// machine is loaded (a reset after that builds them active). `makeBoard` reads it; the
    /// VMM clears it when the incoming machine is loaded.
    public var incomingDisks = IncomingDisks(pending: false)
    /// The NICs and network backends (`-netdev`, `-nic`), for the monitors; they outlive the
    /// boards `makeBoard` builds.
    public var network: (any NetworkControl)?
    /// The machine has a virtio-balloon (`-device virtio-balloon-device`) and this much RAM:
    /// the monitors' balloon outlives the boards and answers before the first is built.
    public var balloonRAMSize: UInt64?
    /// The board's disks with the names the monitors use (`-drive id=`, else "virtioN").
    func named(_ backends: [any BlockBackend]) -> [(device: String, backend: any BlockBackend)] {
        backends.enumerated().map { index, backend in
            (index < blockDevices.count ? blockDevices[index].device : "virtio\(index)", backend)
        }
    }

    /// Builds the machine; called again for every reset.
    public var makeBoard: @Sendable () throws(SystemError) -> Board

    public init(machineType: String, machineList: [MonitorMachineType], name: String?,
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

/// A monitor target described by the command line's `MachineSetup`: what the monitors report
/// of its identity, the same for every machine (`VMM`, and `-M none`'s `EmptyMachine`).
package protocol SetupDescribedTarget: MonitorTarget {
    associatedtype SetupBoard
    var setup: MachineSetup<SetupBoard> { get }
}

extension SetupDescribedTarget {
    package var guestName: String? { setup.name }
    package var uuid: String? { setup.uuid }
    package var machineType: String { setup.machineType }
    package var machineList: [MonitorMachineType] { setup.machineList }
    package var commandLineOptions: [MonitorCommandLineOption] { setup.commandLineOptions }
    package var accelerators: [String] { setup.accelerators }
    package var peripherals: [(id: String, type: String)] { setup.peripherals }
    package var chardevs: [(label: String, filename: String)] { setup.chardevs }
}
