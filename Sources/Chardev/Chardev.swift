import DeviceModel
import Glibc
import Synchronization
import SystemSupport

/// An opened chardev: the backend a `ChardevSpec` describes, plus the mux in front of it when
/// the spec says `mux=on`. The CLI opens one per `-chardev` (and per `-serial`/`-monitor`
/// short form) and hands each frontend what `claim(for:)` returns.
///
/// ```swift
/// let spec = try ChardevSpec.parse(chardev: "socket,id=mon0,path=/tmp/m.sock,server=on,wait=off")
/// let dev = try CharDevice.open(spec, loop: loop, quit: { vmm.requestShutdown() })
/// uart.connect(try dev.claim(for: "serial0"))
/// ```
public final class CharDevice: Sendable {
    public let spec: ChardevSpec
    /// The host side (stdio, pty, socket, file, null).
    public let driver: any CharDriver
    /// Present when `spec.mux`: frontends share the driver through it.
    public let mux: CharMux?
    private let users = Mutex<[String]>([])

    public var id: String? { spec.id }

    init(spec: ChardevSpec, driver: any CharDriver, mux: CharMux?) {
        self.spec = spec
        self.driver = driver
        self.mux = mux
    }

    /// Opens the backend `spec` describes. May block: a socket server with `wait=on` waits
    /// for its first client. `quit` is what `C-a x` calls on a mux (after restoring the
    /// terminal); `commit` is `C-a s`. `report` receives the lines QEMU prints on stderr
    /// (the pty path, "waiting for connection").
    public static func open(_ spec: ChardevSpec, loop: EventLoop,
                            quit: @escaping @Sendable () -> Void,
                            commit: (@Sendable () -> Void)? = nil,
                            report: @escaping @Sendable (String) -> Void = CharDevice.reportToStderr) throws(SystemError) -> CharDevice {
        let driver: any CharDriver
        switch spec.backend {
        case .null:
            driver = NullBackend()
        case .stdio(let signal):
            driver = try StdioBackend(loop: loop, signal: signal)
        case .pty:
            driver = try PtyBackend(loop: loop, id: spec.id, report: report)
        case .file(let path, let append):
            driver = try FileBackend(path: path, append: append)
        case .socket(let options):
            driver = try SocketBackend(options, loop: loop, id: spec.id, report: report)
        }
        let mux = spec.mux ? CharMux(backend: driver, loop: loop, quit: quit, commit: commit) : nil
        return CharDevice(spec: spec, driver: driver, mux: mux)
    }

    /// The backend for one frontend (`user` names it in errors: "serial0", "monitor").
    /// Without a mux only one frontend may use a chardev, as in QEMU; with one, each call makes
    /// a new mux port (the first has focus). `onBreak`/`onFocus`: see `CharMux.makePort`.
    public func claim(for user: String, onBreak: (@Sendable () -> Void)? = nil,
                      onFocus: (@Sendable (Bool) -> Void)? = nil) throws(SystemError) -> any CharBackend {
        if let mux {
            users.withLock { $0.append(user) }
            return mux.makePort(label: driver.label, onBreak: onBreak, onFocus: onFocus)
        }
        try users.withLock { (users: inout [String]) throws(SystemError) in
            if let other = users.first {
                let name = spec.id.map { "chardev '\($0)'" } ?? "chardev \(driver.label)"
                throw SystemError(.configuration, "\(name) is already used by \(other), so \(user) cannot use it too; add mux=on to share it")
            }
            users.append(user)
        }
        return driver
    }

    /// Stops the chardev: detaches the mux, closes the driver (restoring a terminal, removing
    /// a socket file). Idempotent.
    public func close() {
        mux?.close()
        driver.close()
    }

    /// Writes `line` and a newline to stderr (unbuffered, one write).
    public static func reportToStderr(_ line: String) {
        _ = writeAllBorrowed(STDERR_FILENO, Array((line + "\n").utf8))
    }
}
