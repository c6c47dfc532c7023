import Foundation
import Testing
import TestSupport

/// Networking end to end (issue: networking): Debian's kernel with virtio-net on the virt
/// board, driven by network_machine.py (see its comment for what each scenario checks). The
/// user and tap scenarios run in namespaces of their own (`unshare`), so no guest packet can
/// reach the machine's real resolver or any address outside the test.
@Suite(.serialized) struct NetworkTests {
    /// Why the tests cannot run here, if they cannot.
    static var missing: String? {
        if let missing = MonitorTests.missing ?? LinuxBootTests.missing { return missing }
        if let reason = namespaces { return reason }
        return nil
    }

    /// The namespaces the user and tap scenarios need (unshare(1) as root).
    static let namespaces: String? = {
        guard let result = try? GuestProgram.run("/usr/bin/unshare", ["-mn", "true"]), result.status == 0 else {
            return "needs mount and network namespaces (unshare -mn, as root) to keep the guests' traffic inside the test"
        }
        return nil
    }()

    static func run(_ scenario: String, in namespace: [String] = []) throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("swemu-net-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("network_machine.py").path
        let arguments = [Python.executable, script, LinuxBootTests.binary, LinuxBootTests.kernel, LinuxBootTests.initrd, dir.path, scenario]
        let result = namespace.isEmpty
            ? try GuestProgram.run(arguments[0], Array(arguments.dropFirst()), timeout: 600)
            : try GuestProgram.run("/usr/bin/unshare", namespace + arguments, timeout: 600)
        #expect(result.status == 0, "\(result.output)")
        #expect(!result.output.contains("FAIL"), "\(result.output)")
    }

    /// -netdev user: DHCP, NAT to the host, DNS, hostfwd (also added and removed from the
    /// monitor), info network/usernet, query-rx-filter, set_link, filter-dump. In its own
    /// mount and network namespace, with a resolver of its own on 127.0.0.1.
    @Test(.enabled(if: missing == nil, "\(missing ?? "")"), .oneLinuxBootAtATime)
    func userNetworkingServesTheGuest() throws { try Self.run("user", in: ["-mn"]) }

    /// Two guests linked directly ping each other and exchange files both ways.
    @Test(.enabled(if: missing == nil, "\(missing ?? "")"), .oneLinuxBootAtATime, arguments: ["stream", "dgram", "socket"])
    func twoGuestsLinkedDirectly(_ link: String) throws { try Self.run(link, in: ["-n"]) }

    /// A guest with a NIC migrates; the NIC's state (receive filter) goes with it and the
    /// guest's network works at the destination.
    @Test(.enabled(if: missing == nil, "\(missing ?? "")"), .oneLinuxBootAtATime)
    func aGuestWithANICMigrates() throws { try Self.run("migrate", in: ["-n"]) }

    /// -netdev tap in a network namespace of the test's own.
    @Test(.enabled(if: missing == nil && FileManager.default.fileExists(atPath: "/dev/net/tun"),
                    "\(missing ?? "needs /dev/net/tun to create a TAP device")"), .oneLinuxBootAtATime)
    func tapReachesTheHostSide() throws { try Self.run("tap", in: ["-n"]) }
}
