import Dispatch

/// The machine's keyboard as the monitors reach it (QMP `send-key`, HMP `sendkey`; libvirt's
/// `virsh send-key`). Keys are Linux input codes (include/uapi/linux/input-event-codes.h),
/// what the virtio keyboard reports.
public protocol KeyboardControl: Sendable {
    /// Key `code` goes down (`pressed`) or up.
    func key(_ code: UInt16, pressed: Bool)
}

/// QMP `send-key` and HMP `sendkey` (QEMU 7.2's ui/input.c qmp_send_key, hmp_sendkey): every
/// key is pressed in order, held `hold-time` ms (100 by default), released in reverse order.
enum KeyCommands {
    static let all: [QMPCommands.Command] = [
        QMPCommands.Command(name: "send-key", parameters: [
            QMPCommands.Parameter(name: "keys", type: .objectList, optional: false),
            QMPCommands.Parameter(name: "hold-time", type: .int, optional: true),
        ]),
    ]

    static func keyboard(_ target: any MonitorTarget) throws(QMPError) -> any KeyboardControl {
        // QEMU drops the events of a machine with no keyboard without a word; say why instead.
        guard let keyboard = target.keyboard else {
            throw .generic("The machine has no keyboard to send keys to (add -device virtio-keyboard-device)")
        }
        return keyboard
    }

    static func run(_ args: JSONObject, target: any MonitorTarget) throws(QMPError) -> JSONValue {
        var codes: [UInt16] = []
        for (i, item) in (args["keys"]?.arrayValue ?? []).enumerated() {
            let key = item.objectValue ?? [:]
            // KeyValue: {"type": "qcode", "data": QKeyCode} or {"type": "number", "data": qnum}.
            switch key["type"]?.stringValue {
            case "qcode":
                guard let name = key["data"]?.stringValue else { throw .generic("Parameter 'keys[\(i)].data' is missing") }
                guard let code = KeyCodes.linux(qcode: name) else {
                    throw .generic("Parameter 'keys[\(i)].data' does not accept value '\(name)'")
                }
                codes.append(code)
            case "number":
                guard let number = key["data"]?.int64Value else { throw .generic("Parameter 'keys[\(i)].data' is missing") }
                guard let code = UInt16(exactly: number).flatMap(KeyCodes.linux(qnum:)) else {
                    throw .generic("Key \(number) (a QEMU key number) has no key here")
                }
                codes.append(code)
            case let other:
                throw .generic("Parameter 'keys[\(i)].type' does not accept value '\(other ?? "")'")
            }
        }
        guard !codes.isEmpty else { throw .generic("Parameter 'keys' expects a non-empty list") }
        let hold = args["hold-time"]?.int64Value ?? 100
        guard (0...10_000).contains(hold) else { throw .generic("Parameter 'hold-time' expects 0 to 10000 (milliseconds)") }
        press(codes, holdMilliseconds: Int(hold), on: try keyboard(target))
        return [:]
    }

    /// Presses `codes` now and releases them, last first, after the hold time (on a timer, so
    /// the monitor answers at once, as QEMU's does).
    static func press(_ codes: [UInt16], holdMilliseconds: Int, on keyboard: any KeyboardControl) {
        for code in codes { keyboard.key(code, pressed: true) }
        DispatchQueue.global().asyncAfter(deadline: .now() + .milliseconds(holdMilliseconds)) {
            for code in codes.reversed() { keyboard.key(code, pressed: false) }
        }
    }
}

/// The human monitor's `sendkey keys [hold_ms]`: keys joined by '-', each a qcode name
/// (`ctrl-alt-delete`) or a QEMU key number in hex (`0x1d`).
extension HumanMonitor {
    func sendkeyCommand(_ argument: String) -> String {
        let words = argument.split(separator: " ", omittingEmptySubsequences: true)
        guard let keys = words.first else { return "Parameter 'keys' is missing\n" }
        var list: [JSONValue] = []
        for name in keys.split(separator: "-") {
            if name.hasPrefix("0x"), let number = Int64(name.dropFirst(2), radix: 16) {
                list.append(["type": "number", "data": .int(number)])
            } else {
                list.append(["type": "qcode", "data": .string(String(name))])
            }
        }
        var args: JSONObject = ["keys": .array(list)]
        if words.count > 1 {
            guard let hold = Int64(words[1]) else { return "Invalid parameter 'hold_time'\n" }
            args.set("hold-time", .int(hold))
        }
        do throws(QMPError) {
            _ = try KeyCommands.run(args, target: target)
            return ""
        } catch {
            return "Error: \(error.desc)\n"
        }
    }
}

/// QEMU's key names and numbers as Linux input codes.
enum KeyCodes {
    /// QKeyCode (qapi/ui.json) → Linux KEY_*.
    static let qcodes: [String: UInt16] = {
        var map: [String: UInt16] = [
            "esc": 1, "minus": 12, "equal": 13, "backspace": 14, "tab": 15, "bracket_left": 26, "bracket_right": 27,
            "ret": 28, "ctrl": 29, "semicolon": 39, "apostrophe": 40, "grave_accent": 41, "shift": 42, "backslash": 43,
            "comma": 51, "dot": 52, "slash": 53, "shift_r": 54, "asterisk": 55, "alt": 56, "spc": 57, "caps_lock": 58,
            "num_lock": 69, "scroll_lock": 70, "kp_subtract": 74, "kp_add": 78, "kp_decimal": 83, "less": 86,
            "f11": 87, "f12": 88, "ro": 89, "katakana": 90, "hiragana": 91, "henkan": 92, "katakanahiragana": 93,
            "muhenkan": 94, "kp_enter": 96, "ctrl_r": 97, "kp_divide": 98, "sysrq": 99, "print": 99, "alt_r": 100,
            "lf": 101, "home": 102, "up": 103, "pgup": 104, "left": 105, "right": 106, "end": 107, "down": 108,
            "pgdn": 109, "insert": 110, "delete": 111, "audiomute": 113, "volumedown": 114, "volumeup": 115,
            "power": 116, "kp_equals": 117, "pause": 119, "kp_comma": 121, "lang1": 122, "lang2": 123, "yen": 124,
            "meta_l": 125, "meta_r": 126, "compose": 127, "stop": 128, "again": 129, "props": 130, "undo": 131,
            "front": 132, "copy": 133, "open": 134, "paste": 135, "find": 136, "cut": 137, "help": 138, "menu": 139,
            "calculator": 140, "sleep": 142, "wake": 143, "mail": 155, "ac_bookmarks": 156, "computer": 157,
            "ac_back": 158, "ac_forward": 159, "audionext": 163, "audioplay": 164, "audioprev": 165, "audiostop": 166,
            "ac_home": 172, "ac_refresh": 173, "mediaselect": 226, "kp_multiply": 55,
        ]
        // The rows of letters and digits, the function keys and the keypad digits.
        for (row, start) in [("1234567890", 2), ("qwertyuiop", 16), ("asdfghjkl", 30), ("zxcvbnm", 44)] {
            for (i, c) in row.enumerated() { map[String(c)] = UInt16(start + i) }
        }
        for n in 1...10 { map["f\(n)"] = UInt16(58 + n) }
        for n in 13...24 { map["f\(n)"] = UInt16(170 + n) }
        for (n, code) in [82, 79, 80, 81, 75, 76, 77, 71, 72, 73].enumerated() { map["kp_\(n)"] = UInt16(code) }
        return map
    }()

    static func linux(qcode: String) -> UInt16? { qcodes[qcode] }

    /// A QEMU key number ("qnum": the PC's scan code set 1, 0x80 added for the 0xe0-prefixed
    /// keys; what libvirt sends for `virsh send-key`) → Linux KEY_*. Set 1's codes up to 0x58
    /// are Linux's own numbers (Linux took them from the PC keyboard).
    static func linux(qnum: UInt16) -> UInt16? {
        switch qnum {
        case 0x01...0x53, 0x56...0x58: return qnum
        case 0x54: return 99  // Alt+SysRq
        default: return extended[qnum]
        }
    }

    private static let extended: [UInt16: UInt16] = [
        0x70: 93, 0x73: 89, 0x79: 92, 0x7b: 94, 0x7d: 124,
        0x9c: 96, 0x9d: 97, 0xb5: 98, 0xb7: 99, 0xb8: 100, 0xc6: 119, 0xc7: 102, 0xc8: 103, 0xc9: 104,
        0xcb: 105, 0xcd: 106, 0xcf: 107, 0xd0: 108, 0xd1: 109, 0xd2: 110, 0xd3: 111, 0xdb: 125, 0xdc: 126,
        0xdd: 127, 0xde: 116, 0xdf: 142, 0xe3: 143, 0xa0: 113, 0xae: 114, 0xb0: 115,
    ]
}
