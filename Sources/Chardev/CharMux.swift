import DeviceModel
import Glibc
import Synchronization
import SystemSupport

/// QEMU's mux chardev (chardev/char-mux.c): one backend shared by several frontends — the
/// serial console and the monitor under `-nographic` — with an escape key to switch between
/// them and to control the emulator.
///
/// Each frontend gets a `Port` (`makePort`), a `CharBackend` of its own. Output from every
/// port goes to the backend; input goes to the focused port only. Focus starts on the first
/// port. Keys after the escape character (Ctrl-A unless set otherwise):
///
/// | key        | action |
/// |------------|--------|
/// | `h` or `?` | print the help |
/// | `x`        | print "swemu: Terminated", restore the terminal, call `quit` |
/// | `s`        | `commit` (save disk data with -snapshot); says it is unsupported when nil |
/// | `t`        | toggle timestamps: each output line starts with `[HH:MM:SS.mmm] `, the time since the toggle |
/// | `b`        | send a break to the focused port (its `onBreak`) |
/// | `c`        | focus the next port, silently |
/// | Ctrl-A     | send a literal Ctrl-A to the focused port |
///
/// Any other key after the escape is dropped together with the escape, as QEMU drops it.
///
/// Input is buffered per port (up to `portBufferSize` bytes, as QEMU's MUX_BUFFER_SIZE), so
/// escape keys still work while the focused guest device is not reading; beyond that the
/// backend is held back (flow control), and no byte is lost. Input work runs on the loop
/// thread, which keeps every port's input in order.
///
/// Connection events of the backend go to every port's frontend, focused or not, as QEMU's
/// mux_chr_event broadcasts them: with stdio that is `.opened` at once (a monitor on a port
/// prints its banner into its buffer), with a socket on each client's arrival and departure.
/// A port attached while the backend is connected hears `.opened` at attach.
public final class CharMux: Sendable {
    /// A frontend's view of the mux.
    public final class Port: CharBackend {
        public let index: Int
        public let label: String
        let mux: CharMux

        init(mux: CharMux, index: Int, label: String) {
            self.mux = mux
            self.index = index
            self.label = label
        }

        public func attach(_ frontend: (any CharFrontend)?) { mux.attach(frontend, port: index) }
        public func write(_ bytes: [UInt8]) { mux.output(bytes) }
        public func acceptInput() { mux.scheduleFlush() }
    }

    public static let portBufferSize = 32

    public let backend: any CharBackend
    /// The escape character (Ctrl-A = 0x01, as QEMU's default `-echr 1`).
    public let escape: UInt8
    private let loop: EventLoop
    private let quit: @Sendable () -> Void
    private let commit: (@Sendable () -> Void)?
    private let clock: @Sendable () -> UInt64
    private let input: MuxInput
    private let state = Mutex(State())
    /// Whether the shared backend is connected (QEMU's mux be_open). Held while connection
    /// events are delivered and while a port's frontend is installed: every frontend hears
    /// `.opened` once, before any input.
    private let connection = Mutex(false)

    private struct PortState {
        var label: String
        var frontend: (any CharFrontend)?
        var pending: [UInt8] = []
        var onBreak: (@Sendable () -> Void)?
        var onFocus: (@Sendable (Bool) -> Void)?
    }

    private struct State {
        var ports: [PortState] = []
        var focus = 0
        var sawEscape = false
        var timestamps = false
        var lineStart = false
        var timestampStart: UInt64?
    }

    private enum Action {
        case help, quit, commit
        case callback(@Sendable () -> Void)
        case focus(from: Int, to: Int)
    }

    /// - Parameters:
    ///   - backend: the shared backend; the mux becomes its frontend.
    ///   - quit: called on `C-a x`, after the terminal is restored.
    ///   - commit: called on `C-a s`; nil prints that it is not supported.
    ///   - clock: milliseconds from any fixed origin, for timestamps (tests inject one).
    public init(backend: any CharBackend, loop: EventLoop, escape: UInt8 = 0x01,
                quit: @escaping @Sendable () -> Void, commit: (@Sendable () -> Void)? = nil,
                clock: @escaping @Sendable () -> UInt64 = CharMux.monotonicMilliseconds) {
        self.backend = backend
        self.loop = loop
        self.escape = escape
        self.quit = quit
        self.commit = commit
        self.clock = clock
        input = MuxInput()
        input.mux = self
        backend.attach(input)
    }

    /// A new port for one more frontend. `onBreak` runs on `C-a b` while it has focus,
    /// `onFocus(true/false)` when it gains or loses focus (QEMU's MUX_IN/MUX_OUT events:
    /// the monitor prints its prompt). Callbacks run on the event loop thread.
    public func makePort(label: String? = nil, onBreak: (@Sendable () -> Void)? = nil,
                         onFocus: (@Sendable (Bool) -> Void)? = nil) -> Port {
        let (index, portLabel) = state.withLock { s -> (Int, String) in
            let label = label ?? backend.label
            s.ports.append(PortState(label: label, onBreak: onBreak, onFocus: onFocus))
            return (s.ports.count - 1, label)
        }
        return Port(mux: self, index: index, label: portLabel)
    }

    /// The focused port's index.
    public var focus: Int { state.withLock { $0.focus } }
    public var timestampsEnabled: Bool { state.withLock { $0.timestamps } }

    /// Detaches from the backend (which the caller closes).
    public func close() {
        backend.attach(nil)
        input.mux = nil
    }

    public static func monotonicMilliseconds() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) * 1000 + UInt64(ts.tv_nsec) / 1_000_000
    }

    /// The help text for escape character `escape` (QEMU's mux_help, our wording).
    public static func helpText(escape: UInt8 = 0x01) -> String {
        let key = (1...26).contains(escape) ? "C-\(Character(UnicodeScalar(escape + 0x60)))" : "Escape-Char"
        var text = "\r\n"
        if !(1...26).contains(escape) {
            text += "Escape-Char set to ASCII: 0x\(String(escape, radix: 16))\r\n\r\n"
        }
        let lines: [(String, String)] = [
            ("h", "print this help"),
            ("x", "exit emulator"),
            ("s", "save disk data back to file (if -snapshot)"),
            ("t", "toggle console timestamps"),
            ("b", "send break (magic sysrq)"),
            ("c", "switch between console and monitor"),
            (key, "sends \(key)"),
        ]
        // QEMU's layout: "C-a h    print this help", "C-a C-a  sends C-a".
        let width = key.count * 2 + 3
        for (k, what) in lines {
            text += "\(key) \(k)".padding(to: width) + what + "\r\n"
        }
        return text
    }

    // MARK: output (any thread)

    func output(_ bytes: [UInt8]) {
        if bytes.isEmpty { return }
        let out = state.withLock { s -> [UInt8] in
            guard s.timestamps else { return bytes }
            var out: [UInt8] = []
            out.reserveCapacity(bytes.count + 16)
            for b in bytes {
                if s.lineStart {
                    let now = clock()
                    let start = s.timestampStart ?? now
                    s.timestampStart = start
                    out += Self.stamp(milliseconds: now &- start)
                    s.lineStart = false
                }
                out.append(b)
                if b == UInt8(ascii: "\n") { s.lineStart = true }
            }
            return out
        }
        backend.write(out)
    }

    static func stamp(milliseconds ms: UInt64) -> [UInt8] {
        let secs = ms / 1000
        func two(_ v: UInt64) -> String { v < 10 ? "0\(v)" : "\(v)" }
        let millis = ms % 1000
        let m = millis < 10 ? "00\(millis)" : millis < 100 ? "0\(millis)" : "\(millis)"
        return Array("[\(two(secs / 3600)):\(two(secs / 60 % 60)):\(two(secs % 60)).\(m)] ".utf8)
    }

    // MARK: input (loop thread)

    fileprivate func capacity() -> Int {
        state.withLock { s in
            guard s.focus < s.ports.count else { return 0 }
            return max(0, Self.portBufferSize - s.ports[s.focus].pending.count)
        }
    }

    fileprivate func receive(_ bytes: [UInt8]) {
        let actions = state.withLock { s -> [Action] in
            var actions: [Action] = []
            for b in bytes {
                if s.sawEscape {
                    s.sawEscape = false
                    if b == escape {
                        append(b, to: &s)
                        continue
                    }
                    switch b {
                    case UInt8(ascii: "h"), UInt8(ascii: "?"): actions.append(.help)
                    case UInt8(ascii: "x"): actions.append(.quit)
                    case UInt8(ascii: "s"): actions.append(.commit)
                    case UInt8(ascii: "b"):
                        if s.focus < s.ports.count, let onBreak = s.ports[s.focus].onBreak { actions.append(.callback(onBreak)) }
                    case UInt8(ascii: "c"):
                        if !s.ports.isEmpty {
                            let from = s.focus
                            s.focus = (s.focus + 1) % s.ports.count
                            actions.append(.focus(from: from, to: s.focus))
                        }
                    case UInt8(ascii: "t"):
                        s.timestamps.toggle()
                        s.timestampStart = nil
                        s.lineStart = false
                    default:
                        break  // unknown escape: dropped, as QEMU does
                    }
                } else if b == escape {
                    s.sawEscape = true
                } else {
                    append(b, to: &s)
                }
            }
            return actions
        }
        for action in actions { perform(action) }
        flush()
    }

    private func append(_ byte: UInt8, to s: inout State) {
        guard s.focus < s.ports.count else { return }
        s.ports[s.focus].pending.append(byte)
    }

    private func perform(_ action: Action) {
        switch action {
        case .help:
            backend.write(Array(Self.helpText(escape: escape).utf8))
        case .quit:
            backend.write(Array("swemu: Terminated\r\n".utf8))
            (backend as? StdioBackend)?.restoreTerminalMode()
            quit()
        case .commit:
            if let commit {
                commit()
            } else {
                backend.write(Array("swemu: saving disk data (-snapshot commit) is not supported yet\r\n".utf8))
            }
        case .callback(let body):
            body()
        case .focus(let from, let to):
            let (out, into) = state.withLock { s in (s.ports[from].onFocus, s.ports[to].onFocus) }
            if from != to {
                out?(false)
                into?(true)
            }
        }
    }

    /// Hands buffered input to every port's frontend, as much as each can take.
    private func flush() {
        let count = state.withLock { $0.ports.count }
        for index in 0..<count {
            guard let frontend = state.withLock({ $0.ports[index].frontend }) else { continue }
            let room = frontend.receiveCapacity()
            guard room > 0 else { continue }
            let chunk = state.withLock { s -> [UInt8] in
                let n = min(room, s.ports[index].pending.count)
                defer { s.ports[index].pending.removeFirst(n) }
                return Array(s.ports[index].pending.prefix(n))
            }
            if !chunk.isEmpty { frontend.receive(chunk) }
        }
    }

    fileprivate func scheduleFlush() {
        loop.execute { [self] in
            flush()
            backend.acceptInput()
        }
    }

    fileprivate func attach(_ frontend: (any CharFrontend)?, port: Int) {
        connection.withLock { open in
            if open, let frontend { frontend.backendEvent(.opened) }
            state.withLock { s in s.ports[port].frontend = frontend }
        }
        if frontend != nil { scheduleFlush() }
    }

    /// The backend connected or disconnected: every port hears it.
    fileprivate func backendEvent(_ event: CharEvent) {
        connection.withLock { open in
            let isOpen = event == .opened
            guard open != isOpen else { return }
            open = isOpen
            let frontends = state.withLock { s in s.ports.compactMap(\.frontend) }
            for frontend in frontends { frontend.backendEvent(event) }
        }
    }
}

/// The mux as its backend's frontend. Holds the mux weakly: the mux owns the backend, and a
/// strong link back would keep both alive forever.
private final class MuxInput: CharFrontend {
    private let ref = WeakBox<CharMux>()
    var mux: CharMux? {
        get { ref.value }
        set { ref.value = newValue }
    }
    func receiveCapacity() -> Int { mux?.capacity() ?? 0 }
    func receive(_ bytes: [UInt8]) { mux?.receive(bytes) }
    func backendEvent(_ event: CharEvent) { mux?.backendEvent(event) }
}

extension String {
    fileprivate func padding(to width: Int) -> String {
        count >= width ? self : self + String(repeating: " ", count: width - count)
    }
}
