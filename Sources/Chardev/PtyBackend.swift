import CLinux
import DeviceModel
import Glibc
import Synchronization
import SystemSupport

/// `-chardev pty`, `-serial pty`: a new pseudo-terminal in raw mode; the user attaches a
/// terminal program (screen, minicom) to the slave path printed at startup, as QEMU prints
/// "char device redirected to /dev/pts/N (label ID)".
///
/// Connected means someone has the slave open; the kernel reports POLLHUP on the master when
/// nobody does, and nothing when they open it again, so while disconnected the backend polls
/// (QEMU char-pty.c polls each second). Output while disconnected is dropped; the master is
/// kept, so the path stays valid for the next connection. The frontend hears `.opened` when
/// someone opens the slave and `.closed` when the last holder hangs up.
public final class PtyBackend: CharDriver {
    /// The slave side, e.g. /dev/pts/3.
    public let path: String
    private let slot = FrontendSlot()
    private let channel: StreamChannel
    private let masterFD: Int32
    private let pollInterval: Int
    private let timer: LoopTimer
    private let closed = Atomic(false)

    /// - Parameters:
    ///   - id: the chardev id, named in the message.
    ///   - pollMilliseconds: how often to look for a slave opener while disconnected.
    ///   - report: where the "redirected" line goes (stderr by default).
    public init(loop: EventLoop, id: String? = nil, pollMilliseconds: Int = 1000,
                report: @escaping @Sendable (String) -> Void = CharDevice.reportToStderr) throws(SystemError) {
        var name = [CChar](repeating: 0, count: 128)
        let fd = try syscall("cannot open a pseudo-terminal (posix_openpt)") { clx_open_pty(&name, name.count) }
        let master = FileDescriptor(owning: fd)
        _ = try syscall("cannot set the pseudo-terminal to raw mode") { clx_pty_make_raw(master.rawValue) }
        path = String(decoding: name.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        masterFD = fd
        pollInterval = pollMilliseconds
        let weakSelf = WeakBox<PtyBackend>()
        channel = StreamChannel(fd: master, kind: .stream, loop: loop, slot: slot) {
            weakSelf.value?.slaveClosed()
        }
        timer = try LoopTimer(loop: loop) { weakSelf.value?.checkConnection() }
        weakSelf.value = self
        report("char device redirected to \(path)\(id.map { " (label \($0))" } ?? "")")
        try channel.start()
        checkConnection()
    }

    deinit { close() }

    public var label: String { "pty:\(path)" }

    /// Whether someone has the slave open (as far as the last check knows).
    public var isConnected: Bool { channel.isConnected }

    public func attach(_ frontend: (any CharFrontend)?) {
        slot.set(frontend)
        if frontend != nil { channel.resumeInput() }
    }

    public func acceptInput() { channel.resumeInput() }
    public func write(_ bytes: [UInt8]) { channel.write(bytes) }

    public func close() {
        guard !closed.exchange(true, ordering: .acquiringAndReleasing) else { return }
        timer.close()
        channel.close()
        slot.closed()
    }

    // Loop thread: the slave's last holder closed it (EIO/HUP on the master).
    private func slaveClosed() {
        guard !closed.load(ordering: .acquiring) else { return }
        channel.setConnected(false)
        slot.closed()  // CHR_EVENT_CLOSED: the terminal hung up
        timer.arm(milliseconds: pollInterval, repeating: true)
    }

    // Loop thread (and init): nobody on the slave side shows as POLLHUP on the master.
    // A close() racing this poll is harmless: poll only reads readiness, and setConnected on
    // a closed channel does nothing.
    private func checkConnection() {
        guard !closed.load(ordering: .acquiring) else { return }
        var p = pollfd(fd: masterFD, events: Int16(POLLIN), revents: 0)
        guard Glibc.poll(&p, 1, 0) >= 0 else { return }
        let connected = p.revents & Int16(POLLHUP) == 0
        // CHR_EVENT_OPENED before input flows, so a monitor greets the terminal first.
        if connected { slot.opened() }
        channel.setConnected(connected)
        if connected {
            timer.disarm()
        } else {
            timer.arm(milliseconds: pollInterval, repeating: true)
        }
    }
}

/// A weak reference that a closure can capture before `self` exists (init wiring).
final class WeakBox<T: AnyObject & Sendable>: Sendable {
    private let ref = Mutex<WeakRef?>(nil)
    private struct WeakRef { weak var object: T? }
    var value: T? {
        get { ref.withLock { $0?.object } }
        set { ref.withLock { $0 = WeakRef(object: newValue) } }
    }
}
