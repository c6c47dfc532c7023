import Chardev
import DeviceModel
import Glibc
import Synchronization
import SystemSupport
import Testing

@testable import QMP

/// A machine double: canned state, a record of every call, and events it emits the way the
/// VMM does (STOP from inside `stop()`, RESUME from inside `cont()`, RESET and SHUTDOWN
/// after the call returns, through `emit`).
final class FakeTarget: MonitorTarget {
    struct State {
        var runState = "running"
        var running = true
        var name: String? = "guest0"
        var calls: [String] = []
        /// The views asked for, each with the CPU index ("x /1xw 0x1000 @0", "info registers -a @1").
        var views: [String] = []
        var listeners: [@Sendable (MonitorEvent) -> Void] = []
        /// Replies to views, by the view's line (as in `views`, without the CPU).
        var viewReplies: [String: String] = [:]
        /// Runs inside `stop()` before it returns (tests use it to make a client vanish).
        var duringStop: (@Sendable () -> Void)?
        /// Runs inside `quit()`.
        var duringQuit: (@Sendable () -> Void)?
        var network: (any NetworkControl)?
        var balloon: (any BalloonControl)?
        var keyboard: (any KeyboardControl)?
        var peripherals: [(id: String, type: String)] = []
    }
    let state = Mutex(State())

    var runState: String { state.withLock { $0.runState } }
    var isRunning: Bool { state.withLock { $0.running } }
    var guestName: String? { state.withLock { $0.name } }
    var machineType: String { "virt" }
    var machineList: [MonitorMachineType] {
        [MonitorMachineType(name: "virt", description: "RISC-V VirtIO board", isDefault: true, maxCPUs: 512, defaultRAMID: "riscv_virt_board.ram"),
         MonitorMachineType(name: "spike", description: "RISC-V Spike board", isDefault: false, maxCPUs: 1, defaultRAMID: "riscv.spike.ram")]
    }
    var cpus: [MonitorCPU] {
        [MonitorCPU(index: 0, threadID: 4242, target: "riscv64", qomPath: "/machine/soc0/harts[0]"),
         MonitorCPU(index: 1, threadID: 4243, target: "riscv64", qomPath: "/machine/soc0/harts[1]")]
    }
    /// virtio0's requests: 8 reads of 512 bytes, a write of 512 bytes ending at 1 MiB, 2 flushes, a failed read.
    let accounting: BlockAccounting = {
        let a = BlockAccounting()
        for _ in 0..<8 { a.record(.read, bytes: 512, start: BlockAccounting.now(), failed: false) }
        a.record(.write, offset: (1 << 20) - 512, bytes: 512, start: BlockAccounting.now(), failed: false)
        for _ in 0..<2 { a.record(.flush, start: BlockAccounting.now(), failed: false) }
        a.record(.read, bytes: 512, start: BlockAccounting.now(), failed: true)
        return a
    }()
    var blockDevices: [MonitorBlockDevice] {
        var blockdev = MonitorBlockDevice(device: "", file: "/images/base.qcow2", format: "qcow2", readOnly: true,
                                          sizeBytes: UInt64(Int64.max) + 1)
        blockdev.nodeName = "libvirt-1-format"
        blockdev.fileNodeName = "libvirt-1-storage"
        blockdev.qdev = "/machine/peripheral/virtio-disk0/virtio-backend"
        return [MonitorBlockDevice(device: "virtio0", file: "disk.img", format: "raw", readOnly: false, sizeBytes: 1 << 30,
                                   accounting: accounting), blockdev]
    }
    var chardevs: [(label: String, filename: String)] {
        [("serial0", "pty:/dev/pts/7"), ("qmp", "unix:/tmp/q.sock,server=on")]
    }

    var network: (any NetworkControl)? { state.withLock { $0.network } }
    var balloon: (any BalloonControl)? { state.withLock { $0.balloon } }
    var keyboard: (any KeyboardControl)? { state.withLock { $0.keyboard } }
    var peripherals: [(id: String, type: String)] { state.withLock { $0.peripherals } }
    var commandLineOptions: [MonitorCommandLineOption] {
        [MonitorCommandLineOption(option: "smp-opts", parameters: [.init(name: "cpus", type: .number), .init(name: "dies", type: .number)]),
         MonitorCommandLineOption(option: "object", parameters: [])]
    }

    private func record(_ call: String) { state.withLock { $0.calls.append(call) } }
    var calls: [String] { state.withLock { $0.calls } }
    var views: [String] { state.withLock { $0.views } }

    func stop() {
        record("stop")
        let hook = state.withLock { s -> (@Sendable () -> Void)? in
            s.running = false
            s.runState = "paused"
            return s.duringStop
        }
        hook?()
        emit(.stop)
    }
    func cont() {
        record("cont")
        state.withLock { s in
            s.running = true
            s.runState = "running"
        }
        emit(.resume)
    }
    func systemReset() {
        record("system_reset")
        emit(.reset(guest: false, reason: "host-qmp-system-reset"))
    }
    func systemPowerdown() { record("system_powerdown") }
    func execute(_ command: VMCommand) {
        switch command {
        case .stop: stop()
        case .cont: cont()
        case .systemReset: systemReset()
        case .systemPowerdown: systemPowerdown()
        case .quit: quit()
        }
    }

    func quit() {
        let hook = state.withLock { s -> (@Sendable () -> Void)? in
            s.calls.append("quit")
            return s.duringQuit
        }
        hook?()
        emit(.shutdown(guest: false, reason: "host-qmp-quit"))
    }

    func machineView(_ view: MachineView, cpuIndex: Int) -> String? {
        let line: String
        switch view {
        case .registers(let all): line = all ? "info registers -a" : "info registers"
        case .jit: line = "info jit"
        case .memoryTree: line = "info mtree"
        case .deviceTree: line = "info qtree"
        case .memory(let dump): line = dump.canonicalLine
        }
        return state.withLock { s in
            s.views.append("\(line) @\(cpuIndex)")
            if let reply = s.viewReplies[line] { return reply }
            if case .registers = view { return " pc       0000000080000000\n cpu \(cpuIndex)\n" }
            if case .memory = view { return "memory for \(line)\n" }
            return nil
        }
    }

    func addEventListener(_ listener: @escaping @Sendable (MonitorEvent) -> Void) {
        state.withLock { $0.listeners.append(listener) }
    }

    func emit(_ event: MonitorEvent) {
        for listener in state.withLock({ $0.listeners }) { listener(event) }
    }
}

/// A backend double: records output, hands input to the frontend, reports connection events.
final class FakeBackend: CharBackend {
    private struct State {
        var frontend: (any CharFrontend)?
        var output: [UInt8] = []
    }
    private let state = Mutex(State())
    var label: String { "fake" }
    func attach(_ frontend: (any CharFrontend)?) { state.withLock { $0.frontend = frontend } }
    func write(_ bytes: [UInt8]) { state.withLock { $0.output += bytes } }
    func acceptInput() {}

    var frontend: (any CharFrontend)? { state.withLock { $0.frontend } }
    func connect() { frontend?.backendEvent(.opened) }
    func disconnect() { frontend?.backendEvent(.closed) }
    /// Input as the chardev delivers it: in chunks no larger than the capacity.
    func type(_ text: String) { type(Array(text.utf8)) }
    func type(_ bytes: [UInt8]) {
        guard let fe = frontend else { return }
        var rest = bytes[...]
        while !rest.isEmpty {
            let n = max(1, fe.receiveCapacity())
            fe.receive(Array(rest.prefix(n)))
            rest = rest.dropFirst(n)
        }
    }
    var output: [UInt8] { state.withLock { $0.output } }
    var text: String { String(decoding: output, as: UTF8.self) }
    /// Output so far, then cleared.
    func take() -> String {
        state.withLock { s in
            defer { s.output = [] }
            return String(decoding: s.output, as: UTF8.self)
        }
    }
}

/// A session past `qmp_capabilities`.
func negotiatedSession(_ target: FakeTarget) -> QMPSession {
    var s = QMPSession(target: target)
    _ = s.feed(Array(#"{"execute": "qmp_capabilities"}"#.utf8))
    return s
}

/// The reply lines to one input.
func send(_ s: inout QMPSession, _ text: String) -> [String] {
    qmpLines(s.feed(Array(text.utf8)).text)
}

/// The QMP lines in `text` (each ends in "\r\n").
func qmpLines(_ text: String) -> [String] {
    var lines: [String] = []
    var rest = Substring(text)
    while let range = rest.firstRange(of: "\r\n") {
        lines.append(String(rest[..<range.lowerBound]))
        rest = rest[range.upperBound...]
    }
    if !rest.isEmpty { lines.append(String(rest)) }
    return lines
}

/// A value shared with closures on other threads.
final class Shared<T: Sendable>: Sendable {
    private let storage: Mutex<T>
    init(_ value: T) { storage = Mutex(value) }
    var value: T { storage.withLock { $0 } }
    func set(_ value: T) { storage.withLock { $0 = value } }
    func update(_ body: @Sendable (inout T) -> Void) { storage.withLock { body(&$0) } }
}

let fixedTime = QMPTimestamp(seconds: 1_700_000_000, microseconds: 123_456)

/// Polls `condition` until it holds or `seconds` pass.
func eventually(_ seconds: Double = 10, _ condition: () -> Bool) -> Bool {
    let deadline = monotonicSeconds() + seconds
    while monotonicSeconds() < deadline {
        if condition() { return true }
        usleep(2000)
    }
    return condition()
}

func monotonicSeconds() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
}

/// A unique path in the temporary directory (short: unix socket paths are limited).
func temporaryPath(_ name: String) -> String {
    let dir = getenv("TMPDIR").map { String(cString: $0) } ?? "/tmp"
    return "\(dir)/swemu-qmp-\(getpid())-\(UInt32.random(in: 0...UInt32.max))-\(name)"
}

/// A unix-socket client for the end-to-end tests (non-blocking once connected).
final class UnixClient: @unchecked Sendable {
    // SAFETY: used by one test at a time; the descriptor is closed once (close/deinit).
    private(set) var fd: Int32
    private var received: [UInt8] = []

    init(_ path: String) throws {
        fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue | SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw SystemError(.syscall, "socket", errno: .current) }
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        let utf8 = Array(path.utf8)
        // SAFETY: the test paths are far shorter than sun_path; the copy stays inside it.
        withUnsafeMutableBytes(of: &addr.sun_path) { $0.copyBytes(from: utf8.prefix($0.count - 1)) }
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard rc == 0 else {
            let err = Errno.current
            Glibc.close(fd)
            throw SystemError(.syscall, "connect \(path)", errno: err)
        }
        _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
    }

    deinit { close() }

    func close() {
        if fd >= 0 { Glibc.close(fd) }
        fd = -1
    }

    func send(_ text: String) {
        let bytes = Array(text.utf8)
        var done = 0
        while done < bytes.count && fd >= 0 {
            let n = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress! + done, bytes.count - done, Int32(MSG_NOSIGNAL)) }
            if n > 0 { done += n } else if n < 0 && errno != EAGAIN && errno != EINTR { return } else { usleep(1000) }
        }
    }

    /// Reads until `condition` holds for all text received so far, or `seconds` pass;
    /// returns everything received.
    @discardableResult
    func read(until condition: (String) -> Bool, seconds: Double = 10) -> String {
        let deadline = monotonicSeconds() + seconds
        var buffer = [UInt8](repeating: 0, count: 4096)
        while !condition(text) && monotonicSeconds() < deadline && fd >= 0 {
            var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            _ = poll(&p, 1, 20)
            let n = buffer.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            if n > 0 { received += buffer[0..<n] } else if n == 0 { break }
        }
        return text
    }

    /// Reads until `count` complete QMP lines arrived.
    func lines(_ count: Int, seconds: Double = 10) -> [String] {
        read(until: { qmpLines($0).count >= count && $0.hasSuffix("\r\n") }, seconds: seconds)
        return qmpLines(text)
    }

    var text: String { String(decoding: received, as: UTF8.self) }
    func clear() { received = [] }
}

/// An event loop on its own thread for the duration of `body`.
func withLoop<R>(_ body: (EventLoop) throws -> R) throws -> R {
    let loop = try EventLoop()
    try loop.start(name: "qmp-test")
    defer { loop.stop() }
    return try body(loop)
}

/// A frontend that logs connection events and input in one string: "<opened>hi<closed>".
final class EventLog: CharFrontend {
    private let log = Mutex("")
    func receiveCapacity() -> Int { 4096 }
    func receive(_ bytes: [UInt8]) { log.withLock { $0 += String(decoding: bytes, as: UTF8.self) } }
    func backendEvent(_ event: CharEvent) { log.withLock { $0 += event == .opened ? "<opened>" : "<closed>" } }
    var text: String { log.withLock { $0 } }
}
