/// What the monitors say they are: the QMP greeting and `query-version`, `info version`, and
/// the human monitor's banner.
///
/// The `qemu` triple is the QEMU release whose monitor behaviour swemu follows (7.2.0), not
/// swemu's own version: clients read it as "which QEMU features can I use" (libvirt and
/// management tools gate commands on it), and a 0.x there would send them down paths for
/// ancient QEMUs. swemu's own name and version travel in `package`, which QEMU fills with
/// the distribution's build string ("Debian 1:7.2+dfsg-7") and which clients show, not parse.
public struct MonitorVersion: Sendable, Equatable {
    public var major: Int
    public var minor: Int
    public var micro: Int
    /// VersionInfo.package: "swemu 0.1.0".
    public var package: String
    /// The human monitor's banner names this ("swemu 0.1.0 monitor - type 'help' ...").
    public var product: String

    public init(major: Int, minor: Int, micro: Int, package: String, product: String) {
        self.major = major
        self.minor = minor
        self.micro = micro
        self.package = package
        self.product = product
    }

    /// This build of swemu.
    public static let swemu = MonitorVersion(major: 7, minor: 2, micro: 0, package: "swemu 0.1.0", product: "swemu 0.1.0")

    /// VersionInfo in QEMU's member order: `{"qemu": {"micro": 0, "minor": 2, "major": 7}, "package": "..."}`.
    var versionInfo: JSONValue {
        ["qemu": ["micro": .integer(micro), "minor": .integer(minor), "major": .integer(major)], "package": .string(package)]
    }

    /// `info version`: "7.2.0 (swemu 0.1.0)".
    var humanText: String {
        "\(major).\(minor).\(micro)" + (package.isEmpty ? "" : " (\(package))")
    }
}

/// What a monitor codec produced for its peer: bytes to write, and whether the peer asked
/// swemu to quit. The server calls `MonitorTarget.quit()` only after writing `bytes`, so
/// the client reads the reply to `quit` before the connection ends, as with QEMU.
public struct MonitorOutput: Sendable, Equatable {
    public var bytes: [UInt8]
    public var quitRequested: Bool

    public init(bytes: [UInt8] = [], quitRequested: Bool = false) {
        self.bytes = bytes
        self.quitRequested = quitRequested
    }

    public var text: String { String(decoding: bytes, as: UTF8.self) }

    mutating func append(_ other: MonitorOutput) {
        bytes += other.bytes
        quitRequested = quitRequested || other.quitRequested
    }

    mutating func append(_ text: String) { bytes += Array(text.utf8) }
}

/// QEMU's monitor_puts: every "\n" leaves as "\r\n" (one already preceded by "\r" is kept
/// as it is, so text that has its own "\r\n" does not gain a second "\r").
func monitorLineEnds(_ text: String) -> [UInt8] {
    var out: [UInt8] = []
    out.reserveCapacity(text.utf8.count + 8)
    var previous: UInt8 = 0
    for b in text.utf8 {
        if b == UInt8(ascii: "\n") && previous != UInt8(ascii: "\r") { out.append(UInt8(ascii: "\r")) }
        out.append(b)
        previous = b
    }
    return out
}
