import Block
import DeviceModel
import Devices
import GuestMemory
import KVM
import Migration
import SystemSupport
import VirtIO

/// Whether the microvm's RAM slots log dirty pages (`X86MicroVM.syncDirtyLog()`).
struct DirtyLogState: Sendable {
    /// KVM_MEM_LOG_DIRTY_PAGES is set on every RAM slot.
    var on = false
    /// Why KVM's log could not be used, once it could not: from then on every look counts
    /// every page as written, so a migration sends everything again rather than miss a page.
    var failure: String?
}

/// The board's own saved state beside its vCPUs, VM and devices.
struct MicroVMBoardState: Codable, Sendable {
    static let currentVersion: UInt32 = 1
    var version: UInt32
    /// The guest wrote the boot marker already (the destination does not report it again).
    var bootMarkerSeen: Bool
}

/// The microvm in migration streams and snapshots (DESIGN.md §5): the same stream as the
/// RISC-V boards', with one component per vCPU, one for the VM's in-kernel devices and clock,
/// one per device and one for the board, which together are `X86MicroVM.State`
/// (X86MicroVM+State.swift), so a restore checks every part before it changes any.
///
/// Dirty pages: guest stores never pass through this process, so the vCPUs' writes come from
/// KVM's dirty log (KVMVirtualMachine+DirtyLog.swift), merged into `GuestMemory`'s bitmap by
/// `syncDirtyLog()`; device DMA marks that bitmap itself. The VMM calls `syncDirtyLog()` with
/// the vCPUs parked before it takes the dirty pages and after every change of tracking
/// (VMM+Migration.swift), and `dropWriteTranslations()` does it too.
extension X86MicroVM: MigratableMachine {
    /// kvmclock, for a snapshot's VM clock.
    public var clockNanoseconds: Int64 { Int64(truncatingIfNeeded: vm.clockNanoseconds) }

    /// The virtio-blk disks' backends, in command-line order (snapshots live in qcow2 ones).
    package var disks: [any BlockBackend] {
        virtioTransports.compactMap { ($0.device as? VirtioBlock)?.backend }
    }

    public func setDisksActive(_ active: Bool) throws(SystemError) {
        for disk in disks {
            if active { try DiskImage.activate(disk) } else { try DiskImage.inactivate(disk) }
        }
    }

    /// Component names in save order: the vCPUs, the VM (PICs, IOAPIC, PIT, kvmclock), COM1,
    /// the virtio-mmio transports in slot order, the board.
    var componentNames: [String] {
        vcpus.map { "cpu\($0.id)" } + ["vm", uart.name] + virtioTransports.map(\.name) + ["board"]
            + BoardComponent.virtioDevices(virtioTransports).map(\.name)
    }

    public var migrationDescription: MachineDescription {
        MachineDescription(
            machine: "x86_64 microvm", accelerator: "kvm", cpus: vcpus.count,
            ram: memory.regions.map { .init(base: $0.range.base.rawValue, size: $0.size) },
            components: componentNames)
    }

    /// Everything of the microvm travels; nothing blocks a migration.
    public var migrationBlocker: String? { nil }

    public func quiesceForSave() {
        for transport in virtioTransports { transport.device.quiesce() }
    }

    /// vCPUs parked (or never started).
    public func saveComponents() throws(SystemError) -> [SavedComponent] {
        let state = try saveState()
        var saved: [SavedComponent] = []
        for (vcpu, vcpuState) in zip(vcpus, state.vcpus) {
            saved.append(try SavedComponent(name: "cpu\(vcpu.id)", version: KVMVcpu.State.currentVersion, state: vcpuState))
        }
        saved.append(try SavedComponent(name: "vm", version: KVMVirtualMachine.State.currentVersion, state: state.vm))
        saved.append(try SavedComponent(name: uart.name, version: UART16550.State.currentVersion, state: state.serial))
        for (transport, transportState) in zip(virtioTransports, state.virtio) {
            saved.append(try SavedComponent(name: transport.name, version: VirtioMMIO.State.currentVersion, state: transportState))
        }
        saved.append(try SavedComponent(name: "board", version: MicroVMBoardState.currentVersion,
                                        state: MicroVMBoardState(version: MicroVMBoardState.currentVersion, bootMarkerSeen: state.bootMarkerSeen)))
        for device in BoardComponent.virtioDevices(virtioTransports) { saved.append(try device.save()) }
        return saved
    }

    /// Decodes every component (a version or payload this build does not read is refused
    /// first), then `restore(_:)` checks the whole state against this board before it loads
    /// any of it. vCPUs parked (or never started), RAM loaded.
    public func restoreComponents(_ saved: [SavedComponent]) throws(SystemError) {
        let names = componentNames
        guard saved.map(\.name) == names else {
            throw .badInput("the saved components (\(saved.map(\.name).joined(separator: ", "))) are not this machine's (\(names.joined(separator: ", ")))")
        }
        var vcpuStates: [KVMVcpu.State] = []
        for component in saved.prefix(vcpus.count) {
            vcpuStates.append(try component.decode(KVMVcpu.State.self, version: KVMVcpu.State.currentVersion))
        }
        var rest = saved.dropFirst(vcpus.count)
        let vmState = try rest.removeFirst().decode(KVMVirtualMachine.State.self, version: KVMVirtualMachine.State.currentVersion)
        let serial = try rest.removeFirst().decode(UART16550.State.self, version: UART16550.State.currentVersion)
        var virtio: [VirtioMMIO.State] = []
        for component in rest.prefix(virtioTransports.count) {
            virtio.append(try component.decode(VirtioMMIO.State.self, version: VirtioMMIO.State.currentVersion))
        }
        rest = rest.dropFirst(virtioTransports.count)
        let board = try rest.removeFirst().decode(MicroVMBoardState.self, version: MicroVMBoardState.currentVersion)  // names matched: it is there
        guard board.version == MicroVMBoardState.currentVersion else {
            throw .badInput("board: state version \(board.version) is not supported (this build reads version \(MicroVMBoardState.currentVersion))")
        }
        try restore(State(vcpus: vcpuStates, vm: vmState, serial: serial, virtio: virtio, bootMarkerSeen: board.bootMarkerSeen))
        for (device, state) in zip(BoardComponent.virtioDevices(virtioTransports), rest) { try device.restore(state) }
    }

    public func dropWriteTranslations() { syncDirtyLog() }

    /// Makes KVM's dirty logging follow `memory`'s tracking, and merges what KVM logged since
    /// the last look into it: on while a migration tracks (every RAM slot registered again with
    /// KVM_MEM_LOG_DIRTY_PAGES), off once it stops. Pages the vCPUs write while this runs are
    /// in this look or the next; call it with the vCPUs parked for a look that must be complete.
    /// If KVM refuses the log, every page counts as written at every look (`DirtyLogState.failure`).
    package func syncDirtyLog() {
        dirtyLog.withLock { log in
            let tracking = memory.regions.contains { $0.dirty.isTracking }
            if log.on {
                for (slot, region) in memory.regions.enumerated() {
                    do {
                        let words = try vm.dirtyLog(slot: UInt32(slot), pages: region.dirty.pages)
                        guard tracking else { continue }
                        for (index, word) in words.enumerated() where word != 0 {
                            var bits = word
                            while bits != 0 {
                                region.dirty.mark(page: index * 64 + bits.trailingZeroBitCount)
                                bits &= bits - 1
                            }
                        }
                    } catch {
                        log.failure = "\(error)"
                    }
                }
            }
            if tracking != log.on && (log.failure == nil || !tracking) {
                do {
                    try setDirtyLogging(tracking)
                    log.on = tracking
                } catch {
                    log.failure = "\(error)"
                }
            }
            if tracking && log.failure != nil {
                for region in memory.regions { region.dirty.mark(firstPage: 0, lastPage: region.dirty.pages - 1) }
            }
        }
    }

    /// Why KVM's dirty log could not be used in this board's last migration, or nil.
    package var dirtyLogFailure: String? { dirtyLog.withLock { $0.failure } }

    /// Whether KVM logs the vCPUs' writes now.
    package var isLoggingDirtyPages: Bool { dirtyLog.withLock { $0.on } }

    /// Registers every RAM slot again with KVM_MEM_LOG_DIRTY_PAGES set or clear (the same slot
    /// numbers and ranges as `init`).
    private func setDirtyLogging(_ on: Bool) throws(SystemError) {
        for (slot, region) in memory.regions.enumerated() {
            // SAFETY: the pointer covers the whole region, which `memory` keeps mapped as long as
            // this board (and so the VM) lives.
            guard let host = region.hostPointer(at: region.range.base, count: region.size) else { continue }
            try vm.setMemoryRegion(slot: UInt32(slot), guestAddress: region.range.base.rawValue, size: region.size, host: host,
                                   logDirtyPages: on)
        }
    }
}
