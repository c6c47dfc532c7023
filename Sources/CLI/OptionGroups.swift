import Chardev
import QMP
import SystemSupport

/// The keys of each `key=value,...` option, with QEMU's types: the command-line parser checks
/// options against these and QMP `query-command-line-options` reports them (QEMU's
/// CommandLineOptionInfo, under its group names: `-smp` is "smp-opts", `-boot` "boot-opts",
/// `-m` "memory"), so a management tool learns what this binary takes, and only that.
struct OptionGroup: Sendable {
    typealias ParameterType = MonitorCommandLineOption.ParameterType
    /// The QemuOpts group name ("smp-opts").
    let group: String
    /// The key a leading bare word stands for (`-machine virt` is `type=virt`), if any.
    let impliedKey: String?
    let keys: [(name: String, type: ParameterType)]

    /// Every key but the implied one, for `QemuOpts.validate(accepted:)`.
    var accepted: [String] { keys.map(\.name).filter { $0 != impliedKey } }
    /// The boolean keys (bare `flag` and `noflag` forms).
    var booleans: Set<String> { Set(keys.filter { $0.type == .boolean }.map(\.name)) }

    var monitorOption: MonitorCommandLineOption {
        MonitorCommandLineOption(option: group, parameters: keys.map { MonitorCommandLineOption.Parameter(name: $0.name, type: $0.type) })
    }

    static let machine = OptionGroup(group: "machine", impliedKey: "type", keys: [
        ("type", .string), ("accel", .string), ("dumpdtb", .string), ("memory-backend", .string),
        ("dump-guest-core", .boolean), ("mem-merge", .boolean), ("usb", .boolean),
    ])
    static let name = OptionGroup(group: "name", impliedKey: "guest", keys: [("guest", .string), ("process", .string), ("debug-threads", .boolean)])
    static let action = OptionGroup(group: "action", impliedKey: nil, keys: [("reboot", .string), ("shutdown", .string)])
    static let mon = OptionGroup(group: "mon", impliedKey: "chardev", keys: [("chardev", .string), ("mode", .string), ("pretty", .boolean), ("id", .string)])
    static let overcommit = OptionGroup(group: "overcommit", impliedKey: nil, keys: [("mem-lock", .boolean), ("cpu-pm", .boolean)])
    static let boot = OptionGroup(group: "boot-opts", impliedKey: "order", keys: [("order", .string), ("strict", .boolean)])
    static let rtc = OptionGroup(group: "rtc", impliedKey: nil, keys: [("base", .string), ("clock", .string), ("driftfix", .string)])
    static let memory = OptionGroup(group: "memory", impliedKey: "size", keys: [("size", .size)])
    static let smp = OptionGroup(group: "smp-opts", impliedKey: "cpus", keys: [
        ("cpus", .number), ("maxcpus", .number), ("sockets", .number), ("dies", .number), ("clusters", .number),
        ("cores", .number), ("threads", .number),
    ])
    static let addFD = OptionGroup(group: "add-fd", impliedKey: nil, keys: [("fd", .number), ("set", .number), ("opaque", .string)])
    static let msg = OptionGroup(group: "msg", impliedKey: nil, keys: [("timestamp", .boolean), ("guest-name", .boolean)])
    static let sandbox = OptionGroup(group: "sandbox", impliedKey: "enable", keys: [
        ("enable", .boolean), ("obsolete", .string), ("elevateprivileges", .string), ("spawn", .string), ("resourcecontrol", .string),
    ])
    static let drive = OptionGroup(group: "drive", impliedKey: nil, keys: [
        ("file", .string), ("format", .string), ("if", .string), ("id", .string), ("readonly", .boolean), ("media", .string),
        ("cache", .string), ("snapshot", .boolean), ("serial", .string), ("file.locking", .string), ("force-share", .boolean),
    ])
    static let chardev = OptionGroup(group: "chardev", impliedKey: "backend",
                                     keys: [("backend", .string)] + ChardevSpec.keys.map { ($0.name, $0.isBoolean ? .boolean : $0.isNumber ? .number : .string) })

    /// What `query-command-line-options` lists: these, and the options QEMU lists without
    /// parameters because each type checks its own (`-device`, `-netdev`, `-object`, ...).
    static let all: [OptionGroup] = [machine, name, action, mon, overcommit, boot, rtc, memory, smp, msg, sandbox, addFD, drive, chardev]
    static var monitorOptions: [MonitorCommandLineOption] {
        all.map(\.monitorOption) + ["accel", "device", "netdev", "nic", "object"].map { MonitorCommandLineOption(option: $0, parameters: []) }
    }
}

extension OptionGroup {
    /// `text`, the argument of `option`, read as this group's `key=value,...` and checked
    /// against its keys.
    func parse(_ text: String, option: String) throws(SystemError) -> QemuOpts {
        try QemuOpts(parsing: text, impliedKey: impliedKey, option: option).validate(accepted: accepted, booleans: booleans)
    }
}
