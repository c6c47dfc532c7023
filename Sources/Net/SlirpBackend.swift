import CLinux
import CSlirp
import DeviceModel
import Glibc
import Synchronization
import SystemSupport

/// `-netdev user`: user-mode networking through libslirp (QEMU's net/slirp.c). The guest
/// sees a small NATed network (10.0.2.0/24 by default) with a gateway, a DNS forwarder and
/// a DHCP server, and reaches the host and the outside through ordinary host sockets; no
/// privileges are needed.
///
/// **One thread per backend.** libslirp is not thread-safe, so one host thread owns the
/// `Slirp*` and makes every `slirp_*` call: it polls slirp's sockets, runs its timers, feeds it
/// the guest's frames and hands its frames to the NIC. Other threads talk to it through
/// queues under a lock and an eventfd that wakes it; control calls (host forwarding,
/// `info usernet`) run there too and wait for their answer.
///
/// **Flow control** (NetBackend's contract). Guest → slirp: `send` queues up to
/// `maxQueuedGuestFrames` frames / `maxQueuedGuestBytes`; full, it returns false and calls
/// `backendReady()` once the thread has taken the queue. Slirp → guest: a refused frame waits
/// in a queue of `maxPendingFramesToGuest` frames until `frontendReady()`; beyond that frames
/// are dropped and counted, as libslirp's `send_packet` contract allows (TCP retransmits).
public final class SlirpBackend: NetBackend {
    public let id: String
    public let info: String
    public let config: UserNetConfig
    private let core: SlirpCore

    /// Guest frames queued for the slirp thread before `send` says "full".
    package static let maxQueuedGuestFrames = 1024
    package static let maxQueuedGuestBytes = 4 << 20
    /// Frames slirp produced that the NIC has not taken yet.
    package static let maxPendingFramesToGuest = 256
    /// An Ethernet header, one 802.1Q tag and the largest IPv4 packet: nothing larger is a
    /// frame slirp could use (virtio-net hands over whole GSO packets up to 64 KiB).
    package static let maxFrameSize = 14 + 4 + 65_535
    static let ethernetHeaderSize = 14

    /// Creates the stack and its thread and installs the configuration's forwarding rules;
    /// throws if a rule cannot be set up (a host port in use, a guestfwd host refusing).
    public init(id: String, config: UserNetConfig) throws(SystemError) {
        self.id = id
        self.config = config
        info = config.infoString
        core = try SlirpCore(config: config, label: "netdev user '\(id)'", threadName: "slirp-\(id)")
    }

    deinit { close() }

    public func attach(_ frontend: (any NetFrontend)?) {
        core.attach(frontend)
    }

    public func send(_ frame: [UInt8]) -> Bool {
        core.enqueueFromGuest(frame)
    }

    public func frontendReady() {
        core.frontendReady()
    }

    /// Stops the thread after slirp_cleanup (which closes slirp's sockets, host forwarding
    /// listeners included). Idempotent; from the slirp thread itself (a frontend's callback)
    /// it only asks the thread to stop.
    public func close() {
        core.stop()
    }

    /// HMP `hostfwd_add`: listens on the host and forwards to the guest.
    public func addHostForward(_ rule: HostForward) throws(SystemError) {
        let failure = try core.perform { core in core.installHostForward(rule) }
        if let failure {
            throw SystemError(.configuration, "Could not set up host forwarding rule '\(rule.text)'", errno: failure.errno)
        }
    }

    /// HMP `hostfwd_remove [tcp|udp]:[HOSTADDR]:HOSTPORT`, its three parts as text:
    /// `protocol` "tcp", "udp" or "" (tcp); `hostAddress` nil or "" for any. Returns false
    /// when no such rule exists (QEMU prints "... not found"); throws on bad syntax.
    @discardableResult
    public func removeHostForward(protocol: String, hostAddress: String?, hostPort: UInt16) throws(SystemError) -> Bool {
        let removal = try HostForward.parseRemoval("\(`protocol`):\(hostAddress ?? ""):\(hostPort)")
        return try removeHostForward(removal)
    }

    /// The typed form of `removeHostForward(protocol:hostAddress:hostPort:)`, for what
    /// `HostForward.parseRemoval` returns.
    @discardableResult
    public func removeHostForward(_ removal: HostForward.Removal) throws(SystemError) -> Bool {
        try core.perform { core in
            // SAFETY: runs on the slirp thread, which owns the live `Slirp*`.
            slirp_remove_hostfwd(core.slirp, removal.transport == .udp ? 1 : 0, removal.hostAddress.inAddr, Int32(removal.hostPort)) == 0
        }
    }

    /// HMP `info usernet` for this backend, as QEMU 7.2 prints it: "Hub -1 (ID):" (the netdev
    /// is not on a hub) and libslirp's connection table.
    public var connectionInfo: String {
        get throws(SystemError) {
            let table = try core.perform { core in
                // SAFETY: on the slirp thread; slirp_connection_info returns a malloc'ed
                // (g_malloc, which is malloc since GLib 2.46) NUL-terminated string we own.
                guard let text = slirp_connection_info(core.slirp) else { return "" }
                defer { free(text) }
                return String(cString: text)
            }
            return "Hub -1 (\(id)):\n\(table)"
        }
    }

    /// Frames slirp produced that were dropped: the NIC refused them with the pending queue
    /// full, or no NIC was attached.
    package var droppedToGuest: Int { core.droppedToGuest.load(ordering: .relaxed) }
    /// Guest frames dropped: malformed sizes, or sent while the queue was full.
    package var droppedFromGuest: Int { core.droppedFromGuest.load(ordering: .relaxed) }
}

/// A one-shot reply slot that the slirp thread fills and a caller waits on (with a deadline).
private final class SlirpReply<Value: Sendable>: Sendable {
    private let value = Mutex<Value?>(nil)
    private let signal: Wakeup

    init() throws(SystemError) { signal = try Wakeup() }

    func set(_ newValue: Value) {
        value.withLock { $0 = newValue }
        signal.signal()
    }

    /// The value once set; nil if `timeoutNanoseconds` (nil: forever) pass first.
    func wait(timeoutNanoseconds: Int64?) -> Value? {
        let deadline = timeoutNanoseconds.map { SlirpCore.monotonicNanoseconds() + $0 }
        while true {
            if let result = value.withLock({ $0 }) { return result }
            let left = deadline.map { $0 - SlirpCore.monotonicNanoseconds() } ?? -1
            if deadline != nil && left <= 0 { return nil }
            signal.wait(timeoutNanoseconds: left)
        }
    }
}

/// A libslirp timer (timer_new/timer_mod/timer_free): the callback to run and when (ms on
/// `clock_get_ns`'s clock).
private final class SlirpTimer {
    let callback: SlirpTimerCb
    let argument: UnsafeMutableRawPointer?
    var expiresMilliseconds: Int64?

    init(callback: SlirpTimerCb, argument: UnsafeMutableRawPointer?) {
        self.callback = callback
        self.argument = argument
    }
}

/// `guestfwd=...-tcp:HOST:PORT`: the host connection the guest's connections to the forward
/// address share (QEMU opens the same single chardev connection at start-up).
private final class SlirpGuestLink {
    let fd: Int32
    /// The guest-side address as libslirp resolved it (the network's .4 when not given).
    var guestAddress: in_addr
    let guestPort: Int32
    /// "netdev user 'n0': guest forwarding 'RULE'", for log lines.
    let label: String
    var pollIndex = -1
    var open = true

    init(fd: Int32, guestAddress: in_addr, guestPort: Int32, label: String) {
        self.fd = fd
        self.guestAddress = guestAddress
        self.guestPort = guestPort
        self.label = label
    }

    deinit { Glibc.close(fd) }
}

/// Everything the slirp thread owns, and the locked state other threads share with it.
///
/// `@unchecked Sendable`: the `Slirp*`, the poll array, the timers, the guest links and the
/// frames waiting for the NIC are touched only on the slirp thread (after `init` hands it
/// over, before the thread ends); everything else is a `Mutex`, an `Atomic` or immutable.
private final class SlirpCore: @unchecked Sendable {
    private enum Phase { case running, closing, finished }

    private struct Shared {
        var frontend: (any NetFrontend)?
        var fromGuest: [[UInt8]] = []
        var fromGuestBytes = 0
        /// `send` returned false: call `backendReady()` once the thread took the queue.
        var senderWaiting = false
        var frontendReady = false
        var tasks: [@Sendable (SlirpCore) -> Void] = []
        var phase = Phase.running
    }

    private let shared = Mutex(Shared())
    private let wakeup: Wakeup
    /// Signalled when the thread has finished (after slirp_cleanup).
    private let finished: Wakeup
    private let threadID = Atomic<Int>(-1)
    let droppedToGuest = Atomic<Int>(0)
    let droppedFromGuest = Atomic<Int>(0)
    private let callbacks: UnsafeMutablePointer<SlirpCb>
    /// "netdev user 'n0'", for log lines.
    let label: String

    // Slirp-thread state.
    private(set) var slirp: OpaquePointer?
    private var pollFDs: [pollfd] = []
    private var timers: [SlirpTimer] = []
    private var guestLinks: [SlirpGuestLink] = []
    private var toGuest: [[UInt8]] = []

    /// How long a control call waits for the slirp thread.
    private static let controlTimeoutNanoseconds: Int64 = 5_000_000_000

    init(config: UserNetConfig, label: String, threadName: String) throws(SystemError) {
        self.label = label
        wakeup = try Wakeup()
        finished = try Wakeup()
        callbacks = .allocate(capacity: 1)
        callbacks.initialize(to: SlirpCore.makeCallbacks())
        let started = try SlirpReply<SystemError?>()
        // Linux keeps 15 bytes of a thread's name.
        let name = String(decoding: threadName.utf8.prefix(15), as: UTF8.self)
        try HostThread.spawn(name: name) { [self] in
            threadID.store(HostThread.currentID(), ordering: .relaxed)
            if let failure = start(config) {
                cleanUp()
                started.set(failure)
                return
            }
            started.set(nil)
            runLoop()
            cleanUp()
        }
        // slirp_new and the rules' bind/connect on loopback or the host are quick; there is
        // nothing the thread waits on before it answers.
        if let failure = started.wait(timeoutNanoseconds: nil) ?? nil {
            throw failure
        }
    }

    deinit {
        // SAFETY: the thread (which holds `self` strongly) has ended, so slirp_cleanup has
        // run and nothing refers to the callback table any more.
        callbacks.deinitialize(count: 1)
        callbacks.deallocate()
    }

    static func monotonicNanoseconds() -> Int64 {
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        return Int64(now.tv_sec) * 1_000_000_000 + Int64(now.tv_nsec)
    }

    // MARK: other threads

    func attach(_ frontend: (any NetFrontend)?) {
        shared.withLock {
            $0.frontend = frontend
            $0.frontendReady = true  // offer the new NIC what waits (or drop it if none)
        }
        wakeup.signal()
    }

    func frontendReady() {
        shared.withLock { $0.frontendReady = true }
        wakeup.signal()
    }

    func enqueueFromGuest(_ frame: [UInt8]) -> Bool {
        guard frame.count >= SlirpBackend.ethernetHeaderSize, frame.count <= SlirpBackend.maxFrameSize else {
            DebugLog.log(.guestErrors, "\(label): dropped a guest frame of \(frame.count) bytes (an Ethernet frame has \(SlirpBackend.ethernetHeaderSize) to \(SlirpBackend.maxFrameSize))")
            droppedFromGuest.add(1, ordering: .relaxed)
            return true
        }
        enum Outcome { case queued(wake: Bool, room: Bool), overflow, closed }
        let outcome = shared.withLock { s -> Outcome in
            guard s.phase == .running else { return .closed }
            func full() -> Bool {
                s.fromGuest.count >= SlirpBackend.maxQueuedGuestFrames || s.fromGuestBytes >= SlirpBackend.maxQueuedGuestBytes
            }
            // A frontend that ignores "false" and keeps sending loses frames, not memory.
            if full() {
                s.senderWaiting = true
                return .overflow
            }
            // An empty queue has no wake-up pending yet: the thread empties it whole.
            let wake = s.fromGuest.isEmpty
            s.fromGuest.append(frame)
            s.fromGuestBytes += frame.count
            let room = !full()
            if !room { s.senderWaiting = true }
            return .queued(wake: wake, room: room)
        }
        switch outcome {
        case .queued(let wake, let room):
            if wake { wakeup.signal() }
            return room
        case .overflow:
            droppedFromGuest.add(1, ordering: .relaxed)
            return false
        case .closed:
            // NetBackend: sends after close are dropped; "true" keeps the NIC from waiting.
            return true
        }
    }

    /// Runs `body` on the slirp thread and returns its result (waits up to 5 s).
    func perform<T: Sendable>(_ body: @escaping @Sendable (SlirpCore) -> T) throws(SystemError) -> T {
        if threadID.load(ordering: .relaxed) == HostThread.currentID() {
            return body(self)
        }
        let reply = try SlirpReply<T>()
        let queued = shared.withLock { s -> Bool in
            guard s.phase == .running else { return false }
            s.tasks.append { core in reply.set(body(core)) }
            return true
        }
        guard queued else { throw SystemError(.configuration, "the user network backend is closed") }
        wakeup.signal()
        guard let value = reply.wait(timeoutNanoseconds: Self.controlTimeoutNanoseconds) else {
            throw SystemError(.syscall, "the user network thread did not answer within 5 s", errno: Errno(rawValue: ETIMEDOUT))
        }
        return value
    }

    func stop() {
        shared.withLock { s in
            if s.phase == .running { s.phase = .closing }
        }
        wakeup.signal()
        if threadID.load(ordering: .relaxed) == HostThread.currentID() { return }
        while shared.withLock({ $0.phase != .finished }) {
            finished.wait(timeoutNanoseconds: 100_000_000)
        }
        // Another thread may be waiting in close() too: pass the signal on.
        finished.signal()
    }

    // MARK: the slirp thread

    /// Creates the Slirp and installs the configured rules; the error, if any.
    private func start(_ config: UserNetConfig) -> SystemError? {
        // C strings live until slirp_new returns: libslirp copies every one of them.
        var owned: [UnsafeMutablePointer<CChar>?] = []
        func cString(_ text: String?) -> UnsafePointer<CChar>? {
            guard let text else { return nil }
            let copy = strdup(text)
            owned.append(copy)
            return UnsafePointer(copy)
        }
        defer { owned.forEach { free($0) } }

        var cfg = SlirpConfig()
        cfg.version = 4
        cfg.restricted = config.restricted ? 1 : 0
        cfg.in_enabled = config.ipv4
        cfg.vnetwork = config.network.inAddr
        cfg.vnetmask = config.netmask.inAddr
        cfg.vhost = config.host.inAddr
        cfg.in6_enabled = config.ipv6
        cfg.vprefix_addr6 = config.ipv6Prefix.in6Addr
        cfg.vprefix_len = UInt8(config.ipv6PrefixLength)
        cfg.vhost6 = config.ipv6Host.in6Addr
        cfg.vhostname = cString(config.hostname)
        cfg.tftp_server_name = cString(config.tftpServerName)
        cfg.tftp_path = cString(config.tftpRoot)
        cfg.bootfile = cString(config.bootFile)
        cfg.vdhcp_start = config.dhcpStart.inAddr
        cfg.vnameserver = config.dns.inAddr
        cfg.vnameserver6 = config.ipv6DNS.in6Addr
        cfg.vdomainname = cString(config.domainName)
        // if_mtu/if_mru 0: libslirp's defaults (1500); host loopback reachable at the host
        // address (QEMU's default); the unsafe protocol emulation (enable_emu) off; DNS and
        // DHCP served.
        cfg.if_mtu = 0
        cfg.if_mru = 0
        cfg.disable_host_loopback = false
        cfg.enable_emu = false
        cfg.disable_dns = false
        cfg.disable_dhcp = false
        var search: [UnsafePointer<CChar>?] = config.dnsSearch.map { cString($0) }
        search.append(nil)
        // SAFETY: `cfg` and the strings it points to (`owned`, `search`) outlive the call;
        // `callbacks` lives until after slirp_cleanup (deinit), and `self`, the opaque, is
        // kept alive by the thread closure for the Slirp's whole life.
        slirp = search.withUnsafeMutableBufferPointer { list in
            cfg.vdnssearch = config.dnsSearch.isEmpty ? nil : list.baseAddress
            return slirp_new(&cfg, callbacks, Unmanaged.passUnretained(self).toOpaque())
        }
        guard slirp != nil else {
            return SystemError(.configuration, "-netdev user: libslirp refused the configuration")
        }
        for rule in config.hostForwards {
            if let failure = installHostForward(rule) {
                return SystemError(.configuration, "-netdev user: could not set up host forwarding rule '\(rule.text)'", errno: failure.errno)
            }
        }
        for rule in config.guestForwards {
            if let failure = installGuestForward(rule) { return failure }
        }
        return nil
    }

    /// slirp_add_hostfwd; on failure an error carrying the bind errno (tcp_listen and
    /// udp_listen keep it for us).
    func installHostForward(_ rule: HostForward) -> SystemError? {
        errno = 0
        // SAFETY: on the slirp thread with a live Slirp*; the addresses are passed by value.
        let rc = slirp_add_hostfwd(slirp, rule.transport == .udp ? 1 : 0, rule.hostAddress.inAddr, Int32(rule.hostPort),
                                   (rule.guestAddress ?? .any).inAddr, Int32(rule.guestPort))
        let error = errno
        guard rc < 0 else { return nil }
        return SystemError(.configuration, "could not set up host forwarding rule '\(rule.text)'", errno: error != 0 ? Errno(rawValue: error) : nil)
    }

    private func installGuestForward(_ rule: UserNetConfig.GuestForward) -> SystemError? {
        var address = (rule.address ?? .any).inAddr
        let conflict = SystemError(.configuration, "-netdev user: conflicting or invalid address:port in guest forwarding rule '\(rule.text)'")
        switch rule.target {
        case .command(let command):
            // SAFETY: slirp_add_exec copies the command line; `address` is a local it may
            // fill in (the default .4 address).
            return slirp_add_exec(slirp, command, &address, Int32(rule.port)) < 0 ? conflict : nil
        case .tcp(let host, let port):
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue | SOCK_CLOEXEC.rawValue), 0)
            guard fd >= 0 else {
                return SystemError(.syscall, "-netdev user: guest forwarding rule '\(rule.text)': socket", errno: .current)
            }
            var target = sockaddr_in()
            target.sin_family = sa_family_t(AF_INET)
            target.sin_port = port.bigEndian
            target.sin_addr = host.inAddr
            // SAFETY: `target` is a sockaddr_in whose exact size is passed.
            let rc = withUnsafePointer(to: &target) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
            if rc != 0 {
                let failure = Errno.current
                Glibc.close(fd)
                return SystemError(.configuration, "-netdev user: guest forwarding rule '\(rule.text)': cannot connect to \(host):\(port)", errno: failure)
            }
            _ = clx_fcntl_setfl(fd, clx_fcntl_getfl(fd) | O_NONBLOCK)
            let link = SlirpGuestLink(fd: fd, guestAddress: address, guestPort: Int32(rule.port), label: "\(label): guest forwarding '\(rule.text)'")
            // SAFETY: the opaque is the link, which `guestLinks` keeps alive until after
            // slirp_cleanup has dropped the rule; `address` is a local slirp may fill in.
            let added = slirp_add_guestfwd(slirp, { buffer, length, opaque in
                guard let buffer, let opaque else { return 0 }
                let link = Unmanaged<SlirpGuestLink>.fromOpaque(opaque).takeUnretainedValue()
                return SlirpCore.writeToHost(link, UnsafeRawBufferPointer(start: buffer, count: length))
            }, Unmanaged.passUnretained(link).toOpaque(), &address, Int32(rule.port))
            if added < 0 { return conflict }
            link.guestAddress = address
            guestLinks.append(link)
            return nil
        }
    }

    /// Guest bytes for a `tcp:` guestfwd. Like QEMU's qemu_chr_fe_write_all this blocks the
    /// network thread while the host peer is slow, but for one second at most per write, all
    /// waits together; what the host has not taken by then is dropped (logged), so a stuck or
    /// trickling peer cannot hang the stack.
    private static func writeToHost(_ link: SlirpGuestLink, _ bytes: UnsafeRawBufferPointer) -> Int {
        var done = 0
        let deadline = VirtualClock.hostMonotonicNanoseconds() + 1_000_000_000
        while link.open && done < bytes.count {
            // SAFETY: `done < bytes.count`, so the buffer is not empty (has a base address)
            // and the range written from lies inside it.
            let n = Glibc.write(link.fd, bytes.baseAddress! + done, bytes.count - done)
            if n > 0 {
                done += n
                continue
            }
            if n < 0 && (errno == EINTR) { continue }
            let left = (deadline - VirtualClock.hostMonotonicNanoseconds()) / 1_000_000
            if n < 0 && errno == EAGAIN && left > 0 {
                var p = pollfd(fd: link.fd, events: Int16(POLLOUT), revents: 0)
                if poll(&p, 1, Int32(left)) > 0 { continue }
            }
            DebugLog.log(.guestErrors, "\(link.label): the host side does not take data; dropped \(bytes.count - done) bytes")
            break
        }
        return bytes.count
    }

    private func runLoop() {
        var busy = false
        // SAFETY (whole loop): this is the slirp thread, `slirp` is live until cleanUp, and
        // the opaque passed to the fill/poll callbacks is `self`, alive for the call.
        let opaque = Unmanaged.passUnretained(self).toOpaque()
        while true {
            pollFDs.removeAll(keepingCapacity: true)
            pollFDs.append(pollfd(fd: wakeup.fd, events: Int16(POLLIN), revents: 0))
            for link in guestLinks {
                link.pollIndex = -1
                if link.open && slirp_socket_can_recv(slirp, link.guestAddress, link.guestPort) > 0 {
                    link.pollIndex = pollFDs.count
                    pollFDs.append(pollfd(fd: link.fd, events: Int16(POLLIN), revents: 0))
                }
            }
            var timeout = UInt32.max
            slirp_pollfds_fill(slirp, &timeout, { fd, events, opaque in
                let core = Unmanaged<SlirpCore>.fromOpaque(opaque!).takeUnretainedValue()
                core.pollFDs.append(pollfd(fd: fd, events: SlirpCore.pollEvents(fromSlirp: events), revents: 0))
                return Int32(core.pollFDs.count - 1)
            }, opaque)
            var milliseconds: Int64 = timeout == .max ? -1 : Int64(timeout)
            if let next = timers.compactMap(\.expiresMilliseconds).min() {
                let left = max(0, next - Self.monotonicNanoseconds() / 1_000_000)
                milliseconds = milliseconds < 0 ? left : min(milliseconds, left)
            }
            // Frames just given to slirp may have freed queued output (an ARP answer):
            // let slirp_pollfds_poll's if_start send it now, not at the next timeout.
            if busy { milliseconds = 0 }
            let ready = poll(&pollFDs, nfds_t(pollFDs.count), Int32(clamping: milliseconds))
            if ready > 0 && pollFDs[0].revents != 0 {
                var value: UInt64 = 0
                _ = Glibc.read(wakeup.fd, &value, 8)
            }
            slirp_pollfds_poll(slirp, ready < 0 ? 1 : 0, { index, opaque in
                let core = Unmanaged<SlirpCore>.fromOpaque(opaque!).takeUnretainedValue()
                guard index >= 0, Int(index) < core.pollFDs.count else { return 0 }
                return SlirpCore.slirpEvents(fromPoll: core.pollFDs[Int(index)].revents)
            }, opaque)
            if ready > 0 { serveGuestLinks() }
            fireTimers()
            let (didInput, stopping) = processQueues()
            busy = didInput
            if stopping { return }
        }
    }

    /// Host → guest bytes of `tcp:` guestfwd links, as much as slirp's socket buffer takes.
    private func serveGuestLinks() {
        var buffer = [UInt8](repeating: 0, count: 65_536)
        for link in guestLinks where link.pollIndex >= 0 && pollFDs[link.pollIndex].revents != 0 {
            // SAFETY: slirp thread, live Slirp*.
            let room = min(buffer.count, slirp_socket_can_recv(slirp, link.guestAddress, link.guestPort))
            guard room > 0 else { continue }
            let n = buffer.withUnsafeMutableBytes { Glibc.read(link.fd, $0.baseAddress, room) }
            if n > 0 {
                // SAFETY: slirp copies `n` bytes from the buffer, which outlives the call.
                buffer.withUnsafeBufferPointer { slirp_socket_recv(slirp, link.guestAddress, link.guestPort, $0.baseAddress, Int32(n)) }
            } else if n == 0 || (errno != EAGAIN && errno != EINTR) {
                DebugLog.log(.guestErrors, "\(link.label): the host side closed the connection")
                link.open = false
            }
        }
    }

    private func fireTimers() {
        let now = Self.monotonicNanoseconds() / 1_000_000
        // A callback may modify or free any timer: check each again before running it.
        for timer in timers where (timer.expiresMilliseconds ?? .max) <= now {
            guard timers.contains(where: { $0 === timer }), let due = timer.expiresMilliseconds, due <= now else { continue }
            timer.expiresMilliseconds = nil
            timer.callback(timer.argument)
        }
    }

    /// Feeds queued guest frames to slirp, runs control tasks, offers waiting frames to the
    /// NIC. Returns whether frames went in and whether the thread is to stop.
    private func processQueues() -> (Bool, Bool) {
        let (frames, tasks, frontend, notifySender, retry, stopping) = shared.withLock { s in
            defer {
                s.fromGuest = []
                s.fromGuestBytes = 0
                s.tasks = []
                s.senderWaiting = false
                s.frontendReady = false
            }
            return (s.fromGuest, s.tasks, s.frontend, s.senderWaiting, s.frontendReady, s.phase != .running)
        }
        if notifySender { frontend?.backendReady() }
        for frame in frames {
            // SAFETY: slirp_input reads `frame.count` bytes (at most maxFrameSize, so the Int32
            // cannot overflow) from the array's storage during the call.
            frame.withUnsafeBufferPointer { slirp_input(slirp, $0.baseAddress, Int32($0.count)) }
        }
        for task in tasks { task(self) }
        if retry { offerWaitingFrames(to: frontend) }
        return (!frames.isEmpty, stopping)
    }

    private func offerWaitingFrames(to frontend: (any NetFrontend)?) {
        guard let frontend else {
            droppedToGuest.add(toGuest.count, ordering: .relaxed)
            toGuest.removeAll()
            return
        }
        var taken = 0
        while taken < toGuest.count && frontend.receive(toGuest[taken]) { taken += 1 }
        toGuest.removeFirst(taken)
    }

    /// send_packet: one frame for the guest.
    fileprivate func deliverToGuest(_ frame: [UInt8]) {
        guard let frontend = shared.withLock({ $0.frontend }) else {
            droppedToGuest.add(1, ordering: .relaxed)
            return
        }
        // Frames keep their order: while some wait, new ones queue behind them.
        if toGuest.isEmpty && frontend.receive(frame) { return }
        if toGuest.count < SlirpBackend.maxPendingFramesToGuest {
            toGuest.append(frame)
        } else {
            droppedToGuest.add(1, ordering: .relaxed)
        }
    }

    private func cleanUp() {
        if let slirp {
            // SAFETY: last use of the Slirp*, on its thread; it frees its sockets, rules and
            // (through timer_free) its timers.
            slirp_cleanup(slirp)
            self.slirp = nil
        }
        timers.removeAll()
        guestLinks.removeAll()
        toGuest.removeAll()
        shared.withLock { s in
            s.phase = .finished
            s.fromGuest = []
            s.tasks = []
            s.frontend = nil
        }
        finished.signal()
    }

    // MARK: callbacks

    private static func pollEvents(fromSlirp events: Int32) -> Int16 {
        var result: Int32 = 0
        if events & Int32(SLIRP_POLL_IN) != 0 { result |= Int32(POLLIN) }
        if events & Int32(SLIRP_POLL_OUT) != 0 { result |= Int32(POLLOUT) }
        if events & Int32(SLIRP_POLL_PRI) != 0 { result |= Int32(POLLPRI) }
        if events & Int32(SLIRP_POLL_ERR) != 0 { result |= Int32(POLLERR) }
        if events & Int32(SLIRP_POLL_HUP) != 0 { result |= Int32(POLLHUP) }
        return Int16(result)
    }

    private static func slirpEvents(fromPoll revents: Int16) -> Int32 {
        let events = Int32(revents)
        var result: Int32 = 0
        if events & Int32(POLLIN) != 0 { result |= Int32(SLIRP_POLL_IN) }
        if events & Int32(POLLOUT) != 0 { result |= Int32(SLIRP_POLL_OUT) }
        if events & Int32(POLLPRI) != 0 { result |= Int32(SLIRP_POLL_PRI) }
        if events & Int32(POLLERR) != 0 { result |= Int32(SLIRP_POLL_ERR) }
        if events & Int32(POLLHUP) != 0 { result |= Int32(SLIRP_POLL_HUP) }
        return result
    }

    /// The SlirpCb table. Every callback runs on the slirp thread (libslirp calls back only
    /// from the slirp_* call in progress), and its `opaque` is the core given to slirp_new.
    /// None throws: nothing Swift may unwind through libslirp's C frames.
    private static func makeCallbacks() -> SlirpCb {
        var cb = SlirpCb()
        cb.send_packet = { buffer, length, opaque in
            // SAFETY: `opaque` is the core (alive, see start); `buffer` holds `length` bytes
            // for the duration of the call, and we copy them.
            let core = Unmanaged<SlirpCore>.fromOpaque(opaque!).takeUnretainedValue()
            guard let buffer else { return 0 }
            core.deliverToGuest(Array(UnsafeRawBufferPointer(start: buffer, count: length)))
            return length
        }
        cb.guest_error = { message, opaque in
            // SAFETY: `opaque` is the core; libslirp passes a NUL-terminated message.
            let core = Unmanaged<SlirpCore>.fromOpaque(opaque!).takeUnretainedValue()
            let text = message.map { String(cString: $0) } ?? "?"
            DebugLog.log(.guestErrors, "\(core.label): \(text)")
        }
        cb.clock_get_ns = { _ in SlirpCore.monotonicNanoseconds() }
        cb.timer_new = { callback, argument, opaque in
            // SAFETY: `opaque` is the core; the timer object is owned by `timers` until
            // timer_free, and libslirp uses the returned pointer only until then.
            let core = Unmanaged<SlirpCore>.fromOpaque(opaque!).takeUnretainedValue()
            guard let callback else { return nil }
            let timer = SlirpTimer(callback: callback, argument: argument)
            core.timers.append(timer)
            return Unmanaged.passUnretained(timer).toOpaque()
        }
        cb.timer_free = { pointer, opaque in
            // SAFETY: compares identities only; never dereferences `pointer`.
            let core = Unmanaged<SlirpCore>.fromOpaque(opaque!).takeUnretainedValue()
            core.timers.removeAll { Unmanaged.passUnretained($0).toOpaque() == pointer }
        }
        cb.timer_mod = { pointer, expireTime, opaque in
            // SAFETY: finds the timer by identity among the live ones.
            let core = Unmanaged<SlirpCore>.fromOpaque(opaque!).takeUnretainedValue()
            core.timers.first { Unmanaged.passUnretained($0).toOpaque() == pointer }?.expiresMilliseconds = expireTime
        }
        // libslirp 4.7 calls these for every socket; poll(2) needs no registration.
        cb.register_poll_fd = { _, _ in }
        cb.unregister_poll_fd = { _, _ in }
        cb.notify = { opaque in
            // SAFETY: `opaque` is the core.
            Unmanaged<SlirpCore>.fromOpaque(opaque!).takeUnretainedValue().wakeup.signal()
        }
        return cb
    }
}
