import Block
import CLinux
import Chardev
import DeviceModel
import Dispatch
import GDBStub
import Glibc
import GuestMemory
import Machines
import QMP
import VMM
import SystemSupport

/// `swemu-system-<target>`: parses QEMU's command line, builds the machine, runs it until the
/// guest or the user ends it.
public enum SystemEmulator {
    /// Parses `arguments` (without the program name) into what to do.
    static func decide(target: EmulatorTarget, arguments: [String]) throws(CLIError) -> Action {
        try ConfigurationBuilder(target: target).build(CommandLineScanner.scan(arguments))
    }

    public static func main(target: EmulatorTarget, arguments: [String]) -> Never {
        let program = target.programName
        ErrorReport.configure(program: program, timestamp: false, guestName: nil)
        let action: Action
        do {
            action = try decide(target: target, arguments: arguments)
        } catch {
            writeOut(error.line(program: program) + "\n", fd: 2)
            exit(1)
        }
        switch action {
        case .print(let text):
            writeOut(text, fd: 1)
            exit(0)
        case .run(let config):
            let status: Int32
            ErrorReport.configure(program: program, timestamp: config.messageTimestamps,
                                  guestName: config.messageGuestName ? config.name ?? "" : nil)
            do {
                status = try run(config)
            } catch {
                ErrorReport.report("\(error)")
                exit(1)
            }
            exit(status)
        }
    }

    /// Runs the machine; returns the process exit status.
    private static func run(_ config: SystemConfiguration) throws(SystemError) -> Int32 {
        // Detach first: fork copies only the calling thread, so no other may exist yet.
        let daemon = config.daemonize ? try Daemon.detach() : nil
        let pidFile = try config.pidFile.map { (path) throws(SystemError) in try PidFile(path: path) }
        let postSetup = PostSetup(config: config, daemon: daemon)
        defer { pidFile?.remove() }
        for warning in config.warnings { ErrorReport.report(warning) }
        for entry in config.fdSets { try FdSets.add(entry) }
        // QEMU's os_set_proc_name: the main thread's name is the process's (ps, top).
        if let name = config.processName { _ = clx_set_thread_name(name) }
        // QEMU's os_mlock (-overcommit mem-lock=on): guest RAM mapped later is locked too.
        if config.memLock && mlockall(MCL_CURRENT | MCL_FUTURE) != 0 {
            throw SystemError(.syscall, "locking memory failed", errno: Errno.current)
        }
        DebugLog.enable(config.debugItems)
        try DebugLog.setOutput(path: config.logFile)
        if config.perfMap { try PerfMap.enable() }
        // -sandbox: before any thread starts and before anything outside is heard (QEMU installs
        // its filter as early); the first board is built under it, as every reset's is.
        try config.sandbox?.install(program: config.target.programName, setup: config.sandboxSetup)

        // The termination signals first, before any thread starts (see ShutdownSignals).
        let signals = try ShutdownSignals()
        let loop = try EventLoop()
        let quit = ConsoleAction()
        let commit = ConsoleAction()
        let console = try Console(config: config, loop: loop, quit: { quit.fire("host-ui") }, commit: { commit.fire() })
        defer { console.close() }
        try loop.start()
        try signals.deliver(on: loop) { quit.fire("host-signal") }
        // Backends live as long as the process, across guest reboots; the NICs hold the
        // network back until the machine runs.
        let network = try Network(config: config, loop: loop,
                                  running: !(config.startPaused || config.incoming != nil || config.loadvm != nil))
        defer { network.close() }
        for id in network.unusedNetdevs { console.notice("warning: netdev \(id) has no peer") }
        // Each drive's request counters, kept across resets (query-blockstats).
        let accounting = config.drives.map { _ in BlockAccounting() }

        switch config.machine.name {
        case "virt", "spike":
            let virtio = try virtioDevices(config, console: console, network: network, accounting: accounting)
            let firmware = try firmware(config)
            let serial = console.serials.first ?? nil
            // An incoming machine's qcow2 disks stay inactive until it is loaded (the source
            // still writes them); a reset after that builds them active.
            let incomingDisks = IncomingDisks(pending: config.incoming != nil)
            let makeBoard: @Sendable () throws(SystemError) -> RISCVBoard = { () throws(SystemError) in
                var boardConfig = RISCVBoard.Configuration(
                    kind: config.machine.name == "spike" ? .spike : .virt, ramSize: config.ramSize, firmware: firmware,
                    kernel: config.kernel, initrd: config.initrd, append: config.append, dtb: config.dtb, serial: serial,
                    harts: config.cpus,
                    engine: config.jit
                        ? .jit(codeBufferSize: config.tbSizeMiB.map { $0 << 20 } ?? RISCVBoard.EngineKind.defaultCodeBufferSize)
                        : .interpreter)
                boardConfig.virtio = virtio
                boardConfig.ramBackend = config.ramBackend
                boardConfig.disksInactive = incomingDisks.inactive
                let board = try RISCVBoard(boardConfig)
                try postSetup.boardBuilt()
                return board
            }
            if let dump = config.dumpDTB {
                let fd = try FileDescriptor.open(dump, O_WRONLY | O_CREAT | O_TRUNC)
                try fd.writeAll(try makeBoard().deviceTreeBlob)
                return 0
            }
            // A guest reboot rebuilds the machine from the same configuration (fresh RAM,
            // devices and files), as QEMU's system reset does; -no-reboot ends the run instead.
            var setup = VirtualMachine.Setup(
                machineType: config.machine.name,
                machineList: machineList(config.target),
                name: config.name, noReboot: config.noReboot, startPaused: config.startPaused,
                chardevs: console.chardevList, blockDevices: blockDevices(config, accounting: accounting), cpus: config.cpus, makeBoard: makeBoard)
            setup.noShutdown = config.noShutdown
            describeForMonitors(&setup, config)
            setup.incoming = config.incoming
            setup.incomingDisks = incomingDisks
            setup.loadvm = config.loadvm
            setup.network = network
            let vm = VirtualMachine(setup)
            vm.addEventListener { network.machineEvent($0) }
            let servers = monitorServers(console, target: vm)
            let debugger = console.gdb.map { GDBServer(backend: $0, target: vm) }
            defer {
                debugger?.close()
                withExtendedLifetime(servers) {}
            }
            quit.onFire { vm.execute(.quit(reason: $0)) }
            commit.onFire { _ in reportCommit(vm.commitSnapshots()) }
            return try vm.run()
        case "microvm":
            if let note = X86MicroVM.hostNote() { console.notice(note) }
            let virtio = try virtioDevices(config, console: console, network: network, accounting: accounting)
            let serial = console.serials.first ?? nil
            let incomingDisks = IncomingDisks(pending: config.incoming != nil)
            let makeBoard: @Sendable () throws(SystemError) -> X86MicroVM = { () throws(SystemError) in
                guard let kernel = config.kernel else { throw .configuration("-kernel is missing") }  // checked by the builder
                var boardConfig = X86MicroVM.Configuration(ramSize: config.ramSize, cpus: config.cpus, kernel: kernel,
                                                           initrd: config.initrd, append: config.append, serial: serial)
                boardConfig.virtio = virtio
                boardConfig.ramBackend = config.ramBackend
                boardConfig.disksInactive = incomingDisks.inactive
                boardConfig.eventLoop = loop
                boardConfig.onBootMarker = { nanoseconds in
                    let ms = Double(nanoseconds / 1000) / 1000
                    console.notice("guest boot marker: \(ms) ms after process start")
                }
                let board = try X86MicroVM(boardConfig)
                try postSetup.boardBuilt()
                return board
            }
            var setup = KVMMachine.Setup(
                machineType: config.machine.name,
                machineList: machineList(config.target),
                name: config.name, noReboot: config.noReboot, startPaused: config.startPaused,
                chardevs: console.chardevList, blockDevices: blockDevices(config, accounting: accounting), cpus: config.cpus, makeBoard: makeBoard)
            setup.noShutdown = config.noShutdown
            describeForMonitors(&setup, config)
            setup.incoming = config.incoming
            setup.incomingDisks = incomingDisks
            setup.loadvm = config.loadvm
            setup.network = network
            let vm = KVMMachine(setup)
            vm.addEventListener { network.machineEvent($0) }
            let servers = monitorServers(console, target: vm)
            let debugger = console.gdb.map { GDBServer(backend: $0, target: vm) }
            defer {
                debugger?.close()
                withExtendedLifetime(servers) {}
            }
            quit.onFire { vm.execute(.quit(reason: $0)) }
            commit.onFire { _ in reportCommit(vm.commitSnapshots()) }
            return try vm.run()
        default:
            let ram = config.ramSize > 0 ? try GuestMemory(base: GuestAddress(0), size: config.ramSize) : nil
            if config.monitors.isEmpty && !config.noDefaults && !config.daemonize {
                console.notice("machine 'none' has no CPU (\(formatSize(ram?.totalSize ?? 0)) of RAM); nothing will run. Ctrl-A h: help, Ctrl-A x: quit.")
            }
            var setup = MachineSetup<Void>(machineType: config.machine.name, machineList: machineList(config.target), name: config.name,
                                           noReboot: config.noReboot, startPaused: config.startPaused, chardevs: console.chardevList) {}
            describeForMonitors(&setup, config)
            let machine = EmptyMachine(setup, targetArch: config.target == .riscv64 ? "riscv64" : "x86_64",
                                       kvmEnabled: config.accelerator == "kvm")
            let servers = monitorServers(console, target: machine)
            defer { withExtendedLifetime(servers) {} }
            try postSetup.boardBuilt()
            quit.onFire { machine.execute(.quit(reason: $0)) }
            return machine.run()
        }
    }
}

/// SIGINT, SIGTERM and SIGHUP end the machine in order, as QEMU's do (qemu_system_killed, then
/// qemu_kill_report): a line on stderr naming the signal and its sender, a SHUTDOWN event with
/// reason "host-signal", the disks flushed and closed, exit status 0. The handler only records
/// the signal and wakes the event loop (an eventfd); the loop thread does the rest.
struct ShutdownSignals {
    /// The eventfd the handler writes; it lives as long as the process, since the handler may
    /// write to it at any time.
    private let fd: Int32

    /// Installs the handler and unblocks the signals: call before any thread starts, so that
    /// none inherits a mask that keeps them out (a parent may have blocked them).
    init() throws(SystemError) {
        let fd = try syscall("eventfd") { eventfd(0, Int32(EFD_CLOEXEC | EFD_NONBLOCK)) }
        _ = try syscall("sigaction") { clx_shutdown_signals_install(fd) }
        self.fd = fd
    }

    /// From now on a signal runs `terminate` on the loop's thread, after QEMU's line.
    func deliver(on loop: EventLoop, _ terminate: @escaping @Sendable () -> Void) throws(SystemError) {
        let fd = self.fd
        try loop.register(fd: fd, events: EventLoop.readable) { _ in
            var value: UInt64 = 0
            _ = Glibc.read(fd, &value, 8)
            var pid: Int32 = 0
            let signal = clx_shutdown_signal_take(&pid)
            guard signal != 0 else { return }
            // A signal from the kernel (Ctrl-C at the terminal) has no sender worth naming.
            let message = pid == 0
                ? "terminated by signal \(signal)"
                : "terminating on signal \(signal) from pid \(pid) (\(ShutdownSignals.processName(pid) ?? "<unknown process>"))"
            ErrorReport.report(message)
            terminate()
        }
    }

    /// QEMU's qemu_get_pid_name: the first word of /proc/PID/cmdline.
    static func processName(_ pid: Int32) -> String? {
        guard let fd = try? FileDescriptor.open("/proc/\(pid)/cmdline", O_RDONLY) else { return nil }
        var bytes = [UInt8](repeating: 0, count: 4096)
        // SAFETY: read fills at most bytes.count bytes of the array's own storage.
        guard let count = bytes.withUnsafeMutableBytes({ try? fd.read(into: $0) }) ?? nil, count > 0 else { return nil }
        return String(decoding: bytes[..<count].prefix { $0 != 0 }, as: UTF8.self)
    }
}

/// What the monitors report about this binary and machine beyond the board: `query-uuid`,
/// `query-command-line-options`, the accelerator types `qom-list-types` lists.
private func describeForMonitors<Board>(_ setup: inout MachineSetup<Board>, _ config: SystemConfiguration) {
    setup.uuid = config.uuid
    setup.commandLineOptions = OptionGroup.monitorOptions
    setup.accelerators = config.target.accelerators.filter(\.available).map(\.name)
    setup.peripherals = config.devices.compactMap { device in device.id.map { ($0, device.typeName) } }
    if config.devices.contains(where: { if case .virtioBalloon = $0.driver { true } else { false } }) {
        setup.balloonRAMSize = config.ramSize
    }
}

/// `query-machines`: the machines this target has, the default marked.
private func machineList(_ target: EmulatorTarget) -> [MonitorMachineType] {
    target.machines.filter(\.available).map { machine in
        MonitorMachineType(name: machine.name, description: machine.description, isDefault: machine.name == target.defaultMachine,
                           maxCPUs: machine.maxCPUs, defaultRAMID: machine.ramID)
    }
}

/// Ctrl-A s: the machine's commit report, one "swemu:" line per disk.
private func reportCommit(_ report: String) {
    if !report.isEmpty { writeOut(report.split(separator: "\n").map { "swemu: \($0)\r\n" }.joined(), fd: 2) }
}

/// The monitors' servers on their chardevs; they live as long as the machine and each serves
/// one client at a time.
private func monitorServers(_ console: Console, target: any MonitorTarget) -> [any CharFrontend] {
    console.monitors.map { monitor in
        switch monitor.mode {
        case .control: return QMPServer(backend: monitor.backend, target: target, pretty: monitor.pretty)
        case .readline:
            let server = HumanMonitorServer(backend: monitor.backend, target: target, focused: monitor.focus?.initiallyFocused ?? true)
            monitor.focus?.attach(server)
            return server
        }
    }
}

/// Where `-bios default` finds OpenSBI's generic fw_dynamic: the guest cache that scripts/guests
/// fills (a pinned OpenSBI 1.6, as QEMU ships a pinned firmware of its own), then Debian's
/// opensbi package (Debian 12's is 1.1, whose HSM start race, fixed in 1.3, can send a secondary
/// hart to a stale start address when its host thread is starved).
func defaultFirmwarePaths() -> [String] {
    var paths: [String] = []
    if let cache = getenv("SWEMU_GUEST_CACHE") {
        paths.append(String(cString: cache) + "/riscv64/fw_dynamic.bin")
    } else if let home = getenv("HOME") {
        paths.append(String(cString: home) + "/.cache/swemu/guests/riscv64/fw_dynamic.bin")
    }
    return paths + ["/usr/lib/riscv64-linux-gnu/opensbi/generic/fw_dynamic.bin"]
}

extension SystemEmulator {
    /// The virtio devices `-drive if=virtio` and `-device` ask for: drives first, then devices,
    /// each in command-line order.
    /// The boards' virtio devices; `accounting` holds each drive's counters (as `config.drives`).
    static func virtioDevices(_ config: SystemConfiguration, console: Console, network: Network,
                              accounting: [BlockAccounting]) throws(SystemError) -> [RISCVBoard.VirtioDeviceSpec] {
        var specs: [RISCVBoard.VirtioDeviceSpec] = []
        var nextDeviceNIC = 0
        var formats: [String] = []
        for drive in config.drives {
            let (format, warning) = try drive.probe()
            if let warning { console.notice(warning) }
            formats.append(format)
        }
        for (index, drive) in config.drives.enumerated() where drive.interface == .virtio {
            specs.append(.block(path: drive.file, format: formats[index], readOnly: drive.readOnly, snapshot: drive.snapshot,
                                cache: drive.cache, serial: drive.id ?? "", locking: drive.locking, option: drive.option,
                                accounting: accounting[index]))
        }
        for (index, device) in config.devices.enumerated() {
            switch device.driver {
            case .virtioBlock(let id):
                guard let driveIndex = config.drives.firstIndex(where: { $0.id == id }) else { continue }  // checked by the builder
                let drive = config.drives[driveIndex]
                specs.append(.block(path: drive.file, format: formats[driveIndex], readOnly: drive.readOnly, snapshot: drive.snapshot,
                                    cache: drive.cache, serial: id, locking: drive.locking, option: drive.option,
                                    accounting: accounting[driveIndex]))
            case .virtioRNG:
                specs.append(.rng)
            case .virtioKeyboard:
                specs.append(.keyboard)
            case .virtioBalloon(let deflateOnOOM):
                specs.append(.balloon(deflateOnOOM: deflateOnOOM))
            case .virtioSerial, .isaSerial:
                break
            case .virtconsole(let id):
                specs.append(.console(try console.claim(chardev: id, for: "virtconsole\(index)")))
            case .virtioNet:
                // The NICs come in `config.nics` order: `-nic` ones first (appended below).
                specs.append(.net(network.interfaces[config.nicShorthands.count + nextDeviceNIC]))
                nextDeviceNIC += 1
            }
        }
        specs += network.interfaces.prefix(config.nicShorthands.count).map { .net($0) }
        return specs
    }

    /// `query-block`'s view of the disks.
    static func blockDevices(_ config: SystemConfiguration, accounting: [BlockAccounting]) -> [MonitorBlockDevice] {
        config.drives.enumerated().map { index, drive in
            let format = drive.format ?? (try? DiskImage.probe(path: drive.file)) ?? "raw"
            var st = stat()
            var size = stat(drive.file, &st) == 0 ? UInt64(max(0, st.st_size)) : 0
            // Read beside the machine's own open of the image: sharing everything, so never refused.
            if format == "qcow2" {
                size = (try? Qcow2Image(path: drive.file, readOnly: true, backingMode: .skip, locking: ImageLocking(forceShare: true)))?.size ?? 0
            }
            var disk = MonitorBlockDevice(device: drive.formatNode == nil ? drive.id ?? "virtio\(index)" : "", file: drive.file,
                                          format: format, readOnly: drive.readOnly, sizeBytes: size, accounting: accounting[index])
            // QEMU names a -drive's nodes itself ("#blockN"); -blockdev's are the user's.
            disk.nodeName = drive.formatNode ?? "#block\(2 * index + 1)"
            disk.fileNodeName = drive.fileNode ?? "#block\(2 * index)"
            let device = config.devices.firstIndex { if case .virtioBlock(let name) = $0.driver { name == drive.id } else { false } }
            if let device {
                disk.qdev = config.devices[device].id.map { "/machine/peripheral/\($0)/virtio-backend" }
                    ?? "/machine/peripheral-anon/device[\(device)]/virtio-backend"
            }
            return disk
        }
    }

    static func firmware(_ config: SystemConfiguration) throws(SystemError) -> RISCVBoard.Firmware {
        switch config.bios {
        case "none":
            return .none
        case nil, "default":
            guard config.machine.name == "virt" else { return .none }
            guard let path = defaultFirmwarePaths().first(where: { access($0, R_OK) == 0 }) else {
                throw .configuration("-bios default: OpenSBI's fw_dynamic.bin was not found in \(defaultFirmwarePaths().joined(separator: ", ")); install Debian's opensbi package, run scripts/guests, or give -bios FILE")
            }
            return .file(path)
        case let path?:
            return .file(path)
        }
    }
}

/// A request from the console (Ctrl-A x: quit, Ctrl-A s: commit): runs the registered action
/// and wakes whoever waits for it.
final class ConsoleAction: @unchecked Sendable {
    // SAFETY: `action` and `pending` are read and written only under `lock`.
    private let semaphore = DispatchSemaphore(value: 0)
    private let lock = DispatchSemaphore(value: 1)
    private var action: (@Sendable (String) -> Void)?
    /// Fired before there was an action (a signal while the machine is being built): carried
    /// out as soon as `onFire` sets one.
    private var pending: String?

    func onFire(_ action: @escaping @Sendable (String) -> Void) {
        lock.wait()
        self.action = action
        let pending = self.pending
        self.pending = nil
        lock.signal()
        if let pending { action(pending) }
    }

    /// `detail`: what the action needs to know (the quit's ShutdownCause).
    func fire(_ detail: String = "") {
        lock.wait()
        let action = self.action
        if action == nil { pending = detail }
        lock.signal()
        action?(detail)
        semaphore.signal()
    }

    func wait() { semaphore.wait() }
}
