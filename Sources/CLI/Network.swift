import DeviceModel
import Devices
import Net
import QMP
import SystemSupport

/// The machine's network, built once from the command line and kept across guest reboots:
/// every `-netdev` backend (wrapped by its `-object filter-dump`s) and every NIC, in
/// `SystemConfiguration.nics` order. The monitors reach it as `NetworkControl`.
final class Network: NetworkControl {
    private struct Backend {
        let spec: NetdevSpec
        /// What the NIC talks to: the backend, or a pcap dump wrapped around it.
        let backend: any NetBackend
        /// The user-mode stack under it, for `hostfwd_add` and `info usernet`.
        let user: SlirpBackend?
    }

    private let backends: [Backend]
    /// In `SystemConfiguration.nics` order.
    let interfaces: [NetworkInterface]
    private let filters: [DumpFilterSpec]

    /// `running`: whether the machine runs from the start (see `NetworkInterface`).
    init(config: SystemConfiguration, loop: EventLoop, running: Bool) throws(SystemError) {
        var backends: [Backend] = []
        do throws(SystemError) {
            for spec in config.netdevs {
                let user: SlirpBackend?
                var backend: any NetBackend
                if spec.type == "user" {
                    let slirp = try SlirpBackend(id: spec.id, config: UserNetConfig(options: spec.options))
                    user = slirp
                    backend = slirp
                } else {
                    user = nil
                    backend = try NetBackends.makeSocketFamily(type: spec.type, id: spec.id, options: spec.options, loop: loop)
                }
                for filter in config.dumpFilters where filter.netdev == spec.id {
                    do throws(SystemError) {
                        backend = try PcapDump.wrap(backend, file: filter.file, maxlen: filter.maxlen)
                    } catch {
                        backend.close()
                        throw error
                    }
                }
                backends.append(Backend(spec: spec, backend: backend, user: user))
            }
        } catch {
            for backend in backends { backend.backend.close() }
            throw error
        }
        self.backends = backends
        var models: [String: Int] = [:]
        // QEMU's qemu_macaddr_default_if_unset: the first of 52:54:00:12:34:56, :57, ... that
        // no NIC uses, given addresses included.
        var used = Set(config.nics.compactMap(\.mac))
        var interfaces: [NetworkInterface] = []
        for nic in config.nics {
            // QEMU names an unnamed NIC after its model and how many of that model came before.
            let model = NICSpec.models[0]
            let name = nic.id ?? "\(model).\(models[model, default: 0])"
            if nic.id == nil { models[model, default: 0] += 1 }
            let mac = nic.mac ?? (0..<256).lazy.map(MACAddress.qemuDefault(index:)).first { !used.contains($0) } ?? .qemuDefault(index: 0)
            used.insert(mac)
            interfaces.append(NetworkInterface(name: name, netdev: nic.netdev, backend: backends.first { $0.spec.id == nic.netdev }?.backend,
                                               mac: mac, running: running))
        }
        self.interfaces = interfaces
        filters = config.dumpFilters
    }

    /// Netdevs no NIC uses: QEMU warns about each ("netdev n0 has no peer").
    var unusedNetdevs: [String] {
        backends.map(\.spec.id).filter { id in !interfaces.contains { $0.netdev == id } }
    }

    func close() {
        for backend in backends { backend.backend.close() }
    }

    // MARK: NetworkControl

    /// hmp_info_network: each NIC, its backend under it (" \ "), then the backends no NIC uses;
    /// a backend's filters under it (print_net_client).
    var networkInfo: String {
        func line(_ backend: Backend) -> String {
            var text = "\(backend.spec.id): index=0,type=\(backend.spec.type),\(backend.backend.info)\n"
            let mine = filters.filter { $0.netdev == backend.spec.id }
            if !mine.isEmpty { text += "filters:\n" }
            for filter in mine {
                text += "  - \(filter.id): type=filter-dump,netdev=\(filter.netdev),queue=all,status=on,file=\(filter.file),maxlen=\(filter.maxlen)\n"
            }
            return text
        }
        var text = ""
        for interface in interfaces {
            text += "\(interface.name): index=0,type=nic,model=\(NICSpec.models[0]),macaddr=\(interface.device?.mac ?? interface.mac)\n"
            if let backend = backends.first(where: { $0.spec.id == interface.netdev }) { text += " \\ " + line(backend) }
        }
        for backend in backends where !interfaces.contains(where: { $0.netdev == backend.spec.id }) { text += line(backend) }
        return text
    }

    func setLink(name: String, up: Bool) throws(QMPError) {
        let matching = interfaces.filter { $0.name == name || $0.netdev == name }
        guard !matching.isEmpty || backends.contains(where: { $0.spec.id == name }) else {
            throw QMPError(errorClass: "DeviceNotFound", desc: "Device '\(name)' not found")
        }
        for interface in matching { interface.setLink(up: up) }
    }

    /// slirp_lookup: the named user netdev, or the first one; else what the monitor prints.
    private func userStack(_ netdev: String?) -> (stack: SlirpBackend?, refusal: String) {
        if let netdev {
            guard let backend = backends.first(where: { $0.spec.id == netdev }) else { return (nil, "unrecognized netdev id '\(netdev)'\n") }
            return backend.user.map { ($0, "") } ?? (nil, "invalid device specified\n")
        }
        return backends.lazy.compactMap(\.user).first.map { ($0, "") } ?? (nil, "user mode network stack not in use\n")
    }

    func hostForwardAdd(netdev: String?, rule: String) -> String {
        let (stack, refusal) = userStack(netdev)
        guard let stack else { return refusal }
        do throws(SystemError) {
            try stack.addHostForward(HostForward(parsing: rule))
            return ""
        } catch {
            return error.message + "\n"
        }
    }

    func hostForwardRemove(netdev: String?, rule: String) -> String {
        let (stack, refusal) = userStack(netdev)
        guard let stack else { return refusal }
        do throws(SystemError) {
            let removal: HostForward.Removal
            do throws(SystemError) { removal = try HostForward.parseRemoval(rule) } catch { return "invalid format\n" }  // QEMU's words
            let removed = try stack.removeHostForward(removal)
            return "host forwarding rule for \(rule) \(removed ? "removed" : "not found")\n"
        } catch {
            return error.message + "\n"
        }
    }

    var userNetworkInfo: String {
        backends.compactMap(\.user).map { user in
            do throws(SystemError) { return try user.connectionInfo } catch { return "\(user.id): \(error.message)\n" }
        }.joined()
    }

    /// The machine stopped or runs again: the NICs hold the network back while it is stopped.
    func machineEvent(_ event: MonitorEvent) {
        switch event {
        case .stop: for interface in interfaces { interface.setRunning(false) }
        case .resume: for interface in interfaces { interface.setRunning(true) }
        default: break
        }
    }

    func rxFilters(name: String?) throws(QMPError) -> [RxFilterInfo] {
        var chosen = interfaces
        if let name {
            chosen = interfaces.filter { $0.name == name }
            if chosen.isEmpty {
                throw backends.contains(where: { $0.spec.id == name })
                    ? .generic("net client(\(name)) isn't a NIC") : .generic("invalid net client name: \(name)")
            }
        }
        return chosen.compactMap { interface in
            // The filter as the driver set it is the device's saved state.
            guard let filter = interface.device?.saveState() else { return nil }
            func text(_ bytes: [UInt8]) -> String { MACAddress(bytes).description }
            return RxFilterInfo(name: interface.name, promiscuous: filter.promiscuous,
                                multicast: filter.allMulticast ? "all" : "normal", unicast: "normal",
                                broadcastAllowed: true, multicastOverflow: filter.multicastOverflow,
                                unicastOverflow: filter.unicastOverflow, mainMAC: text(filter.mac),
                                unicastTable: filter.unicastTable.map(text), multicastTable: filter.multicastTable.map(text))
        }
    }
}
