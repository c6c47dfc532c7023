import Foundation
import Testing
import TestSupport

/// `virsh migrate --live` between two libvirt daemons (issue: libvirt), each with swemu as the
/// domain's emulator: libvirt starts the destination with `-incoming defer`, hands the
/// source a connected socket (`getfd`, `migrate fd:`), watches `query-migrate`, and resumes the
/// guest on the destination. The guest prints a numbered line every 100 ms throughout, and
/// the serial log (one file both ends append to: `append='on'`, or the destination's libvirt
/// truncates it as it starts) must hold every number exactly once, in
/// order; then `virsh shutdown` on the destination ends it through its power button.
@Suite(.serialized, .oneLinuxBootAtATime) struct LibvirtMigrationTests {
    static var missing: String? { LinuxBootTests.missing ?? LibvirtDaemon.missing }

    static let ticker = """
        i=0
        while [ $i -lt 100000 ]; do echo "TICK $i"; i=$((i + 1)); usleep 100000; done
        """

    /// The numbers of the TICK lines in `text`.
    static func ticks(_ text: String) -> [Int] {
        text.split(whereSeparator: \.isNewline).compactMap { line in
            line.hasPrefix("TICK ") ? Int(line.dropFirst(5).trimmingCharacters(in: .whitespaces)) : nil
        }
    }

    /// A TCP port nothing listens on now, for the migration stream.
    static func freePort() -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) == 0 ? getsockname(fd, $0, &length) : -1 }
        }
        return Int(UInt16(bigEndian: address.sin_port))
    }

    @Test(.enabled(if: missing == nil, "\(missing ?? "")"))
    func liveMigrationBetweenTwoDaemons() throws {
        let disk = try LinuxBootTests.makeDisk(["ticker": Self.ticker])
        defer { try? FileManager.default.removeItem(at: disk.deletingLastPathComponent()) }
        let source = try LibvirtDaemon(hostUUID: UUID())
        defer { source.stop() }
        let destination = try LibvirtDaemon(hostUUID: UUID())
        defer { destination.stop() }
        let name = "swemu-migrating"
        let serial = disk.deletingLastPathComponent().appendingPathComponent("serial.log").path
        let xml = LibvirtTests.domain(name, cmdline: "console=ttyS0 quiet swemu.test=/mnt/ticker", disk: disk.path, format: "raw",
                                      cache: "none", serial: serial, append: true)
        let file = source.root.appendingPathComponent("domain.xml")
        try xml.write(to: file, atomically: true, encoding: .utf8)
        let started = try source.virsh("define \(file.path); start \(name)")
        try #require(started.status == 0, "\(started.output)\n\(source.emulatorLog(name))")
        let before = LibvirtEmbedded.waitForText("TICK 10\r\n", in: serial, seconds: 120)
        try #require(before.contains("TICK 10\r\n"), "the guest did not start ticking: \(before.suffix(1500))")

        // Live: the guest runs through the copy; --persistent: the destination keeps the
        // definition (a domain that arrived without it vanishes when it stops). --unsafe: the disk is on a local file system
        // both daemons see (libvirt wants shared storage or cache=none on a cluster FS).
        let port = Self.freePort()
        let migrated = try source.virsh("migrate --live --persistent --unsafe \(name) '\(destination.uri)' --migrateuri tcp://127.0.0.1:\(port)",
                                        timeout: 180)
        try #require(migrated.status == 0, """
            \(migrated.output)
            source: \(source.emulatorLog(name).suffix(1500))
            destination: \(destination.emulatorLog(name).suffix(1500))
            """)
        let atSwitch = Self.ticks(LibvirtEmbedded.waitForText("", in: serial, seconds: 0.1)).last ?? 0
        #expect(try source.virsh("domstate \(name)").output.contains("shut off"))
        #expect(try destination.virsh("domstate \(name)").output.contains("running"))
        #expect(destination.emulatorLog(name).contains("-incoming defer"), "\(destination.emulatorLog(name))")

        // The guest goes on at the destination: every number once, in order.
        let after = LibvirtEmbedded.waitForText("TICK \(atSwitch + 20)\r\n", in: serial, seconds: 60)
        let ticks = Self.ticks(after)
        #expect(ticks.last ?? 0 >= atSwitch + 20, "the guest stopped ticking after the move: \(after.suffix(600))")
        #expect(ticks == Array(0..<ticks.count), "ticks lost or repeated across the move: \(ticks.suffix(40))")

        // The destination's power button ends it.
        try #require(try destination.virsh("shutdown \(name)").status == 0)
        var state = ""
        for _ in 0..<150 where state != "shut off" {
            usleep(200_000)
            state = try destination.virsh("domstate \(name)").output.trimmingCharacters(in: .whitespacesAndNewlines)
        }
        #expect(state == "shut off", "virsh shutdown on the destination: \(state)")
    }
}
