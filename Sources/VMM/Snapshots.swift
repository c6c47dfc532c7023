import Block
import DeviceModel
import GuestMemory
import Migration
import QMP
import SystemSupport

/// `savevm` / `loadvm` / `delvm` / `info snapshots` (DESIGN.md §5): the machine's stream — the
/// same format as a migration, every RAM page and every component — in the vmstate area of the
/// first qcow2 disk, as QEMU stores its own, and a disk snapshot of the same name on every
/// qcow2 disk. `qemu-img snapshot -l` lists them with their VM SIZE.
extension MigrationManager {
    /// A disk of the machine, with the name the monitors use ("virtio0", or the drive's id).
    struct SnapshotDisk {
        var device: String
        var image: Qcow2Image
    }

    /// The qcow2 disks snapshots go to; QEMU's rule: a writable disk that cannot hold a
    /// snapshot makes snapshots impossible (its contents would not match the saved machine).
    /// `devices` (QMP snapshot jobs): only these, by name; `vmstate`: the disk that holds the
    /// machine's state, which comes first.
    private func snapshotDisks(_ host: any MigrationHost, devices: [String]? = nil, vmstate: String? = nil) throws(QMPError) -> [SnapshotDisk] {
        let all = host.disks
        for name in (devices ?? []) + (vmstate.map { [$0] } ?? []) where !all.contains(where: { $0.device == name }) {
            throw .generic("Cannot find device='\(name)' nor node-name='\(name)'")
        }
        if let vmstate, let devices, !devices.contains(vmstate) {
            throw .generic("vmstate block device '\(vmstate)' does not exist in the 'devices' list")
        }
        var result: [SnapshotDisk] = []
        for (device, backend) in all where devices?.contains(device) ?? true {
            if let image = backend as? Qcow2Image {
                result.append(SnapshotDisk(device: device, image: image))
            } else if !backend.readOnly {
                throw .generic("Device '\(device)' is writable but does not support snapshots")
            }
        }
        guard !result.isEmpty else { throw .generic("No block device can accept snapshots") }
        if let vmstate {
            guard let index = result.firstIndex(where: { $0.device == vmstate }) else {
                throw .generic("Device '\(vmstate)' does not support VM state snapshots")
            }
            result.insert(result.remove(at: index), at: 0)
        }
        return result
    }

    private static func error(_ error: SystemError) -> QMPError { .generic(error.message) }

    func saveSnapshot(name: String) throws(QMPError) { try saveSnapshot(name: name, devices: nil, vmstate: nil) }
    func loadSnapshot(name: String) throws(QMPError) { try loadSnapshot(name: name, devices: nil, vmstate: nil) }
    func deleteSnapshot(name: String) throws(QMPError) { try deleteSnapshot(name: name, devices: nil) }

    func saveSnapshot(name: String, devices: [String]?, vmstate: String?) throws(QMPError) {
        guard let host else { throw .generic("the machine has ended") }
        guard !state.withLock({ $0.running }) else { throw .generic("There's a migration process in progress") }
        if let blocker = host.parked({ $0.migrationBlocker }) ?? nil { throw .generic(blocker) }
        let disks = try snapshotDisks(host, devices: devices, vmstate: vmstate)
        let wasRunning = host.stopForSnapshot(loading: false)
        defer { host.resumeAfterSnapshot(wasRunning: wasRunning) }
        guard let (description, memory, clock, saved) = host.parked({ m -> (MachineDescription, GuestMemory, Int64, Result<[SavedComponent], SystemError>) in
            m.quiesceForSave()
            return (m.migrationDescription, m.memory, m.clockNanoseconds, Result { () throws(SystemError) in try m.saveComponents() })
        }) else { throw .generic("the machine has ended") }
        do throws(SystemError) {
            let components = try saved.get()
            // The machine is stopped and its devices quiet: RAM is read as it stands.
            try disks[0].image.createSnapshot(name: name, vmClockNanoseconds: UInt64(clock)) { (vmstate) throws(SystemError) in
                let writer = MigrationStreamWriter { (bytes) throws(SystemError) in try vmstate.write(bytes) }
                try writer.writeHeader(description)
                for region in memory.regions {
                    var page = region.range.base.rawValue
                    while page < region.range.base.rawValue + region.size {
                        let address = GuestAddress(page)
                        do {
                            try memory.withHostBytes(at: address, count: MigrationStream.pageSize, writing: false) { bytes in
                                try writer.writePage(at: address, bytes: UnsafeRawBufferPointer(bytes))
                            }
                        } catch let error as SystemError { throw error } catch { throw .badInput("\(error)") }
                        page += UInt64(MigrationStream.pageSize)
                    }
                }
                try writer.writePassEnd(1)
                for component in components { try writer.writeComponent(component) }
                try writer.writeEnd()
                try writer.flush()
            }
            for disk in disks.dropFirst() {
                try disk.image.createSnapshot(name: name, vmClockNanoseconds: UInt64(clock)) { (_) throws(SystemError) in }
            }
        } catch {
            throw .generic("Error while creating snapshot on '\(disks[0].device)': \(error.message)")
        }
    }

    func loadSnapshot(name: String, devices: [String]?, vmstate: String?) throws(QMPError) {
        guard let host else { throw .generic("the machine has ended") }
        guard !state.withLock({ $0.running }) else { throw .generic("There's a migration process in progress") }
        let disks = try snapshotDisks(host, devices: devices, vmstate: vmstate)
        for disk in disks where disk.image.findSnapshot(name) == nil {
            throw .generic("Snapshot '\(name)' does not exist in device '\(disk.device)'")
        }
        guard let vmstate = disks.first(where: { disk in
            disk.image.findSnapshot(name).map { disk.image.snapshots[$0].vmStateBytes > 0 } ?? false
        }) else {
            throw .generic("Snapshot '\(name)' has no VM state: it is a disk-only snapshot (as 'qemu-img snapshot -c' makes)")
        }
        func reader() throws(SystemError) -> MigrationStreamReader {
            let state = try vmstate.image.openVMState(snapshot: name)
            return MigrationStreamReader { (buffer) throws(SystemError) -> Int in try state.read(into: buffer) }
        }
        let wasRunning = host.stopForSnapshot(loading: true)
        // First the whole stream is read and checked (header against this machine, every
        // record, the checksums) without touching anything: a bad state leaves the machine as
        // it was.
        do throws(SystemError) {
            guard let here = host.parked({ $0.migrationDescription }) else { throw .badInput("the machine has ended") }
            let check = try reader()
            let description = try check.readHeader()
            let differences = description.differences(from: here)
            guard differences.isEmpty else {
                throw .badInput("the saved machine is not this one: " + differences.joined(separator: "; "))
            }
            while true { if case .end = try check.next() { break } }
        } catch {
            host.resumeAfterSnapshot(wasRunning: wasRunning)
            throw .generic("Error while loading VM state of snapshot '\(name)' from '\(vmstate.device)': \(error.message)")
        }
        // Then the disks go back and the machine is loaded. A failure now leaves a machine
        // that must not run: it stays stopped.
        do throws(SystemError) {
            for disk in disks { try disk.image.applySnapshot(name) }
            try load(from: reader(), host: host)
        } catch {
            host.resumeAfterSnapshot(wasRunning: false)
            throw .generic("Error while loading snapshot '\(name)' (the machine stays stopped: load another snapshot or reset it): \(error.message)")
        }
        host.resumeAfterSnapshot(wasRunning: wasRunning)
    }

    func deleteSnapshot(name: String, devices: [String]?) throws(QMPError) {
        guard let host else { throw .generic("the machine has ended") }
        let disks = try snapshotDisks(host, devices: devices)
        let holding = disks.filter { $0.image.findSnapshot(name) != nil }
        guard !holding.isEmpty else { throw .generic("Snapshot '\(name)' not found") }
        for disk in holding {
            do throws(SystemError) { try disk.image.deleteSnapshot(name) } catch {
                throw .generic("Error while deleting snapshot on device '\(disk.device)': \(error.message)")
            }
        }
    }

    /// hmp_info_snapshots: the snapshots every disk has and the first disk's holds a VM
    /// state for (ID shown as "--"), then per disk the ones that are not loadable.
    func snapshotList() -> String {
        guard let host, let disks = try? snapshotDisks(host) else { return "No available block device supports snapshots\n" }
        let first = disks[0].image.snapshots
        let complete = first.filter { snap in snap.vmStateBytes > 0 && disks.allSatisfy { $0.image.findSnapshot(snap.name) != nil } }
        guard !complete.isEmpty || disks.contains(where: { !$0.image.snapshots.isEmpty }) else {
            return "There is no snapshot available.\n"
        }
        var text = ""
        if complete.isEmpty {
            text += "There is no suitable snapshot available\n"
        } else {
            text += "List of snapshots present on all disks:\n" + Qcow2Snapshot.table(complete, ids: complete.map { _ in "--" })
        }
        for disk in disks {
            let partial = disk.image.snapshots.filter { snap in !complete.contains { $0.name == snap.name } }
            if !partial.isEmpty {
                text += "\nList of partial (non-loadable) snapshots on '\(disk.device)':\n" + Qcow2Snapshot.table(partial)
            }
        }
        return text
    }
}

// MARK: - QMP snapshot jobs

extension MigrationManager {
    /// QMP `snapshot-save` / `snapshot-load` / `snapshot-delete`: a job (qapi/job.json) that
    /// runs on its own thread and reports JOB_STATUS_CHANGE created → running → waiting →
    /// pending → concluded (or aborting → concluded with its error), as QEMU's; it stays in
    /// `query-jobs` until `job-dismiss`.
    func startSnapshotJob(_ kind: SnapshotJob.Kind, id: String, tag: String, vmstate: String?, devices: [String]) throws(QMPError) {
        guard let host else { throw .generic("the machine has ended") }
        let added = state.withLock { s -> Bool in
            guard s.jobs[id] == nil else { return false }
            s.jobs[id] = SnapshotJob(id: id, kind: kind, status: "created")
            s.jobOrder.append(id)
            return true
        }
        guard added else { throw .generic("Job ID '\(id)' already in use") }
        host.emit(.jobStatusChange(id: id, status: "created"))
        do {
            try HostThread.spawn(name: "snapshot-job") { [self] in
                setJob(id, "running")
                do throws(QMPError) {
                    switch kind {
                    case .save: try saveSnapshot(name: tag, devices: devices, vmstate: vmstate)
                    case .load: try loadSnapshot(name: tag, devices: devices, vmstate: vmstate)
                    case .delete: try deleteSnapshot(name: tag, devices: devices)
                    }
                    setJob(id, "waiting")
                    setJob(id, "pending")
                } catch {
                    state.withLock { $0.jobs[id]?.error = error.desc }
                    setJob(id, "aborting")
                }
                setJob(id, "concluded")
            }
        } catch {
            state.withLock { $0.jobs[id]?.error = error.message }
            setJob(id, "aborting")
            setJob(id, "concluded")
        }
    }

    private func setJob(_ id: String, _ status: String) {
        state.withLock { $0.jobs[id]?.status = status }
        host?.emit(.jobStatusChange(id: id, status: status))
    }

    var jobs: [SnapshotJob] { state.withLock { s in s.jobOrder.compactMap { s.jobs[$0] } } }

    func dismissJob(id: String) throws(QMPError) {
        let status = state.withLock { $0.jobs[id]?.status }
        guard let status else { throw .generic("Job not found") }
        guard status == "concluded" else { throw .generic("Job '\(id)' in state '\(status)' cannot accept command verb 'dismiss'") }
        state.withLock { s in
            s.jobs[id] = nil
            s.jobOrder.removeAll { $0 == id }
        }
        host?.emit(.jobStatusChange(id: id, status: "null"))
    }
}
