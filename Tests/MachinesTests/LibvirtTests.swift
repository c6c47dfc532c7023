import Foundation
import Glibc
import Testing
import TestSupport

/// libvirt drives swemu as its `<emulator>` (issue: libvirt): Debian's libvirt 9.0 probes the
/// binary's capabilities, defines a riscv64 `virt` domain, starts it (its command line: JSON
/// -object/-blockdev, -chardev socket,fd=, -add-fd, -msg timestamp=on, ...; then its QMP start
/// sequence), suspends, resumes, snapshots, saves, restores and destroys it, through `virsh` with libvirt's QEMU driver
/// embedded in the virsh process (`qemu:///embed?root=DIR`): no daemon, every file under a
/// directory of the test's own.
@Suite(.serialized, .oneLinuxBootAtATime) struct LibvirtTests {
    static var missing: String? {
        if let missing = LinuxBootTests.missing ?? LibvirtEmbedded.missing { return missing }
        if !FileManager.default.isExecutableFile(atPath: "/usr/bin/qemu-img") {
            return "needs qemu-img for the domain's qcow2 disk (Debian's qemu-utils; scripts/setup installs it)"
        }
        return nil
    }

    /// What libvirt learns from its probe of the binary: the virt machine, TCG, memory backends.
    /// A riscv64 `virt` domain booting the test kernel and initramfs with `cmdline` after
    /// OpenSBI (`<loader>`, libvirt's `-bios`): a virtio disk, the serial port and console on
    /// the file `serial` (appended to when `append`; a pty when nil), a virtio keyboard (the
    /// guest's power button), `devices` more, and `extra` domain elements.
    static func domain(_ name: String, cmdline: String, disk: String, format: String, cache: String? = nil, serial: String?,
                       append: Bool = false, devices: String = "", extra: String = "") -> String {
        let console = serial.map { path in
            let source = "<source path='\(path)'\(append ? " append='on'" : "")/>"
            return "<serial type='file'>\(source)</serial><console type='file'>\(source)</console>"
        } ?? "<serial type='pty'/><console type='pty'/>"
        return """
            <domain type='qemu'>
              <name>\(name)</name>
              <memory unit='MiB'>256</memory>
              <vcpu>2</vcpu>
              <os>
                <type arch='riscv64' machine='virt'>hvm</type>
                <loader type='rom'>\(LinuxBootTests.guests)/fw_dynamic.bin</loader>
                <kernel>\(LinuxBootTests.kernel)</kernel>
                <initrd>\(LinuxBootTests.initrd)</initrd>
                <cmdline>\(cmdline)</cmdline>
              </os>
              \(extra)
              <devices>
                <emulator>\(LinuxBootTests.binary)</emulator>
                <disk type='file' device='disk'>
                  <driver name='qemu' type='\(format)'\(cache.map { " cache='\($0)'" } ?? "")/>
                  <source file='\(disk)'/>
                  <target dev='vda' bus='virtio'/>
                </disk>
                \(console)
                <input type='keyboard' bus='virtio'/>
                \(devices)
              </devices>
            </domain>
            """
    }

    @Test(.enabled(if: missing == nil, "\(missing ?? "")"))
    func capabilitiesProbe() throws {
        let libvirt = try LibvirtEmbedded()
        defer { libvirt.cleanUp("none") }
        let result = try libvirt.virsh("domcapabilities --emulatorbin \(LinuxBootTests.binary) --arch riscv64 --virttype qemu --machine virt")
        #expect(result.status == 0, "\(result.output)\n\(libvirt.emulatorLog("none"))")
        for expected in ["<domain>qemu</domain>", "<machine>virt</machine>", "<arch>riscv64</arch>", "<value>memfd</value>",
                         "<value>virtio</value>"] {
            #expect(result.output.contains(expected), "domcapabilities lacks \(expected):\n\(result.output)")
        }
    }

    /// `virsh console` on the domain's pty serial port shows the guest, which got its address
    /// from user networking's DHCP server (`<interface type='user'>`: slirp inside swemu; the
    /// DHCP exchange stays inside the process); then `virsh send-key` presses its power key.
    @Test(.enabled(if: missing == nil, "\(missing ?? "")"))
    func consoleShowsADHCPLeaseAndSendKeyPowersOff() throws {
        let libvirt = try LibvirtEmbedded()
        let name = "swemu-console"
        defer { libvirt.cleanUp(name) }
        let disk = try LinuxBootTests.makeDisk([
            "dhcp.sh": "#!/bin/sh\ncase \"$1\" in bound|renew) ip addr add \"$ip/$mask\" dev \"$interface\"; echo \"$ip\" > /tmp/lease ;; esac\n",
            "lease": """
                chmod +x /mnt/dhcp.sh
                ip link set eth0 up
                udhcpc -i eth0 -n -q -t 10 -T 1 -s /mnt/dhcp.sh >/dev/null 2>&1
                i=0
                while [ $i -lt 600 ]; do echo "LEASE $(cat /tmp/lease 2>/dev/null)"; i=$((i + 1)); sleep 1; done
                """,
        ])
        defer { try? FileManager.default.removeItem(at: disk.deletingLastPathComponent()) }
        let xml = Self.domain(name, cmdline: "console=ttyS0 quiet swemu.test=/mnt/lease", disk: disk.path, format: "raw", serial: nil,
                              devices: "<interface type='user'><model type='virtio'/></interface>")
        let file = libvirt.root.appendingPathComponent("domain.xml")
        try xml.write(to: file, atomically: true, encoding: .utf8)
        let started = try libvirt.virsh("define \(file.path); start \(name)")
        try #require(started.status == 0, "\(started.output)\n\(libvirt.emulatorLog(name))")
        var shown = ""
        for _ in 0..<12 where !shown.contains("LEASE 10.0.2.15") {
            shown += try libvirt.console(name, seconds: 5)
        }
        #expect(shown.contains("LEASE 10.0.2.15"), "virsh console showed: \(shown.suffix(800))")

        // virsh send-key: libvirt turns KEY_POWER into QEMU's key number (0xde) for QMP
        // send-key, the virtio keyboard presses it, and the guest powers itself off.
        let pressed = try libvirt.virsh("send-key \(name) KEY_POWER; event --domain \(name) --event lifecycle --timeout 120; "
                                        + "event --domain \(name) --event lifecycle --timeout 60; domstate \(name)", timeout: 240)
        #expect(pressed.output.split(separator: "\n").contains("shut off"), "virsh send-key KEY_POWER did not end the guest: \(pressed.output)")
    }

    /// A domain asking for what swemu cannot do (a real-time clock in local time) fails at
    /// `virsh start` with swemu's own one-line reason, and leaves no emulator process behind.
    @Test(.enabled(if: missing == nil, "\(missing ?? "")"))
    func unsupportedDomainFailsWithSwemusReason() throws {
        let libvirt = try LibvirtEmbedded()
        let name = "swemu-refused"
        defer { libvirt.cleanUp(name) }
        let xml = Self.domain(name, cmdline: "console=ttyS0", disk: LinuxBootTests.initrd, format: "raw", serial: nil,
                              extra: "<clock offset='localtime'/>")
        let file = libvirt.root.appendingPathComponent("domain.xml")
        try xml.write(to: file, atomically: true, encoding: .utf8)
        try #require(try libvirt.virsh("define \(file.path)").status == 0)
        let started = try libvirt.virsh("start \(name)")
        #expect(started.status != 0)
        #expect(started.output.contains("-rtc: base=localtime is not supported"), "libvirt shows swemu's reason: \(started.output)")
        #expect(try libvirt.virsh("domstate \(name)").output.contains("shut off"))
        let left = try GuestProgram.run("/usr/bin/pgrep", ["-f", "guest=\(name)"])
        #expect(left.status != 0, "an emulator process is left: \(left.output)")
    }

    /// A domain with a qcow2 disk, a serial log and libvirt's default balloon: defined, started
    /// (the guest boots to its shell and sees the disk), ballooned, suspended, resumed, queried
    /// through the monitor, snapshotted, saved and restored, destroyed.
    @Test(.enabled(if: missing == nil, "\(missing ?? "")"))
    func domainLifecycle() throws {
        let libvirt = try LibvirtEmbedded()
        let name = "swemu-lifecycle"
        defer { libvirt.cleanUp(name) }
        let disk = libvirt.root.appendingPathComponent("disk.qcow2").path
        let created = try GuestProgram.run("/usr/bin/qemu-img", ["create", "-q", "-f", "qcow2", disk, "16M"])
        try #require(created.status == 0, "\(created.output)")
        let serial = libvirt.root.appendingPathComponent("serial.log").path
        let xml = Self.domain(name, cmdline: "console=ttyS0", disk: disk, format: "qcow2", serial: serial)
        let file = libvirt.root.appendingPathComponent("domain.xml")
        try xml.write(to: file, atomically: true, encoding: .utf8)

        let started = try libvirt.virsh("define \(file.path); start \(name); domstate \(name)")
        try #require(started.status == 0 && started.output.contains("running"), "\(started.output)\n\(libvirt.emulatorLog(name))")
        // libvirt's command line, as it wrote it for swemu.
        let log = libvirt.emulatorLog(name)
        for option in ["-blockdev", "-msg timestamp=on", "-bios \(LinuxBootTests.guests)/fw_dynamic.bin", "memory-backend=riscv_virt_board.ram", "-chardev socket,id=charmonitor,fd=",
                       // query-command-line-options lists -sandbox's keys, so libvirt confines swemu as it confines QEMU.
                       "-sandbox on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"] {
            #expect(log.contains(option), "libvirt's command line lacks \(option):\n\(log)")
        }
        let booted = LibvirtEmbedded.waitForText("SWEMU-GUEST-READY", in: serial, seconds: 60)
        #expect(booted.contains("SWEMU-GUEST-READY"), "the guest did not boot:\n\(booted.suffix(2000))\n\(libvirt.emulatorLog(name))")
        #expect(booted.contains("[vda] 32768 512-byte logical blocks"), "the guest does not see the qcow2 disk")

        // libvirt's default memballoon (virtio-balloon-device): setmem reaches the guest, whose
        // driver gives 64 MiB back; dominfo's "Used memory" is query-balloon's answer.
        try #require(try libvirt.virsh("setmem \(name) 196608").status == 0)
        var used = ""
        for _ in 0..<100 where !used.contains("196608 KiB") {
            usleep(200_000)
            used = try libvirt.virsh("dominfo \(name)").output.split(separator: "\n").first { $0.hasPrefix("Used memory") }.map(String.init) ?? ""
        }
        #expect(used.contains("196608 KiB"), "the balloon did not reach 192 MiB: \(used)")

        let states = try libvirt.virsh("suspend \(name); domstate \(name); resume \(name); domstate \(name)")
        #expect(states.status == 0, "\(states.output)")
        #expect(states.output.components(separatedBy: "\n").filter { !$0.isEmpty && !$0.hasPrefix("Domain") } == ["paused", "running"],
                "\(states.output)")
        let status = try libvirt.virsh(#"qemu-monitor-command \#(name) '{"execute":"query-status"}'"#)
        #expect(status.output.contains(#""status":"running""#), "\(status.output)")
        let blocks = try libvirt.virsh("domblklist \(name)")
        #expect(blocks.output.contains("vda") && blocks.output.contains(disk), "\(blocks.output)")
        // domblkstat: the guest's reads of its disk, counted (query-blockstats by qdev).
        let stat = try libvirt.virsh("domblkstat \(name) vda")
        let counters = Dictionary(stat.output.split(separator: "\n").compactMap { line -> (String, Int)? in
            let words = line.split(separator: " ")
            return words.count == 3 ? (String(words[1]), Int(words[2]) ?? -1) : nil
        }, uniquingKeysWith: { a, _ in a })
        #expect((counters["rd_req"] ?? 0) > 0 && (counters["rd_bytes"] ?? 0) > 0, "\(stat.output)")

        // An internal snapshot (HMP savevm "s1" into the qcow2 image), and a revert to it:
        // libvirt restarts the emulator with -loadvm s1.
        let snapshot = try libvirt.virsh("snapshot-create-as \(name) s1; snapshot-revert \(name) s1; domstate \(name)")
        #expect(snapshot.status == 0 && snapshot.output.trimmingCharacters(in: .whitespacesAndNewlines).hasSuffix("running"), "\(snapshot.output)\n\(libvirt.emulatorLog(name).suffix(1500))")
        let listed = try GuestProgram.run("/usr/bin/qemu-img", ["snapshot", "-l", "-U", disk])
        #expect(listed.output.contains(" s1 "), "the image's snapshot is named s1, as libvirt asked: \(listed.output)")
        #expect(try libvirt.virsh("snapshot-delete \(name) s1").status == 0)

        // virsh save (QMP getfd with the file's descriptor, migrate fd:migrate) and restore
        // (-incoming defer, migrate-incoming fd:N): the domain comes back running.
        let saved = libvirt.root.appendingPathComponent("saved.img").path
        let saveRestore = try libvirt.virsh("save \(name) \(saved); domstate \(name); restore \(saved); domstate \(name)")
        #expect(saveRestore.status == 0, "\(saveRestore.output)\n\(libvirt.emulatorLog(name).suffix(1500))")
        #expect(saveRestore.output.components(separatedBy: "\n").filter { $0 == "shut off" || $0 == "running" } == ["shut off", "running"],
                "\(saveRestore.output)")
        #expect(((try? FileManager.default.attributesOfItem(atPath: saved)[.size]) as? NSNumber)?.intValue ?? 0 > 1 << 20, "the saved state is in the file")

        // virsh shutdown: system_powerdown presses the virtio keyboard's KEY_POWER, the guest
        // powers itself off, and libvirt sees the emulator end as after a guest power-off. The
        // embedded driver lives in the virsh process, so the same process waits for the end
        // (the SHUTDOWN event reaches only a connected monitor).
        let shutdown = try libvirt.virsh("shutdown \(name); event --domain \(name) --event lifecycle --timeout 120; "
                                         + "event --domain \(name) --event lifecycle --timeout 60; domstate \(name)", timeout: 240)
        #expect(shutdown.output.contains("Shutdown") && shutdown.output.split(separator: "\n").contains("shut off"),
                "virsh shutdown did not end the guest: \(shutdown.output)\n\(LibvirtEmbedded.waitForText("", in: serial, seconds: 0.1).suffix(1500))")
        #expect(LibvirtEmbedded.waitForText("power button: powering off", in: serial, seconds: 1).contains("power button: powering off"),
                "the guest's own handler powered it off")

        // virsh destroy of a running domain (started again; it need not boot for this).
        let restarted = try libvirt.virsh("start \(name)")
        try #require(restarted.status == 0, "\(restarted.output)")
        let destroyed = try libvirt.virsh("destroy \(name); domstate \(name); undefine \(name)")
        #expect(destroyed.status == 0 && destroyed.output.contains("shut off"), "\(destroyed.output)")
        // SIGTERM from libvirt: swemu's clean end, as QEMU's.
        #expect(libvirt.emulatorLog(name).contains("terminating on signal 15"), "\(libvirt.emulatorLog(name))")
    }
}
