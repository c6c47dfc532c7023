import DeviceModel
import Synchronization
import SystemSupport

/// A National Semiconductor / TI PC16550D UART (the "16550A" of PCs and of QEMU's `virt`
/// board), as the datasheet describes it and as Linux's 8250 driver and QEMU's
/// `hw/char/serial.c` expect it. Section numbers below refer to the PC16550D datasheet
/// (§8 "Registers", Table II register summary, Table IV interrupt control functions).
///
/// The emulated line is infinitely fast:
/// - a byte written to THR leaves at once for the backend (or, in loopback, for the receiver),
///   so THR, the transmit FIFO and the transmitter shift register are always empty when the
///   guest looks: LSR.THRE and LSR.TEMT always read 1, and the TX FIFO reset is a no-op;
/// - input arrives in whole `receive` calls from the backend.
///
/// **Character timeout.** The real chip raises the character-timeout interrupt (IIR 0x0C,
/// §8.10) when data below the RX trigger level has sat in the FIFO for 4 character times with
/// no byte added or removed. QEMU models that with a timer. Here, time on the line does not
/// pass between events, so the 4 character times are taken to have elapsed as soon as the
/// current event is over: when a `receive` call (or a guest RBR read, or an FCR write that
/// raises the trigger level) leaves between 1 and trigger−1 bytes in the FIFO, the timeout
/// indication is pending. It is a function of the FIFO depth and the trigger level, so no
/// timer or extra state is kept, a guest that reads one byte per interrupt still gets another
/// interrupt for the rest, and data below the trigger can never be stranded.
///
/// **Interrupt output.** The computed level (an interrupt identified in IIR) drives the
/// `InterruptLine` after every change, level-triggered as the PLIC and the IOAPIC expect.
/// MCR.OUT2 does not gate it: on a PC, OUT2 enables a tri-state buffer on the ISA IRQ line,
/// which is board glue outside the chip; our boards have no ISA bus, and QEMU does the same.
///
/// **Where this differs from QEMU** (both follow the datasheet, not QEMU): an RX FIFO overrun
/// loses the incoming byte and keeps the FIFO (§8.4 bit 1; QEMU drops the oldest byte); in
/// loopback the serial input is disconnected (§8.8), so `receiveCapacity()` is 0 and the
/// backend keeps its input until loopback ends; LSR errors travel with their byte through the
/// FIFO, and a break (`receiveBreak()`) loads one zero byte carrying BI.
///
/// **Threads.** Registers are accessed from vCPU threads and input arrives on the I/O thread,
/// so all state lives in one struct behind a `Mutex`. Work that calls out (the backend's
/// `write`/`acceptInput`, the interrupt line) is computed under the lock and performed after
/// it is released, so a backend that delivers input from inside `acceptInput`, or a line whose
/// handler reads the UART, cannot deadlock.
///
/// **Lifetime.** `init` attaches the UART to its backend, and the backend keeps its frontend:
/// the two reference each other. That cycle is intended for a device that lives as long as
/// the machine; call `detachFromBackend()` to break it (hot-unplug, tests).
package final class UART16550: BusDevice, CharFrontend, Snapshottable {
    /// Register offsets in units of the register stride (Table II). Several registers share
    /// an offset: the divisor latch access bit (LCR.DLAB) and the direction select one.
    package enum Register: UInt64, Sendable, CaseIterable {
        /// Read: receiver buffer (RBR). Write: transmitter holding (THR). DLAB=1: divisor low (DLL).
        case rbrThrDll = 0
        /// Interrupt enable (IER). DLAB=1: divisor high (DLM).
        case ierDlm = 1
        /// Read: interrupt identification (IIR). Write: FIFO control (FCR).
        case iirFcr = 2
        case lcr = 3
        case mcr = 4
        case lsr = 5
        case msr = 6
        case scr = 7
    }

    /// Interrupt Enable Register (§8.7). Bits 4-7 are always 0 on the 16550.
    package struct IER: OptionSet, Sendable {
        package var rawValue: UInt8
        package init(rawValue: UInt8) { self.rawValue = rawValue }
        /// Received data available (and character timeout in FIFO mode).
        package static let erbfi = IER(rawValue: 0x01)
        /// Transmitter holding register empty.
        package static let etbei = IER(rawValue: 0x02)
        /// Receiver line status.
        package static let elsi = IER(rawValue: 0x04)
        /// Modem status.
        package static let edssi = IER(rawValue: 0x08)
        package static let writable: IER = [.erbfi, .etbei, .elsi, .edssi]
    }

    /// The interrupt identification codes of IIR bits 0-3 (§8.6, Table IV), highest priority first.
    package enum InterruptID: UInt8, Sendable {
        case receiverLineStatus = 0x06
        case receivedDataAvailable = 0x04
        case characterTimeout = 0x0C
        case transmitterHoldingRegisterEmpty = 0x02
        case modemStatus = 0x00
        /// Bit 0 set: no interrupt pending.
        case none = 0x01
    }

    /// IIR bits 6-7: both set when FCR bit 0 enabled the FIFOs (§8.6).
    package static let iirFIFOsEnabled: UInt8 = 0xC0

    /// FIFO Control Register (§8.5).
    package struct FCR: OptionSet, Sendable {
        package var rawValue: UInt8
        package init(rawValue: UInt8) { self.rawValue = rawValue }
        package static let fifoEnable = FCR(rawValue: 0x01)
        /// Self-clearing: empties the RX FIFO.
        package static let rxFIFOReset = FCR(rawValue: 0x02)
        /// Self-clearing: empties the TX FIFO.
        package static let txFIFOReset = FCR(rawValue: 0x04)
        /// RXRDY/TXRDY pin mode; no DMA here, so kept only to read back in snapshots.
        package static let dmaMode = FCR(rawValue: 0x08)
        /// Bits 6-7: RX trigger level 1, 4, 8 or 14 bytes.
        package static let rxTriggerMask = FCR(rawValue: 0xC0)
        package static let trigger1: FCR = []
        package static let trigger4 = FCR(rawValue: 0x40)
        package static let trigger8 = FCR(rawValue: 0x80)
        package static let trigger14 = FCR(rawValue: 0xC0)
        /// What the chip remembers of an FCR write; the reset bits self-clear, 4-5 are reserved.
        package static let stored: FCR = [.fifoEnable, .dmaMode, .rxTriggerMask]

        /// The RX FIFO depth at which the received-data interrupt fires.
        package var rxTriggerLevel: Int {
            switch rawValue >> 6 {
            case 0: 1
            case 1: 4
            case 2: 8
            default: 14
            }
        }
    }

    /// Line Control Register (§8.1).
    package struct LCR: OptionSet, Sendable {
        package var rawValue: UInt8
        package init(rawValue: UInt8) { self.rawValue = rawValue }
        /// Bits 0-1: 5, 6, 7 or 8 data bits.
        package static let wordLengthMask = LCR(rawValue: 0x03)
        /// 1.5 (5-bit words) or 2 stop bits.
        package static let stopBits = LCR(rawValue: 0x04)
        package static let parityEnable = LCR(rawValue: 0x08)
        package static let evenParity = LCR(rawValue: 0x10)
        package static let stickParity = LCR(rawValue: 0x20)
        /// Holds the serial output in the spacing state.
        package static let setBreak = LCR(rawValue: 0x40)
        /// Divisor latch access bit.
        package static let dlab = LCR(rawValue: 0x80)
    }

    /// Modem Control Register (§8.8). Bits 5-7 are always 0 on the 16550.
    package struct MCR: OptionSet, Sendable {
        package var rawValue: UInt8
        package init(rawValue: UInt8) { self.rawValue = rawValue }
        package static let dtr = MCR(rawValue: 0x01)
        package static let rts = MCR(rawValue: 0x02)
        package static let out1 = MCR(rawValue: 0x04)
        package static let out2 = MCR(rawValue: 0x08)
        package static let loop = MCR(rawValue: 0x10)
        package static let writable: MCR = [.dtr, .rts, .out1, .out2, .loop]
    }

    /// Line Status Register (§8.4).
    package struct LSR: OptionSet, Sendable {
        package var rawValue: UInt8
        package init(rawValue: UInt8) { self.rawValue = rawValue }
        /// Data ready: RBR or the RX FIFO holds at least one byte.
        package static let dr = LSR(rawValue: 0x01)
        /// Overrun error.
        package static let oe = LSR(rawValue: 0x02)
        /// Parity error.
        package static let pe = LSR(rawValue: 0x04)
        /// Framing error.
        package static let fe = LSR(rawValue: 0x08)
        /// Break interrupt.
        package static let bi = LSR(rawValue: 0x10)
        /// Transmitter holding register (TX FIFO) empty.
        package static let thre = LSR(rawValue: 0x20)
        /// Transmitter empty: THR and the shift register.
        package static let temt = LSR(rawValue: 0x40)
        /// FIFO mode: at least one PE, FE or BI among the bytes in the RX FIFO.
        package static let rxFIFOError = LSR(rawValue: 0x80)
        /// The conditions that raise the receiver-line-status interrupt (bits 1-4).
        package static let lineStatusErrors: LSR = [.oe, .pe, .fe, .bi]
        /// The errors that travel with a received byte (revealed when it reaches the top).
        package static let byteErrors: LSR = [.pe, .fe, .bi]
    }

    /// Modem Status Register (§8.9): deltas in bits 0-3, the status inputs in bits 4-7.
    package struct MSR: OptionSet, Sendable {
        package var rawValue: UInt8
        package init(rawValue: UInt8) { self.rawValue = rawValue }
        /// Delta clear to send.
        package static let dcts = MSR(rawValue: 0x01)
        /// Delta data set ready.
        package static let ddsr = MSR(rawValue: 0x02)
        /// Trailing edge ring indicator: RI went from on to off.
        package static let teri = MSR(rawValue: 0x04)
        /// Delta data carrier detect.
        package static let ddcd = MSR(rawValue: 0x08)
        package static let cts = MSR(rawValue: 0x10)
        package static let dsr = MSR(rawValue: 0x20)
        package static let ri = MSR(rawValue: 0x40)
        package static let dcd = MSR(rawValue: 0x80)
        package static let deltas: MSR = [.dcts, .ddsr, .teri, .ddcd]
        /// What a connected null-modem line shows: clear to send, data set ready, carrier.
        package static let connected: MSR = [.cts, .dsr, .dcd]
    }

    /// RX and TX FIFO depth (§8.5).
    package static let fifoDepth = 16
    /// Divisor after reset: 9600 baud from a 1.8432 MHz clock, as QEMU (the chip leaves it undefined).
    package static let resetDivisor: UInt16 = 12

    /// The snapshot of a UART (DESIGN.md §5): every register and the RX FIFO. The TX side has
    /// no state (see the type's comment).
    package struct State: Codable, Sendable, Equatable {
        package static let currentVersion: UInt32 = 1

        package var version: UInt32
        package var ier: UInt8
        package var lcr: UInt8
        package var mcr: UInt8
        /// The stored FCR bits (`FCR.stored`).
        package var fcr: UInt8
        package var scr: UInt8
        package var dll: UInt8
        package var dlm: UInt8
        /// LSR error bits latched until the next LSR read (`LSR.lineStatusErrors`).
        package var lineStatusErrors: UInt8
        /// LSR bit 7, latched until the next LSR read.
        package var rxFIFOError: Bool
        /// The THRE interrupt is pending (cleared by an IIR read that reports it or a THR write).
        package var thrEmptyPending: Bool
        /// MSR bits 0-3 since the last MSR read. The status bits are derived from MCR.
        package var msrDeltas: UInt8
        /// RX FIFO (or, with FIFOs off, RBR) contents, oldest first.
        package var rxData: [UInt8]
        /// The PE/FE/BI bits received with each byte of `rxData`.
        package var rxErrors: [UInt8]

        package init(
            version: UInt32 = State.currentVersion, ier: UInt8 = 0, lcr: UInt8 = 0, mcr: UInt8 = 0, fcr: UInt8 = 0,
            scr: UInt8 = 0, dll: UInt8 = UInt8(truncatingIfNeeded: UART16550.resetDivisor),
            dlm: UInt8 = UInt8(truncatingIfNeeded: UART16550.resetDivisor >> 8),
            lineStatusErrors: UInt8 = 0, rxFIFOError: Bool = false, thrEmptyPending: Bool = false,
            msrDeltas: UInt8 = 0, rxData: [UInt8] = [], rxErrors: [UInt8] = []
        ) {
            self.version = version
            self.ier = ier
            self.lcr = lcr
            self.mcr = mcr
            self.fcr = fcr
            self.scr = scr
            self.dll = dll
            self.dlm = dlm
            self.lineStatusErrors = lineStatusErrors
            self.rxFIFOError = rxFIFOError
            self.thrEmptyPending = thrEmptyPending
            self.msrDeltas = msrDeltas
            self.rxData = rxData
            self.rxErrors = rxErrors
        }
    }

    package let name: String
    /// Register offset = register index << regShift (the device tree's `reg-shift`).
    package let regShift: Int
    private let backend: (any CharBackend)?
    private let irq: any InterruptLine
    private let registers = Mutex(Registers())

    /// - Parameters:
    ///   - name: for messages and `info qtree` ("serial0").
    ///   - backend: where output goes and input comes from; nil discards output and gives no input.
    ///   - irq: the interrupt output, driven level-triggered.
    ///   - regShift: log2 of the register stride: 0 for the PC and `virt` layout (one byte per
    ///     register), 2 for boards with 32-bit register slots. Board configuration, 0...3.
    package init(name: String, backend: (any CharBackend)?, irq: any InterruptLine, regShift: Int = 0) {
        precondition((0...3).contains(regShift), "UART16550 '\(name)': reg-shift \(regShift) is not in 0...3")
        self.name = name
        self.backend = backend
        self.irq = irq
        self.regShift = regShift
        // The wire starts where `Registers.drivenLevel` says it is.
        irq.set(level: false)
        backend?.attach(self)
    }

    /// Breaks the UART ↔ backend reference cycle: the backend stops delivering input here.
    /// Output still goes to it.
    package func detachFromBackend() {
        backend?.attach(nil)
    }

    /// The size of the register window the board should map: 8 registers × the stride.
    package var windowSize: UInt64 { 8 << UInt64(regShift) }

    /// The baud-rate divisor the guest programmed through DLL/DLM (§8.3). Informational: the
    /// emulated line has no speed.
    package var divisor: UInt16 {
        registers.withLock { UInt16($0.dlm) << 8 | UInt16($0.dll) }
    }

    // MARK: BusDevice

    package func read(offset: UInt64, size: Int) -> UInt64 {
        guard let register = decode(offset) else { return 0 }
        let (value, effects) = registers.withLock { r in
            let before = r.receiveCapacity
            let value = r.read(register)
            return (value, r.settle(capacityBefore: before))
        }
        perform(effects)
        return UInt64(value)
    }

    package func write(offset: UInt64, value: UInt64, size: Int) {
        guard let register = decode(offset) else { return }
        // Wider accesses reach the byte register; the upper bytes have nothing behind them.
        let byte = UInt8(truncatingIfNeeded: value)
        let effects = registers.withLock { r in
            let before = r.receiveCapacity
            let sent = r.write(register, byte)
            var effects = r.settle(capacityBefore: before)
            effects.transmit = sent
            return effects
        }
        perform(effects)
    }

    /// Maps a bus offset to a register. An offset inside a register's slot but above its low
    /// byte (possible when regShift > 0) and offsets past the eighth register hit nothing:
    /// reads give 0, writes are dropped.
    private func decode(_ offset: UInt64) -> Register? {
        let stride: UInt64 = 1 << UInt64(regShift)
        guard offset & (stride - 1) == 0 else { return nil }
        return Register(rawValue: offset >> UInt64(regShift))
    }

    // MARK: CharFrontend

    /// Free space in the RX FIFO (16 bytes with FIFOs on, the single RBR with them off). 0 in
    /// loopback, where the serial input is disconnected from the line (§8.8), so the backend
    /// holds its input instead of losing it.
    package func receiveCapacity() -> Int {
        registers.withLock { $0.receiveCapacity }
    }

    /// Input from the line. Bytes beyond `receiveCapacity()` are lost with an overrun (OE), as
    /// on the chip; in loopback the line is disconnected and input is dropped.
    package func receive(_ bytes: [UInt8]) {
        guard !bytes.isEmpty else { return }
        let effects = registers.withLock { r in
            let before = r.receiveCapacity
            if !r.mcr.contains(.loop) {
                for byte in bytes { r.receiveByte(byte, errors: []) }
            }
            return r.settle(capacityBefore: before)
        }
        perform(effects)
    }

    /// A break condition on the line (a backend's break event, e.g. telnet BREAK for SysRq):
    /// one zero byte enters the FIFO carrying BI (§8.4, LSR bit 4).
    package func receiveBreak() {
        let effects = registers.withLock { r in
            let before = r.receiveCapacity
            if !r.mcr.contains(.loop) { r.receiveByte(0, errors: .bi) }
            return r.settle(capacityBefore: before)
        }
        perform(effects)
    }

    // MARK: Reset and snapshots

    /// Hardware reset (Table I, "UART Reset Configuration"): every register to its reset
    /// value, the FIFOs emptied; the divisor and SCR as QEMU resets them.
    package func reset() {
        let effects = registers.withLock { r in
            let before = r.receiveCapacity
            let driven = r.drivenLevel
            r = Registers()
            r.drivenLevel = driven
            return r.settle(capacityBefore: before)
        }
        perform(effects)
    }

    package func saveState() -> State {
        registers.withLock { r in
            State(
                version: State.currentVersion, ier: r.ier.rawValue, lcr: r.lcr.rawValue, mcr: r.mcr.rawValue,
                fcr: r.fcr.rawValue, scr: r.scr, dll: r.dll, dlm: r.dlm, lineStatusErrors: r.lineStatusErrors.rawValue,
                rxFIFOError: r.rxFIFOError, thrEmptyPending: r.thrEmptyPending, msrDeltas: r.msrDeltas.rawValue,
                rxData: r.rx.map(\.byte), rxErrors: r.rx.map(\.errors.rawValue))
        }
    }

    /// Loads a saved state. The state is untrusted (it may come from a migration stream): every
    /// field is checked against what the chip can hold before anything changes.
    package func restore(_ state: State) throws(SystemError) {
        let restored = try Registers(validating: state, device: name)
        let effects = registers.withLock { r in
            let before = r.receiveCapacity
            var new = restored
            new.drivenLevel = r.drivenLevel
            r = new
            return r.settle(capacityBefore: before)
        }
        perform(effects)
    }

    // MARK: Side effects, outside the lock

    private func perform(_ effects: UARTEffects) {
        if let byte = effects.transmit { backend?.write([byte]) }
        if let level = effects.driveLevel { drive(level) }
        if effects.acceptInput { backend?.acceptInput() }
    }

    /// Sets the line, then checks that nobody changed the wanted level in between: another
    /// thread, or a backend that re-entered the UART from `write`, may have set the line before
    /// our (now stale) `set` landed. Whoever sets last re-reads the wanted level after its own
    /// `set`, so the wire always ends at the level of the latest state. No lock is held while
    /// the line is set, so a line whose handler reads the UART cannot deadlock.
    private func drive(_ level: Bool) {
        var level = level
        while true {
            irq.set(level: level)
            let wanted = registers.withLock { $0.drivenLevel }
            if wanted == level { return }
            level = wanted
        }
    }
}

/// What a register access or input asks of the outside world, performed after the lock is
/// released.
private struct UARTEffects {
    /// A byte for the backend.
    var transmit: UInt8?
    /// A new level for the interrupt line.
    var driveLevel: Bool?
    /// The RX FIFO had no room and now has some: the backend may deliver again.
    var acceptInput = false
}

/// One received byte and the errors it arrived with; PE, FE and BI travel with their byte
/// through the FIFO and show in LSR when it reaches the top (§8.4).
private struct ReceivedByte {
    var byte: UInt8
    var errors: UART16550.LSR
}

/// Everything the chip holds, guarded by the UART's mutex. Mutating methods change registers
/// only; `settle` turns the result into effects.
private struct Registers {
    typealias IER = UART16550.IER
    typealias FCR = UART16550.FCR
    typealias LCR = UART16550.LCR
    typealias MCR = UART16550.MCR
    typealias LSR = UART16550.LSR
    typealias MSR = UART16550.MSR
    typealias InterruptID = UART16550.InterruptID

    // Reset values: Table I.
    var ier: IER = []
    var lcr: LCR = []
    var mcr: MCR = []
    var fcr: FCR = []
    var scr: UInt8 = 0
    var dll = UInt8(truncatingIfNeeded: UART16550.resetDivisor)
    var dlm = UInt8(truncatingIfNeeded: UART16550.resetDivisor >> 8)
    /// RX FIFO, or RBR (at most one byte) with FIFOs off; oldest first.
    var rx: [ReceivedByte] = []
    /// LSR bits 1-4, latched until LSR is read.
    var lineStatusErrors: LSR = []
    /// LSR bit 7, latched until LSR is read (and re-armed if errored bytes remain).
    var rxFIFOError = false
    /// THRE interrupt pending (Table IV: set when THR empties, reset by an IIR read that
    /// reports it or by a THR write).
    var thrEmptyPending = false
    /// MSR bits 0-3.
    var msrDeltas: MSR = []
    /// The level the interrupt line was last told to take. Not chip state.
    var drivenLevel = false

    init() {
        rx.reserveCapacity(UART16550.fifoDepth)
    }

    var fifosEnabled: Bool { fcr.contains(.fifoEnable) }
    var rxDepth: Int { fifosEnabled ? UART16550.fifoDepth : 1 }
    var receiveCapacity: Int { mcr.contains(.loop) ? 0 : rxDepth - rx.count }

    /// The modem status inputs: the line's (always connected) or, in loopback, MCR's outputs
    /// wired back in (§8.8: RTS→CTS, DTR→DSR, OUT1→RI, OUT2→DCD).
    var modemStatus: MSR {
        guard mcr.contains(.loop) else { return MSR.connected }
        var status: MSR = []
        if mcr.contains(.rts) { status.insert(.cts) }
        if mcr.contains(.dtr) { status.insert(.dsr) }
        if mcr.contains(.out1) { status.insert(.ri) }
        if mcr.contains(.out2) { status.insert(.dcd) }
        return status
    }

    /// The highest-priority pending interrupt (Table IV).
    var pendingInterrupt: InterruptID {
        if ier.contains(.elsi) && !lineStatusErrors.isEmpty { return .receiverLineStatus }
        if ier.contains(.erbfi) && !rx.isEmpty {
            // Both at priority 2: at or above the trigger it is "data available"; below it the
            // character timeout, which has always already expired here (see UART16550).
            if !fifosEnabled || rx.count >= fcr.rxTriggerLevel { return .receivedDataAvailable }
            return .characterTimeout
        }
        if ier.contains(.etbei) && thrEmptyPending { return .transmitterHoldingRegisterEmpty }
        if ier.contains(.edssi) && !msrDeltas.isEmpty { return .modemStatus }
        return .none
    }

    var lsr: LSR {
        // THR and the shift register are always empty: transmission is instantaneous.
        var value: LSR = [.thre, .temt]
        if !rx.isEmpty { value.insert(.dr) }
        value.formUnion(lineStatusErrors)
        if fifosEnabled && rxFIFOError { value.insert(.rxFIFOError) }
        return value
    }

    // MARK: Register access

    mutating func read(_ register: UART16550.Register) -> UInt8 {
        switch register {
        case .rbrThrDll:
            if lcr.contains(.dlab) { return dll }
            return popReceived()
        case .ierDlm:
            return lcr.contains(.dlab) ? dlm : ier.rawValue
        case .iirFcr:
            let id = pendingInterrupt
            // Table IV: reading IIR resets the THRE interrupt when it is the one reported.
            if id == .transmitterHoldingRegisterEmpty { thrEmptyPending = false }
            return id.rawValue | (fifosEnabled ? UART16550.iirFIFOsEnabled : 0)
        case .lcr:
            return lcr.rawValue
        case .mcr:
            return mcr.rawValue
        case .lsr:
            let value = lsr
            // §8.4: OE, PE, FE and BI reset on an LSR read; bit 7 too, unless errored bytes
            // remain behind the one at the top (whose errors this read just reported).
            lineStatusErrors = []
            rxFIFOError = rx.dropFirst().contains { !$0.errors.isEmpty }
            return value.rawValue
        case .msr:
            let value = modemStatus.union(msrDeltas)
            // §8.9: reading MSR resets the delta bits (and so the modem status interrupt).
            msrDeltas = []
            return value.rawValue
        case .scr:
            return scr
        }
    }

    /// Returns the byte to send to the backend, if the write transmitted one.
    mutating func write(_ register: UART16550.Register, _ value: UInt8) -> UInt8? {
        switch register {
        case .rbrThrDll:
            if lcr.contains(.dlab) {
                dll = value
                return nil
            }
            return transmit(value)
        case .ierDlm:
            if lcr.contains(.dlab) {
                dlm = value
                return nil
            }
            let new = IER(rawValue: value).intersection(.writable)
            if new.contains(.etbei) && !ier.contains(.etbei) {
                // Enabling ETBEI while THR is empty (it always is) raises the THRE interrupt
                // at once, as on the chip; Linux's 8250 driver relies on this to start output
                // and to probe for buggy UARTs.
                thrEmptyPending = true
            } else if !new.contains(.etbei) {
                thrEmptyPending = false
            }
            ier = new
            return nil
        case .iirFcr:
            writeFCR(FCR(rawValue: value))
            return nil
        case .lcr:
            // Word length, stop bits, parity and break are kept for the guest to read back;
            // they do not change how bytes travel (no physical line).
            lcr = LCR(rawValue: value)
            return nil
        case .mcr:
            let oldStatus = modemStatus
            mcr = MCR(rawValue: value).intersection(.writable)
            noteModemStatusChange(from: oldStatus, to: modemStatus)
            return nil
        case .lsr, .msr:
            // Status registers: writes are for factory test only (§8.4); ignored, as QEMU does.
            return nil
        case .scr:
            scr = value
            return nil
        }
    }

    /// THR write (§8.4, LSR bit 5): THR fills and empties at once, so the THRE interrupt
    /// source is reset by the write and set again by the byte leaving.
    mutating func transmit(_ byte: UInt8) -> UInt8? {
        thrEmptyPending = false
        var sent: UInt8? = byte
        if mcr.contains(.loop) {
            // §8.8: in loopback the transmitter shift register feeds the receiver.
            receiveByte(byte, errors: [])
            sent = nil
        }
        thrEmptyPending = true
        return sent
    }

    mutating func writeFCR(_ request: FCR) {
        guard request.contains(.fifoEnable) else {
            // §8.5: the other bits are not programmed unless bit 0 is set; clearing bit 0
            // leaves FIFO mode, which empties the FIFOs.
            if fifosEnabled {
                fcr.remove(.fifoEnable)
                clearReceiver()
            }
            return
        }
        // Entering FIFO mode empties the FIFOs too.
        if !fifosEnabled || request.contains(.rxFIFOReset) { clearReceiver() }
        // TX FIFO reset: the TX FIFO is always empty (instant transmission); nothing to do.
        fcr = request.intersection(.stored)
    }

    mutating func noteModemStatusChange(from old: MSR, to new: MSR) {
        let changed = old.symmetricDifference(new)
        if changed.contains(.cts) { msrDeltas.insert(.dcts) }
        if changed.contains(.dsr) { msrDeltas.insert(.ddsr) }
        if changed.contains(.dcd) { msrDeltas.insert(.ddcd) }
        // §8.9 bit 2: only the trailing edge of the ring indicator counts.
        if old.contains(.ri) && !new.contains(.ri) { msrDeltas.insert(.teri) }
    }

    // MARK: Receiver

    mutating func receiveByte(_ byte: UInt8, errors: LSR) {
        let entry = ReceivedByte(byte: byte, errors: errors)
        if rx.count < rxDepth {
            rx.append(entry)
            if rx.count == 1 { lineStatusErrors.formUnion(errors) }
            if fifosEnabled && !errors.isEmpty { rxFIFOError = true }
        } else if fifosEnabled {
            // §8.4 bit 1: with the FIFO full, the byte in the shift register is overwritten
            // and never enters the FIFO; the FIFO keeps its contents.
            lineStatusErrors.insert(.oe)
        } else {
            // 16450 mode: the new byte replaces the unread one in RBR.
            rx[0] = entry
            lineStatusErrors.formUnion(errors)
            lineStatusErrors.insert(.oe)
        }
    }

    /// RBR read. An empty RBR reads 0.
    mutating func popReceived() -> UInt8 {
        guard !rx.isEmpty else { return 0 }
        let entry = rx.removeFirst()
        // The next byte reaches the top of the FIFO: its errors show in LSR (§8.4).
        if let next = rx.first { lineStatusErrors.formUnion(next.errors) }
        return entry.byte
    }

    /// RX FIFO reset or FIFO mode change: the bytes go, with the errors that came with them.
    /// An overrun is about the line, not the bytes, and stays until LSR is read.
    mutating func clearReceiver() {
        rx.removeAll(keepingCapacity: true)
        lineStatusErrors.subtract(LSR.byteErrors)
        rxFIFOError = false
    }

    // MARK: Effects

    /// After a change: the new interrupt level if it differs from the one driven, and whether
    /// the backend must be told that input can flow again.
    mutating func settle(capacityBefore: Int) -> UARTEffects {
        var effects = UARTEffects()
        let level = pendingInterrupt != .none
        if level != drivenLevel {
            drivenLevel = level
            effects.driveLevel = level
        }
        effects.acceptInput = capacityBefore == 0 && receiveCapacity > 0
        return effects
    }

    // MARK: Snapshot

    /// Builds registers from an untrusted state, or says what is wrong with it.
    init(validating state: UART16550.State, device: String) throws(SystemError) {
        func bad(_ what: String) -> SystemError {
            .badInput("UART '\(device)' snapshot: \(what)")
        }
        guard state.version == UART16550.State.currentVersion else {
            throw bad("state version \(state.version) is not supported (this build reads version \(UART16550.State.currentVersion))")
        }
        guard IER(rawValue: state.ier).isSubset(of: .writable) else {
            throw bad("IER \(hexByte(state.ier)) has reserved bits 4-7 set")
        }
        guard MCR(rawValue: state.mcr).isSubset(of: .writable) else {
            throw bad("MCR \(hexByte(state.mcr)) has reserved bits 5-7 set")
        }
        guard FCR(rawValue: state.fcr).isSubset(of: .stored) else {
            throw bad("FCR \(hexByte(state.fcr)) has self-clearing or reserved bits set (allowed: \(hexByte(FCR.stored.rawValue)))")
        }
        guard LSR(rawValue: state.lineStatusErrors).isSubset(of: .lineStatusErrors) else {
            throw bad("line status errors \(hexByte(state.lineStatusErrors)) are not within OE/PE/FE/BI")
        }
        guard MSR(rawValue: state.msrDeltas).isSubset(of: .deltas) else {
            throw bad("MSR deltas \(hexByte(state.msrDeltas)) have status bits 4-7 set")
        }
        let fifos = FCR(rawValue: state.fcr).contains(.fifoEnable)
        let depth = fifos ? UART16550.fifoDepth : 1
        guard state.rxData.count <= depth else {
            throw bad("\(state.rxData.count) received bytes do not fit the \(fifos ? "16-byte RX FIFO" : "1-byte RBR")")
        }
        guard state.rxErrors.count == state.rxData.count else {
            throw bad("\(state.rxErrors.count) error entries for \(state.rxData.count) received bytes")
        }
        guard state.rxErrors.allSatisfy({ LSR(rawValue: $0).isSubset(of: .byteErrors) }) else {
            throw bad("a received byte carries errors outside PE/FE/BI")
        }
        guard fifos || !state.rxFIFOError else {
            throw bad("the RX FIFO error bit is set with the FIFOs disabled")
        }
        self.init()
        ier = IER(rawValue: state.ier)
        lcr = LCR(rawValue: state.lcr)
        mcr = MCR(rawValue: state.mcr)
        fcr = FCR(rawValue: state.fcr)
        scr = state.scr
        dll = state.dll
        dlm = state.dlm
        lineStatusErrors = LSR(rawValue: state.lineStatusErrors)
        rxFIFOError = state.rxFIFOError
        thrEmptyPending = state.thrEmptyPending
        msrDeltas = MSR(rawValue: state.msrDeltas)
        for (byte, errors) in zip(state.rxData, state.rxErrors) {
            rx.append(ReceivedByte(byte: byte, errors: LSR(rawValue: errors)))
        }
    }
}

private func hexByte(_ value: UInt8) -> String {
    "0x" + String(value, radix: 16)
}
