import Block
import DeviceModel
import Devices
import GuestMemory
import SystemSupport
import VirtIO

extension RISCVBoard.VirtioDeviceSpec {
    /// The device this spec asks for, with its backend opened; a `-snapshot` disk's overlay is
    /// appended to `overlays` (for Ctrl-A s). Shared by every board with virtio-mmio.
    /// `disksInactive`: qcow2 disks open inactive (an incoming migration's destination).
    /// `ram`: the machine's RAM (not its ROMs), which a balloon may reclaim.
    func makeDevice(overlays: inout [SnapshotOverlay], disksInactive: Bool = false, ram: [AddressRange]) throws(SystemError) -> any VirtioDevice {
        switch self {
        case let .block(path, format, readOnly, snapshot, cache, serial, locking, option, accounting):
            let backend: any BlockBackend
            do {
                if snapshot {
                    let overlay = try SnapshotOverlay(path: path, format: format, readOnly: readOnly, locking: locking)
                    overlays.append(overlay)
                    backend = overlay
                } else {
                    backend = try DiskImage.open(path: path, format: format, readOnly: readOnly, cache: cache, inactive: disksInactive,
                                                 locking: locking)
                }
            } catch where error.code == .imageLocked && !option.isEmpty {
                throw SystemError(.imageLocked, "\(option): \(error.message)")  // QEMU's form: the option, then why
            }
            // Requests run on the disk's I/O thread, so the vCPU that notified goes back to the guest.
            return try VirtioBlock.withIOThread(backend: backend, serial: serial, accounting: accounting)
        case .rng:
            return VirtioRNG()
        case .keyboard:
            return VirtioInput()
        case .balloon(let deflateOnOOM):
            return VirtioBalloon(ram: ram, deflateOnOOM: deflateOnOOM)
        case .console(let backend):
            return VirtioConsole(backend: backend)
        case .net(let interface):
            return interface.makeDevice()
        }
    }
}

/// The board's memory balloon, for the monitors (`balloon`, `query-balloon`); one at most.
extension RISCVBoard {
    package var balloon: VirtioBalloon? { transports.lazy.compactMap { $0.device as? VirtioBalloon }.first }
    /// The virtio keyboards, whose KEY_POWER is the machine's power button.
    package var keyboards: [VirtioInput] { transports.compactMap { $0.device as? VirtioInput } }
}

extension X86MicroVM {
    package var balloon: VirtioBalloon? { virtioTransports.lazy.compactMap { $0.device as? VirtioBalloon }.first }
    package var keyboards: [VirtioInput] { virtioTransports.compactMap { $0.device as? VirtioInput } }
}
