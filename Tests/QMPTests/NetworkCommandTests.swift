import Synchronization
import Testing

@testable import QMP

/// A network double: canned answers and a record of every call.
final class FakeNetwork: NetworkControl {
    let calls = Mutex<[String]>([])
    private func record(_ call: String) { calls.withLock { $0.append(call) } }

    var networkInfo: String { "nic0: index=0,type=nic,model=virtio-net-device,macaddr=52:54:00:12:34:56\n \\ n0: index=0,type=user,net=10.0.2.0,restrict=off\n" }
    func setLink(name: String, up: Bool) throws(QMPError) {
        guard ["nic0", "n0"].contains(name) else { throw QMPError(errorClass: "DeviceNotFound", desc: "Device '\(name)' not found") }
        record("set_link \(name) \(up)")
    }
    func hostForwardAdd(netdev: String?, rule: String) -> String {
        record("hostfwd_add \(netdev ?? "-") \(rule)")
        return ""
    }
    func hostForwardRemove(netdev: String?, rule: String) -> String {
        record("hostfwd_remove \(netdev ?? "-") \(rule)")
        return "host forwarding rule for \(rule) removed\n"
    }
    var userNetworkInfo: String { "Hub -1 (n0):\n" }
    func rxFilters(name: String?) throws(QMPError) -> [RxFilterInfo] {
        [RxFilterInfo(name: "nic0", promiscuous: false, multicast: "normal", unicast: "normal", broadcastAllowed: true,
                      multicastOverflow: false, unicastOverflow: false, mainMAC: "52:54:00:12:34:56", unicastTable: [],
                      multicastTable: ["33:33:00:00:00:01"])]
    }
}

/// set_link, query-rx-filter (QMP) and set_link, hostfwd_add/_remove, info network/usernet
/// (the human monitor) reach the machine's `NetworkControl` with QEMU's argument forms.
@Suite struct NetworkCommandTests {
    @Test func qmpCommands() {
        let target = FakeTarget()
        let network = FakeNetwork()
        target.state.withLock { $0.network = network }
        var s = negotiatedSession(target)
        #expect(send(&s, #"{"execute": "set_link", "arguments": {"name": "n0", "up": false}}"#) == [#"{"return": {}}"#])
        #expect(send(&s, #"{"execute": "set_link", "arguments": {"name": "x", "up": true}}"#)
            == [#"{"error": {"class": "DeviceNotFound", "desc": "Device 'x' not found"}}"#])
        #expect(send(&s, #"{"execute": "set_link", "arguments": {"name": "n0"}}"#)
            == [#"{"error": {"class": "GenericError", "desc": "Parameter 'up' is missing"}}"#])
        #expect(network.calls.withLock { $0 } == ["set_link n0 false"])
        let filter = send(&s, #"{"execute": "query-rx-filter", "arguments": {"name": "nic0"}}"#)
        #expect(filter.count == 1 && filter[0].contains(#""main-mac": "52:54:00:12:34:56""#)
                && filter[0].contains(#""vlan": "all""#) && filter[0].contains(#""multicast-table": ["33:33:00:00:00:01"]"#), "\(filter)")
        #expect(send(&s, #"{"execute": "query-commands"}"#).first?.contains(#"{"name": "set_link"}"#) == true)
    }

    @Test func qmpWithoutANetwork() {
        var s = negotiatedSession(FakeTarget())
        #expect(send(&s, #"{"execute": "set_link", "arguments": {"name": "n0", "up": true}}"#)
            == [#"{"error": {"class": "DeviceNotFound", "desc": "Device 'n0' not found"}}"#])
        #expect(send(&s, #"{"execute": "query-rx-filter"}"#) == [#"{"return": []}"#])
    }

    @Test func humanMonitorCommands() {
        let target = FakeTarget()
        let network = FakeNetwork()
        target.state.withLock { $0.network = network }
        var m = HumanMonitor(target: target)
        #expect(m.execute("hostfwd_add tcp::2222-:22").text == "")
        #expect(m.execute("hostfwd_add n0 udp:127.0.0.1:5353-:53").text == "")
        #expect(m.execute("hostfwd_remove n0 tcp::2222").text == "host forwarding rule for tcp::2222 removed\r\n")
        #expect(m.execute("hostfwd_add a b c").text == "hostfwd_add: expected [netdev_id] rule\r\n")
        #expect(m.execute("set_link nic0 off").text == "")
        #expect(m.execute("set_link nic0 maybe").text == "set_link: expected name on|off\r\n")
        #expect(m.execute("set_link eth9 on").text == "Error: Device 'eth9' not found\r\n")
        #expect(network.calls.withLock { $0 } == ["hostfwd_add - tcp::2222-:22", "hostfwd_add n0 udp:127.0.0.1:5353-:53",
                                                  "hostfwd_remove n0 tcp::2222", "set_link nic0 false"])
        #expect(m.execute("info network").text.hasPrefix("nic0: index=0,type=nic"))
        #expect(m.execute("info usernet").text == "Hub -1 (n0):\r\n")
        #expect(m.execute("help set_link").text == "set_link name on|off -- change the link status of a network adapter\r\n")
    }

    @Test func humanMonitorWithoutANetwork() {
        var m = HumanMonitor(target: FakeTarget())
        #expect(m.execute("hostfwd_add tcp::2222-:22").text == "user mode network stack not in use\r\n")
        #expect(m.execute("info network").text == "")
    }
}
