import Foundation

/// A private libvirtd (Debian's daemon with its QEMU driver), for tests that need two of them:
/// `virsh migrate` goes from one daemon to another, which the embedded driver cannot be. It
/// runs as root in a mount namespace of its own whose /etc, /run and /var are overlays on the
/// machine's: its configuration (with the libvirt-qemu user its QEMU driver looks up), state,
/// logs and the emulators' pid files land under a directory of the test's own, and nothing on
/// the machine changes. Its socket is outside the namespace, for virsh.
public final class LibvirtDaemon {
    public static let libvirtd = "/usr/sbin/libvirtd"

    /// Why two private daemons cannot run here, or nil.
    public static var missing: String? {
        if let reason = LibvirtEmbedded.missing { return reason }
        if !FileManager.default.isExecutableFile(atPath: libvirtd) {
            return "needs libvirtd (Debian's libvirt-daemon; scripts/setup installs it)"
        }
        if geteuid() != 0 { return "needs root: the daemon runs in a mount namespace with overlays on /etc, /run and /var" }
        let filesystems = (try? String(contentsOfFile: "/proc/filesystems", encoding: .utf8)) ?? ""
        if !filesystems.contains("overlay") { return "needs overlayfs (the daemon's private /etc, /run and /var)" }
        return nil
    }

    public let root: URL
    /// virsh's connection URI for this daemon.
    public var uri: String { "qemu:///system?socket=\(root.path)/sock/libvirt-sock" }
    private let process: Process

    /// Starts the daemon; `hostUUID` tells two daemons on one machine apart (libvirt refuses a
    /// migration between daemons with the same host UUID as one "to the same host").
    public init(hostUUID: UUID) throws {
        root = FileManager.default.temporaryDirectory.appendingPathComponent("swemu-libvirtd-\(UUID().uuidString)")
        let fm = FileManager.default
        for dir in ["sock", "etc/libvirt", "etc.work", "run", "run.work", "var", "var.work"] {
            try fm.createDirectory(at: root.appendingPathComponent(dir), withIntermediateDirectories: true)
        }
        let etc = root.appendingPathComponent("etc")
        try """
            unix_sock_dir = "\(root.path)/sock"
            auth_unix_rw = "none"
            auth_unix_ro = "none"
            host_uuid = "\(hostUUID.uuidString.lowercased())"
            log_outputs = "1:file:\(root.path)/libvirtd.log"
            log_filters = "1:qemu 3:util 3:rpc 3:event"

            """.write(to: etc.appendingPathComponent("libvirt/libvirtd.conf"), atomically: true, encoding: .utf8)
        // The emulator runs as the test, unconfined, its stdio in log files (as LibvirtEmbedded's).
        try "security_driver = \"none\"\ndynamic_ownership = 0\nstdio_handler = \"file\"\nuser = \"root\"\ngroup = \"root\"\n"
            .write(to: etc.appendingPathComponent("libvirt/qemu.conf"), atomically: true, encoding: .utf8)
        try LibvirtEmbedded.writeAccounts(to: etc)
        let overlays = ["etc", "run", "var"].map { dir in
            "mount -t overlay overlay -o lowerdir=/\(dir),upperdir=\"$1\"/\(dir),workdir=\"$1\"/\(dir).work /\(dir)"
        }.joined(separator: " && ")
        process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/unshare")
        process.arguments = ["-m", "/bin/sh", "-c", "\(overlays) && exec \(Self.libvirtd) -f /etc/libvirt/libvirtd.conf -p \"$1\"/libvirtd.pid",
                             "sh", root.path]
        let log = try FileHandle(forWritingTo: { () -> URL in
            let url = root.appendingPathComponent("daemon.out")
            _ = fm.createFile(atPath: url.path, contents: nil)
            return url
        }())
        process.standardOutput = log
        process.standardError = log
        process.standardInput = FileHandle.nullDevice
        try process.run()
        for _ in 0..<100 where !fm.fileExists(atPath: root.appendingPathComponent("sock/libvirt-sock").path) {
            guard process.isRunning else { break }
            usleep(100_000)
        }
        guard fm.fileExists(atPath: root.appendingPathComponent("sock/libvirt-sock").path) else {
            let out = (try? String(contentsOf: root.appendingPathComponent("daemon.out"), encoding: .utf8)) ?? ""
            stop()
            throw CocoaError(.fileNoSuchFile, userInfo: [NSLocalizedDescriptionKey: "libvirtd did not start: \(out)"])
        }
    }

    /// Runs virsh commands (`;`-separated, one process) against this daemon.
    @discardableResult
    public func virsh(_ commands: String, timeout: Double = 120) throws -> (status: Int32, output: String) {
        try runProgram(path: LibvirtEmbedded.virsh, ["-q", "-c", uri, commands], timeout: timeout)
    }

    /// The emulator's log the daemon keeps for `domain`: its command line and stderr.
    public func emulatorLog(_ domain: String) -> String {
        (try? String(contentsOf: root.appendingPathComponent("var/log/libvirt/qemu/\(domain).log"), encoding: .utf8)) ?? ""
    }

    /// Ends the daemon and what it started (the namespace's mounts go with them), and removes
    /// its directory.
    public func stop() {
        if process.isRunning {
            process.terminate()
            process.waitUntilExit()
        }
        let pids = root.appendingPathComponent("run/libvirt/qemu")
        for file in (try? FileManager.default.contentsOfDirectory(atPath: pids.path)) ?? [] where file.hasSuffix(".pid") {
            if let pid = (try? String(contentsOf: pids.appendingPathComponent(file), encoding: .utf8))
                .flatMap({ Int32($0.trimmingCharacters(in: .whitespacesAndNewlines)) }) {
                kill(pid, SIGKILL)
            }
        }
        try? FileManager.default.removeItem(at: root)
    }
}
