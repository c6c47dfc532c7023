import DeviceModel
import Devices
import Synchronization

/// A character backend that records what the UART does to it and, like a real backend,
/// delivers queued input only as far as the frontend's capacity allows.
final class FakeCharBackend: CharBackend {
    struct State {
        var output: [UInt8] = []
        var acceptInputCalls = 0
        var attachCalls = 0
        weak var frontend: (any CharFrontend)?
        /// Input waiting on the host side.
        var pending: [UInt8] = []
        /// Deliver pending input from inside `acceptInput` (re-entering the frontend).
        var deliverOnAcceptInput = false
        /// Runs inside `write`, after recording the bytes (to re-enter the frontend).
        var onWrite: (@Sendable ([UInt8]) -> Void)?
    }

    let label = "fake"
    let state = Mutex(State())

    func attach(_ frontend: (any CharFrontend)?) {
        state.withLock {
            $0.frontend = frontend
            $0.attachCalls += 1
        }
    }

    func write(_ bytes: [UInt8]) {
        let hook = state.withLock { s in
            s.output += bytes
            return s.onWrite
        }
        hook?(bytes)
    }

    func acceptInput() {
        let deliver = state.withLock { s in
            s.acceptInputCalls += 1
            return s.deliverOnAcceptInput
        }
        if deliver { pump() }
    }

    /// Queues host input and offers it to the frontend.
    func type(_ bytes: [UInt8]) {
        state.withLock { $0.pending += bytes }
        pump()
    }

    /// Gives the frontend as much pending input as it says it can take; returns the count.
    @discardableResult
    func pump() -> Int {
        guard let frontend = state.withLock({ $0.frontend }) else { return 0 }
        let capacity = frontend.receiveCapacity()
        let chunk = state.withLock { s in
            let n = min(max(capacity, 0), s.pending.count)
            defer { s.pending.removeFirst(n) }
            return Array(s.pending.prefix(n))
        }
        if !chunk.isEmpty { frontend.receive(chunk) }
        return chunk.count
    }

    var output: [UInt8] { state.withLock { $0.output } }
    var acceptInputCalls: Int { state.withLock { $0.acceptInputCalls } }
    var pendingCount: Int { state.withLock { $0.pending.count } }
    var frontend: (any CharFrontend)? { state.withLock { $0.frontend } }
}

/// A UART wired to a fake backend and an observable interrupt line.
struct Harness {
    typealias Register = UART16550.Register
    typealias LSR = UART16550.LSR
    typealias MSR = UART16550.MSR

    let uart: UART16550
    let backend: FakeCharBackend
    let irq: LevelInterruptLine

    init(regShift: Int = 0, irq: LevelInterruptLine = LevelInterruptLine()) {
        backend = FakeCharBackend()
        self.irq = irq
        uart = UART16550(name: "serial0", backend: backend, irq: irq, regShift: regShift)
    }

    func offset(_ register: Register) -> UInt64 { register.rawValue << UInt64(uart.regShift) }

    /// A byte read; a value wider than a byte is reported as 0xEE so the caller's expectation
    /// fails instead of the conversion trapping.
    func read(_ register: Register) -> UInt8 {
        let value = uart.read(offset: offset(register), size: 1)
        return UInt8(exactly: value) ?? 0xEE
    }

    func write(_ register: Register, _ value: UInt8) {
        uart.write(offset: offset(register), value: UInt64(value), size: 1)
    }

    var iir: UInt8 { read(.iirFcr) }
    var lsr: LSR { LSR(rawValue: read(.lsr)) }
    var msr: MSR { MSR(rawValue: read(.msr)) }

    func setIER(_ ier: UART16550.IER) { write(.ierDlm, ier.rawValue) }
    func setFCR(_ fcr: UART16550.FCR) { write(.iirFcr, fcr.rawValue) }
    func setMCR(_ mcr: UART16550.MCR) { write(.mcr, mcr.rawValue) }

    /// Reads RBR while LSR.DR is set (what a driver's RX loop does), at most `limit` bytes.
    func drain(limit: Int = 64) -> [UInt8] {
        var bytes: [UInt8] = []
        while bytes.count < limit && lsr.contains(.dr) { bytes.append(read(.rbrThrDll)) }
        return bytes
    }
}

/// A late-bound reference, for interrupt handlers that call back into the UART they observe.
final class UARTBox: Sendable {
    let uart = Mutex<UART16550?>(nil)
}
