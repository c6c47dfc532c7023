import CLinux
import DeviceModel
import Glibc
import Synchronization
import SystemSupport

/// `-netdev tap` (QEMU 7.2 net/tap.c, net/tap-linux.c): the guest's frames go to a Linux TAP
/// interface, whose frames come back.
///
///     -netdev tap,id=n0,ifname=tap0,script=no,downscript=no
///     -netdev tap,id=n0,fd=3            (an inherited descriptor already attached to a tap)
///
/// `ifname=` opens /dev/net/tun and attaches with TUNSETIFF (IFF_TAP | IFF_NO_PI), creating
/// the interface if it does not exist (that needs CAP_NET_ADMIN) or attaching to an existing
/// persistent one (its owner may). Nothing is configured: the interface stays down until the
/// user, the script or a test brings it up. An interface we created disappears when we close.
///
/// Scripts, as QEMU: `script=FILE` runs FILE with the interface name as its one argument
/// after the interface exists, and a failing script (non-zero status) fails the backend;
/// `downscript=FILE` runs the same way at `close()`. `no` (or empty) runs nothing. When the
/// option is omitted QEMU runs /etc/qemu-ifup (and /etc/qemu-ifdown) and fails if it cannot;
/// swemu runs them only when they exist and are executable, and otherwise nothing. Scripts
/// run in the network namespace of the thread that creates (closes) the backend.
///
/// **Offloads** (QEMU's `vnet_hdr`, net/tap-linux.c). With `vnet_hdr=on`, and by default
/// where the kernel has IFF_VNET_HDR (TUNGETFEATURES), the tap is opened with IFF_VNET_HDR and
/// a 12-byte header (TUNSETVNETHDRSZ: virtio 1.x's layout, num_buffers included, which the
/// kernel ignores on write and leaves for the NIC to fill on read), and every frame crosses
/// with that header (`NetBackend.offloads`: checksum, TSO4/6, ECN, UFO where the kernel
/// still takes TUN_F_UFO, USO where it takes TUN_F_USO4 | TUN_F_USO6: Linux 6.2 and later). The header is little-endian, the host's order on x86-64, so no
/// TUNSETVNETLE is needed. What the tap may hand us follows the guest (`setGuestOffloads` →
/// TUNSETOFFLOAD); until the NIC says, nothing (TUNSETOFFLOAD 0, as QEMU at open).
/// `vnet_hdr=on` where the kernel lacks IFF_VNET_HDR fails; `vnet_hdr=off` carries plain
/// frames.
///
/// An inherited `fd=` must have been attached with IFF_TAP | IFF_NO_PI, as QEMU requires; one
/// attached with IFF_VNET_HDR too (libvirt does that) gets the 12-byte header and offloads as
/// above. Should the kernel refuse that header size, the descriptor still works without
/// offloads: its header is stripped on read and sent as zeros.
public final class TapBackend: NetBackend {
    // linux/if_tun.h. Request numbers are _IOW/_IOR('T', nr, 4 bytes):
    // dir << 30 | size << 16 | type << 8 | nr, with write = 1, read = 2.
    /// TUNSETIFF = _IOW('T', 202, int)
    static let TUNSETIFF: UInt = 1 << 30 | 4 << 16 | 0x54 << 8 | 202
    /// TUNGETIFF = _IOR('T', 210, unsigned int)
    static let TUNGETIFF: UInt = 2 << 30 | 4 << 16 | 0x54 << 8 | 210
    /// TUNSETOFFLOAD = _IOW('T', 208, unsigned int)
    static let TUNSETOFFLOAD: UInt = 1 << 30 | 4 << 16 | 0x54 << 8 | 208
    /// TUNGETFEATURES = _IOR('T', 207, unsigned int)
    static let TUNGETFEATURES: UInt = 2 << 30 | 4 << 16 | 0x54 << 8 | 207
    /// TUNGETVNETHDRSZ = _IOR('T', 215, int)
    static let TUNGETVNETHDRSZ: UInt = 2 << 30 | 4 << 16 | 0x54 << 8 | 215
    /// TUNSETVNETHDRSZ = _IOW('T', 216, int)
    static let TUNSETVNETHDRSZ: UInt = 1 << 30 | 4 << 16 | 0x54 << 8 | 216
    /// TUNSETOFFLOAD's flags: TUN_F_CSUM, TUN_F_TSO4, TUN_F_TSO6, TUN_F_TSO_ECN, TUN_F_UFO,
    /// TUN_F_USO4, TUN_F_USO6.
    static let TUN_F_CSUM: UInt32 = 0x01
    static let TUN_F_TSO4: UInt32 = 0x02
    static let TUN_F_TSO6: UInt32 = 0x04
    static let TUN_F_TSO_ECN: UInt32 = 0x08
    static let TUN_F_UFO: UInt32 = 0x10
    static let TUN_F_USO4: UInt32 = 0x20
    static let TUN_F_USO6: UInt32 = 0x40
    static let IFF_TAP: Int16 = 0x0002
    static let IFF_NO_PI: Int16 = 0x1000
    static let IFF_VNET_HDR: Int16 = 0x4000
    static let defaultScript = "/etc/qemu-ifup"
    static let defaultDownscript = "/etc/qemu-ifdown"

    enum Config: Equatable, Sendable {
        /// `ifname` nil: the kernel picks tapN. Scripts: nil runs nothing. `vnetHeader` nil:
        /// IFF_VNET_HDR where the kernel has it.
        case named(ifname: String?, script: String?, downscript: String?, vnetHeader: Bool?)
        case descriptor(Int32)
    }

    public let id: String
    public let info: String
    /// The interface's name ("tap0"), as the kernel reports it.
    public let interfaceName: String
    public let offloads: NetOffloads

    private let slot = FrontendSlot()
    private let channel: FrameChannel
    /// Run once at the first `close()`.
    private let downscript: Mutex<String?>

    public convenience init(id: String, options: QemuOpts, loop: EventLoop) throws(SystemError) {
        try self.init(id: id, config: try Self.parse(options), loop: loop)
    }

    init(id: String, config: Config, loop: EventLoop) throws(SystemError) {
        self.id = id
        let what = "-netdev tap"
        let fd: FileDescriptor
        let prefix: Int
        switch config {
        case .named(let ifname, let script, let down, let vnetHeader):
            let opened = try Self.create(ifname: ifname, vnetHeader: vnetHeader, what: what)
            interfaceName = opened.name
            offloads = opened.offloads
            fd = opened.fd
            prefix = 0
            info = "ifname=\(opened.name),script=\(script ?? "no"),downscript=\(down ?? "no")"
            if let script {
                try Self.runScript(script, interface: opened.name, what: what)
            }
            downscript = Mutex(down)
        case .descriptor(let n):
            let attached = try Self.inspect(n, what: what)
            interfaceName = attached.name
            offloads = attached.offloads
            prefix = attached.prefix
            fd = FileDescriptor(owning: n)
            info = "fd=\(n)"
            downscript = Mutex(nil)
        }
        let slot = slot
        channel = FrameChannel(fd: fd, wire: .tap(prefix: prefix), name: "netdev \(id)", loop: loop, slot: slot) { channel, why in
            DebugLog.log(.guestErrors, "netdev \(id): tap \(why); no more frames")
            channel.close()
        }
        do {
            try channel.start()
        } catch {
            close()
            throw error
        }
    }

    deinit { close() }

    static let acceptedKeys = ["id", "ifname", "fd", "script", "downscript", "vnet_hdr"]

    static func parse(_ options: QemuOpts) throws(SystemError) -> Config {
        let what = "-netdev tap"
        let options = try options.validate(accepted: acceptedKeys, booleans: ["vnet_hdr"], context: "netdev 'tap'")
        if let text = options.string("fd") {
            for key in ["ifname", "script", "downscript", "vnet_hdr"] where options.contains(key) {
                throw SystemError(.configuration, "\(what): ifname=, script=, downscript= and vnet_hdr= are invalid with fd= (\(key)= was given)")
            }
            return .descriptor(try NetSocketAddress.parseDescriptor(text, what: "\(what): fd"))
        }
        var ifname = options.string("ifname")
        if let name = ifname {
            if name.isEmpty { ifname = nil }
            guard name.utf8.count < Int(IFNAMSIZ) else {
                throw SystemError(.configuration, "\(what): interface name '\(name)' is too long: at most \(Int(IFNAMSIZ) - 1) bytes")
            }
            guard !name.contains("/"), !name.contains(" "), name != ".", name != ".." else {
                throw SystemError(.configuration, "\(what): '\(name)' is not a valid interface name")
            }
        }
        return .named(ifname: ifname, script: script(options.string("script"), default: defaultScript),
                      downscript: script(options.string("downscript"), default: defaultDownscript),
                      vnetHeader: try options.bool("vnet_hdr"))
    }

    /// `no` and empty run nothing; omitted: the default only where it exists (see the type).
    private static func script(_ value: String?, default path: String) -> String? {
        guard let value else { return access(path, X_OK) == 0 ? path : nil }
        return value.isEmpty || value == "no" ? nil : value
    }

    // MARK: NetBackend

    package var counters: NetCounters { channel.counters }

    public func attach(_ frontend: (any NetFrontend)?) {
        slot.set(frontend)
        if frontend != nil { channel.resumeReceive() }
    }

    public func send(_ frame: [UInt8]) -> Bool { channel.send(frame) }

    /// TUNSETOFFLOAD with the guest's offloads (QEMU's tap_fd_set_offload): then the kernel
    /// hands us partial checksums and GSO frames only of those kinds, finishing the rest itself.
    public func setGuestOffloads(_ guest: NetOffloads) {
        guard !offloads.isEmpty else { return }
        let flags = Self.tunFlags(guest.intersection(offloads))
        channel.withDescriptor { fd in
            // A kernel that dropped UFO refuses the whole set: then without it, as QEMU.
            if clx_ioctl_int(fd, Self.TUNSETOFFLOAD, UInt(flags)) != 0
                && clx_ioctl_int(fd, Self.TUNSETOFFLOAD, UInt(flags & ~Self.TUN_F_UFO)) != 0 {
                DebugLog.log(.guestErrors, "netdev \(id): TUNSETOFFLOAD \(flags) failed: \(Errno.current)")
            }
        }
    }

    /// The TUNSETOFFLOAD flags for `offloads`: none without checksum offload, which every
    /// segmentation offload needs (tun.c set_offload refuses them alone; QEMU asks likewise).
    static func tunFlags(_ offloads: NetOffloads) -> UInt32 {
        guard offloads.contains(.checksum) else { return 0 }
        let table: [(NetOffloads, UInt32)] = [
            (.checksum, TUN_F_CSUM), (.tso4, TUN_F_TSO4), (.tso6, TUN_F_TSO6), (.ecn, TUN_F_TSO_ECN), (.ufo, TUN_F_UFO),
            (.uso, TUN_F_USO4 | TUN_F_USO6),
        ]
        return table.reduce(0) { offloads.contains($1.0) ? $0 | $1.1 : $0 }
    }

    public func frontendReady() { channel.resumeReceive() }

    public func close() {
        // The down script first, while the descriptor still holds the interface (QEMU's
        // tap_cleanup): a tap that is not persistent vanishes with its last descriptor.
        if let script = downscript.withLock({ s in defer { s = nil }; return s }) {
            do {
                try Self.runScript(script, interface: interfaceName, what: "-netdev tap")
            } catch {
                DebugLog.log(.guestErrors, "netdev \(id): \(error)")
            }
        }
        channel.close()
    }

    // MARK: the device

    private struct Opened: ~Copyable {
        var fd: FileDescriptor
        var name: String
        var offloads: NetOffloads
    }

    /// QEMU tap_open (net/tap-linux.c): /dev/net/tun, TUNSETIFF with IFF_TAP | IFF_NO_PI, and
    /// IFF_VNET_HDR when asked for or (`vnetHeader` nil) when the kernel has it.
    private static func create(ifname: String?, vnetHeader: Bool?, what: String) throws(SystemError) -> Opened {
        let fd = try FileDescriptor.open("/dev/net/tun", O_RDWR | O_NONBLOCK)
        var features: UInt32 = 0
        let known = clx_ioctl_ptr(fd.rawValue, TUNGETFEATURES, &features) >= 0
        let supported = known && features & UInt32(UInt16(bitPattern: IFF_VNET_HDR)) != 0
        if vnetHeader == true && !supported {
            throw SystemError(.unsupported, "\(what): vnet_hdr=1 requested, but no kernel support for IFF_VNET_HDR available")
        }
        let header = vnetHeader ?? supported
        var request = ifreq()
        request.ifr_ifru.ifru_flags = IFF_TAP | IFF_NO_PI | (header ? IFF_VNET_HDR : 0)
        setName(ifname ?? "tap%d", in: &request)
        let rc = clx_ioctl_ptr(fd.rawValue, TUNSETIFF, &request)
        guard rc >= 0 else {
            throw SystemError(.syscall, "\(what): could not configure /dev/net/tun (\(ifname ?? "tap%d"))", errno: Errno.current)
        }
        var offloads: NetOffloads = []
        if header {
            guard let found = headerOffloads(fd.rawValue) else {
                throw SystemError(.syscall, "\(what): TUNSETVNETHDRSZ \(NetOffloads.headerSize) failed", errno: Errno.current)
            }
            offloads = found
        }
        return Opened(fd: fd, name: name(of: &request), offloads: offloads)
    }

    /// A tap with IFF_VNET_HDR: sets the 12-byte header, finds the offloads (UFO and USO only
    /// where TUNSETOFFLOAD takes them: QEMU's tap_probe_has_ufo/_uso) and leaves TUNSETOFFLOAD at 0 until
    /// the guest's are known. nil when the header size cannot be set (errno says why).
    private static func headerOffloads(_ fd: Int32) -> NetOffloads? {
        var size = Int32(NetOffloads.headerSize)
        guard clx_ioctl_ptr(fd, TUNSETVNETHDRSZ, &size) >= 0 else { return nil }
        var offloads: NetOffloads = [.checksum, .tso4, .tso6, .ecn]
        if clx_ioctl_int(fd, TUNSETOFFLOAD, UInt(TUN_F_CSUM | TUN_F_UFO)) == 0 { offloads.insert(.ufo) }
        if clx_ioctl_int(fd, TUNSETOFFLOAD, UInt(TUN_F_CSUM | TUN_F_USO4 | TUN_F_USO6)) == 0 { offloads.insert(.uso) }
        _ = clx_ioctl_int(fd, TUNSETOFFLOAD, 0)
        return offloads
    }

    /// The interface behind an inherited descriptor, its offloads, and the bytes its frames
    /// carry first that nobody reads.
    private static func inspect(_ fd: Int32, what: String) throws(SystemError) -> (name: String, offloads: NetOffloads, prefix: Int) {
        var request = ifreq()
        guard clx_ioctl_ptr(fd, TUNGETIFF, &request) >= 0 else {
            throw SystemError(.configuration, "\(what): fd=\(fd) is not a tap device: TUNGETIFF failed", errno: Errno.current)
        }
        let flags = request.ifr_ifru.ifru_flags
        guard flags & IFF_TAP != 0 else {
            throw SystemError(.configuration, "\(what): fd=\(fd) is a tun (IP-level) device, not a tap (Ethernet) device")
        }
        // IFF_NO_PI is assumed, as QEMU assumes it: TUNGETIFF cannot tell, because it reports
        // IFF_NOFILTER in the same bit (0x1000) whenever no socket filter is attached.
        var prefix = 0
        var offloads: NetOffloads = []
        if flags & IFF_VNET_HDR != 0 {
            if let found = headerOffloads(fd) {
                offloads = found
            } else {
                // No offloads: then the kernel sends whole frames with a header of zeros.
                _ = clx_ioctl_int(fd, TUNSETOFFLOAD, 0)
                var size: Int32 = 10  // sizeof(struct virtio_net_hdr), the kernel's default
                _ = clx_ioctl_ptr(fd, TUNGETVNETHDRSZ, &size)
                prefix = Int(max(size, 10))
            }
        }
        _ = clx_set_cloexec(fd)
        _ = clx_fcntl_setfl(fd, clx_fcntl_getfl(fd) | O_NONBLOCK)
        return (name(of: &request), offloads, prefix)
    }

    private static func setName(_ name: String, in request: inout ifreq) {
        let bytes = Array(name.utf8.prefix(Int(IFNAMSIZ) - 1))
        // SAFETY: ifrn_name is a fixed C array of IFNAMSIZ bytes inside `request`; at most
        // IFNAMSIZ - 1 bytes are copied, leaving the NUL that ifreq() zeroed.
        withUnsafeMutableBytes(of: &request.ifr_ifrn.ifrn_name) { $0.copyBytes(from: bytes) }
    }

    private static func name(of request: inout ifreq) -> String {
        // SAFETY: reads the IFNAMSIZ bytes of ifrn_name inside `request`, up to its NUL.
        withUnsafeBytes(of: &request.ifr_ifrn.ifrn_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
    }

    /// QEMU launch_script: runs `path INTERFACE` and waits; non-zero status is an error.
    static func runScript(_ path: String, interface: String, what: String) throws(SystemError) {
        try Spawning.check("\(what): network script \(path)")
        var pid = pid_t()
        let argv: [UnsafeMutablePointer<CChar>?] = [strdup(path), strdup(interface), nil]
        defer { for arg in argv { free(arg) } }
        // SAFETY: argv is a NUL-terminated array of strdup'd C strings alive until the defer;
        // environ is the process environment, as posix_spawn expects.
        let rc = argv.withUnsafeBufferPointer { posix_spawn(&pid, path, nil, nil, $0.baseAddress!, environ) }
        guard rc == 0 else {
            throw SystemError(.configuration, "\(what): could not launch network script \(path)", errno: Errno(rawValue: rc))
        }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 {
            guard Errno.current == .interrupted else {
                throw SystemError(.syscall, "\(what): waiting for network script \(path)", errno: Errno.current)
            }
        }
        // WIFEXITED && WEXITSTATUS == 0, spelled out (the macros do not import).
        guard status & 0x7f == 0, (status >> 8) & 0xff == 0 else {
            throw SystemError(.configuration, "\(what): network script \(path) failed with status \(status)")
        }
    }
}
