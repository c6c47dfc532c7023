/// The human monitor (HMP) as a codec with no I/O (DESIGN.md §9.6): keystrokes in, terminal
/// output out, commands carried out through a `MonitorTarget`.
///
/// Line editing is QEMU's readline (util/readline.c), output byte for byte: each keystroke
/// redraws the line the way QEMU does (cursor back with ESC[D, the line, ESC[K), so tools
/// written against QEMU's monitor see what they expect. Keys: printable characters insert;
/// Backspace/DEL delete back; Enter (CR, LF, or CR LF as one) runs the line; C-a/Home and
/// C-e/End move to the ends; C-d/Delete delete under the cursor; C-w deletes a word; arrows
/// move and walk the history (C-p/C-n too); C-l clears the screen. One addition: C-c clears
/// the line (QEMU ignores it). Lines longer than 4095 bytes stop growing, as QEMU's.
///
/// Commands (`help` lists them): `help|? [cmd]`, `info status|version|name|cpus|block|chardev`,
/// `cpu N`, `x`/`xp /fmt addr`, `stop`, `cont|c`, `system_reset`, `system_powerdown`,
/// `q|quit`. `info registers`/`jit`/`mtree`/`qtree` and `x`/`xp` are views only the machine
/// can produce: they are parsed and checked here (for `x`/`xp`, format and address syntax,
/// with QEMU's messages) and asked of `MonitorTarget.machineView` as a `MachineView`. Other
/// lines get QEMU's "unknown command: 'foo'".
public struct HumanMonitor: Sendable {
    /// QEMU's UUID for a machine started without `-uuid`.
    static let nullUUID = "00000000-0000-0000-0000-000000000000"
    public static let prompt = "(qemu) "
    /// READLINE_CMD_BUF_SIZE.
    static let maxLineLength = 4095
    /// READLINE_MAX_CMDS.
    static let historySize = 64

    public let target: any MonitorTarget
    public let version: MonitorVersion
    /// The current CPU (`cpu N`; `info cpus` marks it with '*').
    public private(set) var currentCPU: Int
    /// The sticky `x` format and size.
    public var memoryDumpDefaults = MemoryDump.Defaults()

    // readline state
    private var line: [UInt8] = []
    private var cursor = 0
    private var shownLine: [UInt8] = []
    private var shownCursor = 0
    private enum Escape { case none, escape, csi, ss3 }
    private var escape = Escape.none
    private var escapeParameter = 0
    private var history: [[UInt8]] = []
    private var historyEntry: Int?
    private var lastWasCR = false

    public init(target: any MonitorTarget, version: MonitorVersion = .swemu) {
        self.target = target
        self.version = version
        currentCPU = target.cpus.first?.index ?? 0
    }

    /// The banner line alone (QEMU's CHR_EVENT_OPENED text).
    public var banner: String { "\(version.product) monitor - type 'help' for more information\n" }

    /// A client connected: the banner and a fresh prompt (readline_restart + show_prompt).
    public mutating func open() -> MonitorOutput {
        var out = MonitorOutput(bytes: monitorLineEnds(banner))
        out.append(restart())
        return out
    }

    /// Empties the line and shows the prompt (what QEMU does on MUX_IN after the banner).
    public mutating func restart() -> MonitorOutput {
        line = []
        cursor = 0
        escape = .none
        historyEntry = nil
        return MonitorOutput(bytes: showPrompt())
    }

    /// Makes `index` the current CPU, as `cpu N`; false if there is no such CPU.
    @discardableResult
    public mutating func selectCPU(_ index: Int) -> Bool {
        guard target.cpus.contains(where: { $0.index == index }) else { return false }
        currentCPU = index
        return true
    }

    private mutating func showPrompt() -> [UInt8] {
        shownLine = []
        shownCursor = 0
        escape = .none
        return Array(Self.prompt.utf8)
    }

    // MARK: - readline

    /// Keystrokes from the terminal; returns the echo, the output of any commands that
    /// completed, and their prompts.
    public mutating func feed(_ bytes: [UInt8]) -> MonitorOutput {
        var out = MonitorOutput()
        for b in bytes { handle(b, into: &out) }
        return out
    }

    private mutating func handle(_ ch: UInt8, into out: inout MonitorOutput) {
        let wasCR = lastWasCR
        lastWasCR = ch == 13
        switch escape {
        case .none:
            switch ch {
            case 1: cursor = 0
            case 3: line = []; cursor = 0; historyEntry = nil  // C-c (ours)
            case 4: deleteUnderCursor()
            case 5: cursor = line.count
            case 9: break  // completion: not offered
            case 12:
                out.append("\u{1B}[2J\u{1B}[1;1H")
                out.bytes += showPrompt()
            case 10, 13:
                if ch == 10 && wasCR { return }  // CR LF is one Enter
                enter(into: &out)
                return
            case 14: historyDown()
            case 16: historyUp()
            case 23: deleteWord()
            case 27: escape = .escape
            case 8, 127:
                if cursor > 0 {
                    line.remove(at: cursor - 1)
                    cursor -= 1
                }
            case 155:
                escape = .csi
                escapeParameter = 0
            default:
                if ch >= 32 && line.count < Self.maxLineLength {
                    line.insert(ch, at: cursor)
                    cursor += 1
                }
            }
        case .escape:
            if ch == UInt8(ascii: "[") {
                escape = .csi
                escapeParameter = 0
            } else if ch == UInt8(ascii: "O") {
                escape = .ss3
                escapeParameter = 0
            } else {
                escape = .none
            }
        case .csi:
            switch ch {
            case UInt8(ascii: "A"), UInt8(ascii: "F"): historyUp()
            case UInt8(ascii: "B"), UInt8(ascii: "E"): historyDown()
            case UInt8(ascii: "D"): if cursor > 0 { cursor -= 1 }
            case UInt8(ascii: "C"): if cursor < line.count { cursor += 1 }
            case UInt8(ascii: "0")...UInt8(ascii: "9"):
                escapeParameter = min(escapeParameter * 10 + Int(ch - UInt8(ascii: "0")), 1_000_000)
                return
            case UInt8(ascii: "~"):
                switch escapeParameter {
                case 1: cursor = 0
                case 3: deleteUnderCursor()
                case 4: cursor = line.count
                default: break
                }
            default: break
            }
            escape = .none
        case .ss3:
            if ch == UInt8(ascii: "F") { cursor = line.count }
            if ch == UInt8(ascii: "H") { cursor = 0 }
            escape = .none
        }
        update(into: &out)
    }

    /// QEMU's readline_update: redraw what changed since the last call.
    private static let cursorLeft: [UInt8] = [0x1B, UInt8(ascii: "["), UInt8(ascii: "D")]
    private static let cursorRight: [UInt8] = [0x1B, UInt8(ascii: "["), UInt8(ascii: "C")]
    private static let clearToEnd: [UInt8] = [0x1B, UInt8(ascii: "["), UInt8(ascii: "K")]

    /// Runs of cursor moves, sliced rather than built per keystroke: a pasted line redraws
    /// itself once per character, as QEMU's does.
    private static let leftRun = [UInt8](repeatElement(cursorLeft, count: maxLineLength + 1).joined())
    private static let rightRun = [UInt8](repeatElement(cursorRight, count: maxLineLength + 1).joined())

    private mutating func update(into out: inout MonitorOutput) {
        if line != shownLine {
            out.bytes += Self.leftRun[0..<(3 * shownCursor)]
            out.bytes += line
            out.bytes += Self.clearToEnd
            shownLine = line
            shownCursor = line.count
        }
        if cursor != shownCursor {
            let delta = cursor - shownCursor
            out.bytes += (delta > 0 ? Self.rightRun : Self.leftRun)[0..<(3 * abs(delta))]
            shownCursor = cursor
        }
    }

    private mutating func deleteUnderCursor() {
        if cursor < line.count { line.remove(at: cursor) }
    }

    /// QEMU's readline_backword: back over spaces, then over the word.
    private mutating func deleteWord() {
        guard cursor > 0 else { return }
        var start = cursor - 1
        while start >= 0 && Self.isSpace(line[start]) { start -= 1 }
        while start >= 0 && !Self.isSpace(line[start]) { start -= 1 }
        start += 1
        if start < cursor {
            line.removeSubrange(start..<cursor)
            cursor = start
        }
    }

    private static func isSpace(_ b: UInt8) -> Bool { b == 32 || (9...13).contains(b) }

    private mutating func historyUp() {
        let entry = historyEntry ?? history.count
        guard entry > 0 else { return }
        historyEntry = entry - 1
        line = history[entry - 1]
        cursor = line.count
    }

    private mutating func historyDown() {
        guard let entry = historyEntry else { return }
        if entry + 1 < history.count {
            historyEntry = entry + 1
            line = history[entry + 1]
        } else {
            historyEntry = nil
            line = []
        }
        cursor = line.count
    }

    /// QEMU's readline_hist_add: no empty lines; a repeated line moves to the end.
    private mutating func addHistory(_ entry: [UInt8]) {
        guard !entry.isEmpty else { return }
        history.removeAll { $0 == entry }
        if history.count >= Self.historySize { history.removeFirst() }
        history.append(entry)
        historyEntry = nil
    }

    private mutating func enter(into out: inout MonitorOutput) {
        let entered = line
        addHistory(entered)
        historyEntry = nil
        out.append("\r\n")
        line = []
        cursor = 0
        shownLine = []
        shownCursor = 0
        // Bytes are shown as typed; a command line is text: invalid UTF-8 becomes U+FFFD.
        let result = execute(String(decoding: entered, as: UTF8.self))
        out.append(result)
        // hmp_quit suspends the monitor: no prompt after `quit`.
        if !result.quitRequested { out.bytes += showPrompt() }
    }

    // MARK: - commands

    struct CommandInfo: Sendable {
        let name: String
        let params: String
        let help: String
        func matches(_ word: String) -> Bool { name.split(separator: "|").contains { $0 == word } }
    }

    /// hmp-commands.hx entries we implement, sorted by name as QEMU sorts them.
    static let commands: [CommandInfo] = [
        CommandInfo(name: "balloon", params: "target", help: "request VM to change its memory allocation (in MB)"),
        CommandInfo(name: "cont|c", params: "", help: "resume emulation"),
        CommandInfo(name: "cpu", params: "index", help: "set the default CPU"),
        CommandInfo(name: "delvm", params: "tag", help: "delete a VM snapshot from its tag"),
        CommandInfo(name: "help|?", params: "[cmd]", help: "show the help"),
        CommandInfo(name: "hostfwd_add", params: "[netdev_id] [tcp|udp]:[hostaddr]:hostport-[guestaddr]:guestport",
                    help: "redirect TCP or UDP connections from host to guest (requires -net user)"),
        CommandInfo(name: "hostfwd_remove", params: "[netdev_id] [tcp|udp]:[hostaddr]:hostport",
                    help: "remove host-to-guest TCP or UDP redirection"),
        CommandInfo(name: "info", params: "[subcommand]", help: "show various information about the system state"),
        CommandInfo(name: "loadvm", params: "tag", help: "restore a VM snapshot from its tag"),
        CommandInfo(name: "migrate", params: "[-d] uri",
                    help: "migrate to URI (using -d to not wait for completion)"),
        CommandInfo(name: "migrate_cancel", params: "", help: "cancel the current VM migration"),
        CommandInfo(name: "migrate_incoming", params: "uri", help: "Continue an incoming migration from an -incoming defer"),
        CommandInfo(name: "migrate_set_capability", params: "capability state", help: "Enable/Disable the usage of a capability for migration"),
        CommandInfo(name: "migrate_set_parameter", params: "parameter value", help: "Set the parameter for migration"),
        CommandInfo(name: "q|quit", params: "", help: "quit the emulator"),
        CommandInfo(name: "savevm", params: "tag", help: "save a VM snapshot. If no tag is provided, a new snapshot is created"),
        CommandInfo(name: "sendkey", params: "keys [hold_ms]", help: "send keys to the VM (e.g. 'sendkey ctrl-alt-f1', default hold time=100 ms)"),
        CommandInfo(name: "set_link", params: "name on|off", help: "change the link status of a network adapter"),
        CommandInfo(name: "stop|s", params: "", help: "stop emulation"),
        CommandInfo(name: "system_powerdown", params: "", help: "send system power down event"),
        CommandInfo(name: "system_reset", params: "", help: "reset the system"),
        CommandInfo(name: "x", params: "/fmt addr", help: "virtual memory dump starting at 'addr'"),
        CommandInfo(name: "xp", params: "/fmt addr", help: "physical memory dump starting at 'addr'"),
    ]

    /// hmp-commands-info.hx entries, sorted. jit/mtree/qtree/registers are machine views.
    static let infoCommands: [CommandInfo] = [
        CommandInfo(name: "balloon", params: "", help: "show balloon information"),
        CommandInfo(name: "block", params: "[-n] [-v] [device]",
                    help: "show info of one block device or all block devices (-n: show named nodes; -v: show details)"),
        CommandInfo(name: "chardev", params: "", help: "show the character devices"),
        CommandInfo(name: "cpus", params: "", help: "show infos for each CPU"),
        CommandInfo(name: "jit", params: "", help: "show dynamic compiler info"),
        CommandInfo(name: "migrate", params: "", help: "show migration status"),
        CommandInfo(name: "migrate_capabilities", params: "", help: "show current migration capabilities"),
        CommandInfo(name: "migrate_parameters", params: "", help: "show current migration parameters"),
        CommandInfo(name: "mtree", params: "[-f][-d][-o][-D]",
                    help: "show memory tree (-f: dump flat view for address spaces;-d: dump dispatch tree, valid with -f only);-o: dump region owners/parents;-D: dump disassembly"),
        CommandInfo(name: "name", params: "", help: "show the current VM name"),
        CommandInfo(name: "uuid", params: "", help: "show the current VM UUID"),
        CommandInfo(name: "network", params: "", help: "show the network state"),
        CommandInfo(name: "qtree", params: "", help: "show device tree"),
        CommandInfo(name: "registers", params: "[-a]", help: "show the cpu registers (-a: all - show register info for all cpus)"),
        CommandInfo(name: "snapshots", params: "", help: "show the currently saved VM snapshots"),
        CommandInfo(name: "status", params: "", help: "show the current VM status (running|paused)"),
        CommandInfo(name: "usernet", params: "", help: "show user network stack connection states"),
        CommandInfo(name: "version", params: "", help: "show the version of QEMU"),
    ]

    /// QEMU's get_command_name: skips leading spaces, then takes characters up to a space or
    /// '/' (so "x/4x addr" names `x`). Returns the name and the rest with leading spaces gone.
    public static func splitCommandName(_ text: String) -> (name: String, rest: String) {
        let scalars = Array(text.unicodeScalars)
        var p = 0
        while p < scalars.count && isSpaceScalar(scalars[p]) { p += 1 }
        let start = p
        while p < scalars.count && scalars[p] != "/" && !isSpaceScalar(scalars[p]) { p += 1 }
        let name = String(String.UnicodeScalarView(scalars[start..<p]))
        while p < scalars.count && isSpaceScalar(scalars[p]) { p += 1 }
        return (name, String(String.UnicodeScalarView(scalars[p...])))
    }

    private static func isSpaceScalar(_ c: Unicode.Scalar) -> Bool {
        c == " " || c == "\t" || c == "\n" || c == "\r" || c == "\u{0B}" || c == "\u{0C}"
    }

    static func trimmed(_ s: String) -> String {
        let scalars = Array(s.unicodeScalars)
        var a = 0
        var b = scalars.count
        while a < b && isSpaceScalar(scalars[a]) { a += 1 }
        while b > a && isSpaceScalar(scalars[b - 1]) { b -= 1 }
        return String(String.UnicodeScalarView(scalars[a..<b]))
    }

    /// Runs one command line, as if typed; the output has "\r\n" line ends (QEMU's
    /// monitor_puts), which is also what QMP's human-monitor-command returns.
    public mutating func execute(_ commandLine: String) -> MonitorOutput {
        var quit = false
        let text = run(commandLine, quit: &quit)
        return MonitorOutput(bytes: monitorLineEnds(text), quitRequested: quit)
    }

    /// monitor_parse_arguments' complaint, then handle_hmp_command's pointer to the help of
    /// what was typed (`typed`: "stop", "s", "info status").
    func extraneous(_ name: String, _ rest: String, typed: String) -> String? {
        Self.trimmed(rest).isEmpty
            ? nil : "\(name): extraneous characters at the end of line\nTry \"help \(typed)\" for more information\n"
    }

    /// `view` from the machine, or QEMU's reply to a command it does not have.
    private func machineView(_ view: MachineView, unknown: String) -> String {
        target.machineView(view, cpuIndex: currentCPU) ?? "unknown command: '\(unknown)'\n"
    }

    private mutating func run(_ commandLine: String, quit: inout Bool) -> String {
        let (name, rest) = Self.splitCommandName(commandLine)
        if name.isEmpty { return "" }
        guard let command = Self.commands.first(where: { $0.matches(name) }) else {
            return "unknown command: '\(name)'\n"
        }
        switch command.name {
        case "help|?":
            return help(Self.trimmed(rest))
        case "info":
            return info(rest)
        case "cpu":
            do {
                let (expression, tail) = try MonitorExpression.parse(prefixOf: rest)
                if let e = extraneous(command.name, String(tail), typed: name) { return e }
                let value = try expression.evaluate { _ in nil }
                if value >> 32 != 0 { return "'cpu' has failed: integer is for 32-bit values\n" }
                return selectCPU(Int(value)) ? "" : "invalid CPU index\n"
            } catch {
                return error.message + "\n"
            }
        case "migrate", "migrate_cancel", "migrate_incoming", "migrate_set_capability", "migrate_set_parameter", "savevm",
             "loadvm", "delvm":
            return migrationCommand(command.name, Self.trimmed(rest))
        case "set_link", "hostfwd_add", "hostfwd_remove":
            return networkCommand(command.name, Self.trimmed(rest))
        case "balloon":
            return balloonCommand(Self.trimmed(rest))
        case "sendkey":
            return sendkeyCommand(Self.trimmed(rest))
        case "x", "xp":
            do {
                let dump = try MemoryDump.parse(arguments: rest, physical: command.name == "xp", name: command.name,
                                                defaults: &memoryDumpDefaults)
                if let text = target.machineView(.memory(dump), cpuIndex: currentCPU) { return text }
                return "\(command.name): reading guest memory is not supported by this machine\n"
            } catch {
                return error.message + "\n"
            }
        default:
            if let e = extraneous(command.name, rest, typed: name) { return e }
            switch command.name {
            case "stop|s": target.execute(.stop)
            case "cont|c":
                if target.runState == "shutdown" { return "Error: \(QMPSession.resetRequired)\n" }
                target.execute(.cont)
            case "system_reset": target.execute(.systemReset)
            case "system_powerdown": target.execute(.systemPowerdown)
            case "q|quit": quit = true
            default: break
            }
            return ""
        }
    }

    private func help(_ topic: String) -> String {
        func dump(_ table: [CommandInfo], prefix: String) -> String {
            table.map { "\(prefix)\($0.name) \($0.params) -- \($0.help)\n" }.joined()
        }
        let words = topic.split(whereSeparator: { $0 == " " || $0 == "\t" }).map(String.init)
        guard let first = words.first else { return dump(Self.commands, prefix: "") }
        guard let command = Self.commands.first(where: { $0.matches(first) }) else {
            return "unknown command: '\(first)'\n"
        }
        guard command.name == "info" else { return dump([command], prefix: "") }
        guard words.count > 1 else { return dump(Self.infoCommands, prefix: "info ") }
        guard let sub = Self.infoCommands.first(where: { $0.matches(words[1]) }) else {
            return "unknown command: 'info \(words[1])'\n"
        }
        return dump([sub], prefix: "info ")
    }

    private func info(_ rest: String) -> String {
        let (sub, args) = Self.splitCommandName(rest)
        if sub.isEmpty { return help("info") }
        switch sub {
        case "status":
            if let e = extraneous(sub, args, typed: "info \(sub)") { return e }
            let running = target.isRunning
            let state = target.runState
            var text = "VM status: \(running ? "running" : "paused")"
            if !running && state != "paused" { text += " (\(state))" }
            return text + "\n"
        case "version":
            return extraneous(sub, args, typed: "info \(sub)") ?? version.humanText + "\n"
        case "name":
            return extraneous(sub, args, typed: "info \(sub)") ?? (target.guestName.map { $0 + "\n" } ?? "")
        case "uuid":
            return extraneous(sub, args, typed: "info \(sub)") ?? (target.uuid ?? Self.nullUUID) + "\n"
        case "cpus":
            if let e = extraneous(sub, args, typed: "info \(sub)") { return e }
            return target.cpus.map { cpu in
                "\(cpu.index == currentCPU ? "*" : " ") CPU #\(cpu.index): thread_id=\(cpu.threadID)\n"
            }.joined()
        case "chardev":
            if let e = extraneous(sub, args, typed: "info \(sub)") { return e }
            return target.chardevs.map { "\($0.label): filename=\($0.filename)\n" }.joined()
        case "block":
            return infoBlock(args)
        case "migrate", "migrate_capabilities", "migrate_parameters", "snapshots":
            return extraneous(sub, args, typed: "info \(sub)") ?? migrationInfo(sub)
        case "network", "usernet":
            return extraneous(sub, args, typed: "info \(sub)") ?? networkInfo(sub)
        case "balloon":
            return extraneous(sub, args, typed: "info \(sub)") ?? balloonInfo()
        case "registers":
            switch flags(args, allowed: "a", command: sub) {
            case .success(let set): return machineView(.registers(allCPUs: set.contains("a")), unknown: "info \(sub)")
            case .failure(let error): return error.message + "\n"
            }
        case "mtree":
            // -f, -d, -o, -D choose among QEMU's views of its memory API; swemu has the one map.
            if case .failure(let error) = flags(args, allowed: "fdoD", command: sub) { return error.message + "\n" }
            return machineView(.memoryTree, unknown: "info \(sub)")
        case "jit", "qtree":
            if let e = extraneous(sub, args, typed: "info \(sub)") { return e }
            return machineView(sub == "jit" ? .jit : .deviceTree, unknown: "info \(sub)")
        default:
            return "unknown command: 'info \(sub)'\n"
        }
    }

    /// The flags of a command that takes only flags (`info registers [-a]`), as QEMU's
    /// monitor_parse_arguments reads them: each "-x" with x in `allowed`.
    private func flags(_ args: String, allowed: String, command: String) -> Result<Set<Character>, MonitorSyntaxError> {
        var set = Set<Character>()
        for word in args.split(whereSeparator: { $0 == " " || $0 == "\t" }) {
            guard word.hasPrefix("-") else { return .failure(MonitorSyntaxError("\(command): extraneous characters at the end of line")) }
            guard word.count == 2, let flag = word.last, allowed.contains(flag) else {
                return .failure(MonitorSyntaxError("\(command): unsupported option -\(word.dropFirst().first.map(String.init) ?? "")"))
            }
            set.insert(flag)
        }
        return .success(set)
    }

    /// `info block [-n] [-v] [device]` (hmp_info_block, print_block_info).
    private func infoBlock(_ args: String) -> String {
        var nodes = false
        var device: String?
        for word in args.split(whereSeparator: { $0 == " " || $0 == "\t" }) {
            if word.hasPrefix("-") && device == nil {
                switch word {
                case "-n": nodes = true
                case "-v": break  // details of the image chain: not shown yet
                default:
                    let option = word.dropFirst().first.map(String.init) ?? ""
                    return "block: unsupported option -\(option)\n"
                }
            } else if device == nil {
                device = String(word)
            } else {
                return "block: extraneous characters at the end of line\n"
            }
        }
        // A -blockdev disk has no device name: its format node names it, as in QEMU.
        var entries: [(name: String, disk: MonitorBlockDevice, format: String, attached: String?)] = []
        for disk in target.blockDevices {
            if nodes {
                if let node = disk.nodeName { entries.append((node, disk, disk.format, nil)) }
                if let node = disk.fileNodeName { entries.append((node, disk, "file", nil)) }
            } else {
                entries.append((disk.device.isEmpty ? disk.nodeName ?? "" : disk.device, disk, disk.format, disk.device.isEmpty ? disk.qdev : nil))
            }
        }
        var text = ""
        for entry in entries where device == nil || entry.name == device {
            if !text.isEmpty { text += "\n" }
            text += "\(entry.name): \(entry.disk.file) (\(entry.format)\(entry.disk.readOnly ? ", read-only" : ""))\n"
            if let attached = entry.attached { text += "    Attached to:      \(attached)\n" }
            text += "    Cache mode:       writeback\n"
        }
        return text
    }
}
