import Block
import DeviceModel
import Devices
import SystemSupport
import VirtIO

extension RISCVBoard.VirtioDeviceSpec {
    /// The device this spec asks for, with its backend opened; a `-snapshot` disk's overlay is
    /// appended to `overlays` (for Ctrl-A s). Shared by every board with virtio-mmio.
    func makeDevice(overlays: inout [SnapshotOverlay]) throws(SystemError) -> any VirtioDevice {
        switch self {
        case let .block(path, readOnly, snapshot, serial):
            let backend: any BlockBackend
            if snapshot {
                let overlay = try SnapshotOverlay(path: path, readOnly: readOnly)
                overlays.append(overlay)
                backend = overlay
            } else {
                backend = try RawImage(path: path, readOnly: readOnly)
            }
            return VirtioBlock(backend: backend, serial: serial)
        case .rng:
            return VirtioRNG()
        case .console(let backend):
            return VirtioConsole(backend: backend)
        }
    }
}
