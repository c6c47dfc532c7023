import Foundation

/// libvirt's QEMU driver embedded in a `virsh` process (`qemu:///embed?root=DIR`), for tests
/// that drive swemu as libvirt's emulator: no daemon, its configuration and every file it
/// makes under a directory of the test's own, nothing on the machine changed. Domains outlive
/// one virsh process; the next one finds them again.
public struct LibvirtEmbedded {
    public static let virsh = "/usr/bin/virsh"
    public static let qemuDriver = "/usr/lib/x86_64-linux-gnu/libvirt/connection-driver/libvirt_driver_qemu.so"

    /// Why libvirt cannot be driven here, or nil.
    public static var missing: String? {
        if !FileManager.default.isExecutableFile(atPath: virsh) || !FileManager.default.fileExists(atPath: qemuDriver) {
            return "needs libvirt's virsh and QEMU driver (Debian's libvirt-clients, libvirt-daemon-driver-qemu; scripts/setup installs them)"
        }
        return nil
    }

    public let root: URL
    public var uri: String { "qemu:///embed?root=\(root.path)" }

    public init() throws {
        root = FileManager.default.temporaryDirectory.appendingPathComponent("swemu-libvirt-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: root.appendingPathComponent("etc"), withIntermediateDirectories: true)
        // As root, libvirt would run the emulator as libvirt-qemu and relabel its files; the
        // tests run it as themselves, unconfined, with its stdio in log files.
        var conf = "security_driver = \"none\"\ndynamic_ownership = 0\nstdio_handler = \"file\"\n"
        if geteuid() == 0 { conf += "user = \"root\"\ngroup = \"root\"\n" }
        try conf.write(to: root.appendingPathComponent("etc/qemu.conf"), atomically: true, encoding: .utf8)
        // Run as root, the driver looks up its compiled-in user libvirt-qemu before it reads
        // qemu.conf, and that user comes with Debian's libvirt-daemon-system, not with the
        // driver. Where it is missing, virsh runs in a mount namespace of its own whose
        // /etc/passwd and /etc/group have it: nothing on the machine changes.
        if geteuid() == 0 && getpwnam("libvirt-qemu") == nil {
            try Self.writeAccounts(to: root.appendingPathComponent("etc"))
            namespaced = true
        } else {
            namespaced = false
        }
    }

    /// Writes copies of the machine's /etc/passwd and /etc/group into `dir` with the accounts
    /// libvirt's QEMU driver looks up as root added where missing: the libvirt-qemu user and
    /// group (Debian's libvirt-daemon-system makes them) and the kvm group.
    static func writeAccounts(to dir: URL) throws {
        for (file, name, line) in [("passwd", "libvirt-qemu", "libvirt-qemu:x:64055:64055:Libvirt Qemu:/var/lib/libvirt:/usr/sbin/nologin"),
                                   ("group", "libvirt-qemu", "libvirt-qemu:x:64055:"), ("group", "kvm", "kvm:x:64056:")] {
            let path = dir.appendingPathComponent(file)
            let text = try (try? String(contentsOf: path, encoding: .utf8)) ?? String(contentsOfFile: "/etc/\(file)", encoding: .utf8)
            let missing = !text.split(separator: "\n").contains { $0.hasPrefix(name + ":") }
            try (text + (missing ? (text.hasSuffix("\n") || text.isEmpty ? "" : "\n") + line + "\n" : ""))
                .write(to: path, atomically: true, encoding: .utf8)
        }
    }

    /// Whether virsh runs with the root's passwd and group files (see init).
    private let namespaced: Bool

    /// Runs virsh commands (`;`-separated, one process); libvirt's own notices are left out of
    /// the output, and its QMP traffic goes to virsh.log under the root.
    @discardableResult
    public func virsh(_ commands: String, timeout: Double = 120) throws -> (status: Int32, output: String) {
        try filtered(run([Self.virsh, "-q", "-c", uri, commands], timeout: timeout))
    }

    /// What `virsh console` shows of `domain` in `seconds`. virsh wants a terminal: it runs
    /// under script(1), which gives it one, and leaves on its escape key (Ctrl-]), so that it
    /// removes the lock file it made for the pty (a killed virsh leaves it behind).
    public func console(_ domain: String, seconds: Int) throws -> String {
        let command = "\(Self.virsh) -q -c '\(uri)' console \(domain) --force"
        return try filtered(run(["/bin/sh", "-c", "(sleep \(seconds); printf '\\035') | /usr/bin/script -qfec \"$0\" /dev/null", command],
                                timeout: Double(seconds + 30))).output
    }

    /// Runs `command` with the root's passwd and group files where needed (see init).
    private func run(_ command: [String], timeout: Double) throws -> (status: Int32, output: String) {
        let environment = ["LIBVIRT_LOG_OUTPUTS": "1:file:\(root.path)/virsh.log", "LIBVIRT_LOG_FILTERS": "1:qemu"]
        return namespaced
            ? try runProgram(path: "/usr/bin/unshare", ["-m", "/bin/sh", "-c",
                                                         "mount --bind \"$1\"/etc/passwd /etc/passwd && mount --bind \"$1\"/etc/group /etc/group && shift && exec \"$@\"",
                                                         "sh", root.path] + command, timeout: timeout, environment: environment)
            : try runProgram(path: command[0], Array(command.dropFirst()), timeout: timeout, environment: environment)
    }

    /// libvirt's own notices are left out of the output.
    private func filtered(_ result: (status: Int32, output: String)) -> (status: Int32, output: String) {
        let lines = result.output.split(separator: "\n", omittingEmptySubsequences: false)
            .filter { !$0.contains(" info : ") && !$0.contains(" warning : ") }
        return (result.status, lines.joined(separator: "\n"))
    }

    /// The text of the file at `path` (a domain's serial log) once it holds `marker`, or what it
    /// holds after `seconds`.
    public static func waitForText(_ marker: String, in path: String, seconds: Double = 60) -> String {
        var text = ""
        for _ in 0..<Int(seconds * 10) where !text.contains(marker) {
            usleep(100_000)
            text = (try? String(contentsOf: URL(fileURLWithPath: path), encoding: .utf8)) ?? ""
        }
        return text
    }

    /// The emulator's log libvirt keeps: its command line and stderr.
    public func emulatorLog(_ domain: String) -> String {
        (try? String(contentsOf: root.appendingPathComponent("log/qemu/\(domain).log"), encoding: .utf8)) ?? ""
    }

    /// Ends whatever still runs (a failed test) and removes the directory.
    public func cleanUp(_ domain: String) {
        _ = try? virsh("destroy \(domain)", timeout: 30)
        if let pid = (try? String(contentsOf: root.appendingPathComponent("run/qemu/\(domain).pid"), encoding: .utf8))
            .flatMap({ Int32($0.trimmingCharacters(in: .whitespacesAndNewlines)) }) {
            kill(pid, SIGKILL)
        }
        try? FileManager.default.removeItem(at: root)
    }
}
