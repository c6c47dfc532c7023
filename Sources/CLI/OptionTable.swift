/// QEMU's command-line options, the common subset swemu accepts, in QEMU's help layout
/// (`qemu-options.hx`). Options are written `-name` or `--name`; an option that takes an
/// argument takes the next word (`-m 512M`), never `-m=512M`, as in QEMU.
struct OptionSpec: Sendable {
    enum Section: String, CaseIterable, Sendable {
        case standard = "Standard options"
        case block = "Block device options"
        case chardev = "Character device options"
        case display = "Display options"
        case network = "Network options"
        case boot = "Linux/Multiboot boot specific"
        case debug = "Debug/Expert options"
    }

    /// Every spelling, the first being the canonical one used in messages.
    let names: [String]
    /// The argument's shape for `--help`; nil for a flag.
    let argument: String?
    let help: String
    let section: Section

    var takesArgument: Bool { argument != nil }
    var name: String { names[0] }
}

enum OptionTable {
    static let all: [OptionSpec] = [
        OptionSpec(names: ["h", "help"], argument: nil, help: "display this help and exit", section: .standard),
        OptionSpec(names: ["version"], argument: nil, help: "display version information and exit", section: .standard),
        OptionSpec(names: ["machine", "M"], argument: "[type=]name[,prop[=value][,...]]",
                   help: "selects emulated machine ('-machine help' for list; -M is short for -machine)\n"
                       + "property accel=accel1[:accel2[:...]] selects accelerator\n"
                       + "dumpdtb=file dump current device tree blob to a file", section: .standard),
        OptionSpec(names: ["cpu"], argument: "cpu", help: "select CPU ('-cpu help' for list)", section: .standard),
        OptionSpec(names: ["accel"], argument: "[accel=]accelerator[,thread=multi][,jit=on|off][,tb-size=MiB]",
                   help: "select accelerator (kvm, tcg; use 'help' for a list)\n"
                       + "jit=on runs RISC-V harts in the JIT (the default on x86-64 hosts), jit=off in the interpreter\n"
                       + "tb-size=n sets the JIT's code buffer per hart in MiB (default 128)", section: .standard),
        OptionSpec(names: ["smp"], argument: "[[cpus=]n][,maxcpus=maxcpus][,sockets=sockets][,dies=dies][,clusters=clusters][,cores=cores][,threads=threads]",
                   help: "set the number of initial CPUs to 'n' and the CPU topology", section: .standard),
        OptionSpec(names: ["m"], argument: "[size=]megs[,slots=n,maxmem=size]",
                   help: "configure guest RAM; size: initial amount of guest memory (suffixes K, M, G, T; default M)",
                   section: .standard),
        OptionSpec(names: ["name"], argument: "string1[,debug-threads=on|off][,process=name]",
                   help: "set the name of the guest (process= names the process)", section: .standard),
        OptionSpec(names: ["msg"], argument: "[timestamp=on|off][,guest-name=on|off]",
                   help: "control error message format\ntimestamp=on prefixes error messages with a time stamp\n"
                       + "guest-name=on prefixes error messages with the guest name (-name)", section: .standard),
        OptionSpec(names: ["uuid"], argument: "%08x-%04x-%04x-%04x-%012x", help: "specify machine UUID (query-uuid reports it)",
                   section: .standard),
        OptionSpec(names: ["nodefaults"], argument: nil, help: "don't create default devices (no serial or monitor on stdio)",
                   section: .standard),
        OptionSpec(names: ["no-user-config"], argument: nil,
                   help: "do not load default user-provided config files at startup (swemu reads none)", section: .standard),
        OptionSpec(names: ["overcommit"], argument: "[mem-lock=on|off][,cpu-pm=off]",
                   help: "mem-lock=on locks the emulator's memory, guest RAM included, into host RAM (mlockall)", section: .standard),
        OptionSpec(names: ["enable-kvm"], argument: nil, help: "enable KVM full virtualization support (-accel kvm)",
                   section: .standard),
        OptionSpec(names: ["no-acpi"], argument: nil,
                   help: "no ACPI tables: the virt board has none; the microvm needs them (refused there)", section: .standard),
        OptionSpec(names: ["boot"], argument: "[strict=on|off]",
                   help: "the boards boot the -bios/-kernel images directly: only strict= is taken", section: .standard),
        OptionSpec(names: ["rtc"], argument: "[base=utc][,clock=host][,driftfix=none]",
                   help: "the real-time clock runs on the host's UTC (the only setting)", section: .standard),
        OptionSpec(names: ["audiodev"], argument: "none,id=name (or JSON)",
                   help: "an audio backend; the boards have no sound device, so only 'none' is taken", section: .standard),
        OptionSpec(names: ["device"], argument: "driver[,prop[=value][,...]]",
                   help: "add device 'driver' ('-device help' for a list)", section: .standard),

        OptionSpec(names: ["drive"], argument: "[file=file][,if=type][,format=f][,id=name][,readonly=on|off][,cache=mode][,snapshot=on|off]",
                   help: "use 'file' as a drive image", section: .block),
        OptionSpec(names: ["blockdev"], argument: "driver=file|raw|qcow2,node-name=N[,file=N][,filename=F][,read-only=on|off][,cache.direct=on|off]... (or JSON)",
                   help: "configure a block backend node (a device takes its node-name as drive=)", section: .block),
        OptionSpec(names: ["snapshot"], argument: nil,
                   help: "write to temporary files instead of disk image files", section: .block),

        OptionSpec(names: ["chardev"], argument: "backend,id=id[,prop=value...]",
                   help: "backends: null, stdio, pty, socket (path= or host=,port=), file (path=); mux=on|off",
                   section: .chardev),

        OptionSpec(names: ["display"], argument: "none", help: "select display backend type (swemu has no graphical display)",
                   section: .display),
        OptionSpec(names: ["nographic"], argument: nil,
                   help: "disable graphical output and redirect serial I/Os to console", section: .display),

        OptionSpec(names: ["netdev"], argument: "user|tap|stream|dgram|socket,id=str[,...]",
                   help: "configure a network backend (user: hostfwd=, net=, restrict=; tap: ifname= or fd=; stream/dgram: addr./local./remote.)",
                   section: .network),
        OptionSpec(names: ["nic"], argument: "user|tap|stream|dgram|socket|none[,mac=macaddr][,model=virtio-net-device][,...]",
                   help: "a NIC and its backend in one option (shorthand for -netdev plus -device)", section: .network),
        OptionSpec(names: ["object"], argument: "filter-dump,id=str,netdev=id,file=path[,maxlen=len]",
                   help: "dump the netdev's traffic to a pcap file", section: .network),

        OptionSpec(names: ["kernel"], argument: "bzImage", help: "use 'bzImage' as kernel image", section: .boot),
        OptionSpec(names: ["append"], argument: "cmdline", help: "use 'cmdline' as kernel command line", section: .boot),
        OptionSpec(names: ["initrd"], argument: "file", help: "use 'file' as initial ram disk", section: .boot),
        OptionSpec(names: ["dtb"], argument: "file", help: "use 'file' as device tree image", section: .boot),

        OptionSpec(names: ["serial"], argument: "dev", help: "redirect the serial port to char device 'dev'", section: .debug),
        OptionSpec(names: ["monitor"], argument: "dev", help: "redirect the monitor to char device 'dev'", section: .debug),
        OptionSpec(names: ["qmp"], argument: "dev", help: "like -monitor but opens in 'control' mode", section: .debug),
        OptionSpec(names: ["mon"], argument: "[chardev=]name[,mode=readline|control]",
                   help: "put a monitor on the chardev 'name'", section: .debug),
        OptionSpec(names: ["S"], argument: nil, help: "freeze CPU at startup (use 'c' to start execution)", section: .debug),
        OptionSpec(names: ["gdb"], argument: "dev", help: "accept gdb connection on 'dev'", section: .debug),
        OptionSpec(names: ["s"], argument: nil, help: "shorthand for -gdb tcp::1234", section: .debug),
        OptionSpec(names: ["d"], argument: "item1,...", help: "enable logging of specified items (use '-d help' for a list)",
                   section: .debug),
        OptionSpec(names: ["D"], argument: "logfile", help: "output log to logfile (default stderr)", section: .debug),
        OptionSpec(names: ["perfmap"], argument: nil, help: "generate a /tmp/perf-${pid}.map file for perf", section: .debug),
        OptionSpec(names: ["add-fd"], argument: "fd=fd,set=set[,opaque=opaque]",
                   help: "Add 'fd' to fd 'set'; a file opened as /dev/fdset/SET is a duplicate of it", section: .standard),
        OptionSpec(names: ["pidfile"], argument: "file", help: "write PID to 'file'", section: .debug),
        OptionSpec(names: ["daemonize"], argument: nil,
                   help: "daemonize QEMU after initializing (the parent exits once the machine is built)", section: .debug),
        OptionSpec(names: ["sandbox"], argument: "on|off[,obsolete=allow|deny][,elevateprivileges=allow|deny|children][,spawn=allow|deny][,resourcecontrol=allow|deny]",
                   help: "Enable seccomp mode 2 system call filter (default 'off'); swemu's is an allowlist: what it calls once running", section: .debug),
        OptionSpec(names: ["runas"], argument: "user|uid:gid", help: "change to user id user just before starting the VM", section: .debug),
        OptionSpec(names: ["chroot"], argument: "dir", help: "chroot to dir just before starting the VM", section: .debug),
        OptionSpec(names: ["bios"], argument: "file", help: "set the filename for the BIOS", section: .debug),
        OptionSpec(names: ["no-reboot"], argument: nil, help: "exit instead of rebooting", section: .debug),
        OptionSpec(names: ["no-shutdown"], argument: nil, help: "stop before shutdown", section: .debug),
        OptionSpec(names: ["action"], argument: "reboot=reset|shutdown,shutdown=poweroff|pause",
                   help: "action when guest reboots or powers off (-no-reboot: reboot=shutdown; -no-shutdown: shutdown=pause)",
                   section: .debug),
        OptionSpec(names: ["loadvm"], argument: "tag|id", help: "start right away with a saved state (loadvm in monitor)",
                   section: .debug),
        OptionSpec(names: ["incoming"], argument: "uri",
                   help: "wait on uri for incoming migration (tcp:[host]:port, unix:socketpath, file:path, exec:command, defer)",
                   section: .debug),
    ]

    private static let byName: [String: OptionSpec] = {
        var map: [String: OptionSpec] = [:]
        for spec in all { for name in spec.names { map[name] = spec } }
        return map
    }()

    static func lookup(_ name: String) -> OptionSpec? { byName[name] }
}

/// One option as written on the command line, in order.
struct ParsedOption: Sendable, Equatable {
    let name: String  // canonical
    let value: String?
}

enum CommandLineScanner {
    /// Splits argv (without the program name) into options. Errors use QEMU's wording.
    static func scan(_ arguments: [String]) throws(CLIError) -> [ParsedOption] {
        var result: [ParsedOption] = []
        var i = 0
        while i < arguments.count {
            let word = arguments[i]
            i += 1
            guard word.hasPrefix("-"), word.count > 1 else {
                throw CLIError(option: nil, "'\(word)': a disk image as a plain argument is not supported; use -drive file=\(word),format=raw,if=virtio")
            }
            // QEMU treats --opt exactly like -opt.
            let name = word.hasPrefix("--") ? String(word.dropFirst(2)) : String(word.dropFirst())
            guard let spec = OptionTable.lookup(name) else {
                throw CLIError(option: word, "invalid option (see --help for the options swemu accepts)")
            }
            var value: String?
            if spec.takesArgument {
                guard i < arguments.count else { throw CLIError(option: word, "requires an argument") }
                value = arguments[i]
                i += 1
            }
            result.append(ParsedOption(name: spec.name, value: value))
        }
        return result
    }
}

/// A command-line mistake: printed as one line `program: -option: message`, exit status 1.
public struct CLIError: Error, Equatable, Sendable {
    public let option: String?
    public let message: String

    init(option: String?, _ message: String) {
        self.option = option
        self.message = message
    }

    func line(program: String) -> String {
        if let option { return "\(program): \(option): \(message)" }
        return "\(program): \(message)"
    }
}
