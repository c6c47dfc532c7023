import Testing

@testable import QMP

@Suite struct QMPSessionTests {
    private let greeting =
        #"{"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}, "package": "swemu 0.1.0"}, "capabilities": ["oob"]}}"#

    @Test func greetingIsQEMUShaped() {
        let s = QMPSession(target: FakeTarget())
        #expect(String(decoding: s.greeting(), as: UTF8.self) == greeting + "\r\n")
        let custom = QMPSession(target: FakeTarget(), version: MonitorVersion(major: 0, minor: 1, micro: 0, package: "swemu 0.1.0", product: "swemu"))
        #expect(String(decoding: custom.greeting(), as: UTF8.self).hasPrefix(#"{"QMP": {"version": {"qemu": {"micro": 0, "minor": 1, "major": 0}"#))
    }

    /// `-mon ...,mode=control,pretty=on`: byte for byte what QEMU 7.2 sends (captured from
    /// qemu-system-riscv64 with the same commands): a member or element per line, four spaces
    /// per level, empty containers on two lines, "\r\n" line ends; events too.
    @Test func prettyOutputIsQEMUs() {
        let target = FakeTarget()
        target.state.withLock { $0.runState = "prelaunch"; $0.running = false }
        var s = QMPSession(target: target, pretty: true)
        #expect(String(decoding: s.greeting(), as: UTF8.self) == """
            {\r\n    "QMP": {\r\n        "version": {\r\n            "qemu": {\r\n                "micro": 0,\r\n                "minor": 2,\r\n\
                            "major": 7\r\n            },\r\n            "package": "swemu 0.1.0"\r\n        },\r\n        "capabilities": [\r\n\
                        "oob"\r\n        ]\r\n    }\r\n}\r\n
            """)
        #expect(s.feed(Array(#"{"execute": "qmp_capabilities"}"#.utf8)).text
            == "{\r\n    \"return\": {\r\n    }\r\n}\r\n")
        #expect(s.feed(Array(#"{"execute": "query-status", "id": [1, {"a": []}]}"#.utf8)).text == """
            {\r\n    "return": {\r\n        "status": "prelaunch",\r\n        "singlestep": false,\r\n        "running": false\r\n    },\r\n\
                "id": [\r\n        1,\r\n        {\r\n            "a": [\r\n            ]\r\n        }\r\n    ]\r\n}\r\n
            """)
        #expect(s.feed(Array(#"{"execute": "nope"}"#.utf8)).text == """
            {\r\n    "error": {\r\n        "class": "CommandNotFound",\r\n        "desc": "The command nope has not been found"\r\n    }\r\n}\r\n
            """)
        let event = String(decoding: s.event(.shutdown(guest: false, reason: "host-qmp-quit"), timestamp: QMPTimestamp(seconds: 1796602639, microseconds: 682794)) ?? [],
                           as: UTF8.self)
        #expect(event == """
            {\r\n    "timestamp": {\r\n        "seconds": 1796602639,\r\n        "microseconds": 682794\r\n    },\r\n    "event": "SHUTDOWN",\r\n\
                "data": {\r\n        "guest": false,\r\n        "reason": "host-qmp-quit"\r\n    }\r\n}\r\n
            """)
    }

    /// query-qmp-schema describes exactly the command table: every command of query-commands
    /// with an object arg-type whose members are its parameters (optional ones with a default),
    /// the events, and each type named once.
    @Test func schemaIsTheCommandTable() throws {
        let target = FakeTarget()
        var s = negotiatedSession(target)
        let reply = try #require(JSONParser.parse(Array(s.feed(Array(#"{"execute": "query-qmp-schema"}"#.utf8)).text.utf8))["return"]?.arrayValue)
        var byName: [String: JSONValue] = [:]
        for entry in reply {
            let name = try #require(entry["name"]?.stringValue)
            #expect(byName[name] == nil, "\(name) defined twice")
            byName[name] = entry
        }
        let commands = reply.filter { $0["meta-type"]?.stringValue == "command" }.compactMap { $0["name"]?.stringValue }
        #expect(Set(commands) == Set(QMPCommands.all.map(\.name)))
        let migrate = try #require(byName["migrate"])
        let arguments = try #require(byName[migrate["arg-type"]?.stringValue ?? ""]?["members"]?.arrayValue)
        #expect(arguments.first?["name"]?.stringValue == "uri" && arguments.first?["type"]?.stringValue == "str")
        #expect(arguments.first?.objectValue?["default"] == nil, "uri is required")
        #expect(arguments.dropFirst().allSatisfy { $0.objectValue?["default"] == .null }, "the rest are optional")
        let capabilities = try #require(byName[byName["qmp_capabilities"]?["arg-type"]?.stringValue ?? ""]?["members"]?.arrayValue?.first)
        let array = try #require(byName[capabilities["type"]?.stringValue ?? ""])
        #expect(array["meta-type"]?.stringValue == "array")
        #expect(byName[array["element-type"]?.stringValue ?? ""]?["values"] == ["oob"])
        #expect(byName["SHUTDOWN"]?["meta-type"]?.stringValue == "event")
        #expect(byName["str"]?["json-type"]?.stringValue == "string")
    }

    /// qom-list-types, device-list-properties and qom-list-properties report swemu's devices
    /// and machines with QEMU's names and error classes (DeviceNotFound for a type swemu lacks,
    /// which libvirt's probe expects for most of what it asks about).
    @Test func qomTypesAreSwemusDevices() {
        var s = negotiatedSession(FakeTarget())
        let types = send(&s, #"{"execute": "qom-list-types", "arguments": {"implements": "virtio-device"}}"#)
        #expect(types == [#"{"return": [{"name": "virtio-blk-device", "parent": "virtio-device"}, {"name": "virtio-rng-device", "parent": "virtio-device"}, {"name": "virtio-keyboard-device", "parent": "virtio-input-hid-device"}, {"name": "virtio-balloon-device", "parent": "virtio-device"}, {"name": "virtio-serial-device", "parent": "virtio-device"}, {"name": "virtio-net-device", "parent": "virtio-device"}]}"#])
        #expect(send(&s, #"{"execute": "qom-list-types", "arguments": {"implements": "machine"}}"#).first?.contains(#""name": "virt-machine", "parent": "machine""#) == true)
        #expect(send(&s, #"{"execute": "device-list-properties", "arguments": {"typename": "virtio-net-device"}}"#)
            == [#"{"return": [{"name": "netdev", "type": "str", "description": "ID of a netdev to use as a backend"}, {"name": "mac", "type": "macaddr", "description": "Ethernet 6-byte MAC Address, example: 52:54:00:12:34:56"}]}"#])
        #expect(send(&s, #"{"execute": "device-list-properties", "arguments": {"typename": "usb-host"}}"#)
            == [#"{"error": {"class": "DeviceNotFound", "desc": "Device 'usb-host' not found"}}"#])
        #expect(send(&s, #"{"execute": "device-list-properties", "arguments": {"typename": "virtio-device"}}"#)
            == [#"{"error": {"class": "GenericError", "desc": "Parameter 'typename' expects a non-abstract device type"}}"#])
        #expect(send(&s, #"{"execute": "qom-list-properties", "arguments": {"typename": "nope"}}"#)
            == [#"{"error": {"class": "DeviceNotFound", "desc": "Class 'nope' not found"}}"#])
        // Memory backends and secrets (-object), and the machines' properties: libvirt reads
        // them to decide how it writes -object and -machine.
        #expect(send(&s, #"{"execute": "qom-list-types", "arguments": {"implements": "memory-backend"}}"#)
            == [#"{"return": [{"name": "memory-backend-ram", "parent": "memory-backend"}, {"name": "memory-backend-memfd", "parent": "memory-backend"}, {"name": "memory-backend-file", "parent": "memory-backend"}]}"#])
        let file = send(&s, #"{"execute": "qom-list-properties", "arguments": {"typename": "memory-backend-file"}}"#).first ?? ""
        #expect(file.contains(#"{"name": "mem-path", "type": "string"}"#) && file.contains(#""name": "prealloc""#) && !file.contains("discard-data"))
        let virt = send(&s, #"{"execute": "qom-list-properties", "arguments": {"typename": "virt-machine"}}"#).first ?? ""
        #expect(virt.contains(#""name": "memory-backend", "type": "link<memory-backend>""#) && virt.contains(#""name": "dumpdtb""#))
        #expect(send(&s, #"{"execute": "qom-list-types", "arguments": {"implements": "secret_common"}}"#)
            == [#"{"return": [{"name": "secret", "parent": "secret_common"}]}"#])
    }

    /// query-command-line-options reports what the target says its command line takes (the
    /// CLI's option groups), all of it or one option, with QEMU's error for an unknown one.
    @Test func commandLineOptions() {
        let target = FakeTarget()
        var s = negotiatedSession(target)
        #expect(send(&s, #"{"execute": "query-command-line-options", "arguments": {"option": "smp-opts"}}"#)
            == [#"{"return": [{"option": "smp-opts", "parameters": [{"name": "cpus", "type": "number"}, {"name": "dies", "type": "number"}]}]}"#])
        #expect(send(&s, #"{"execute": "query-command-line-options"}"#)
            == [#"{"return": [{"option": "smp-opts", "parameters": [{"name": "cpus", "type": "number"}, {"name": "dies", "type": "number"}]}, {"option": "object", "parameters": []}]}"#])
        #expect(send(&s, #"{"execute": "query-command-line-options", "arguments": {"option": "spice"}}"#)
            == [#"{"error": {"class": "GenericError", "desc": "invalid option name: spice"}}"#])
    }

    @Test func commandsBeforeNegotiationAreRefused() {
        let target = FakeTarget()
        var s = QMPSession(target: target)
        #expect(send(&s, #"{"execute": "query-status"}"#)
            == [#"{"error": {"class": "CommandNotFound", "desc": "Expecting capabilities negotiation with 'qmp_capabilities'"}}"#])
        #expect(send(&s, #"{"execute": "stop", "id": 7}"#)
            == [#"{"id": 7, "error": {"class": "CommandNotFound", "desc": "Expecting capabilities negotiation with 'qmp_capabilities'"}}"#])
        #expect(send(&s, #"{"execute": "no-such-command"}"#)
            == [#"{"error": {"class": "CommandNotFound", "desc": "Expecting capabilities negotiation with 'qmp_capabilities'"}}"#])
        // Other errors keep their own text.
        #expect(send(&s, #"{"execute": 1}"#)
            == [#"{"error": {"class": "GenericError", "desc": "QMP input member 'execute' must be a string"}}"#])
        #expect(target.calls.isEmpty, "nothing ran")
        #expect(!s.isNegotiated)
        #expect(s.event(.stop, timestamp: fixedTime) == nil, "no events before negotiation")

        #expect(send(&s, #"{"execute": "qmp_capabilities", "arguments": {"enable": ["oob"]}, "id": "neg"}"#)
            == [#"{"return": {}, "id": "neg"}"#])
        #expect(s.isNegotiated)
        #expect(s.isOOBEnabled)
        #expect(send(&s, #"{"execute": "qmp_capabilities"}"#)
            == [#"{"error": {"class": "CommandNotFound", "desc": "Capabilities negotiation is already complete, command ignored"}}"#])
        #expect(send(&s, #"{"execute": "query-status"}"#) == [#"{"return": {"status": "running", "singlestep": false, "running": true}}"#])
    }

    @Test func negotiationArgumentsAreChecked() {
        var s = QMPSession(target: FakeTarget())
        #expect(send(&s, #"{"execute": "qmp_capabilities", "arguments": {"enable": ["magic"]}}"#)
            == [#"{"error": {"class": "GenericError", "desc": "Parameter 'enable[0]' does not accept value 'magic'"}}"#])
        #expect(send(&s, #"{"execute": "qmp_capabilities", "arguments": {"enable": "oob"}}"#)
            == [#"{"error": {"class": "GenericError", "desc": "Invalid parameter type for 'enable', expected: array"}}"#])
        #expect(send(&s, #"{"execute": "qmp_capabilities", "arguments": {"enable": [1]}}"#)
            == [#"{"error": {"class": "GenericError", "desc": "Invalid parameter type for 'enable[0]', expected: string"}}"#])
        #expect(send(&s, #"{"execute": "qmp_capabilities", "arguments": {"x": 1}}"#)
            == [#"{"error": {"class": "GenericError", "desc": "Parameter 'x' is unexpected"}}"#])
        #expect(!s.isNegotiated)
        #expect(send(&s, #"{"execute": "qmp_capabilities", "arguments": {}}"#) == [#"{"return": {}}"#])
        #expect(s.isNegotiated)
        #expect(!s.isOOBEnabled)
    }

    @Test func idsOfAnyTypeAreEchoed() {
        var s = negotiatedSession(FakeTarget())
        #expect(send(&s, #"{"id": 1, "execute": "query-name"}"#) == [#"{"return": {"name": "guest0"}, "id": 1}"#])
        #expect(send(&s, #"{"execute": "query-name", "id": "abc"}"#) == [#"{"return": {"name": "guest0"}, "id": "abc"}"#])
        #expect(send(&s, #"{"execute": "query-name", "id": {"n": [1, null, 18446744073709551615]}}"#)
            == [#"{"return": {"name": "guest0"}, "id": {"n": [1, null, 18446744073709551615]}}"#])
        #expect(send(&s, #"{"execute": "query-name", "id": null}"#) == [#"{"return": {"name": "guest0"}, "id": null}"#])
        #expect(send(&s, #"{"execute": "nope", "id": 2.5}"#)
            == [#"{"id": 2.5, "error": {"class": "CommandNotFound", "desc": "The command nope has not been found"}}"#])
    }

    @Test func malformedRequests() {
        var s = negotiatedSession(FakeTarget())
        let cases: [(String, String)] = [
            ("[1, 2]", #"{"error": {"class": "GenericError", "desc": "QMP input must be a JSON object"}}"#),
            ("42 ", #"{"error": {"class": "GenericError", "desc": "QMP input must be a JSON object"}}"#),
            (#""query-status""#, #"{"error": {"class": "GenericError", "desc": "QMP input must be a JSON object"}}"#),
            ("{}", #"{"error": {"class": "GenericError", "desc": "QMP input lacks member 'execute'"}}"#),
            (#"{"id": 3}"#, #"{"id": 3, "error": {"class": "GenericError", "desc": "QMP input lacks member 'execute'"}}"#),
            (#"{"execute": ["stop"]}"#, #"{"error": {"class": "GenericError", "desc": "QMP input member 'execute' must be a string"}}"#),
            (#"{"execute": "stop", "arguments": []}"#,
             #"{"error": {"class": "GenericError", "desc": "QMP input member 'arguments' must be an object"}}"#),
            (#"{"execute": "stop", "extra": 1}"#, #"{"error": {"class": "GenericError", "desc": "QMP input member 'extra' is unexpected"}}"#),
            (#"{"execute": "query-status", "arguments": {"verbose": true}}"#,
             #"{"error": {"class": "GenericError", "desc": "Parameter 'verbose' is unexpected"}}"#),
            (#"{"execute": "human-monitor-command"}"#,
             #"{"error": {"class": "GenericError", "desc": "Parameter 'command-line' is missing"}}"#),
            (#"{"execute": "human-monitor-command", "arguments": {"command-line": 5}}"#,
             #"{"error": {"class": "GenericError", "desc": "Invalid parameter type for 'command-line', expected: string"}}"#),
            (#"{"execute": "human-monitor-command", "arguments": {"command-line": "info name", "cpu-index": "0"}}"#,
             #"{"error": {"class": "GenericError", "desc": "Invalid parameter type for 'cpu-index', expected: integer"}}"#),
            (#"{"execute": "human-monitor-command", "arguments": {"command-line": "info name", "cpu-index": 1.0}}"#,
             #"{"error": {"class": "GenericError", "desc": "Invalid parameter type for 'cpu-index', expected: integer"}}"#),
            (#"{"execute": "human-monitor-command", "arguments": {"command-line": "info name", "cpu-index": 9}}"#,
             #"{"error": {"class": "GenericError", "desc": "Parameter 'cpu-index' expects a CPU number"}}"#),
            (#"{"execute": "query-blockstats", "arguments": {"query-nodes": "yes"}}"#,
             #"{"error": {"class": "GenericError", "desc": "Invalid parameter type for 'query-nodes', expected: boolean"}}"#),
            (#"{"execute": "query-status", "execute": "stop"}"#,
             #"{"error": {"class": "GenericError", "desc": "JSON parse error, duplicate key 'execute'"}}"#),
            (#"{"exec-oob": "query-status"}"#, #"{"error": {"class": "GenericError", "desc": "QMP input member 'exec-oob' is unexpected"}}"#),
            (#"{"execute": tru}"#, #"{"error": {"class": "GenericError", "desc": "JSON parse error, invalid keyword 'tru'"}}"#),
            (#"{"execute": "stop",}"#, #"{"error": {"class": "GenericError", "desc": "JSON parse error, key is not a string in object"}}"#),
            ("]", #"{"error": {"class": "GenericError", "desc": "JSON parse error, expecting value"}}"#),
        ]
        for (input, expected) in cases {
            #expect(send(&s, input) == [expected], "input: \(input)")
        }
    }

    @Test func outOfBandRequestsWhenEnabled() {
        var s = QMPSession(target: FakeTarget())
        _ = s.feed(Array(#"{"execute": "qmp_capabilities", "arguments": {"enable": ["oob"]}}"#.utf8))
        #expect(send(&s, #"{"exec-oob": "query-status", "id": 1}"#)
            == [#"{"id": 1, "error": {"class": "GenericError", "desc": "The command query-status does not support OOB"}}"#])
        #expect(send(&s, #"{"exec-oob": "query-status", "execute": "stop"}"#)
            == [#"{"error": {"class": "GenericError", "desc": "QMP input member 'execute' clashes with 'exec-oob'"}}"#])
    }

    @Test func invalidUTF8AndHugeNumbersInRequests() {
        var s = negotiatedSession(FakeTarget())
        let bad: [UInt8] = Array(#"{"execute": "query-"#.utf8) + [0xC3, 0x28] + Array(#""}"#.utf8)
        #expect(qmpLines(s.feed(bad).text)
            == [#"{"error": {"class": "GenericError", "desc": "JSON parse error, invalid UTF-8 sequence in string"}}"#])
        #expect(send(&s, #"{"execute": "query-name", "id": 123456789012345678901234567890}"#)
            == [#"{"return": {"name": "guest0"}, "id": 1.2345678901234568e+29}"#])
        #expect(send(&s, #"{"execute": "query-name", "id": 1e999}"#)
            == [#"{"error": {"class": "GenericError", "desc": "JSON parse error, number out of range '1e999'"}}"#])
        // Command names are compared exactly: no Unicode folding.
        #expect(send(&s, #"{"execute": "query-st\u0061tus"}"#) == [#"{"return": {"status": "running", "singlestep": false, "running": true}}"#])
        #expect(send(&s, #"{"execute": "query-status\u0000"}"#)
            == [#"{"error": {"class": "CommandNotFound", "desc": "The command query-status\u0000 has not been found"}}"#])
    }

    @Test func deepNestingAndOversizedMessagesCostOneErrorEach() {
        var s = QMPSession(target: FakeTarget(), maxMessageSize: 1024)
        _ = s.feed(Array(#"{"execute": "qmp_capabilities"}"#.utf8))
        let deep = #"{"execute": "query-name", "id": "# + String(repeating: "[", count: 100) + String(repeating: "]", count: 100) + "}"
        #expect(send(&s, deep + #"{"execute": "query-name"}"#)
            == [#"{"error": {"class": "GenericError", "desc": "JSON nesting depth limit exceeded"}}"#, #"{"return": {"name": "guest0"}}"#])
        let big = #"{"execute": "human-monitor-command", "arguments": {"command-line": ""# + String(repeating: "a", count: 5000) + #""}}"#
        #expect(send(&s, big + #"{"execute": "query-name"}"#)
            == [#"{"error": {"class": "GenericError", "desc": "JSON token size limit exceeded"}}"#, #"{"return": {"name": "guest0"}}"#])
    }

    @Test func splitAndConcatenatedRequests() {
        var s = negotiatedSession(FakeTarget())
        let text = #"{"execute": "query-name", "id": 1} {"execute": "query-status", "id": 2}"# + "\r\n" + #"{"execute": "cont", "id": 3}"#
        var out = ""
        for b in text.utf8 { out += s.feed([b]).text }
        #expect(qmpLines(out) == [
            #"{"return": {"name": "guest0"}, "id": 1}"#,
            #"{"return": {"status": "running", "singlestep": false, "running": true}, "id": 2}"#,
            #"{"return": {}, "id": 3}"#,
        ])
        // All at once: the same replies, in order.
        var t = negotiatedSession(FakeTarget())
        #expect(qmpLines(t.feed(Array(text.utf8)).text) == qmpLines(out))
    }

    @Test func queries() {
        let target = FakeTarget()
        var s = negotiatedSession(target)
        #expect(send(&s, #"{"execute": "query-version"}"#)
            == [#"{"return": {"qemu": {"micro": 0, "minor": 2, "major": 7}, "package": "swemu 0.1.0"}}"#])
        let commands = send(&s, #"{"execute": "query-commands"}"#)
        #expect(commands.count == 1)
        for name in ["qmp_capabilities", "query-version", "query-commands", "query-status", "query-name", "query-cpus-fast",
                     "query-target", "query-kvm", "query-block", "query-blockstats", "query-chardev", "query-machines", "stop", "cont", "system_reset",
                     "system_powerdown", "quit", "human-monitor-command"] {
            #expect(commands[0].contains(#"{"name": "\#(name)"}"#), "\(name) listed")
        }
        #expect(send(&s, #"{"execute": "query-cpus-fast"}"#) == [
            #"{"return": [{"thread-id": 4242, "qom-path": "/machine/soc0/harts[0]", "cpu-index": 0, "target": "riscv64"}, "#
                + #"{"thread-id": 4243, "qom-path": "/machine/soc0/harts[1]", "cpu-index": 1, "target": "riscv64"}]}"#
        ])
        #expect(send(&s, #"{"execute": "query-target"}"#) == [#"{"return": {"arch": "riscv64"}}"#])
        #expect(send(&s, #"{"execute": "query-kvm"}"#) == [#"{"return": {"enabled": false, "present": false}}"#])
        #expect(send(&s, #"{"execute": "query-chardev"}"#) == [
            #"{"return": [{"label": "serial0", "filename": "pty:/dev/pts/7", "frontend-open": true}, "#
                + #"{"label": "qmp", "filename": "unix:/tmp/q.sock,server=on", "frontend-open": true}]}"#
        ])
        #expect(send(&s, #"{"execute": "query-machines"}"#) == [
            #"{"return": [{"name": "virt", "is-default": true, "cpu-max": 512, "hotpluggable-cpus": false, "numa-mem-supported": false, "deprecated": false, "#
                + #""default-ram-id": "riscv_virt_board.ram"}, {"name": "spike", "cpu-max": 1, "hotpluggable-cpus": false, "#
                + #""numa-mem-supported": false, "deprecated": false, "default-ram-id": "riscv.spike.ram"}]}"#
        ])
        target.state.withLock { $0.name = nil }
        #expect(send(&s, #"{"execute": "query-name"}"#) == [#"{"return": {}}"#])
        #expect(target.calls.isEmpty, "queries change nothing")
    }

    @Test func blockQueriesHaveQAPIShapes() throws {
        var s = negotiatedSession(FakeTarget())
        let block = try JSONParser.parse(Array(send(&s, #"{"execute": "query-block"}"#)[0].utf8))
        let disks = try #require(block["return"]?.arrayValue)
        #expect(disks.count == 2)
        let first = disks[0]
        #expect(first["device"] == "virtio0")
        #expect(first["removable"] == false)
        #expect(first["locked"] == false)
        #expect(first["type"] == "unknown")
        let inserted = try #require(first["inserted"])
        #expect(inserted["file"] == "disk.img")
        #expect(inserted["drv"] == "raw")
        #expect(inserted["ro"] == false)
        #expect(inserted["encrypted"] == false)
        #expect(inserted["detect_zeroes"] == "off")
        #expect(inserted["backing_file_depth"] == 0)
        #expect(inserted["cache"] == ["no-flush": false, "direct": false, "writeback": true])
        for key in ["bps", "bps_rd", "bps_wr", "iops", "iops_rd", "iops_wr", "write_threshold"] {
            #expect(inserted[key] == 0, "\(key)")
        }
        #expect(inserted["image"] == ["virtual-size": 1_073_741_824, "filename": "disk.img", "format": "raw"])
        #expect(disks[1]["inserted"]?["ro"] == true)
        #expect(disks[1]["inserted"]?["image"]?["virtual-size"] == .uint(UInt64(Int64.max) + 1))

        let stats = try JSONParser.parse(Array(send(&s, #"{"execute": "query-blockstats"}"#)[0].utf8))
        let entry = try #require(stats["return"]?.arrayValue?.first)
        #expect(entry["device"] == "virtio0")
        let st = try #require(entry["stats"])
        #expect(st["rd_bytes"] == 4096)
        #expect(st["wr_bytes"] == 512)
        #expect(st["rd_operations"] == 8)
        #expect(st["wr_operations"] == 1)
        #expect(st["flush_operations"] == 2)
        #expect(st["failed_rd_operations"] == 1)
        #expect(st["wr_highest_offset"] == 1_048_576)
        #expect(st["timed_stats"] == [])
        #expect(st["account_invalid"] == true)
        #expect(st.objectValue?.count == 26)
        // A -blockdev disk: no device name; libvirt finds it by qdev and node-name.
        let blockdev = try #require(stats["return"]?.arrayValue?.last)
        #expect(blockdev["device"] == "" && blockdev["qdev"] == "/machine/peripheral/virtio-disk0/virtio-backend")
        #expect(blockdev["node-name"] == "libvirt-1-format")
        #expect(disks[1]["qdev"] == "/machine/peripheral/virtio-disk0/virtio-backend")
        #expect(disks[1]["inserted"]?["node-name"] == "libvirt-1-format")
        let nodes = try JSONParser.parse(Array(send(&s, #"{"execute": "query-blockstats", "arguments": {"query-nodes": true}}"#)[0].utf8))
        #expect(nodes["return"]?.arrayValue?.last?["device"] == nil && nodes["return"]?.arrayValue?.last?["node-name"] == "libvirt-1-format")
        let named = try JSONParser.parse(Array(send(&s, #"{"execute": "query-named-block-nodes", "arguments": {"flat": true}}"#)[0].utf8))
        #expect(named["return"]?.arrayValue?.compactMap { $0["node-name"]?.stringValue }.suffix(2) == ["libvirt-1-format", "libvirt-1-storage"])
    }

    @Test func actionsReachTheTarget() {
        let target = FakeTarget()
        var s = negotiatedSession(target)
        #expect(send(&s, #"{"execute": "stop"}"#) == [#"{"return": {}}"#])
        #expect(send(&s, #"{"execute": "query-status"}"#) == [#"{"return": {"status": "paused", "singlestep": false, "running": false}}"#])
        #expect(send(&s, #"{"execute": "cont"}"#) == [#"{"return": {}}"#])
        #expect(send(&s, #"{"execute": "system_reset"}"#) == [#"{"return": {}}"#])
        #expect(send(&s, #"{"execute": "system_powerdown"}"#) == [#"{"return": {}}"#])
        #expect(target.calls == ["stop", "cont", "system_reset", "system_powerdown"])
        // quit: the reply first; the caller quits after writing it.
        let out = s.feed(Array(#"{"execute": "quit", "id": "q"}"#.utf8))
        #expect(out.text == #"{"return": {}, "id": "q"}"# + "\r\n")
        #expect(out.quitRequested)
        #expect(!target.calls.contains("quit"), "the codec does not quit by itself")
    }

    @Test func humanMonitorCommandReturnsTheMonitorsText() {
        let target = FakeTarget()
        var s = negotiatedSession(target)
        #expect(send(&s, #"{"execute": "human-monitor-command", "arguments": {"command-line": "info status"}, "id": 1}"#)
            == [#"{"return": "VM status: running\r\n", "id": 1}"#])
        #expect(send(&s, #"{"execute": "human-monitor-command", "arguments": {"command-line": "info cpus", "cpu-index": 1}}"#)
            == [#"{"return": "  CPU #0: thread_id=4242\r\n* CPU #1: thread_id=4243\r\n"}"#])
        #expect(send(&s, #"{"execute": "human-monitor-command", "arguments": {"command-line": "info registers", "cpu-index": 1}}"#)
            == [#"{"return": " pc       0000000080000000\r\n cpu 1\r\n"}"#])
        #expect(send(&s, #"{"execute": "human-monitor-command", "arguments": {"command-line": "bogus"}}"#)
            == [#"{"return": "unknown command: 'bogus'\r\n"}"#])
        #expect(send(&s, #"{"execute": "human-monitor-command", "arguments": {"command-line": ""}}"#) == [#"{"return": ""}"#])
        #expect(send(&s, #"{"execute": "human-monitor-command", "arguments": {"command-line": "stop"}}"#) == [#"{"return": ""}"#])
        #expect(target.calls == ["stop"])
        let quit = s.feed(Array(#"{"execute": "human-monitor-command", "arguments": {"command-line": "quit"}}"#.utf8))
        #expect(quit.text == #"{"return": ""}"# + "\r\n")
        #expect(quit.quitRequested)
    }

    @Test func eventsCarryTimestampsAndData() {
        let s = negotiatedSession(FakeTarget())
        func event(_ e: MonitorEvent) -> String? { s.event(e, timestamp: fixedTime).map { String(decoding: $0, as: UTF8.self) } }
        let ts = #"{"timestamp": {"seconds": 1700000000, "microseconds": 123456}, "#
        #expect(event(.stop) == ts + #""event": "STOP"}"# + "\r\n")
        #expect(event(.resume) == ts + #""event": "RESUME"}"# + "\r\n")
        #expect(event(.powerdown) == ts + #""event": "POWERDOWN"}"# + "\r\n")
        #expect(event(.reset(guest: false, reason: "host-qmp-system-reset"))
            == ts + #""event": "RESET", "data": {"guest": false, "reason": "host-qmp-system-reset"}}"# + "\r\n")
        #expect(event(.shutdown(guest: true, reason: "guest-shutdown"))
            == ts + #""event": "SHUTDOWN", "data": {"guest": true, "reason": "guest-shutdown"}}"# + "\r\n")
    }
}
