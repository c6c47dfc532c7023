import Foundation
import GuestMemory
import SystemSupport

/// What a migration stream or snapshot was taken from, in its header: the destination
/// compares it with its own machine and refuses a stream from a different one, saying what
/// differs (DESIGN.md §5). Everything the restore depends on is here: the RAM layout, the
/// vCPUs, and the components with their state versions.
public struct MachineDescription: Codable, Equatable, Sendable {
    public struct RAMRegion: Codable, Equatable, Sendable {
        public var base: UInt64
        public var size: UInt64
        public init(base: UInt64, size: UInt64) {
            self.base = base
            self.size = size
        }
    }

    /// "riscv64 virt", "x86_64 microvm".
    public var machine: String
    /// "tcg" or "kvm".
    public var accelerator: String
    public var cpus: Int
    public var ram: [RAMRegion]
    /// Every saved component's name, in save order.
    public var components: [String]

    public init(machine: String, accelerator: String, cpus: Int, ram: [RAMRegion], components: [String]) {
        self.machine = machine
        self.accelerator = accelerator
        self.cpus = cpus
        self.ram = ram
        self.components = components
    }

    /// What differs between a stream's machine (`self`) and this one, one phrase each; empty
    /// when they match.
    public func differences(from here: MachineDescription) -> [String] {
        var result: [String] = []
        if machine != here.machine { result.append("machine: the stream's is \(machine), this one is \(here.machine)") }
        if accelerator != here.accelerator {
            result.append("accelerator: the stream's is \(accelerator), this one is \(here.accelerator)")
        }
        if cpus != here.cpus { result.append("CPUs: the stream has \(cpus), this machine \(here.cpus) (-smp)") }
        if ram != here.ram {
            if ram.map(\.base) == here.ram.map(\.base) {
                // The same layout: name each region whose size differs.
                for (theirs, ours) in zip(ram, here.ram) where theirs.size != ours.size {
                    result.append("RAM at 0x\(String(ours.base, radix: 16)): the stream has \(Self.size(theirs.size)), this machine \(Self.size(ours.size)) (-m)")
                }
            } else {
                func text(_ regions: [RAMRegion]) -> String {
                    regions.map { "\(Self.size($0.size)) at 0x\(String($0.base, radix: 16))" }.joined(separator: ", ")
                }
                result.append("RAM: the stream has \(text(ram)), this machine \(text(here.ram)) (-m)")
            }
        }
        if components != here.components {
            let missing = components.filter { !here.components.contains($0) }
            let extra = here.components.filter { !components.contains($0) }
            var parts: [String] = []
            if !missing.isEmpty { parts.append("the stream has \(missing.joined(separator: ", ")) which this machine lacks") }
            if !extra.isEmpty { parts.append("this machine has \(extra.joined(separator: ", ")) which the stream lacks") }
            if parts.isEmpty { parts.append("the same devices in a different order") }
            result.append("devices: " + parts.joined(separator: "; "))
        }
        return result
    }

    static func size(_ bytes: UInt64) -> String {
        if bytes % (1 << 30) == 0 { return "\(bytes >> 30) GiB" }
        if bytes % (1 << 20) == 0 { return "\(bytes >> 20) MiB" }
        return "\(bytes) bytes"
    }
}

/// One component's saved state as it travels: a name ("cpu0", "plic", "virtio-mmio@10008000"),
/// the state's version and its encoding (JSON of the component's `Codable` state).
public struct SavedComponent: Sendable, Equatable {
    public var name: String
    public var version: UInt32
    public var payload: [UInt8]

    public init(name: String, version: UInt32, payload: [UInt8]) {
        self.name = name
        self.version = version
        self.payload = payload
    }

    /// Encodes a component's state.
    public init<State: Encodable>(name: String, version: UInt32, state: State) throws(SystemError) {
        do {
            self.init(name: name, version: version, payload: Array(try JSONEncoder().encode(state)))
        } catch {
            throw .badInput("cannot encode the state of \(name): \(error)")
        }
    }

    /// Decodes the state of `name`, refusing a version this build does not read. The payload is
    /// untrusted: a malformed one is an error naming the component, never a crash.
    public func decode<State: Decodable>(_: State.Type, version expected: UInt32) throws(SystemError) -> State {
        guard version == expected else {
            throw .badInput("\(name): state version \(version) is not supported (this build reads version \(expected))")
        }
        do {
            return try JSONDecoder().decode(State.self, from: Data(payload))
        } catch {
            throw .badInput("\(name): the saved state is malformed (\(error))")
        }
    }
}

/// Something whose state travels in streams: a board lists these (DESIGN.md §3).
public protocol MigratableMachine: AnyObject, Sendable {
    /// The header the stream carries.
    var migrationDescription: MachineDescription { get }
    var memory: GuestMemory { get }
    /// Guest time (the `VirtualClock`), for a snapshot's `vm_clock_nsec`.
    var clockNanoseconds: Int64 { get }
    /// Why this machine cannot be saved, if it cannot (nil: it can).
    var migrationBlocker: String? { get }
    /// Finishes in-flight device work so the components' states are complete. vCPUs parked.
    func quiesceForSave()
    /// Every component's state, in `migrationDescription.components` order. vCPUs parked.
    func saveComponents() throws(SystemError) -> [SavedComponent]
    /// Loads the components (all checked before any is applied where the component allows).
    /// vCPUs parked, RAM already loaded.
    func restoreComponents(_ components: [SavedComponent]) throws(SystemError)
    /// Hands the disks' metadata over (false: flushed, then left to another process; the
    /// source before the switch-over) or takes it back (true: read again; the destination
    /// once loaded, or a source whose migration failed). vCPUs parked, devices quiesced.
    func setDisksActive(_ active: Bool) throws(SystemError)
    /// Makes every vCPU drop its write translations (after dirty tracking starts or its bits
    /// are taken), so its next store to each page is seen. vCPUs parked.
    func dropWriteTranslations()
}
