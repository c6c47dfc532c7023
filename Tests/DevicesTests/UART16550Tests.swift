import DeviceModel
import Devices
import Synchronization
import SystemSupport
import Testing

typealias IER = UART16550.IER
typealias FCR = UART16550.FCR
typealias LCR = UART16550.LCR
typealias MCR = UART16550.MCR
typealias LSR = UART16550.LSR
typealias MSR = UART16550.MSR

/// IIR values (PC16550D Table IV), with bits 6-7 set when the FIFOs are on.
enum IIR {
    static let none: UInt8 = 0x01
    static let lineStatus: UInt8 = 0x06
    static let dataAvailable: UInt8 = 0x04
    static let timeout: UInt8 = 0x0C
    static let thrEmpty: UInt8 = 0x02
    static let modemStatus: UInt8 = 0x00
    static let fifos: UInt8 = 0xC0
}

// MARK: - Registers

@Suite struct UARTRegisterTests {
    @Test func resetValuesMatchTheDatasheet() {
        let h = Harness()
        #expect(h.read(.ierDlm) == 0)
        #expect(h.iir == IIR.none)
        #expect(h.read(.lcr) == 0)
        #expect(h.read(.mcr) == 0)
        #expect(h.lsr == [.thre, .temt])
        // A connected line: CTS, DSR and DCD on, no deltas.
        #expect(h.msr == [.cts, .dsr, .dcd])
        #expect(h.read(.scr) == 0)
        #expect(h.uart.divisor == 12)
        #expect(!h.irq.level)
        #expect(h.uart.windowSize == 8)
    }

    @Test(arguments: [0x00, 0x5A, 0xA5, 0xFF] as [UInt8])
    func scratchRegisterHoldsAnyByte(value: UInt8) {
        let h = Harness()
        h.write(.scr, value)
        #expect(h.read(.scr) == value)
        // SCR is independent of DLAB and of the other registers.
        h.write(.lcr, LCR.dlab.rawValue)
        #expect(h.read(.scr) == value)
        #expect(h.read(.ierDlm) == 0)
        #expect(!h.irq.level)
    }

    @Test func lineControlRegisterReadsBackEveryBit() {
        let h = Harness()
        // 8N1 with break, then 5 bits, 2 stop, even stick parity.
        for value: UInt8 in [0x03, 0x43, 0x3C, 0x7F] {
            h.write(.lcr, value)
            #expect(h.read(.lcr) == value)
        }
        // Break control is kept, and does not disturb transmission or the receiver.
        h.write(.lcr, LCR([.setBreak]).union(LCR(rawValue: 0x03)).rawValue)
        h.write(.rbrThrDll, 0x41)
        #expect(h.backend.output == [0x41])
        #expect(h.read(.lcr) & LCR.setBreak.rawValue != 0)
        #expect(!h.lsr.contains(.dr))
    }

    @Test func divisorLatchIsReachedOnlyWithDLAB() {
        let h = Harness()
        h.setIER([.erbfi, .elsi])
        h.write(.lcr, 0x80 | 0x03)
        // DLAB=1: offsets 0 and 1 are DLL and DLM.
        #expect(h.read(.rbrThrDll) == 12)
        #expect(h.read(.ierDlm) == 0)
        h.write(.rbrThrDll, 0x01)
        h.write(.ierDlm, 0x02)
        #expect(h.read(.rbrThrDll) == 0x01)
        #expect(h.read(.ierDlm) == 0x02)
        #expect(h.uart.divisor == 0x0201)
        // Neither write transmitted a byte nor changed IER.
        #expect(h.backend.output.isEmpty)
        h.write(.lcr, 0x03)
        #expect(h.read(.ierDlm) == (IER([.erbfi, .elsi])).rawValue)
        // DLAB=0: offset 0 is THR/RBR; the divisor keeps its value.
        h.write(.rbrThrDll, 0x7A)
        #expect(h.backend.output == [0x7A])
        #expect(h.read(.rbrThrDll) == 0)  // nothing received
        #expect(h.uart.divisor == 0x0201)
        h.write(.lcr, 0x80)
        #expect(h.read(.rbrThrDll) == 0x01)
        #expect(h.read(.ierDlm) == 0x02)
    }

    @Test func divisorLatchReadDoesNotConsumeReceivedData() {
        let h = Harness()
        h.uart.receive([0x55])
        h.write(.lcr, 0x80)
        #expect(h.read(.rbrThrDll) == 12)
        h.write(.lcr, 0x00)
        #expect(h.lsr.contains(.dr))
        #expect(h.read(.rbrThrDll) == 0x55)
    }

    @Test func interruptEnableKeepsOnlyItsFourBits() {
        let h = Harness()
        h.write(.ierDlm, 0xFF)
        #expect(h.read(.ierDlm) == 0x0F)
        h.write(.ierDlm, 0x00)
        #expect(h.read(.ierDlm) == 0x00)
        h.write(.ierDlm, 0x05)
        #expect(h.read(.ierDlm) == 0x05)
    }

    @Test func modemControlKeepsOnlyItsFiveBits() {
        let h = Harness()
        h.write(.mcr, 0xEF)
        #expect(h.read(.mcr) == 0x0F)
        h.write(.mcr, 0xFF)
        #expect(h.read(.mcr) == 0x1F)
        h.write(.mcr, 0x0B)
        #expect(h.read(.mcr) == 0x0B)
    }

    @Test func statusRegisterWritesAreIgnored() {
        let h = Harness()
        h.write(.lsr, 0xFF)
        h.write(.msr, 0xFF)
        #expect(h.lsr == [.thre, .temt])
        #expect(h.msr == [.cts, .dsr, .dcd])
    }

    @Test func iirReportsFIFOModeInBits6And7() {
        let h = Harness()
        #expect(h.iir == IIR.none)
        h.setFCR(.fifoEnable)
        #expect(h.iir == IIR.fifos | IIR.none)
        // Reserved FCR bits 4-5 do not show in IIR bits 4-5.
        h.write(.iirFcr, 0x31)
        #expect(h.iir == IIR.fifos | IIR.none)
        h.setFCR([])
        #expect(h.iir == IIR.none)
    }

    @Test func transmitSendsEachByteToTheBackendAtOnce() {
        let h = Harness()
        for byte in Array("hello\n".utf8) {
            h.write(.rbrThrDll, byte)
            // The emulated line is infinitely fast: THR and the shift register are empty again.
            #expect(h.lsr.isSuperset(of: [.thre, .temt]))
        }
        #expect(h.backend.output == Array("hello\n".utf8))
        // Transmission does not loop into the receiver outside loopback.
        #expect(!h.lsr.contains(.dr))
    }

    @Test func transmitWithoutBackendDropsOutputButStillRaisesTHRE() {
        let irq = LevelInterruptLine()
        let uart = UART16550(name: "serial1", backend: nil, irq: irq)
        uart.write(offset: 1, value: UInt64(IER.etbei.rawValue), size: 1)
        #expect(uart.read(offset: 2, size: 1) == UInt64(IIR.thrEmpty))
        #expect(!irq.level)
        uart.write(offset: 0, value: 0x41, size: 1)
        #expect(irq.level)
        #expect(uart.receiveCapacity() == 1)
    }

    @Test func resetRestoresEveryRegister() {
        let h = Harness()
        h.write(.lcr, 0x80)
        h.write(.rbrThrDll, 3)
        h.write(.lcr, 0x1B)
        h.write(.scr, 0x77)
        h.setFCR([.fifoEnable, .trigger14])
        h.setIER(IER.writable)
        h.setMCR([.loop, .rts])
        h.write(.rbrThrDll, 0x31)  // loops back: data, THRE, modem deltas
        #expect(h.irq.level)
        h.uart.reset()
        #expect(!h.irq.level)
        #expect(h.read(.ierDlm) == 0)
        #expect(h.iir == IIR.none)
        #expect(h.read(.lcr) == 0)
        #expect(h.read(.mcr) == 0)
        #expect(h.lsr == [.thre, .temt])
        #expect(h.msr == [.cts, .dsr, .dcd])
        #expect(h.read(.scr) == 0)
        #expect(h.uart.divisor == 12)
        #expect(h.uart.receiveCapacity() == 1)
        // Loopback (capacity 0) ended: the backend may deliver again.
        #expect(h.backend.acceptInputCalls == 1)
    }
}

// MARK: - Bus access

@Suite struct UARTBusAccessTests {
    @Test func widerAccessesReachTheByteRegister() {
        let h = Harness()
        h.uart.write(offset: 7, value: 0x1234_56AB, size: 4)
        #expect(h.uart.read(offset: 7, size: 4) == 0xAB)
        #expect(h.uart.read(offset: 7, size: 2) == 0xAB)
        h.uart.write(offset: 0, value: 0xFFFF_FF41, size: 4)
        #expect(h.backend.output == [0x41])
        // An 8-byte read of RBR takes one byte, not eight registers.
        h.setFCR(.fifoEnable)
        h.uart.receive([1, 2])
        #expect(h.uart.read(offset: 0, size: 8) == 1)
        #expect(h.uart.receiveCapacity() == 15)
        #expect(h.drain() == [2])
    }

    @Test(arguments: [8, 9, 15, 0xFF, 0x1000, UInt64.max] as [UInt64])
    func offsetsPastTheRegisterFileReadZeroAndIgnoreWrites(offset: UInt64) {
        let h = Harness()
        h.write(.scr, 0x5A)
        h.uart.write(offset: offset, value: 0xFF, size: 1)
        #expect(h.uart.read(offset: offset, size: 1) == 0)
        // Nothing aliased: no register changed, nothing sent.
        #expect(h.read(.scr) == 0x5A)
        #expect(h.read(.ierDlm) == 0)
        #expect(h.read(.lcr) == 0)
        #expect(h.backend.output.isEmpty)
    }

    @Test func regShiftSpreadsRegistersOverWordSlots() {
        let h = Harness(regShift: 2)
        #expect(h.uart.windowSize == 32)
        h.uart.write(offset: 28, value: 0x99, size: 4)
        #expect(h.uart.read(offset: 28, size: 4) == 0x99)
        #expect(h.read(.scr) == 0x99)
        h.uart.write(offset: 0, value: 0x42, size: 4)
        #expect(h.backend.output == [0x42])
        h.uart.write(offset: 4, value: 0x0F, size: 4)
        #expect(h.uart.read(offset: 4, size: 4) == 0x0F)
        #expect(h.uart.read(offset: 20, size: 4) == UInt64(LSR([.thre, .temt]).rawValue))
        // Offsets 1 and 2 are no longer IER and IIR.
        #expect(h.uart.read(offset: 2, size: 1) == 0)
    }

    @Test(arguments: [1, 2, 3, 29, 30, 31, 32, 64] as [UInt64])
    func regShiftOffsetsOutsideARegisterLowByteHitNothing(offset: UInt64) {
        let h = Harness(regShift: 2)
        h.write(.scr, 0x11)
        h.uart.write(offset: offset, value: 0xFF, size: 1)
        #expect(h.uart.read(offset: offset, size: 1) == 0)
        #expect(h.read(.scr) == 0x11)
        #expect(h.read(.ierDlm) == 0)
        #expect(h.backend.output.isEmpty)
    }
}

// MARK: - Interrupts

@Suite struct UARTInterruptTests {
    @Test func thrEmptyInterruptIsRaisedWhenETBEIIsEnabled() {
        let h = Harness()
        #expect(!h.irq.level)
        h.setIER(.etbei)
        #expect(h.irq.level)
        // Reading IIR reports THRE and, because THRE is the source, clears it.
        #expect(h.iir == IIR.thrEmpty)
        #expect(!h.irq.level)
        #expect(h.iir == IIR.none)
    }

    @Test func thrEmptyInterruptIsRaisedAfterATHRWrite() {
        let h = Harness()
        h.setIER(.etbei)
        _ = h.iir
        #expect(!h.irq.level)
        h.write(.rbrThrDll, 0x61)
        #expect(h.irq.level)
        #expect(h.iir == IIR.thrEmpty)
        #expect(!h.irq.level)
        #expect(h.irq.risingEdges == 2)
    }

    @Test func thrEmptyIsRaisedOnlyOnTheETBEIRisingEdge() {
        let h = Harness()
        h.setIER(.etbei)
        _ = h.iir
        // Rewriting IER with ETBEI still set is not a 0→1 transition.
        h.setIER([.etbei, .erbfi])
        #expect(!h.irq.level)
        #expect(h.iir == IIR.none)
        // Clearing then setting it is.
        h.setIER(.erbfi)
        h.setIER([.etbei, .erbfi])
        #expect(h.irq.level)
        #expect(h.iir == IIR.thrEmpty)
    }

    @Test func linuxTHREProbeSeesTheInterruptReasserted() {
        // serial8250_do_startup: a UART that does not re-raise THRE on IER 0 → THRI after the
        // interrupt was cleared is flagged UART_BUG_THRE and driven by a timer instead.
        let h = Harness()
        h.write(.ierDlm, 0x02)
        let iir1 = h.iir
        h.write(.ierDlm, 0x00)
        h.write(.ierDlm, 0x02)
        let iir2 = h.iir
        h.write(.ierDlm, 0x00)
        #expect(iir1 & 0x01 == 0)
        #expect(iir2 & 0x01 == 0)
        #expect(!h.irq.level)
    }

    @Test func disablingETBEIWithdrawsAPendingTHREInterrupt() {
        let h = Harness()
        h.setIER(.etbei)
        #expect(h.irq.level)
        h.setIER([])
        #expect(!h.irq.level)
        #expect(h.iir == IIR.none)
    }

    @Test func thrWriteWithETBEIOffLeavesTHREPendingForLater() {
        let h = Harness()
        h.write(.rbrThrDll, 0x61)
        #expect(!h.irq.level)
        #expect(h.iir == IIR.none)  // masked: not reported, so not cleared either
    }

    @Test func receivedDataInterruptInCharacterMode() {
        let h = Harness()
        h.uart.receive([0x41])
        #expect(h.lsr.contains(.dr))
        #expect(!h.irq.level)  // ERBFI off
        #expect(h.iir == IIR.none)
        h.setIER(.erbfi)
        #expect(h.irq.level)
        #expect(h.iir == IIR.dataAvailable)
        // IIR reads do not clear it; reading RBR does.
        #expect(h.iir == IIR.dataAvailable)
        #expect(h.read(.rbrThrDll) == 0x41)
        #expect(!h.lsr.contains(.dr))
        #expect(!h.irq.level)
        #expect(h.iir == IIR.none)
    }

    @Test func emptyRBRReadsZero() {
        let h = Harness()
        #expect(h.read(.rbrThrDll) == 0)
        h.setFCR(.fifoEnable)
        #expect(h.read(.rbrThrDll) == 0)
        #expect(h.lsr == [.thre, .temt])
    }

    @Test func lineStatusInterruptOnOverrunIsClearedByReadingLSR() {
        let h = Harness()
        h.setIER(.elsi)
        h.uart.receive([1])
        #expect(!h.irq.level)
        h.uart.receive([2])  // RBR still full: overrun
        #expect(h.irq.level)
        #expect(h.iir == IIR.lineStatus)
        let lsr = h.lsr
        #expect(lsr == [.dr, .oe, .thre, .temt])
        #expect(!h.irq.level)
        #expect(h.iir == IIR.none)
        // OE is gone after the read; DR is not.
        #expect(h.lsr == [.dr, .thre, .temt])
    }

    @Test func modemStatusInterruptIsClearedByReadingMSR() {
        let h = Harness()
        h.setIER(.edssi)
        h.setMCR(.loop)  // CTS, DSR, DCD drop: three deltas
        #expect(h.irq.level)
        #expect(h.iir == IIR.modemStatus)
        #expect(h.msr == [.dcts, .ddsr, .ddcd])
        #expect(!h.irq.level)
        #expect(h.iir == IIR.none)
    }

    @Test func priorityOrderAmongAllFiveSources() {
        let h = Harness()
        h.setFCR([.fifoEnable, .trigger4])
        // Loopback: CTS, DSR and DCD drop (modem status deltas) and THR feeds the receiver.
        h.setMCR(.loop)
        for byte in 0..<17 as Range<UInt8> { h.write(.rbrThrDll, byte) }  // 16 fit, the 17th overruns
        h.setIER(IER.writable)
        #expect(h.irq.level)
        // 1st: receiver line status, until LSR is read.
        #expect(h.iir == IIR.fifos | IIR.lineStatus)
        #expect(h.iir == IIR.fifos | IIR.lineStatus)
        #expect(h.lsr.contains(.oe))
        // 2nd: received data (16 bytes ≥ trigger 4), then the timeout below the trigger.
        #expect(h.iir == IIR.fifos | IIR.dataAvailable)
        for expected in 0..<13 as Range<UInt8> { #expect(h.read(.rbrThrDll) == expected) }
        #expect(h.iir == IIR.fifos | IIR.timeout)
        #expect(h.drain() == [13, 14, 15])
        // 3rd: THR empty, cleared by the IIR read that reports it.
        #expect(h.irq.level)
        #expect(h.iir == IIR.fifos | IIR.thrEmpty)
        // 4th: modem status, until MSR is read.
        #expect(h.iir == IIR.fifos | IIR.modemStatus)
        #expect(h.irq.level)
        #expect(h.msr == [.dcts, .ddsr, .ddcd])
        #expect(h.iir == IIR.fifos | IIR.none)
        #expect(!h.irq.level)
    }

    @Test func iirReadClearsTHREOnlyWhenItIsTheReportedSource() {
        let h = Harness()
        h.setIER([.erbfi, .etbei])
        h.uart.receive([0x30])
        #expect(h.iir == IIR.dataAvailable)  // THRE is pending too, below it
        #expect(h.iir == IIR.dataAvailable)
        #expect(h.read(.rbrThrDll) == 0x30)
        #expect(h.irq.level)
        #expect(h.iir == IIR.thrEmpty)
        #expect(!h.irq.level)
    }

    @Test func eachSourceNeedsItsEnableBit() {
        let h = Harness()
        h.setFCR(.fifoEnable)
        h.setMCR(.loop)
        for byte in 0..<17 as Range<UInt8> { h.write(.rbrThrDll, byte) }
        // Every source is pending, none enabled.
        #expect(h.iir == IIR.fifos | IIR.none)
        #expect(!h.irq.level)
        h.setIER(.edssi)
        #expect(h.iir == IIR.fifos | IIR.modemStatus)
        h.setIER(.etbei)
        #expect(h.iir == IIR.fifos | IIR.thrEmpty)
        h.setIER(.erbfi)
        #expect(h.iir == IIR.fifos | IIR.dataAvailable)
        h.setIER(.elsi)
        #expect(h.iir == IIR.fifos | IIR.lineStatus)
        h.setIER([])
        #expect(!h.irq.level)
    }

    @Test func mcrOUT2DoesNotGateTheInterruptLine() {
        let h = Harness()
        h.setMCR([])
        h.setIER(.erbfi)
        h.uart.receive([1])
        #expect(h.irq.level)
        h.setMCR([.out2, .dtr, .rts])
        #expect(h.irq.level)
    }

    @Test func lineEndsAtTheLatestLevelWhenTheBackendReentersFromWrite() {
        // The THR write wants the line high (THRE), but the backend, called first, services
        // the UART and retires that interrupt before the write's own `set` lands. The UART
        // must notice that its `set(true)` is stale and lower the line again.
        let h = Harness()
        h.setIER(.etbei)
        #expect(h.iir == IIR.thrEmpty)
        #expect(!h.irq.level)
        let uart = h.uart
        let nested = Mutex<[UInt64]>([])
        h.backend.state.withLock { s in
            s.onWrite = { _ in
                let iir = uart.read(offset: 2, size: 1)
                nested.withLock { $0.append(iir) }
            }
        }
        h.write(.rbrThrDll, 0x41)
        #expect(nested.withLock { $0 } == [UInt64(IIR.thrEmpty)])
        #expect(h.backend.output == [0x41])
        #expect(!h.irq.level)
        h.backend.state.withLock { $0.onWrite = nil }
        #expect(h.iir == IIR.none)
    }

    @Test func interruptHandlerMayReadTheUARTFromInsideTheLineCallback() {
        // A handler that services the UART as soon as the line rises (the line callback runs
        // outside the UART's lock, so this must not deadlock).
        let box = UARTBox()
        let seen = Mutex<[UInt8]>([])
        let irq = LevelInterruptLine { level in
            guard level, let uart = box.uart.withLock({ $0 }) else { return }
            while uart.read(offset: 5, size: 1) & UInt64(LSR.dr.rawValue) != 0 {
                let byte = UInt8(truncatingIfNeeded: uart.read(offset: 0, size: 1))
                seen.withLock { $0.append(byte) }
            }
        }
        let h = Harness(irq: irq)
        box.uart.withLock { $0 = h.uart }
        h.setIER(.erbfi)
        h.uart.receive([7])
        h.uart.receive([8])
        #expect(seen.withLock { $0 } == [7, 8])
        #expect(!irq.level)
        #expect(irq.risingEdges == 2)
    }
}

// MARK: - FIFOs

@Suite struct UARTFIFOTests {
    @Test(arguments: [
        (FCR.trigger1, 1), (FCR.trigger4, 4), (FCR.trigger8, 8), (FCR.trigger14, 14),
    ])
    func receivedDataInterruptFiresAtTheTriggerLevel(trigger: FCR, level: Int) {
        let h = Harness()
        h.setFCR(trigger.union(.fifoEnable))
        h.setIER(.erbfi)
        let bytes = (0..<level).map { UInt8($0 + 0x40) }
        // Below the trigger: the character timeout lets the guest see the data.
        if level > 1 {
            h.uart.receive(Array(bytes.dropLast()))
            #expect(h.iir == IIR.fifos | IIR.timeout)
            #expect(h.irq.level)
        }
        h.uart.receive([bytes[level - 1]])
        #expect(h.iir == IIR.fifos | IIR.dataAvailable)
        #expect(h.irq.level)
        #expect(h.uart.receiveCapacity() == 16 - level)
        // Reading one byte drops the FIFO below the trigger: data-available becomes the timeout.
        #expect(h.read(.rbrThrDll) == bytes[0])
        if level > 1 {
            #expect(h.iir == IIR.fifos | IIR.timeout)
            #expect(h.irq.level)
        }
        #expect(h.drain() == Array(bytes.dropFirst()))
        #expect(h.iir == IIR.fifos | IIR.none)
        #expect(!h.irq.level)
    }

    @Test func characterTimeoutIsClearedWhenTheFIFOIsEmptied() {
        let h = Harness()
        h.setFCR([.fifoEnable, .trigger8])
        h.setIER(.erbfi)
        h.uart.receive([1, 2, 3])
        #expect(h.iir == IIR.fifos | IIR.timeout)
        // One read leaves data below the trigger: the timeout stands (no stranded bytes).
        #expect(h.read(.rbrThrDll) == 1)
        #expect(h.iir == IIR.fifos | IIR.timeout)
        #expect(h.irq.level)
        #expect(h.read(.rbrThrDll) == 2)
        #expect(h.read(.rbrThrDll) == 3)
        #expect(h.iir == IIR.fifos | IIR.none)
        #expect(!h.irq.level)
    }

    @Test func characterTimeoutNeedsERBFI() {
        let h = Harness()
        h.setFCR([.fifoEnable, .trigger14])
        h.uart.receive([1])
        #expect(h.iir == IIR.fifos | IIR.none)
        #expect(!h.irq.level)
        h.setIER(.erbfi)
        #expect(h.iir == IIR.fifos | IIR.timeout)
    }

    @Test func loweringTheTriggerTurnsTheTimeoutIntoDataAvailable() {
        let h = Harness()
        h.setFCR([.fifoEnable, .trigger14])
        h.setIER(.erbfi)
        h.uart.receive([1, 2, 3, 4])
        #expect(h.iir == IIR.fifos | IIR.timeout)
        h.setFCR([.fifoEnable, .trigger4])
        #expect(h.iir == IIR.fifos | IIR.dataAvailable)
        #expect(h.drain() == [1, 2, 3, 4])  // changing the trigger keeps the data
    }

    @Test func fifoHoldsSixteenBytesAndDropsTheSeventeenthWithOverrun() {
        let h = Harness()
        h.setFCR(.fifoEnable)
        #expect(h.uart.receiveCapacity() == 16)
        let bytes = (0..<17).map { UInt8($0) }
        h.uart.receive(Array(bytes.prefix(10)))
        #expect(h.uart.receiveCapacity() == 6)
        h.uart.receive(Array(bytes.dropFirst(10)))
        #expect(h.uart.receiveCapacity() == 0)
        #expect(h.lsr == [.dr, .oe, .thre, .temt])
        #expect(h.lsr == [.dr, .thre, .temt])  // OE cleared by the previous read
        // The FIFO kept the first 16; the byte that overran never entered it.
        #expect(h.drain() == Array(bytes.prefix(16)))
    }

    @Test func characterModeOverrunReplacesTheUnreadByte() {
        let h = Harness()
        #expect(h.uart.receiveCapacity() == 1)
        h.uart.receive([0x10])
        #expect(h.uart.receiveCapacity() == 0)
        h.uart.receive([0x20, 0x30])
        #expect(h.lsr.contains(.oe))
        #expect(!h.lsr.contains(.oe))
        #expect(h.drain() == [0x30])
    }

    @Test func rxFIFOResetEmptiesTheReceiverAndSelfClears() {
        let h = Harness()
        h.setFCR([.fifoEnable, .trigger4])
        h.setIER(.erbfi)
        h.uart.receive([1, 2, 3, 4, 5])
        #expect(h.irq.level)
        h.setFCR([.fifoEnable, .trigger4, .rxFIFOReset])
        #expect(!h.lsr.contains(.dr))
        #expect(!h.irq.level)
        #expect(h.iir == IIR.fifos | IIR.none)
        #expect(h.uart.receiveCapacity() == 16)
        // The reset bit is not kept, and the trigger level still applies.
        #expect(h.uart.saveState().fcr == FCR([.fifoEnable, .trigger4]).rawValue)
        h.uart.receive([9, 8, 7, 6])
        #expect(h.iir == IIR.fifos | IIR.dataAvailable)
        #expect(h.drain() == [9, 8, 7, 6])
    }

    @Test func txFIFOResetLeavesTheReceiverAlone() {
        let h = Harness()
        h.setFCR(.fifoEnable)
        h.uart.receive([1, 2])
        h.setFCR([.fifoEnable, .txFIFOReset])
        #expect(h.lsr == [.dr, .thre, .temt])
        #expect(h.drain() == [1, 2])
        #expect(h.uart.saveState().fcr == FCR.fifoEnable.rawValue)
    }

    @Test func fifoResetDiscardsByteErrorsButNotOverrun() {
        let h = Harness()
        h.setFCR(.fifoEnable)
        h.uart.receiveBreak()
        h.uart.receive(Array(repeating: 0x20, count: 16))  // 15 fit, one overruns
        h.setFCR([.fifoEnable, .rxFIFOReset])
        #expect(h.lsr == [.oe, .thre, .temt])
    }

    @Test func changingFIFOModeEmptiesTheReceiver() {
        let h = Harness()
        h.uart.receive([0x11])
        h.setFCR(.fifoEnable)  // 16450 → 16550 mode
        #expect(!h.lsr.contains(.dr))
        h.uart.receive([1, 2, 3])
        h.setFCR([])  // back to 16450 mode
        #expect(!h.lsr.contains(.dr))
        #expect(h.uart.receiveCapacity() == 1)
        #expect(h.iir == IIR.none)
    }

    @Test func fcrWritesWithoutFIFOEnableProgramNothingElse() {
        let h = Harness()
        h.uart.receive([0x11])
        // RX reset without bit 0 is not programmed (§8.5), and the FIFOs stay off.
        h.write(.iirFcr, FCR.rxFIFOReset.rawValue | FCR.trigger14.rawValue)
        #expect(h.lsr.contains(.dr))
        #expect(h.iir == IIR.none)
        #expect(h.read(.rbrThrDll) == 0x11)
        // Rewriting FIFO enable while already on keeps the data.
        h.setFCR(.fifoEnable)
        h.uart.receive([1, 2])
        h.setFCR([.fifoEnable, .trigger8])
        #expect(h.drain() == [1, 2])
    }

    @Test func breakLoadsAZeroByteCarryingBI() {
        let h = Harness()
        h.setFCR(.fifoEnable)
        h.setIER([.elsi, .erbfi])
        h.uart.receiveBreak()
        #expect(h.iir == IIR.fifos | IIR.lineStatus)
        #expect(h.lsr == [.dr, .bi, .thre, .temt, .rxFIFOError])
        // The LSR read cleared BI and (no further errored bytes) bit 7.
        #expect(h.lsr == [.dr, .thre, .temt])
        #expect(h.iir == IIR.fifos | IIR.dataAvailable)  // trigger level 1
        #expect(h.read(.rbrThrDll) == 0)
        #expect(!h.irq.level)
    }

    @Test func byteErrorsShowWhenTheirByteReachesTheTopOfTheFIFO() {
        let h = Harness()
        h.setFCR(.fifoEnable)
        h.setIER(.elsi)
        h.uart.receive([0x61])
        h.uart.receiveBreak()
        h.uart.receiveBreak()
        // Errored bytes are in the FIFO (bit 7) but not yet at the top (no BI, no interrupt).
        #expect(h.lsr == [.dr, .thre, .temt, .rxFIFOError])
        #expect(!h.irq.level)
        // Bit 7 stays: errored bytes remain after the top one.
        #expect(h.lsr.contains(.rxFIFOError))
        #expect(h.read(.rbrThrDll) == 0x61)
        // The first break byte is at the top now.
        #expect(h.irq.level)
        #expect(h.iir == IIR.fifos | IIR.lineStatus)
        #expect(h.lsr == [.dr, .bi, .thre, .temt, .rxFIFOError])
        #expect(!h.irq.level)
        #expect(h.read(.rbrThrDll) == 0)
        // The second break byte: bit 7 survived the last LSR read because this errored byte
        // was behind the top one; this read clears it, as no errored byte is left behind.
        #expect(h.lsr == [.dr, .bi, .thre, .temt, .rxFIFOError])
        #expect(h.lsr == [.dr, .thre, .temt])
        #expect(h.read(.rbrThrDll) == 0)
        #expect(h.lsr == [.thre, .temt])
    }

    @Test func breakInCharacterModeHasNoFIFOErrorBit() {
        let h = Harness()
        h.uart.receiveBreak()
        #expect(h.lsr == [.dr, .bi, .thre, .temt])
        #expect(h.read(.rbrThrDll) == 0)
    }
}

// MARK: - Loopback and modem status

@Suite struct UARTLoopbackTests {
    @Test func transmittedBytesAreReceivedInLoopback() {
        let h = Harness()
        h.setFCR(.fifoEnable)
        h.setMCR(.loop)
        h.setIER(.erbfi)
        for byte in Array("loop".utf8) { h.write(.rbrThrDll, byte) }
        #expect(h.backend.output.isEmpty)
        #expect(h.iir == IIR.fifos | IIR.dataAvailable)
        #expect(h.drain() == Array("loop".utf8))
        h.setMCR([])
        h.write(.rbrThrDll, 0x21)
        #expect(h.backend.output == [0x21])
        #expect(!h.lsr.contains(.dr))
    }

    @Test func loopbackTransmitStillRaisesTHRE() {
        let h = Harness()
        h.setMCR(.loop)
        h.setIER(.etbei)
        _ = h.iir
        h.write(.rbrThrDll, 1)
        #expect(h.iir == IIR.thrEmpty)
    }

    @Test func loopbackCharacterModeOverruns() {
        let h = Harness()
        h.setMCR(.loop)
        h.write(.rbrThrDll, 1)
        h.write(.rbrThrDll, 2)
        #expect(h.lsr == [.dr, .oe, .thre, .temt])
        #expect(h.read(.rbrThrDll) == 2)
    }

    @Test(arguments: [
        (MCR.rts, MSR.cts), (MCR.dtr, MSR.dsr), (MCR.out1, MSR.ri), (MCR.out2, MSR.dcd),
    ])
    func modemOutputsAreMirroredToInputsInLoopback(output: MCR, input: MSR) {
        let h = Harness()
        h.setMCR(.loop)
        _ = h.msr  // clear the deltas of entering loopback
        h.setMCR([.loop, output])
        #expect(h.msr.subtracting(MSR.deltas) == input)
        h.setMCR(.loop)
        #expect(h.msr.subtracting(MSR.deltas).isEmpty)
        // Outside loopback the outputs do not reach the inputs: a connected line.
        h.setMCR(output)
        #expect(h.msr.subtracting(MSR.deltas) == MSR.connected)
    }

    @Test func linuxLoopbackProbeSeesCTSAndDCD() {
        // drivers/tty/serial/8250: MCR = LOOP | OUT2 | RTS must read MSR[7:4] = DCD | CTS.
        let h = Harness()
        h.write(.mcr, 0x1A)
        #expect(h.read(.msr) & 0xF0 == 0x90)
        h.write(.mcr, 0x10)
        #expect(h.read(.msr) & 0xF0 == 0x00)
    }

    @Test func deltaBitsRecordChangesUntilMSRIsRead() {
        let h = Harness()
        #expect(h.msr == MSR.connected)  // no deltas at reset
        h.setMCR([.loop, .rts, .dtr, .out2])  // same CTS/DSR/DCD as the line: no change
        #expect(h.msr == [.cts, .dsr, .dcd])
        h.setMCR([.loop, .dtr, .out2])  // CTS drops
        #expect(h.msr == [.dcts, .dsr, .dcd])
        #expect(h.msr == [.dsr, .dcd])  // read cleared the delta
        h.setMCR([.loop, .rts])  // CTS rises, DSR and DCD drop
        #expect(h.msr == [.dcts, .ddsr, .ddcd, .cts])
        h.setMCR([.loop, .rts, .dtr, .out2])
        h.setMCR([.loop, .rts])  // deltas accumulate over several changes
        #expect(h.msr == [.ddsr, .ddcd, .cts])
    }

    @Test func ringIndicatorReportsOnlyItsTrailingEdge() {
        let h = Harness()
        h.setMCR(.loop)
        _ = h.msr
        h.setMCR([.loop, .out1])  // RI rises: no delta
        #expect(h.msr == [.ri])
        h.setMCR(.loop)  // RI falls: TERI
        #expect(h.msr == [.teri])
        #expect(h.msr == [])
    }

    @Test func modemStatusInterruptFollowsDeltas() {
        let h = Harness()
        h.setMCR(.loop)
        _ = h.msr
        h.setIER(.edssi)
        #expect(!h.irq.level)
        h.setMCR([.loop, .out1])
        #expect(!h.irq.level)  // a rising RI is not a delta
        h.setMCR([.loop, .out1, .rts])
        #expect(h.irq.level)
        #expect(h.iir == IIR.modemStatus)
        #expect(h.msr == [.dcts, .cts, .ri])
        #expect(!h.irq.level)
        h.setMCR(.loop)  // CTS drops, RI trailing edge
        #expect(h.irq.level)
        #expect(h.msr == [.dcts, .teri])
        #expect(!h.irq.level)
        // Leaving loopback brings the connected line back: CTS, DSR, DCD rise.
        h.setMCR([])
        #expect(h.irq.level)
        #expect(h.msr == [.dcts, .ddsr, .ddcd, .cts, .dsr, .dcd])
        #expect(!h.irq.level)
    }

    @Test func loopbackDisconnectsTheLineInput() {
        let h = Harness()
        h.setFCR(.fifoEnable)
        h.setMCR(.loop)
        #expect(h.uart.receiveCapacity() == 0)
        h.uart.receive([1, 2, 3])  // a backend ignoring the capacity: the input is not on SIN
        h.uart.receiveBreak()
        #expect(h.lsr == [.thre, .temt])
        // Input the backend held back flows once loopback ends.
        h.backend.type([4, 5])
        #expect(h.backend.pendingCount == 2)
        h.setMCR([])
        #expect(h.backend.acceptInputCalls == 1)
        #expect(h.backend.pump() == 2)
        #expect(h.drain() == [4, 5])
    }
}

// MARK: - Backend and flow control

@Suite struct UARTBackendTests {
    @Test func attachesItselfToTheBackendAndCanDetach() {
        let h = Harness()
        #expect(h.backend.frontend === h.uart)
        #expect(h.backend.state.withLock { $0.attachCalls } == 1)
        h.uart.detachFromBackend()
        #expect(h.backend.frontend == nil)
        // Output still reaches the backend.
        h.write(.rbrThrDll, 0x0A)
        #expect(h.backend.output == [0x0A])
    }

    @Test func capacityFollowsFIFOModeAndFill() {
        let h = Harness()
        #expect(h.uart.receiveCapacity() == 1)
        h.uart.receive([1])
        #expect(h.uart.receiveCapacity() == 0)
        h.setFCR(.fifoEnable)
        #expect(h.uart.receiveCapacity() == 16)
        h.uart.receive([1, 2, 3])
        #expect(h.uart.receiveCapacity() == 13)
        _ = h.read(.rbrThrDll)
        #expect(h.uart.receiveCapacity() == 14)
    }

    @Test func acceptInputIsCalledWhenAFullFIFOGetsRoom() {
        let h = Harness()
        h.setFCR(.fifoEnable)
        h.backend.type(Array(0..<40))
        #expect(h.backend.pendingCount == 24)
        #expect(h.uart.receiveCapacity() == 0)
        #expect(h.backend.acceptInputCalls == 0)
        #expect(h.read(.rbrThrDll) == 0)
        #expect(h.backend.acceptInputCalls == 1)
        // Not full any more: further reads need no new call, the backend was told already.
        #expect(h.read(.rbrThrDll) == 1)
        #expect(h.backend.acceptInputCalls == 1)
        // The backend delivers what now fits; nothing is lost, no overrun.
        #expect(h.backend.pump() == 2)
        var received = [UInt8](0..<2)
        while h.backend.pendingCount > 0 || h.lsr.contains(.dr) {
            received += h.drain()
            h.backend.pump()
        }
        #expect(received == Array(0..<40))
        #expect(!h.lsr.contains(.oe))
    }

    @Test func acceptInputInCharacterMode() {
        let h = Harness()
        h.backend.type([0x61, 0x62])
        #expect(h.backend.pendingCount == 1)
        #expect(h.read(.rbrThrDll) == 0x61)
        #expect(h.backend.acceptInputCalls == 1)
    }

    @Test func fcrChangesThatFreeAFullReceiverCallAcceptInput() {
        let h = Harness()
        h.uart.receive([1])  // RBR full: capacity 0
        h.setFCR(.fifoEnable)  // mode change empties it
        #expect(h.backend.acceptInputCalls == 1)
        h.uart.receive(Array(repeating: 7, count: 16))
        h.setFCR([.fifoEnable, .rxFIFOReset])
        #expect(h.backend.acceptInputCalls == 2)
        h.setFCR([.fifoEnable, .rxFIFOReset])  // already empty: no transition
        #expect(h.backend.acceptInputCalls == 2)
    }

    @Test func backendMayDeliverFromInsideAcceptInput() {
        // A backend that re-enters `receive` from `acceptInput` on the guest's thread: the
        // UART calls out after releasing its lock, so this must not deadlock or lose bytes.
        let h = Harness()
        h.setFCR([.fifoEnable, .trigger8])
        h.setIER(.erbfi)
        h.backend.state.withLock { $0.deliverOnAcceptInput = true }
        let input = (0..<100).map { UInt8($0) }
        h.backend.type(input)
        var received: [UInt8] = []
        while h.irq.level && received.count < 200 {
            received += h.drain(limit: 1)
        }
        #expect(received == input)
        #expect(h.backend.pendingCount == 0)
        #expect(!h.lsr.contains(.oe))
        #expect(h.iir == IIR.fifos | IIR.none)
    }
}

// MARK: - Snapshots

@Suite struct UARTSnapshotTests {
    /// A UART with something in every register.
    private func busyUART() -> Harness {
        let h = Harness()
        h.write(.lcr, 0x80)
        h.write(.rbrThrDll, 0x34)
        h.write(.ierDlm, 0x12)
        h.write(.lcr, 0x5B)
        h.write(.scr, 0xC3)
        h.setFCR([.fifoEnable, .trigger8, .dmaMode])
        h.setMCR([.loop, .dtr, .out1])  // deltas: DCTS, DDCD
        h.uart.receive([0xEE])  // dropped: loopback
        for byte in Array("snapshot-state!!x".utf8) { h.write(.rbrThrDll, byte) }  // 16 + overrun
        h.setIER([.erbfi, .etbei, .edssi])
        return h
    }

    @Test func saveThenRestoreReproducesTheDevice() throws {
        let a = busyUART()
        let saved = a.uart.saveState()
        #expect(saved.version == UART16550.State.currentVersion)
        #expect(saved.rxData == Array("snapshot-state!!".utf8))
        #expect(saved.rxErrors == Array(repeating: 0, count: 16))
        #expect(saved.lineStatusErrors == LSR.oe.rawValue)
        #expect(saved.msrDeltas == MSR([.dcts, .ddcd]).rawValue)
        #expect(saved.fcr == FCR([.fifoEnable, .trigger8, .dmaMode]).rawValue)
        #expect(saved.thrEmptyPending)

        let b = Harness()
        try b.uart.restore(saved)
        #expect(b.uart.saveState() == saved)
        #expect(b.irq.level)
        #expect(b.uart.divisor == 0x1234)
        // Both behave the same from here on.
        for h in [a, b] {
            #expect(h.read(.lcr) == 0x5B)
            #expect(h.read(.scr) == 0xC3)
            #expect(h.read(.mcr) == MCR([.loop, .dtr, .out1]).rawValue)
            #expect(h.read(.ierDlm) == IER([.erbfi, .etbei, .edssi]).rawValue)
            #expect(h.iir == IIR.fifos | IIR.dataAvailable)
            #expect(h.lsr == [.dr, .oe, .thre, .temt])
            #expect(h.drain() == Array("snapshot-state!!".utf8))
            #expect(h.iir == IIR.fifos | IIR.thrEmpty)
            #expect(h.msr == [.dcts, .ddcd, .dsr, .ri])
            #expect(h.iir == IIR.fifos | IIR.none)
            #expect(!h.irq.level)
        }
    }

    @Test func byteErrorsSurviveASnapshot() throws {
        let a = Harness()
        a.setFCR(.fifoEnable)
        a.uart.receive([1])
        a.uart.receiveBreak()
        let saved = a.uart.saveState()
        #expect(saved.rxErrors == [0, LSR.bi.rawValue])
        #expect(saved.rxFIFOError)
        let b = Harness()
        try b.uart.restore(saved)
        #expect(b.read(.rbrThrDll) == 1)
        #expect(b.lsr == [.dr, .bi, .thre, .temt, .rxFIFOError])
    }

    @Test func restoreLowersTheLineAndReopensInputFlow() throws {
        let h = busyUART()
        h.setMCR([])  // leave loopback with a full FIFO: capacity 0
        let acceptsBefore = h.backend.acceptInputCalls
        #expect(h.uart.receiveCapacity() == 0)
        #expect(h.irq.level)
        try h.uart.restore(UART16550.State())
        #expect(!h.irq.level)
        #expect(h.uart.receiveCapacity() == 1)
        #expect(h.backend.acceptInputCalls == acceptsBefore + 1)
        #expect(h.uart.saveState() == UART16550.State())
    }

    static let badStates: [(String, UART16550.State)] = [
        ("future version", UART16550.State(version: 2)),
        ("version 0", UART16550.State(version: 0)),
        ("17 bytes in the FIFO", UART16550.State(fcr: 0x01, rxData: .init(repeating: 0, count: 17), rxErrors: .init(repeating: 0, count: 17))),
        ("2 bytes in RBR", UART16550.State(rxData: [1, 2], rxErrors: [0, 0])),
        ("error list shorter than data", UART16550.State(fcr: 0x01, rxData: [1, 2], rxErrors: [0])),
        ("error list longer than data", UART16550.State(rxData: [], rxErrors: [0])),
        ("byte error outside PE/FE/BI", UART16550.State(rxData: [1], rxErrors: [LSR.oe.rawValue])),
        ("IER reserved bits", UART16550.State(ier: 0x10)),
        ("MCR reserved bits", UART16550.State(mcr: 0x20)),
        ("FCR self-clearing bit", UART16550.State(fcr: 0x03)),
        ("FCR reserved bit", UART16550.State(fcr: 0x21)),
        ("line status errors with DR", UART16550.State(lineStatusErrors: LSR.dr.rawValue)),
        ("line status errors with bit 7", UART16550.State(lineStatusErrors: 0x80)),
        ("MSR deltas with status bits", UART16550.State(msrDeltas: 0x10)),
        ("FIFO error bit without FIFOs", UART16550.State(rxFIFOError: true)),
    ]

    @Test(arguments: badStates)
    func restoreRejectsAnInvalidStateAndKeepsTheOldOne(what: String, bad: UART16550.State) {
        let h = busyUART()
        let before = h.uart.saveState()
        let level = h.irq.level
        let error = #expect(throws: SystemError.self, "\(what)") { try h.uart.restore(bad) }
        #expect(error?.code == .badInput)
        #expect(error?.message.contains("serial0") == true)
        #expect(h.uart.saveState() == before)
        #expect(h.irq.level == level)
    }

    @Test func validEdgeStatesAreAccepted() throws {
        let h = Harness()
        let full = UART16550.State(
            ier: 0x0F, mcr: 0x1F, fcr: 0xC9, lineStatusErrors: 0x1E, rxFIFOError: true, msrDeltas: 0x0F,
            rxData: .init(repeating: 0xAA, count: 16), rxErrors: .init(repeating: 0x1C, count: 16))
        try h.uart.restore(full)
        #expect(h.uart.saveState() == full)
        let one = UART16550.State(rxData: [0x42], rxErrors: [0])
        try h.uart.restore(one)
        #expect(h.read(.rbrThrDll) == 0x42)
    }
}

// MARK: - Threads

@Suite struct UARTConcurrencyTests {
    /// An I/O thread feeds input while a vCPU thread services interrupts. Every byte arrives
    /// once, in order, and the line ends at the level the final state implies.
    @Test func inputAndRegisterAccessFromTwoThreads() async {
        let h = Harness()
        h.setFCR([.fifoEnable, .trigger4])
        h.setIER([.erbfi, .etbei])
        let count = 5_000
        let input = (0..<count).map { UInt8(truncatingIfNeeded: $0 &* 7) }
        let backend = h.backend
        let uart = h.uart
        let feeder = Task.detached {
            backend.state.withLock { $0.pending = input }
            var spins = 0
            while backend.pendingCount > 0 && spins < 5_000_000 {
                if backend.pump() == 0 { await Task.yield() }
                spins += 1
            }
        }
        let reader = Task.detached { () -> [UInt8] in
            var received: [UInt8] = []
            var spins = 0
            while received.count < count && spins < 5_000_000 {
                spins += 1
                if uart.read(offset: 5, size: 1) & UInt64(LSR.dr.rawValue) != 0 {
                    received.append(UInt8(truncatingIfNeeded: uart.read(offset: 0, size: 1)))
                } else {
                    // Transmit too, so THRE interrupts race with the receiver.
                    uart.write(offset: 0, value: 0x2E, size: 1)
                    await Task.yield()
                }
            }
            return received
        }
        await feeder.value
        let received = await reader.value
        #expect(received == input)
        #expect(!h.lsr.contains(.oe))
        // The wire agrees with the registers: high exactly when IIR reports an interrupt.
        let level = h.irq.level
        let iir = h.iir
        #expect(level == (iir & 0x01 == 0))
        // Only the THRE interrupt can still be pending, and that IIR read retired it.
        #expect(iir == IIR.fifos | IIR.none || iir == IIR.fifos | IIR.thrEmpty)
        #expect(h.iir == IIR.fifos | IIR.none)
        #expect(!h.irq.level)
    }
}
