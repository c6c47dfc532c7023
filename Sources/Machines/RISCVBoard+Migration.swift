import Block
import DeviceModel
import Devices
import GuestMemory
import Migration
import RISCV
import SystemSupport
import VirtIO

/// One saveable part of a board: its name in the stream, and how to save and restore it.
struct BoardComponent: Sendable {
    let name: String
    let save: @Sendable () throws(SystemError) -> SavedComponent
    let restore: @Sendable (SavedComponent) throws(SystemError) -> Void

    /// A component whose state is a `Snapshottable` device's.
    static func device<Device: Snapshottable & Sendable>(_ name: String, _ device: Device, version: UInt32) -> BoardComponent {
        BoardComponent(name: name, save: { () throws(SystemError) in
            try SavedComponent(name: name, version: version, state: device.saveState())
        }, restore: { (saved) throws(SystemError) in
            let state = try saved.decode(Device.State.self, version: version)
            do { try device.restore(state) } catch let error as SystemError { throw error } catch {
                throw .badInput("\(name): \(error)")
            }
        })
    }

    /// The state virtio devices keep beyond their queues (virtio-net's MAC and receive filter,
    /// virtio-balloon's target and count), one component per such device, named after its
    /// transport. Restored after the transports: a transport's restore resets its device.
    static func virtioDevices(_ transports: [VirtioMMIO]) -> [BoardComponent] {
        transports.compactMap { transport in
            switch transport.device {
            case let net as VirtioNet:
                return .device("\(transport.name)/net", net, version: VirtioNet.State.currentVersion)
            case let balloon as VirtioBalloon:
                return .device("\(transport.name)/balloon", balloon, version: VirtioBalloon.State.currentVersion)
            default:
                return nil
            }
        }
    }
}

/// The clock's saved state: guest time, so the guest sees no jump and its timers (compare
/// values in guest time) fire on time after a restore.
struct ClockState: Codable, Sendable {
    var nanoseconds: Int64
}

extension RISCVBoard: MigratableMachine {
    /// The board's components in save and restore order: the clock first (devices and harts
    /// compare against it as they load), then the harts and devices.
    var components: [BoardComponent] {
        var list: [BoardComponent] = []
        let clock = self.clock
        list.append(BoardComponent(name: "clock", save: { () throws(SystemError) in
            try SavedComponent(name: "clock", version: 1, state: ClockState(nanoseconds: clock.nanoseconds))
        }, restore: { (saved) throws(SystemError) in
            let state = try saved.decode(ClockState.self, version: 1)
            guard state.nanoseconds >= 0 else { throw .badInput("clock: negative guest time \(state.nanoseconds)") }
            clock.set(nanoseconds: state.nanoseconds)
        }))
        for hart in harts {
            let name = "cpu\(hart.state.pointee.mhartid)"
            list.append(BoardComponent(name: name, save: { () throws(SystemError) in
                try SavedComponent(name: name, version: Hart.SavedState.currentVersion, state: hart.saveState())
            }, restore: { (saved) throws(SystemError) in
                try hart.restore(saved.decode(Hart.SavedState.self, version: Hart.SavedState.currentVersion))
            }))
        }
        list.append(.device("aclint", aclint, version: ACLINT.State.currentVersion))
        if let plic { list.append(.device("plic", plic, version: PLIC.State.currentVersion)) }
        if let uart { list.append(.device("serial0", uart, version: UART16550.State.currentVersion)) }
        if let rtc { list.append(.device("rtc", rtc, version: GoldfishRTC.State.currentVersion)) }
        for transport in transports {
            list.append(.device(transport.name, transport, version: VirtioMMIO.State.currentVersion))
        }
        return list + BoardComponent.virtioDevices(transports)
    }

    public var migrationDescription: MachineDescription {
        MachineDescription(
            machine: "riscv64 \(kind.rawValue)", accelerator: "tcg", cpus: harts.count,
            ram: memory.regions.map { .init(base: $0.range.base.rawValue, size: $0.size) },
            components: components.map(\.name))
    }

    /// Why this board cannot be saved, if it cannot: `spike`'s HTIF keeps its protocol state
    /// in the program's memory and in flight between the two, which no stream carries.
    public var migrationBlocker: String? {
        kind == .spike ? "-M spike cannot be saved or migrated (its HTIF console has no saved state); use -M virt" : nil
    }

    public var clockNanoseconds: Int64 { clock.nanoseconds }

    public func quiesceForSave() {
        for transport in transports { transport.device.quiesce() }
    }

    public func saveComponents() throws(SystemError) -> [SavedComponent] {
        guard isAtRest else { throw .unsupported("the harts are running: pause the machine before saving its state") }
        var saved: [SavedComponent] = []
        for component in components { saved.append(try component.save()) }
        return saved
    }

    /// Restores every component, in order, after checking that the stream has exactly this
    /// board's components. A component that fails its checks stops the restore there; the
    /// VMM then refuses to run the machine.
    public func restoreComponents(_ saved: [SavedComponent]) throws(SystemError) {
        guard isAtRest else { throw .unsupported("the harts are running: pause the machine before restoring a state") }
        let list = components
        guard saved.map(\.name) == list.map(\.name) else {
            throw .badInput("the saved components (\(saved.map(\.name).joined(separator: ", "))) are not this machine's (\(list.map(\.name).joined(separator: ", ")))")
        }
        for (component, state) in zip(list, saved) { try component.restore(state) }
    }

    /// The virtio-blk disks' backends, in command-line order (snapshots live in qcow2 ones).
    package var disks: [any BlockBackend] {
        transports.compactMap { ($0.device as? VirtioBlock)?.backend }
    }

    public func setDisksActive(_ active: Bool) throws(SystemError) {
        for disk in disks {
            if active { try DiskImage.activate(disk) } else { try DiskImage.inactivate(disk) }
        }
    }

    public func dropWriteTranslations() {
        for hart in harts { hart.dropWriteTranslations() }
    }
}
