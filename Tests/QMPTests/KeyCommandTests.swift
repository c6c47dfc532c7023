import Glibc
import Synchronization
import Testing

@testable import QMP

/// QMP `send-key` and HMP `sendkey`: QEMU's key names and numbers become Linux key codes,
/// pressed in order and released in reverse after the hold time.
@Suite struct KeyCommandTests {
    final class FakeKeyboard: KeyboardControl {
        let events = Mutex<[(UInt16, Bool)]>([])
        func key(_ code: UInt16, pressed: Bool) { events.withLock { $0.append((code, pressed)) } }
        /// The events once `count` arrived (the releases come on a timer), waiting up to 10 s:
        /// on a loaded 2-core CI machine the timer's thread waited over 1 s once.
        func wait(for count: Int) -> [String] {
            for _ in 0..<5_000 where events.withLock({ $0.count }) < count { usleep(2_000) }
            return events.withLock { $0.map { "\($0.1 ? "+" : "-")\($0.0)" } }
        }
    }

    static func target() -> (FakeTarget, FakeKeyboard) {
        let target = FakeTarget()
        let keyboard = FakeKeyboard()
        target.state.withLock { $0.keyboard = keyboard }
        return (target, keyboard)
    }

    @Test func qcodesArePressedInOrderAndReleasedInReverse() {
        let (target, keyboard) = Self.target()
        var s = negotiatedSession(target)
        let reply = send(&s, #"{"execute": "send-key", "arguments": {"keys": [{"type": "qcode", "data": "ctrl"}, {"type": "qcode", "data": "alt"}, {"type": "qcode", "data": "delete"}], "hold-time": 0}}"#)
        #expect(reply == [#"{"return": {}}"#])
        #expect(keyboard.wait(for: 6) == ["+29", "+56", "+111", "-111", "-56", "-29"])
    }

    /// libvirt's `virsh send-key` sends QEMU key numbers (PC set 1 scan codes, 0x80 added for
    /// the 0xe0 keys): KEY_LEFTCTRL, KEY_SYSRQ, KEY_POWER.
    @Test func numbersAreQEMUsKeyNumbers() {
        let (target, keyboard) = Self.target()
        var s = negotiatedSession(target)
        let reply = send(&s, #"{"execute": "send-key", "arguments": {"keys": [{"type": "number", "data": 29}, {"type": "number", "data": 183}, {"type": "number", "data": 222}], "hold-time": 0}}"#)
        #expect(reply == [#"{"return": {}}"#])
        #expect(keyboard.wait(for: 6) == ["+29", "+99", "+116", "-116", "-99", "-29"])
        // Every key of the PC keyboard's main block maps to itself, and round trips hold for the
        // extended keys libvirt uses most.
        for code: UInt16 in 1...0x53 { #expect(KeyCodes.linux(qnum: code) == code) }
        #expect([0x9d, 0xb8, 0xc8, 0xcb, 0xcd, 0xd0, 0xd3, 0xdb].map { KeyCodes.linux(qnum: $0) } == [97, 100, 103, 105, 106, 108, 111, 125])
        #expect(KeyCodes.linux(qcode: "a") == 30 && KeyCodes.linux(qcode: "f12") == 88 && KeyCodes.linux(qcode: "kp_0") == 82)
    }

    @Test func badKeysAndNoKeyboard() {
        let (target, keyboard) = Self.target()
        var s = negotiatedSession(target)
        #expect(send(&s, #"{"execute": "send-key", "arguments": {"keys": [{"type": "qcode", "data": "nosuchkey"}]}}"#)
            == [#"{"error": {"class": "GenericError", "desc": "Parameter 'keys[0].data' does not accept value 'nosuchkey'"}}"#])
        #expect(send(&s, #"{"execute": "send-key", "arguments": {"keys": [{"type": "number", "data": 4096}]}}"#)
            == [#"{"error": {"class": "GenericError", "desc": "Key 4096 (a QEMU key number) has no key here"}}"#])
        #expect(send(&s, #"{"execute": "send-key", "arguments": {"keys": []}}"#)
            == [#"{"error": {"class": "GenericError", "desc": "Parameter 'keys' expects a non-empty list"}}"#])
        #expect(send(&s, #"{"execute": "send-key", "arguments": {"keys": [{"type": "qcode", "data": "a"}], "hold-time": -1}}"#)
            == [#"{"error": {"class": "GenericError", "desc": "Parameter 'hold-time' expects 0 to 10000 (milliseconds)"}}"#])
        #expect(keyboard.events.withLock { $0.isEmpty }, "nothing is pressed when the list is bad")
        var bare = negotiatedSession(FakeTarget())
        #expect(send(&bare, #"{"execute": "send-key", "arguments": {"keys": [{"type": "qcode", "data": "a"}]}}"#)
            == [#"{"error": {"class": "GenericError", "desc": "The machine has no keyboard to send keys to (add -device virtio-keyboard-device)"}}"#])
    }

    @Test func humanMonitorSendkey() {
        let (target, keyboard) = Self.target()
        var m = HumanMonitor(target: target)
        #expect(m.execute("sendkey ctrl-0x38-delete 0").text == "")
        #expect(keyboard.wait(for: 6) == ["+29", "+56", "+111", "-111", "-56", "-29"])
        #expect(m.execute("sendkey").text == "Parameter 'keys' is missing\r\n")
        #expect(m.execute("sendkey ctrl-nosuchkey").text == "Error: Parameter 'keys[1].data' does not accept value 'nosuchkey'\r\n")
        #expect(m.execute("help sendkey").text == "sendkey keys [hold_ms] -- send keys to the VM (e.g. 'sendkey ctrl-alt-f1', default hold time=100 ms)\r\n")
    }
}
