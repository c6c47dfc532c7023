import SystemSupport

/// The texts QEMU users expect from `--help`, `--version`, `-M help`, `-cpu help`,
/// `-device help`, `-accel help` and `-d help`, in QEMU's layout.
enum HelpText {
    /// `text` followed by spaces up to `width` columns (at least one space after it).
    static func pad(_ text: String, _ width: Int) -> String {
        text.count >= width ? text + " " : text + String(repeating: " ", count: width - text.count)
    }

    static func version(_ target: EmulatorTarget) -> String {
        "swemu emulator version \(swemuVersion) (\(target.programName))\nCopyright (c) 2026 the swemu developers\n"
    }

    static func usage(_ target: EmulatorTarget) -> String {
        var out = "swemu emulator version \(swemuVersion)\n"
        out += "usage: \(target.programName) [options]\n\n"
        for section in OptionSpec.Section.allCases {
            let specs = OptionTable.all.filter { $0.section == section }
            guard !specs.isEmpty else { continue }
            out += "\(section.rawValue):\n"
            for spec in specs {
                // QEMU lists "-h or -help"; other aliases (-M) are named in the help line.
                let spellings = spec.name == "h" ? "-h or -help" : "-\(spec.name)"
                let head = spec.argument.map { "\(spellings) \($0)" } ?? spellings
                var helpLines = spec.help.split(separator: "\n").map(String.init)
                if head.count < 16 {
                    out += pad(head, 16) + helpLines.removeFirst() + "\n"
                } else {
                    out += head + "\n"
                }
                for line in helpLines { out += String(repeating: " ", count: 16) + line + "\n" }
            }
            out += "\n"
        }
        out += """
            During emulation, with -nographic, the following keys are useful:
            ctrl-a h        print this help
            ctrl-a x        exit emulator
            ctrl-a c        switch between console and monitor
            ctrl-a ctrl-a   sent ctrl-a

            Options refused with 'not available in this build yet' belong to features still to come;
            see the README's status table.

            libvirt: give this binary as a domain's <emulator>; libvirt probes it as it probes QEMU
            (virsh domcapabilities) and its command line (JSON -object/-blockdev/-device/-netdev,
            -add-fd, -chardev socket,fd=, -msg timestamp=on) is taken as written. See the README's
            "Under libvirt" for what works (define, start, console, suspend/resume, domblkstat,
            snapshots, save/restore, migrate --live, shutdown with a virtio keyboard as the power
            button, destroy; x86-64 microvm domains with virtio-mmio addresses) and what does not.

            """
        return out
    }

    static func machines(_ target: EmulatorTarget) -> String {
        var out = "Supported machines are:\n"
        for m in target.machines where m.available {
            out += pad(m.name, 20) + " " + m.description + "\n"
        }
        let planned = target.machines.filter { !$0.available }
        if !planned.isEmpty {
            out += "Not available in this build yet:\n"
            for m in planned { out += pad(m.name, 20) + " " + m.description + "\n" }
        }
        return out
    }

    static func cpus(_ target: EmulatorTarget) -> String {
        var out = "Available CPUs:\n"
        for cpu in target.cpuModels {
            out += "  " + pad(cpu.name, 10) + cpu.description + "\n"
        }
        return out
    }

    static func accelerators(_ target: EmulatorTarget) -> String {
        var out = "Accelerators supported in swemu binary:\n"
        for accel in target.accelerators {
            out += accel.name + (accel.available ? "" : " (not available: \(accel.note))") + "\n"
        }
        return out
    }

    static func devices(_ target: EmulatorTarget) -> String {
        var out = ""
        var category = ""
        for device in DeviceSpec.catalog.sorted(by: { $0.category < $1.category }) {
            if device.category != category {
                out += (out.isEmpty ? "" : "\n") + device.category + ":\n"
                category = device.category
            }
            let bus = device.name == "isa-serial" ? "ISA" : "virtio-bus"
            out += "name \"\(device.name)\", bus \(bus), desc \"\(device.description)\"\n"
        }
        return out
    }

    /// `-nic model=help` (qemu_show_nic_models).
    static func nicModels() -> String {
        "Supported NIC models:\n" + NICSpec.models.map { $0 + "\n" }.joined()
    }

    static func logItems() -> String {
        var out = "Log items (comma separated):\n"
        for item in DebugLog.items {
            out += pad(item.name, 13) + item.help + "\n"
        }
        return out
    }
}
