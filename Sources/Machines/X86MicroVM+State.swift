import Devices
import GuestMemory
import KVM
import SystemSupport
import VirtIO

/// The saved state of the microvm (DESIGN.md §3, §5), for snapshots and live migration: every
/// vCPU's, the VM's in-kernel devices and clock, and the board's own devices. Guest RAM travels
/// beside it (page by page in a migration stream, `guestMemory`), and the configuration that
/// built the board (RAM size, -smp, devices, kernel) is the stream's business: `restore(_:)`
/// goes into a board built with the same one, which it checks as far as the state shows it.
///
/// How it is used:
///  - save: `pause()`, then `saveState()` and the RAM, then `resume()` (or end the run);
///  - restore: build a new board with the same configuration, fill its RAM, `restore(_:)`, then
///    `run()` (or, on a board at rest that ran before, `restore(_:)` then `resume()`).
///
/// Restore order: the devices first (UART, virtio-mmio transports: they may drive their
/// interrupt lines, whose edge then reaches an irqchip about to be overwritten, or at worst
/// arrives once more, which both drivers tolerate: they read the device's interrupt status),
/// then the VM (PIT, kvmclock, PICs, IOAPIC), then each vCPU in order (see `KVMVcpu.State`).
/// Everything a state can be checked for without KVM is checked before anything changes; if KVM
/// refuses a part later, the board is left half restored and will not run (`run()` ends at
/// once with `.failed`).
extension X86MicroVM {
    package struct State: Codable, Sendable, Equatable {
        package static let currentVersion: UInt32 = 1

        package var version: UInt32
        /// One per vCPU, in APIC id order.
        package var vcpus: [KVMVcpu.State]
        package var vm: KVMVirtualMachine.State
        /// COM1.
        package var serial: UART16550.State
        /// One per virtio-mmio slot in use, in slot order.
        package var virtio: [VirtioMMIO.State]
        /// The guest wrote the boot marker already (the destination does not report it again).
        package var bootMarkerSeen: Bool

        package init(version: UInt32 = State.currentVersion, vcpus: [KVMVcpu.State], vm: KVMVirtualMachine.State,
                     serial: UART16550.State, virtio: [VirtioMMIO.State], bootMarkerSeen: Bool) {
            self.version = version
            self.vcpus = vcpus
            self.vm = vm
            self.serial = serial
            self.virtio = virtio
            self.bootMarkerSeen = bootMarkerSeen
        }
    }

    /// Guest RAM, which travels beside `State`: a restore fills it before `restore(_:)`.
    package var guestMemory: GuestMemory { memory }

    /// True when no vCPU runs guest code: `run()` has not started them or has ended, or
    /// `pause()` has parked every one (and no debugger step lets one run).
    package var isAtRest: Bool { events.run.isAtRest }

    /// The state of the whole board (vCPUs, VM, devices; not RAM). Only at rest: after
    /// `pause()` returned, before `run()` or after it ended.
    package func saveState() throws(SystemError) -> State {
        guard isAtRest else { throw .unsupported("the microvm's vCPUs are running: pause the machine before saving its state") }
        // The vCPUs first: KVM_GET_MP_STATE may accept a pending INIT/SIPI, and the VM's
        // clock is best read last, closest to the moment the guest resumes elsewhere.
        var vcpuStates: [KVMVcpu.State] = []
        for vcpu in vcpus { vcpuStates.append(try vcpu.saveState()) }
        return State(vcpus: vcpuStates, vm: try vm.saveState(), serial: uart.saveState(),
                     virtio: virtioTransports.map { $0.saveState() },
                     bootMarkerSeen: events.bootMarkerSeen.load(ordering: .sequentiallyConsistent))
    }

    /// Loads a saved state into this board, which was built with the same configuration as the
    /// one saved and whose RAM already holds the saved contents. Only at rest (before `run()`,
    /// or paused). A state that does not fit (version, vCPU or device count, a malformed vCPU,
    /// VM or UART part) is refused with a message and changes nothing; a virtio transport's
    /// state is checked by its own restore, after the UART's.
    package func restore(_ state: State) throws(SystemError) {
        guard isAtRest else { throw .unsupported("the microvm's vCPUs are running: pause the machine before restoring a state") }
        guard state.version == State.currentVersion else {
            throw .badInput("microvm state: version \(state.version) is not supported (this build reads version \(State.currentVersion))")
        }
        guard state.vcpus.count == vcpus.count else {
            throw .badInput("microvm state: \(state.vcpus.count) vCPUs saved, this machine has \(vcpus.count) (-smp must match)")
        }
        guard state.virtio.count == virtioTransports.count else {
            throw .badInput("microvm state: \(state.virtio.count) virtio devices saved, this machine has \(virtioTransports.count) (the devices must match)")
        }
        for (index, (saved, transport)) in zip(state.virtio, virtioTransports).enumerated() {
            let expected = transport.saveState().deviceID
            guard saved.deviceID == expected else {
                throw .badInput("microvm state: virtio slot \(index) holds device type \(saved.deviceID), this machine's is type \(expected)")
            }
        }
        try vm.validate(state.vm)
        for (vcpu, saved) in zip(vcpus, state.vcpus) { try vcpu.validate(saved) }

        // The UART checks its state before it changes anything; from the next step on, a
        // failure leaves the board half restored, and it must not run.
        try uart.restore(state.serial)
        do throws(SystemError) {
            for (transport, saved) in zip(virtioTransports, state.virtio) { try transport.restore(saved) }
            try vm.restore(state.vm)
            for (vcpu, saved) in zip(vcpus, state.vcpus) { try vcpu.restore(saved) }
        } catch {
            events.end(.failed("restoring the microvm's state failed half-way (\(error)); this machine cannot run"))
            throw error
        }
        events.bootMarkerSeen.store(state.bootMarkerSeen, ordering: .sequentiallyConsistent)
    }
}
