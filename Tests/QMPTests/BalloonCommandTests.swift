import Synchronization
import Testing

@testable import QMP

/// A balloon double: a 1 GiB guest whose driver follows every target at once.
final class FakeBalloon: BalloonControl {
    let targets = Mutex<[UInt64]>([])
    let interval = Mutex(0)
    func setTarget(bytes: UInt64) { targets.withLock { $0.append(bytes) } }
    var actualBytes: UInt64 { targets.withLock { min($0.last ?? (1 << 30), 1 << 30) } }
    /// free memory 1 MiB and total 2 MiB reported; the rest not.
    var statistics: (values: [(name: String, value: UInt64?)], lastUpdate: Int64) {
        let names = ["stat-swap-in", "stat-swap-out", "stat-major-faults", "stat-minor-faults", "stat-free-memory",
                     "stat-total-memory", "stat-available-memory", "stat-disk-caches", "stat-htlb-pgalloc", "stat-htlb-pgfail"]
        let values: [UInt64?] = [nil, nil, nil, nil, 1 << 20, 2 << 20, nil, nil, nil, nil]
        return (zip(names, values).map { (name: $0, value: $1) }, 1_700_000_000)
    }
    var pollingInterval: Int {
        get { interval.withLock { $0 } }
        set { interval.withLock { $0 = newValue } }
    }
}

/// balloon, query-balloon and BALLOON_CHANGE (QMP) and balloon, info balloon (the human
/// monitor) with QEMU's argument forms, answers and errors.
@Suite struct BalloonCommandTests {
    @Test func qmpCommands() {
        let target = FakeTarget()
        let balloon = FakeBalloon()
        target.state.withLock { $0.balloon = balloon }
        var s = negotiatedSession(target)
        #expect(send(&s, #"{"execute": "query-balloon"}"#) == [#"{"return": {"actual": 1073741824}}"#])
        #expect(send(&s, #"{"execute": "balloon", "arguments": {"value": 1006632960}}"#) == [#"{"return": {}}"#])
        #expect(send(&s, #"{"execute": "query-balloon"}"#) == [#"{"return": {"actual": 1006632960}}"#])
        #expect(send(&s, #"{"execute": "balloon", "arguments": {"value": 0}}"#)
            == [#"{"error": {"class": "GenericError", "desc": "Parameter 'target' expects a size"}}"#])
        #expect(send(&s, #"{"execute": "balloon", "arguments": {"value": -5}}"#)
            == [#"{"error": {"class": "GenericError", "desc": "Parameter 'target' expects a size"}}"#])
        #expect(send(&s, #"{"execute": "balloon", "arguments": {"value": "1G"}}"#)
            == [#"{"error": {"class": "GenericError", "desc": "Invalid parameter type for 'value', expected: integer"}}"#])
        #expect(send(&s, #"{"execute": "balloon"}"#)
            == [#"{"error": {"class": "GenericError", "desc": "Parameter 'value' is missing"}}"#])
        #expect(balloon.targets.withLock { $0 } == [1_006_632_960])
        let commands = send(&s, #"{"execute": "query-commands"}"#).first ?? ""
        #expect(commands.contains(#"{"name": "balloon"}"#) && commands.contains(#"{"name": "query-balloon"}"#))
    }

    /// The guest's statistics as QEMU shows them (`qom-get PATH guest-stats`, unreported ones
    /// as uint64 -1), and how often the host asks (`guest-stats-polling-interval`), on the
    /// balloon's path under /machine/peripheral.
    @Test func guestStatisticsThroughQOM() {
        let target = FakeTarget()
        let balloon = FakeBalloon()
        target.state.withLock {
            $0.balloon = balloon
            $0.peripherals = [("balloon0", "virtio-balloon-device")]
        }
        var s = negotiatedSession(target)
        let stats = send(&s, #"{"execute": "qom-get", "arguments": {"path": "/machine/peripheral/balloon0", "property": "guest-stats"}}"#)
        let unset = "18446744073709551615"
        #expect(stats == [#"{"return": {"stats": {"stat-swap-in": \#(unset), "stat-swap-out": \#(unset), "stat-major-faults": \#(unset), "stat-minor-faults": \#(unset), "stat-free-memory": 1048576, "stat-total-memory": 2097152, "stat-available-memory": \#(unset), "stat-disk-caches": \#(unset), "stat-htlb-pgalloc": \#(unset), "stat-htlb-pgfail": \#(unset)}, "last-update": 1700000000}}"#])
        #expect(send(&s, #"{"execute": "qom-set", "arguments": {"path": "/machine/peripheral/balloon0", "property": "guest-stats-polling-interval", "value": 2}}"#) == [#"{"return": {}}"#])
        #expect(balloon.pollingInterval == 2)
        #expect(send(&s, #"{"execute": "qom-get", "arguments": {"path": "/machine/peripheral/balloon0", "property": "guest-stats-polling-interval"}}"#) == [#"{"return": 2}"#])
        #expect(send(&s, #"{"execute": "qom-set", "arguments": {"path": "/machine/peripheral/balloon0", "property": "guest-stats-polling-interval", "value": -1}}"#)
            == [#"{"error": {"class": "GenericError", "desc": "timer value must be greater than zero"}}"#])
        #expect(send(&s, #"{"execute": "qom-get", "arguments": {"path": "/machine/peripheral/balloon0", "property": "nosuch"}}"#)
            == [#"{"error": {"class": "GenericError", "desc": "Property 'virtio-balloon-device.nosuch' not found"}}"#])
        #expect(send(&s, #"{"execute": "qom-get", "arguments": {"path": "/machine/peripheral/disk0", "property": "guest-stats"}}"#)
            == [#"{"error": {"class": "DeviceNotFound", "desc": "Device '/machine/peripheral/disk0' not found"}}"#])
    }

    /// QEMU's have_balloon: without a device both commands fail with DeviceNotActive.
    @Test func withoutABalloon() {
        var s = negotiatedSession(FakeTarget())
        let error = #"{"error": {"class": "DeviceNotActive", "desc": "No balloon device has been activated"}}"#
        #expect(send(&s, #"{"execute": "query-balloon"}"#) == [error])
        #expect(send(&s, #"{"execute": "balloon", "arguments": {"value": 1048576}}"#) == [error])
        var m = HumanMonitor(target: FakeTarget())
        #expect(m.execute("info balloon").text == "Error: No balloon device has been activated\r\n")
        #expect(m.execute("balloon 64").text == "Error: No balloon device has been activated\r\n")
    }

    @Test func eventAndSchema() {
        let message = QMPSession.eventMessage(.balloonChange(actual: 1_006_632_960), timestamp: QMPTimestamp(seconds: 1, microseconds: 2))
        #expect(String(decoding: message, as: UTF8.self)
            == #"{"timestamp": {"seconds": 1, "microseconds": 2}, "event": "BALLOON_CHANGE", "data": {"actual": 1006632960}}"# + "\r\n")
        let schema = QMPSchema.introspect().serialized
        #expect(schema.contains(#""name": "BALLOON_CHANGE", "meta-type": "event""#))
        #expect(schema.contains(#""name": "query-balloon", "meta-type": "command""#))
    }

    @Test func humanMonitorCommands() {
        let target = FakeTarget()
        let balloon = FakeBalloon()
        target.state.withLock { $0.balloon = balloon }
        var m = HumanMonitor(target: target)
        #expect(m.execute("info balloon").text == "balloon: actual=1024\r\n")
        #expect(m.execute("balloon 960").text == "")
        #expect(m.execute("info balloon").text == "balloon: actual=960\r\n")
        #expect(m.execute("balloon 1G").text == "")
        #expect(m.execute("balloon lots").text == "invalid size\r\nTry \"help balloon\" for more information\r\n")
        #expect(m.execute("balloon 0").text == "Error: Parameter 'target' expects a size\r\n")
        #expect(balloon.targets.withLock { $0 } == [960 << 20, 1 << 30])
        #expect(m.execute("help balloon").text == "balloon target -- request VM to change its memory allocation (in MB)\r\n")
    }
}
