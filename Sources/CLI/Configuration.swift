import Chardev
import GuestMemory
import QMP
import RISCVJIT
import SystemSupport
import VMM

/// Everything the command line asked for, validated. Built by `ConfigurationBuilder` from
/// the scanned options; the machine code reads only this.
struct SystemConfiguration: Sendable {
    var target: EmulatorTarget
    var machine: MachineInfo
    var ramSize: UInt64
    var cpus = 1
    var cpuModel: String?
    var accelerator: String?
    /// `-accel tcg,jit=on|off`: the RISC-V harts run in the JIT (the default on x86-64 hosts)
    /// or in the interpreter.
    var jit = JITEngine.hostSupported
    /// `-accel tcg,tb-size=MiB`: the JIT's code buffer per hart.
    var tbSizeMiB: Int?
    var name: String?
    /// `-name process=NAME`: the process's name (the main thread's, prctl PR_SET_NAME), as
    /// `ps` and `top` show it.
    var processName: String?
    /// `-msg timestamp=on`: messages on stderr start with the time (ErrorReport).
    var messageTimestamps = false
    /// `-msg guest-name=on`: ... and the guest's name (`-name`).
    var messageGuestName = false
    /// Lines for stderr before the machine starts (options QEMU warns about).
    var warnings: [String] = []
    /// `-uuid`: what `query-uuid` reports (QEMU's all-zero UUID without it).
    var uuid: String?
    /// `-nodefaults`: no default serial port or monitor on stdio (the boards' own devices stay).
    var noDefaults = false
    /// `-overcommit mem-lock=on`: mlockall(MCL_CURRENT | MCL_FUTURE) before the machine starts.
    var memLock = false
    var noReboot = false
    /// `-no-shutdown` / `-action shutdown=pause`: stop in "shutdown" when the guest powers off.
    var noShutdown = false
    var nographic = false
    var displayNone = false
    var kernel: String?
    /// `-bios`: nil or "default" (OpenSBI for virt), "none", or a file.
    var bios: String?
    var initrd: String?
    var append: String?
    var dtb: String?
    /// `-machine dumpdtb=FILE`: write the device tree there and exit.
    var dumpDTB: String?
    /// `-serial` targets in order (serial0, serial1, ...), after defaults are applied.
    var serials: [ChardevSpec.Target] = []
    /// `-chardev` definitions, in the order given (ids are unique).
    var chardevs: [ChardevSpec] = []
    /// `-drive` definitions, in order.
    var drives: [DriveSpec] = []
    /// `-device` definitions, in order.
    var devices: [DeviceSpec] = []
    /// `-netdev` backends and those `-nic` makes, in order (ids are unique).
    var netdevs: [NetdevSpec] = []
    /// `-nic` NICs, in order; `-device virtio-net-device` ones are in `devices`.
    var nicShorthands: [NICSpec] = []
    /// `-object` definitions, in order (ids are unique).
    var objects: [ObjectSpec] = []
    /// `-object filter-dump`.
    var dumpFilters: [DumpFilterSpec] {
        objects.compactMap { if case .filterDump(let f) = $0 { f } else { nil } }
    }
    /// How the machine's RAM is held: `-machine memory-backend=ID`'s object, with
    /// `-machine mem-merge=`/`dump-guest-core=` where the backend leaves them open.
    var ramBackend = RAMBackendSpec()

    /// Every NIC in the order QEMU numbers them for default MACs: `-nic` ones (the board
    /// makes them) before `-device` ones.
    var nics: [NICSpec] {
        nicShorthands + devices.compactMap { device in
            if case .virtioNet(let nic) = device.driver { nic } else { nil }
        }
    }
    /// Monitors: `-monitor`, `-qmp`, `-mon`, and the one `-nographic` muxes on stdio.
    var monitors: [MonitorSpec] = []
    /// `-monitor none` was given: no default monitor on the console.
    var noDefaultMonitor = false
    /// `-S`: start with the CPU stopped.
    var startPaused = false
    /// `-loadvm`: start from this snapshot of the qcow2 disks.
    var loadvm: String?
    /// `-incoming`: wait for a migration stream instead of booting.
    var incoming: MigrationURI?
    /// `-gdb DEV` / `-s`: where the GDB stub listens.
    var gdb: ChardevSpec.Target?
    var debugItems: DebugLog.Category = []
    var logFile: String?
    /// `-perfmap`: name the JIT's blocks for perf in /tmp/perf-<pid>.map.
    var perfMap = false
    /// `-add-fd`: descriptors the parent left, which `/dev/fdset/N` paths name.
    var fdSets: [FdSets.Entry] = []
    /// `-pidfile`: the process id goes there (locked, removed at the end), as QEMU's.
    var pidFile: String?
    /// `-daemonize`: detach once the machine is built.
    var daemonize = false
    /// `-sandbox on,...`: the seccomp filter installed once the machine is built (nil: off).
    var sandbox: SandboxPolicy?
    /// `-runas USER|UID:GID`: the identity the process takes once the machine is built.
    var runAs: RunAs?
    /// `-chroot DIR`: the root the process takes once the machine is built.
    var chroot: String?

    /// What the sandbox lets through until the machine is built.
    var sandboxSetup: SandboxPolicy.Setup { SandboxPolicy.Setup(chroot: chroot != nil, runAs: runAs != nil) }
}

/// A monitor and where it listens.
struct MonitorSpec: Sendable, Equatable {
    enum Mode: Sendable, Equatable {
        /// The human monitor (HMP).
        case readline
        /// QMP.
        case control
    }
    var target: ChardevSpec.Target
    var mode: Mode
    /// `-mon ...,pretty=on`: QMP messages in QEMU's indented form.
    var pretty = false
}

/// What a run of the binary should do once the command line is understood.
enum Action: Sendable {
    case run(SystemConfiguration)
    /// Print `text` on stdout and exit 0 (`--help`, `-M help`, ...).
    case print(String)
}


struct ConfigurationBuilder {
    let target: EmulatorTarget

    func build(_ options: [ParsedOption]) throws(CLIError) -> Action {
        // Help and version win over everything else, wherever they stand, as in QEMU.
        if options.contains(where: { $0.name == "h" }) { return .print(HelpText.usage(target)) }
        if options.contains(where: { $0.name == "version" }) { return .print(HelpText.version(target)) }

        var machineName = target.defaultMachine
        var machineOpts: QemuOpts?
        var memory: String?
        var smp: String?
        var config = SystemConfiguration(target: target, machine: target.machines[0], ramSize: 0)
        var snapshotAll = false
        var noACPI = false
        var blockdevNodes: [BlockdevNode] = []
        var anonymousNodes = 0

        for option in options {
            let value = option.value ?? ""
            let flag = "-" + option.name
            switch option.name {
            case "machine":
                if value == "help" { return .print(HelpText.machines(target)) }
                let opts = try wrap(flag) { () throws(SystemError) in
                    try OptionGroup.machine.parse(value, option: flag)
                }
                if let type = opts.string("type") { machineName = type }
                machineOpts = opts
            case "m":
                memory = value
            case "smp":
                smp = value
            case "cpu":
                if value == "help" { return .print(HelpText.cpus(target)) }
                guard target.cpuModels.contains(where: { $0.name == value }) else {
                    throw CLIError(option: flag, "unknown CPU model '\(value)'; accepted: \(target.cpuModels.map(\.name).joined(separator: ", ")) (see -cpu help)")
                }
                config.cpuModel = value
            case "accel":
                if value == "help" { return .print(HelpText.accelerators(target)) }
                let opts = try wrap(flag) { () throws(SystemError) in
                    try QemuOpts(parsing: value, impliedKey: "accel", option: flag).validate(
                        accepted: ["thread", "jit", "tb-size"], booleans: ["jit"])
                }
                config.accelerator = try checkAccelerator(opts.string("accel") ?? "", option: flag)
                try accelOptions(opts, into: &config, option: flag)
            case "name":
                let opts = try wrap(flag) { () throws(SystemError) in
                    try OptionGroup.name.parse(value, option: flag)
                }
                config.name = opts.string("guest")
                config.processName = opts.string("process")
                // debug-threads=on asks for the vCPU threads to be named "CPU N/TCG" or
                // "CPU N/KVM": swemu always names its threads so (its I/O threads by what they serve).
            case "msg":
                let opts = try wrap(flag) { () throws(SystemError) in try OptionGroup.msg.parse(value, option: flag) }
                config.messageTimestamps = try wrap(flag) { () throws(SystemError) in try opts.bool("timestamp", default: config.messageTimestamps) }
                config.messageGuestName = try wrap(flag) { () throws(SystemError) in try opts.bool("guest-name", default: config.messageGuestName) }
            case "no-reboot":
                config.noReboot = true
            case "no-shutdown":
                config.noShutdown = true
            case "action":
                // QEMU's -action: what a guest reboot and power-off do (-no-reboot is
                // reboot=shutdown, -no-shutdown shutdown=pause). panic= and watchdog= are
                // refused: neither machine has a panic device or a watchdog.
                let opts = try wrap(flag) { () throws(SystemError) in
                    try OptionGroup.action.parse(value, option: flag)
                }
                switch opts.string("reboot") {
                case nil: break
                case "reset": config.noReboot = false
                case "shutdown": config.noReboot = true
                case let other?: throw CLIError(option: flag, "Parameter 'reboot' does not accept value '\(other)' (accepted: reset, shutdown)")
                }
                switch opts.string("shutdown") {
                case nil: break
                case "poweroff": config.noShutdown = false
                case "pause": config.noShutdown = true
                case let other?: throw CLIError(option: flag, "Parameter 'shutdown' does not accept value '\(other)' (accepted: poweroff, pause)")
                }
            case "snapshot":
                snapshotAll = true
            case "nographic":
                config.nographic = true
            case "display":
                let opts = try wrap(flag) { () throws(SystemError) in try QemuOpts(parsing: value, impliedKey: "type", option: flag) }
                guard opts.string("type") == "none", opts.keys == ["type"] else {
                    throw CLIError(option: flag, "display '\(value)' is not available; accepted: -display none (use -nographic for a serial console on this terminal)")
                }
                config.displayNone = true
            case "kernel":
                config.kernel = value
            case "bios":
                config.bios = value
            case "initrd":
                config.initrd = value
            case "append":
                config.append = value
            case "dtb":
                config.dtb = value
            case "serial":
                config.serials.append(try wrap(flag) { () throws(SystemError) in try ChardevSpec.parse(shortForm: value, option: flag) })
            case "chardev":
                let spec = try wrap(flag) { () throws(SystemError) in try ChardevSpec.parse(chardev: value, option: flag) }
                if config.chardevs.contains(where: { $0.id == spec.id }) {
                    throw CLIError(option: flag, "duplicate chardev id '\(spec.id ?? "")'")
                }
                config.chardevs.append(spec)
            case "monitor", "qmp":
                let mode: MonitorSpec.Mode = option.name == "qmp" ? .control : .readline
                let target = try wrap(flag) { () throws(SystemError) in try ChardevSpec.parse(shortForm: value, option: flag) }
                if case .none = target {
                    if option.name == "monitor" { config.noDefaultMonitor = true }
                    continue
                }
                config.monitors.append(MonitorSpec(target: target, mode: mode))
            case "mon":
                let opts = try wrap(flag) { () throws(SystemError) in
                    try OptionGroup.mon.parse(value, option: flag)
                }
                guard let id = opts.string("chardev") else { throw CLIError(option: flag, "chardev=ID is required") }
                let mode: MonitorSpec.Mode
                switch opts.string("mode") ?? "readline" {
                case "readline": mode = .readline
                case "control": mode = .control
                case let other: throw CLIError(option: flag, "mode=\(other) is not a monitor mode; accepted: readline, control")
                }
                let pretty = try wrap(flag) { () throws(SystemError) in try opts.bool("pretty", default: false) }
                if pretty && mode == .readline {
                    // QEMU 7.2's words; it then ignores the option for a human monitor.
                    config.warnings.append("\(flag) \(value): warning: 'pretty' is deprecated for HMP monitors, it has no effect and will be removed in future versions")
                }
                config.monitors.append(MonitorSpec(target: .chardev(id: id), mode: mode, pretty: pretty))
            case "S":
                config.startPaused = true
            case "uuid":
                // QEMU's qemu_uuid_parse: 8-4-4-4-12 hex digits.
                let groups = value.split(separator: "-", omittingEmptySubsequences: false)
                guard groups.map(\.count) == [8, 4, 4, 4, 12], groups.allSatisfy({ $0.allSatisfy(\.isHexDigit) }) else {
                    throw CLIError(option: flag, "Fail to parse UUID string")
                }
                config.uuid = value.lowercased()
            case "nodefaults":
                config.noDefaults = true
            case "no-acpi":
                noACPI = true
            case "no-user-config":
                break  // swemu reads no configuration files, default or other
            case "enable-kvm":
                config.accelerator = try checkAccelerator("kvm", option: flag)
            case "overcommit":
                let opts = try wrap(flag) { () throws(SystemError) in
                    try OptionGroup.overcommit.parse(value, option: flag)
                }
                config.memLock = try wrap(flag) { () throws(SystemError) in try opts.bool("mem-lock", default: config.memLock) }
                if try wrap(flag, { () throws(SystemError) in try opts.bool("cpu-pm", default: false) }) {
                    throw CLIError(option: flag, "cpu-pm=on is not supported: the vCPUs leave the guest when it halts (accepted: cpu-pm=off)")
                }
            case "boot":
                // The boards start the -bios/-kernel images themselves, with no firmware boot
                // menu or device order: strict=on (boot nothing else) is what they always do.
                let opts = try wrap(flag) { () throws(SystemError) in
                    try OptionGroup.boot.parse(value, option: flag)
                }
                if opts.string("order") != nil {
                    throw CLIError(option: flag, "no boot order to choose: the machine boots its -bios/-kernel images (accepted: strict=on|off)")
                }
            case "rtc":
                let opts = try wrap(flag) { () throws(SystemError) in
                    try OptionGroup.rtc.parse(value, option: flag)
                }
                for (key, only) in [("base", "utc"), ("clock", "host"), ("driftfix", "none")] {
                    if let given = opts.string(key), given != only {
                        throw CLIError(option: flag, "\(key)=\(given) is not supported: the real-time clock runs on the host's UTC (accepted: \(key)=\(only))")
                    }
                }
            case "audiodev":
                try audiodev(value, option: flag)
            case "loadvm":
                config.loadvm = value
            case "incoming":
                config.incoming = try wrap(flag) { () throws(SystemError) in try MigrationURI.parse(value, incoming: true) }
            case "s":
                config.gdb = try gdbDevice("tcp::1234", option: flag)
            case "gdb":
                config.gdb = try gdbDevice(value, option: flag)
            case "drive":
                config.drives.append(try wrap(flag) { () throws(SystemError) in try DriveSpec(parsing: value) })
            case "blockdev":
                let nodes = try wrap(flag) { () throws(SystemError) in try BlockdevNode.parse(value, anonymousCount: &anonymousNodes) }
                for node in nodes where blockdevNodes.contains(where: { $0.nodeName == node.nodeName }) {
                    throw CLIError(option: flag, "Duplicate nodes with node-name='\(node.nodeName)'")
                }
                blockdevNodes += nodes
            case "device":
                if value == "help" { return .print(HelpText.devices(target)) }
                config.devices.append(try wrap(flag) { () throws(SystemError) in try DeviceSpec(parsing: value) })
            case "netdev":
                if value == "help" { return .print(NetdevSpec.helpText) }
                config.netdevs.append(try wrap(flag) { () throws(SystemError) in try NetdevSpec(parsing: value) })
            case "nic":
                if value == "help" { return .print(NetdevSpec.helpText) }
                if value.hasSuffix("model=help") { return .print(HelpText.nicModels()) }
                let index = config.nicShorthands.count
                if let (nic, netdev) = try wrap(flag, { () throws(SystemError) in try NICSpec.parseShorthand(value, index: index) }) {
                    config.nicShorthands.append(nic)
                    config.netdevs.append(netdev)
                }
            case "object":
                let object = try wrap(flag) { () throws(SystemError) in try ObjectSpec(parsing: value) }
                if config.objects.contains(where: { $0.id == object.id }) {
                    throw CLIError(option: flag, "attempt to add duplicate property '\(object.id)' to object (type 'container')")
                }
                config.objects.append(object)
            case "d":
                if value == "help" { return .print(HelpText.logItems()) }
                config.debugItems = try debugItems(value, option: flag)
            case "D":
                config.logFile = value
            case "perfmap":
                config.perfMap = true
            case "add-fd":
                let opts = try wrap(flag) { () throws(SystemError) in try OptionGroup.addFD.parse(value, option: flag) }
                guard let fd = try wrap(flag, { () throws(SystemError) in try opts.int("fd", in: 0...Int(Int32.max)) }) else {
                    throw CLIError(option: flag, "fd option is required")
                }
                guard let set = try wrap(flag, { () throws(SystemError) in try opts.int("set", in: 0...Int(Int32.max)) }) else {
                    throw CLIError(option: flag, "set option is required")
                }
                config.fdSets.append(FdSets.Entry(set: set, fd: Int32(fd), opaque: opts.string("opaque")))
            case "pidfile":
                config.pidFile = value
            case "daemonize":
                config.daemonize = true
            case "sandbox":
                config.sandbox = try wrap(flag) { () throws(SystemError) in try SandboxPolicy.parse(value, option: flag) }
            case "runas":
                config.runAs = try wrap(flag) { () throws(SystemError) in try RunAs(parsing: value) }
            case "chroot":
                config.chroot = value
            default:
                // Every option in the table is handled above.
                throw CLIError(option: flag, "is not handled by this build")
            }
        }

        if snapshotAll {
            for i in config.drives.indices { config.drives[i].snapshot = true }
        }
        try resolveBlockdevs(blockdevNodes, into: &config)
        config.machine = try machine(named: machineName)
        if noACPI && config.machine.name == "microvm" {
            // libvirt writes -no-acpi for an x86 domain without <features><acpi/></features>.
            throw CLIError(option: "-no-acpi", "machine 'microvm' describes its devices to the guest with ACPI only; keep ACPI (libvirt: <features><acpi/></features>)")
        }
        try isaSerialPorts(&config)
        if let accel = machineOpts?.string("accel") {
            // QEMU takes a list, "kvm:tcg": the first accelerator this binary has.
            let names = accel.split(separator: ":").map(String.init)
            let available = names.first { name in target.accelerators.contains { $0.name == name && $0.available } }
            config.accelerator = try checkAccelerator(available ?? names.last ?? accel, option: "-machine accel")
        }
        if let dump = machineOpts?.string("dumpdtb") {
            guard config.machine.name == "virt" else {
                throw CLIError(option: "-machine", "dumpdtb: machine '\(config.machine.name)' has no device tree")
            }
            config.dumpDTB = dump
        }
        config.ramSize = try memory.map { (m) throws(CLIError) in try ramSize(m) } ?? config.machine.defaultRAM
        try resolveRAMBackend(&config, machineOpts: machineOpts, sizeGiven: memory != nil)
        if let smp { config.cpus = try cpuCount(smp, machine: config.machine) }
        try checkBoot(&config)
        try checkDevices(config)
        try applySerialDefaults(&config)
        return .run(config)
    }

    /// Runs `body`, turning its `SystemError` into a one-line `CLIError` for `option`. The
    /// message already names the option when it came from QemuOpts/ChardevSpec.
    private func wrap<T>(_ option: String, _ body: () throws(SystemError) -> T) throws(CLIError) -> T {
        do { return try body() } catch {
            let text = error.message.hasPrefix(option + ":") ? String(error.message.dropFirst(option.count + 1)).trimmingLeadingSpace : error.message
            throw CLIError(option: option, text)
        }
    }

    private func machine(named name: String) throws(CLIError) -> MachineInfo {
        let available = target.machines.filter(\.available).map(\.name).joined(separator: ", ")
        guard let info = target.machines.first(where: { $0.name == name }) else {
            throw CLIError(option: "-machine", "unsupported machine type '\(name)'; available: \(available) (see -machine help)")
        }
        guard info.available else {
            throw CLIError(option: "-machine", "machine '\(name)' (\(info.description)) is not available in this build yet; available: \(available)")
        }
        return info
    }

    /// `-accel tcg`'s properties: `thread=multi` (each hart on its own host thread, the only
    /// mode swemu has), `jit=on|off` (the JIT, the default on x86-64 hosts; off = the interpreter) and
    /// `tb-size=MiB` (the JIT's code buffer per hart, as QEMU's translation-block cache size).
    private func accelOptions(_ opts: QemuOpts, into config: inout SystemConfiguration, option: String) throws(CLIError) {
        let isTCG = opts.string("accel") == "tcg"
        for key in ["jit", "tb-size"] where opts.string(key) != nil && !isTCG {
            throw CLIError(option: option, "'\(key)' is a property of the tcg accelerator")
        }
        if let thread = opts.string("thread"), thread != "multi" {
            throw CLIError(option: option, thread == "single"
                ? "thread=single is not supported: each hart runs on its own host thread; accepted: thread=multi"
                : "thread takes single or multi, not '\(thread)'")
        }
        config.jit = try wrap(option) { () throws(SystemError) in try opts.bool("jit", default: JITEngine.hostSupported) }
        if config.jit && !JITEngine.hostSupported {
            throw CLIError(option: option, "jit=on needs an x86-64 host (the JIT emits x86-64 code); use jit=off")
        }
        config.tbSizeMiB = try wrap(option) { () throws(SystemError) in try opts.int("tb-size", in: 1...2047) }
        if config.tbSizeMiB != nil && !config.jit {
            throw CLIError(option: option, "tb-size sizes the JIT's code buffer; it needs jit=on")
        }
    }

    private func checkAccelerator(_ name: String, option: String) throws(CLIError) -> String {
        let accels = target.accelerators
        let accepted = accels.filter(\.available).map(\.name)
        let acceptedText = accepted.isEmpty ? "none in this build yet" : accepted.joined(separator: ", ")
        guard let accel = accels.first(where: { $0.name == name }) else {
            throw CLIError(option: option, "invalid accelerator '\(name)'; accepted: \(acceptedText)")
        }
        guard accel.available else {
            throw CLIError(option: option, "accelerator '\(name)' is not available: \(accel.note); accepted: \(acceptedText)")
        }
        return name
    }

    /// Which boot options the chosen machine takes.
    private func checkBoot(_ config: inout SystemConfiguration) throws(CLIError) {
        let bootOptions: [(String, String?)] = [("-kernel", config.kernel), ("-bios", config.bios), ("-initrd", config.initrd),
                                                ("-append", config.append), ("-dtb", config.dtb)]
        switch config.machine.name {
        case "none":
            if let given = bootOptions.first(where: { $0.1 != nil }) {
                throw CLIError(option: given.0, "machine 'none' has no CPU to boot; use -M virt")
            }
        case "spike":
            guard config.kernel != nil else { throw CLIError(option: nil, "machine 'spike' needs a program: -kernel PROGRAM.elf (with -bios none)") }
            guard config.bios == "none" else {
                throw CLIError(option: "-bios", "machine 'spike' runs bare-metal programs only in this build; accepted: -bios none")
            }
            for (option, value) in bootOptions.dropFirst(2) where value != nil {
                throw CLIError(option: option, "machine 'spike' takes a bare-metal ELF only in this build")
            }
        case "microvm":
            // No firmware: swemu loads the kernel itself (bzImage, vmlinux through PVH, an ELF64).
            guard config.kernel != nil else {
                throw CLIError(option: nil, "machine 'microvm' has no firmware and needs -kernel (a bzImage, a vmlinux or an x86-64 ELF program)")
            }
            if let bios = config.bios, bios != "none" && bios != "default" {
                throw CLIError(option: "-bios", "machine 'microvm' boots without firmware; accepted: -bios none")
            }
            if config.dtb != nil { throw CLIError(option: "-dtb", "machine 'microvm' describes itself with ACPI, not a device tree") }
        default:
            if config.bios == "none" && config.kernel == nil && config.dumpDTB == nil {
                throw CLIError(option: nil, "machine '\(config.machine.name)' has no firmware (-bios none) and nothing to boot: add -kernel")
            }
            if (config.initrd != nil || config.append != nil) && config.kernel == nil {
                throw CLIError(option: config.initrd != nil ? "-initrd" : "-append", "needs -kernel")
            }
        }
    }

    /// `-blockdev` chains a device names with `drive=` become drives (if=none, the top node's
    /// name as id); a device's `write-cache=off` makes its drive's cache writethrough. A node
    /// no device reaches is refused: swemu cannot attach one later.
    private func resolveBlockdevs(_ nodes: [BlockdevNode], into config: inout SystemConfiguration) throws(CLIError) {
        var used = Set<String>()
        for device in config.devices {
            guard case .virtioBlock(let name) = device.driver else { continue }
            if let index = config.drives.firstIndex(where: { $0.id == name }) {
                if device.writeCache == false {
                    config.drives[index].cache = config.drives[index].cache.direct ? .directsync : config.drives[index].cache == .unsafe ? .unsafe : .writethrough
                }
                continue
            }
            guard nodes.contains(where: { $0.nodeName == name }) else { continue }  // checkDevices names it
            config.drives.append(try wrap("-blockdev") { () throws(SystemError) in
                try BlockdevNode.drive(top: name, nodes: nodes, writeCache: device.writeCache)
            })
            var next: String? = name
            while let current = next, let node = nodes.first(where: { $0.nodeName == current }), used.insert(current).inserted {
                if case .node(let backing) = node.backing { used.insert(backing) }
                next = node.child
            }
        }
        // A backing node's own file node is used with it.
        for node in nodes where used.contains(node.nodeName) { if let child = node.child { used.insert(child) } }
        if let unused = nodes.first(where: { !used.contains($0.nodeName) }) {
            throw CLIError(option: "-blockdev", "node '\(unused.nodeName)' is not used by any device (-device virtio-blk-device,drive=\(unused.nodeName)); swemu cannot attach it later")
        }
    }

    /// `-device isa-serial,chardev=ID[,index=0]` (libvirt's x86 serial port): the microvm's
    /// UART on that chardev, as `-serial chardev:ID` would put it.
    private func isaSerialPorts(_ config: inout SystemConfiguration) throws(CLIError) {
        let ports = config.devices.compactMap { if case .isaSerial(let id, let index) = $0.driver { (id, index) } else { nil } }
        guard let port = ports.first else { return }
        guard config.machine.name == "microvm" else {
            throw CLIError(option: "-device", "isa-serial: machine '\(config.machine.name)' has no ISA bus; its serial port is -serial")
        }
        guard ports.count == 1, port.1 == 0 else {
            throw CLIError(option: "-device", "isa-serial: the microvm has one serial port (index=0)")
        }
        guard config.serials.isEmpty else {
            throw CLIError(option: "-device", "isa-serial: the serial port is already given by -serial")
        }
        config.serials = [.chardev(id: port.0)]
    }

    /// Drives and devices must refer to each other and to the machine consistently.
    private func checkDevices(_ config: SystemConfiguration) throws(CLIError) {
        if config.machine.name != "virt" && config.machine.name != "microvm" {
            if !config.drives.isEmpty { throw CLIError(option: "-drive", "machine '\(config.machine.name)' has no disk interfaces; use -M virt") }
            if !config.devices.isEmpty { throw CLIError(option: "-device", "machine '\(config.machine.name)' has no virtio bus; use -M virt") }
        }
        for (i, drive) in config.drives.enumerated() {
            if let id = drive.id, config.drives[..<i].contains(where: { $0.id == id }) {
                throw CLIError(option: "-drive", "duplicate drive id '\(id)'")
            }
        }
        var usedDrives = Set<String>()
        var serialBus = false
        var balloon = false
        for device in config.devices {
            switch device.driver {
            case .virtioBlock(let driveID):
                guard let drive = config.drives.first(where: { $0.id == driveID }) else {
                    throw CLIError(option: "-device", "virtio-blk-device: drive '\(driveID)' is not defined (use -drive if=none,id=\(driveID),file=...)")
                }
                guard drive.interface == .none else {
                    throw CLIError(option: "-device", "virtio-blk-device: drive '\(driveID)' already has if=virtio; give it if=none")
                }
                guard usedDrives.insert(driveID).inserted else {
                    throw CLIError(option: "-device", "drive '\(driveID)' is used by two devices")
                }
            case .virtioSerial:
                serialBus = true
            case .virtconsole(let chardev):
                guard serialBus else {
                    throw CLIError(option: "-device", "virtconsole needs a virtio-serial bus: put -device virtio-serial-device before it")
                }
                guard config.chardevs.contains(where: { $0.id == chardev }) else {
                    throw CLIError(option: "-device", "virtconsole: chardev '\(chardev)' is not defined (define it with -chardev ...,id=\(chardev))")
                }
            case .virtioBalloon:
                // QEMU's virtio_balloon_device_realize: the monitors' balloon is one device.
                guard !balloon else { throw CLIError(option: "-device", "Only one balloon device is supported") }
                balloon = true
            case .virtioRNG, .virtioKeyboard, .virtioNet:
                break
            case .isaSerial:
                break  // became the serial port (isaSerialPorts)
            }
        }
        try checkNetwork(config)
        for drive in config.drives where drive.interface == .none && !usedDrives.contains(drive.id ?? "") {
            throw CLIError(option: "-drive", "drive '\(drive.id ?? "")' has if=none but no -device virtio-blk-device,drive=\(drive.id ?? "") uses it")
        }
    }

    /// Netdev ids are unique; each NIC's netdev exists and serves that NIC only; filters name
    /// a netdev that exists.
    private func checkNetwork(_ config: SystemConfiguration) throws(CLIError) {
        if config.machine.name != "virt" && config.machine.name != "microvm" {
            if let netdev = config.netdevs.first {
                throw CLIError(option: netdev.id.hasPrefix("__org.qemu.") ? "-nic" : "-netdev",
                               "machine '\(config.machine.name)' has no network interfaces; use -M virt")
            }
        }
        // libslirp starts a guestfwd's cmd: itself, per guest connection, where swemu cannot
        // refuse it (see Spawning): under spawn=deny the filter would end the process then.
        if config.sandbox?.spawn == false,
           let netdev = config.netdevs.first(where: { $0.type == "user" && $0.options.strings("guestfwd").contains { $0.contains("-cmd:") } }) {
            throw CLIError(option: "-netdev", "\(netdev.id): guestfwd=...-cmd: starts a program for each connection, which -sandbox spawn=deny forbids")
        }
        var ids = Set<String>()
        for netdev in config.netdevs where !ids.insert(netdev.id).inserted {
            throw CLIError(option: "-netdev", "Duplicate ID '\(netdev.id)' for netdev")
        }
        var used = Set<String>()
        for nic in config.nics {
            guard let netdev = nic.netdev else { continue }
            guard ids.contains(netdev) else {
                throw CLIError(option: "-device", "virtio-net-device: netdev '\(netdev)' is not defined (define it with -netdev TYPE,id=\(netdev))")
            }
            guard used.insert(netdev).inserted else {
                throw CLIError(option: "-device", "virtio-net-device: netdev '\(netdev)' is already in use by another NIC")
            }
        }
        for filter in config.dumpFilters {
            guard ids.contains(filter.netdev) else {
                throw CLIError(option: "-object", "filter-dump: netdev '\(filter.netdev)' is not defined")
            }
        }
    }

    /// QEMU's defaults: with -nographic (and here also without any display option, since swemu
    /// has no graphical display) serial0 is `mon:stdio`; with `-display none` it is null.
    private func applySerialDefaults(_ config: inout SystemConfiguration) throws(CLIError) {
        for serial in config.serials {
            if case .chardev(let id) = serial, !config.chardevs.contains(where: { $0.id == id }) {
                throw CLIError(option: "-serial", "chardev '\(id)' is not defined (define it with -chardev ...,id=\(id))")
            }
        }
        if config.gdb != nil && config.machine.name == "none" {
            throw CLIError(option: "-gdb", "machine 'none' has no CPU to debug; use \(target == .riscv64 ? "-M virt or -M spike" : "-M microvm -accel kvm")")
        }
        for monitor in config.monitors {
            if case .chardev(let id) = monitor.target, !config.chardevs.contains(where: { $0.id == id }) {
                throw CLIError(option: monitor.mode == .control ? "-qmp" : "-monitor",
                               "chardev '\(id)' is not defined (define it with -chardev ...,id=\(id))")
            }
        }
        if config.daemonize {
            // QEMU's words: a daemon has no terminal to talk to.
            // ... unless nothing would go to stdio by default (QEMU's rule: -nodefaults, or
            // the serial port and a monitor placed elsewhere).
            let defaultSerial = !config.noDefaults && config.serials.isEmpty
            let defaultMonitor = !config.noDefaults && config.monitors.isEmpty && !config.noDefaultMonitor
            if config.nographic && (defaultSerial || defaultMonitor) {
                throw CLIError(option: nil, "-nographic cannot be used with -daemonize")
            }
            let stdio = config.chardevs.contains { if case .stdio = $0.backend { true } else { false } }
                || (config.serials + config.monitors.map(\.target)).contains { target in
                    if case .new(let spec, _) = target, case .stdio = spec.backend { true } else { false }
                }
            if stdio { throw CLIError(option: nil, "cannot use stdio with -daemonize") }
        }
        if config.serials.isEmpty {
            let text = config.noDefaults || ((config.displayNone || config.daemonize) && !config.nographic) ? "null" : "mon:stdio"
            config.serials = [try wrap("-serial") { () throws(SystemError) in try ChardevSpec.parse(shortForm: text, option: "-serial") }]
        }
    }

    /// `-gdb DEV`: a chardev short form (`tcp::1234`, `unix:PATH`, `chardev:ID`, `none`).
    /// Sockets listen without waiting for the debugger, as QEMU makes them (gdbserver_start
    /// adds server=on,wait=off to tcp:); swemu does the same for unix:.
    private func gdbDevice(_ text: String, option: String) throws(CLIError) -> ChardevSpec.Target? {
        var device = text
        if (text.hasPrefix("tcp:") || text.hasPrefix("unix:")) && !text.contains(",server") {
            device += ",server=on,wait=off"
        }
        let target = try wrap(option) { () throws(SystemError) in try ChardevSpec.parse(shortForm: device, option: option) }
        if case .none = target { return nil }
        return target
    }

    /// `-audiodev none,id=ID` or its JSON form (`{"id":"audio1","driver":"none"}`, what libvirt
    /// passes): the boards have no sound device, so the "no audio" backend is the only one.
    private func audiodev(_ value: String, option: String) throws(CLIError) {
        let opts = try wrap(option) { () throws(SystemError) in
            try QemuOpts.parse(jsonOrKeyval: value, impliedKey: "driver", option: option).validate(accepted: ["driver", "id"])
        }
        guard opts.string("id") != nil else { throw CLIError(option: option, "Parameter 'id' is missing") }
        guard opts.string("driver") == "none" else {
            throw CLIError(option: option, "audio driver '\(opts.string("driver") ?? "")' is not available: the machines have no sound device (accepted: none)")
        }
    }

    /// `-machine memory-backend=ID,mem-merge=,dump-guest-core=,usb=`: the RAM's backend object
    /// (QEMU's qemu_resolve_machine_memdev: its size is the RAM size, and `-m`, if given, must
    /// agree) and the machine's defaults for the backend's merge= and dump=.
    private func resolveRAMBackend(_ config: inout SystemConfiguration, machineOpts: QemuOpts?, sizeGiven: Bool) throws(CLIError) {
        let opts = machineOpts ?? (try? QemuOpts(option: "-machine", entries: []))
        let merge = try wrap("-machine") { () throws(SystemError) in try opts?.bool("mem-merge", default: true) ?? true }
        let dump = try wrap("-machine") { () throws(SystemError) in try opts?.bool("dump-guest-core", default: true) ?? true }
        if try wrap("-machine", { () throws(SystemError) in try opts?.bool("usb", default: false) ?? false }) {
            throw CLIError(option: "-machine", "usb=on is not supported: machine '\(config.machine.name)' has no USB controller (accepted: usb=off)")
        }
        let backends = config.objects.compactMap { if case .memoryBackend(let m) = $0 { m } else { nil } }
        guard let id = opts?.string("memory-backend") else {
            config.ramBackend.merge = merge
            config.ramBackend.dump = dump
            if let unused = backends.first {
                throw CLIError(option: "-object", "memory backend '\(unused.id)' is not used: -machine memory-backend=\(unused.id) makes it the machine's RAM (swemu has no NUMA nodes or memory devices to give it to)")
            }
            return
        }
        guard config.machine.ramID != nil, config.machine.name != "none" else {
            throw CLIError(option: "-machine", "memory-backend: machine '\(config.machine.name)' has no RAM")
        }
        guard let backend = backends.first(where: { $0.id == id }) else {
            let what = config.objects.contains { $0.id == id } ? "is not a memory backend" : "not found"
            throw CLIError(option: "-machine", "Memory backend '\(id)' \(what) (define it with -object memory-backend-ram,id=\(id),size=...)")
        }
        if let unused = backends.first(where: { $0.id != id }) {
            throw CLIError(option: "-object", "memory backend '\(unused.id)' is not used: the machine's RAM is '\(id)' (swemu has no NUMA nodes or memory devices to give it to)")
        }
        if sizeGiven && backend.size != config.ramSize {
            throw CLIError(option: "-m", "Size specified by -m option must match size of explicitly specified 'memory-backend' property")
        }
        config.ramSize = backend.size
        config.ramBackend = backend.backend
        config.ramBackend.merge = backend.merge ?? merge
        config.ramBackend.dump = backend.dump ?? dump
    }

    /// `-m [size=]megs[,slots=n,maxmem=size]`; a plain number is MiB.
    private func ramSize(_ text: String) throws(CLIError) -> UInt64 {
        let opts = try wrap("-m") { () throws(SystemError) in
            try OptionGroup.memory.parse(text, option: "-m")
        }
        var sizeText = opts.string("size") ?? ""
        if let last = sizeText.last, last.isNumber { sizeText += "M" }
        guard let size = QemuOpts.parseSize(sizeText), size > 0 else {
            throw CLIError(option: "-m", "invalid RAM size '\(text)'; accepted: a number of MiB or a size with a suffix, e.g. 512, 512M, 2G")
        }
        let limit: UInt64 = 1 << 40
        guard size <= limit else {
            throw CLIError(option: "-m", "RAM size \(formatSize(size)) is too large; at most \(formatSize(limit))")
        }
        // QEMU rounds RAM up to its page granularity; we keep it in whole 4 KiB pages.
        return (size + 4095) & ~4095
    }

    /// `-smp [[cpus=]n][,maxcpus=][,sockets=][,dies=][,clusters=][,cores=][,threads=]`,
    /// following QEMU's rules (hw/core/machine-smp.c): missing topology values are derived,
    /// preferring sockets, and the product must equal maxcpus.
    private func cpuCount(_ text: String, machine: MachineInfo) throws(CLIError) -> Int {
        let opts = try wrap("-smp") { () throws(SystemError) in
            try OptionGroup.smp.parse(text, option: "-smp")
        }
        var values: [String: Int] = [:]
        for key in OptionGroup.smp.keys.map(\.name) {
            if let n = try wrap("-smp", { () throws(SystemError) in try opts.int(key, in: 1...4096) }) { values[key] = n }
        }
        let dies = values["dies"] ?? 1
        let clusters = values["clusters"] ?? 1
        let threads = values["threads"] ?? 1
        let wanted = values["maxcpus"] ?? values["cpus"] ?? 1
        let sockets: Int
        let cores: Int
        switch (values["sockets"], values["cores"]) {
        case let (s?, c?): (sockets, cores) = (s, c)
        case let (s?, nil): (sockets, cores) = (s, max(1, wanted / (s * dies * clusters * threads)))
        case let (nil, c?): (sockets, cores) = (max(1, wanted / (dies * clusters * c * threads)), c)
        case (nil, nil): (sockets, cores) = (max(1, wanted / (dies * clusters * threads)), 1)
        }
        let product = sockets * dies * clusters * cores * threads
        let maxCPUs = values["maxcpus"] ?? values["cpus"] ?? product
        let cpus = values["cpus"] ?? maxCPUs
        guard product == maxCPUs else {
            throw CLIError(option: "-smp", "Invalid CPU topology: product of the hierarchy must match maxcpus: sockets (\(sockets)) * dies (\(dies)) * clusters (\(clusters)) * cores (\(cores)) * threads (\(threads)) != maxcpus (\(maxCPUs))")
        }
        guard cpus <= maxCPUs else {
            throw CLIError(option: "-smp", "maxcpus (\(maxCPUs)) must be equal to or greater than cpus (\(cpus))")
        }
        guard maxCPUs <= machine.maxCPUs else {
            throw CLIError(option: "-smp", "\(maxCPUs) CPUs requested but machine '\(machine.name)' supports at most \(machine.maxCPUs)")
        }
        return cpus
    }

    private func debugItems(_ text: String, option: String) throws(CLIError) -> DebugLog.Category {
        var categories: DebugLog.Category = []
        for item in text.split(separator: ",", omittingEmptySubsequences: false) {
            guard let known = DebugLog.items.first(where: { $0.name == item }) else {
                let names = DebugLog.items.map(\.name).joined(separator: ", ")
                throw CLIError(option: option, "unknown log item '\(item)'; accepted: \(names) (see -d help)")
            }
            categories.insert(known.category)
        }
        return categories
    }
}

extension String {
    var trimmingLeadingSpace: String { String(drop { $0 == " " }) }
}
