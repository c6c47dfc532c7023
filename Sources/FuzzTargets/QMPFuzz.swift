import QMP
import Synchronization

/// QMP and the human monitor: the JSON parser alone (and its serializer on what it accepts),
/// a whole QMP session (framer, negotiation, every command's arguments) and the human
/// monitor's command lines, against a machine double that answers every query.
enum QMPFuzz {
    /// A machine double: fixed state, run control that only flips a flag, events delivered
    /// to the monitor as the VMM would.
    final class Machine: MonitorTarget {
        let running = Atomic<Bool>(true)
        let listeners = Mutex<[@Sendable (MonitorEvent) -> Void]>([])
        var runState: String { running.load(ordering: .relaxed) ? "running" : "paused" }
        var isRunning: Bool { running.load(ordering: .relaxed) }
        var guestName: String? { "fuzz" }
        var machineType: String { "virt" }
        var machineList: [MonitorMachineType] {
            [MonitorMachineType(name: "virt", description: "RISC-V VirtIO board", isDefault: true, maxCPUs: 64, defaultRAMID: "riscv_virt_board.ram")]
        }
        var cpus: [MonitorCPU] {
            [MonitorCPU(index: 0, threadID: 1, target: "riscv64", qomPath: "/machine/soc0/harts[0]", coreID: 0),
             MonitorCPU(index: 1, threadID: 2, target: "riscv64", qomPath: "/machine/soc0/harts[1]", coreID: 1)]
        }
        var blockDevices: [MonitorBlockDevice] {
            [MonitorBlockDevice(device: "virtio0", file: "disk.img", format: "qcow2", readOnly: false, sizeBytes: 1 << 30)]
        }
        var chardevs: [(label: String, filename: String)] { [("serial0", "pty:/dev/pts/0"), ("qmp", "unix:q.sock,server=on")] }
        func execute(_ command: VMCommand) {
            switch command {
            case .stop:
                running.store(false, ordering: .relaxed)
                emit(.stop)
            case .cont:
                running.store(true, ordering: .relaxed)
                emit(.resume)
            case .systemReset: emit(.reset(guest: false, reason: "host-qmp-system-reset"))
            case .systemPowerdown: emit(.powerdown)
            case .quit(let reason): emit(.shutdown(guest: false, reason: reason))
            }
        }
        func machineView(_ view: MachineView, cpuIndex: Int) -> String? { "ok\n" }
        func addEventListener(_ listener: @escaping @Sendable (MonitorEvent) -> Void) { listeners.withLock { $0.append(listener) } }
        func emit(_ event: MonitorEvent) { for listener in listeners.withLock({ $0 }) { listener(event) } }
    }

    static let json = FuzzTarget(name: "qmp-json", summary: "the JSON parser (and the serializer on what it accepts)", maxLength: 4096,
                                 run: { data in
        let bytes = Array(data)
        guard let value = try? JSONParser.parse(bytes) else { return }
        // What it accepts serializes to JSON it accepts again, to the same value.
        let text = value.serialized
        guard let again = try? JSONParser.parse(text) else { fatalError("serialized JSON does not parse: \(text)") }
        precondition(again.serialized == text, "JSON round trip differs: \(text)")
    }, seeds: {
        ["{\"execute\": \"qmp_capabilities\"}", "[1, -2.5e3, true, false, null, \"a\\u00e9\\ud83d\\ude00\\n\"]",
         "{\"a\": {\"b\": [{}, []]}, \"c\": 18446744073709551615, \"d\": -9223372036854775808}", "\"\\/\\\\\\\"\"", "1e400"]
            .enumerated().map { ("json\($0.offset)", Array($0.element.utf8)) }
    })

    static let session = FuzzTarget(name: "qmp", summary: "a QMP session: framer, negotiation and every command", maxLength: 8192,
                                    run: { data in
        let machine = Machine()
        var session = QMPSession(target: machine, maxMessageSize: 4096)
        _ = session.greeting()
        // The input arrives in two pieces, split where its first byte says.
        let bytes = Array(data)
        let split = bytes.isEmpty ? 0 : min(Int(bytes[0]), bytes.count)
        _ = session.feed(Array(bytes[0..<split]))
        _ = session.feed(Array(bytes[split...]))
        _ = session.event(.stop, timestamp: QMPTimestamp(seconds: 1, microseconds: 2))
    }, seeds: { qmpSeeds() })

    static let human = FuzzTarget(name: "hmp", summary: "the human monitor's command lines", maxLength: 4096,
                                  run: { data in
        var monitor = HumanMonitor(target: Machine())
        _ = monitor.open()
        _ = monitor.feed(Array(data))
        _ = monitor.feed([13])
    }, seeds: {
        ["info status\ninfo cpus\ninfo block\ninfo chardev\ninfo version\ninfo name\ninfo network\n",
         "help\nhelp info\ncpu 1\ninfo registers\nx /4xw 0x80000000\nxp /2i $pc\nx /s 0x1000\n",
         "stop\ncont\nsystem_reset\nsystem_powerdown\nset_link net0 off\nhostfwd_add tcp::2222-:22\n",
         "savevm one\nloadvm one\ndelvm one\ninfo snapshots\nmigrate -d tcp:localhost:4444\ninfo migrate\nmigrate_set_parameter max-bandwidth 1000\nquit\n",
         "\u{1b}[A\u{1b}[D\u{7f}info st\t\n"]
            .enumerated().map { ("hmp\($0.offset)", Array($0.element.utf8)) }
    })

    static func qmpSeeds() -> [(String, [UInt8])] {
        let negotiate = "{\"execute\": \"qmp_capabilities\", \"arguments\": {\"enable\": [\"oob\"]}}\n"
        let commands = [
            "{\"execute\": \"query-version\", \"id\": 1}\n{\"execute\": \"query-commands\"}\n{\"execute\": \"query-status\"}\n",
            "{\"execute\": \"query-cpus-fast\"}{\"execute\": \"query-block\"}{\"execute\": \"query-blockstats\"}{\"execute\": \"query-chardev\"}",
            "{\"execute\": \"query-machines\"}{\"execute\": \"query-target\"}{\"execute\": \"query-kvm\"}{\"execute\": \"query-name\"}",
            "{\"execute\": \"stop\"}{\"execute\": \"cont\"}{\"execute\": \"system_reset\"}{\"execute\": \"system_powerdown\"}{\"execute\": \"quit\"}",
            "{\"execute\": \"human-monitor-command\", \"arguments\": {\"command-line\": \"info registers\", \"cpu-index\": 1}, \"id\": \"x\"}",
            "{\"exec-oob\": \"query-status\", \"id\": 7}{\"execute\": \"migrate\", \"arguments\": {\"uri\": \"tcp:localhost:1\"}}",
            "{\"execute\": \"query-migrate\"}{\"execute\": \"migrate-set-parameters\", \"arguments\": {\"max-bandwidth\": 1}}",
            "{\"execute\": \"set_link\", \"arguments\": {\"name\": \"net0\", \"up\": false}}{\"execute\": \"query-rx-filter\"}",
            "{\"execute\": \"snapshot-save\", \"arguments\": {\"job-id\": \"j\", \"tag\": \"t\", \"vmstate\": \"d\", \"devices\": [\"d\"]}}",
            "{\"execute\": \"nope\"} [1] {\"execute\": 5} {\"arguments\": {}} }{\"execute\": \"query-status\", \"extra\": 1}",
        ]
        return [("negotiate", Array(negotiate.utf8))] + commands.enumerated().map { ("qmp\($0.offset)", Array((negotiate + $0.element).utf8)) }
    }
}
