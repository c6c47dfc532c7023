import DeviceModel
import Glibc
import Synchronization
import SystemSupport

/// The Android goldfish real-time clock ("google,goldfish-rtc"), as Linux's
/// `drivers/rtc/rtc-goldfish.c` drives it and QEMU's `hw/rtc/goldfish_rtc.c` implements it;
/// QEMU's `virt` places it at 0x101000 on PLIC source 11.
///
/// **Time.** The clock counts nanoseconds since the Unix epoch: the host's wall clock when the
/// device was created plus the guest time (`VirtualClock`) elapsed since, so it stops while
/// the machine is paused, as QEMU's does with `-rtc clock=vm`. The guest sets it (Linux's
/// `set_time` writes TIME_HIGH, then TIME_LOW) by moving an offset; each half-write replaces
/// those 32 bits of the current time at once, as in QEMU. Reading TIME_LOW latches the high
/// half for the next TIME_HIGH read, so the two reads form one 64-bit value.
///
/// **Alarm.** Writing ALARM_LOW arms the alarm at ALARM_HIGH:ALARM_LOW (ALARM_HIGH written
/// first). When the clock reaches it, the alarm stops running (ALARM_STATUS reads 0) and the
/// interrupt becomes pending; the line is high while an interrupt is pending and IRQ_ENABLED
/// is set, until CLEAR_INTERRUPT. So, as in QEMU, an alarm that expires with the interrupt
/// disabled raises the line when the guest enables it. An alarm already due when armed fires
/// at once.
///
/// **No thread of its own** (DESIGN.md §9.6). Alarms are noticed on every register access,
/// and when the board calls `poll()`, which it does when `nextDeadlineNanoseconds` passes
/// (a sleeping vCPU waits at most until then) or from its run loop.
///
/// **Threads.** Registers are accessed from vCPU threads and `poll` may run on another, so
/// the state lives behind a `Mutex`; the line is driven after the lock is released.
package final class GoldfishRTC: BusDevice, Snapshottable {
    /// Register offsets (rtc-goldfish.c's TIMER_* names).
    package enum Register: UInt64, Sendable, CaseIterable {
        /// Read: the low 32 bits of the time, latching the high 32 for TIME_HIGH. Write: sets them.
        case timeLow = 0x00
        /// Read: the high half latched by the last TIME_LOW read. Write: sets the high 32 bits.
        case timeHigh = 0x04
        /// Write: the low half of the alarm time, and arms the alarm.
        case alarmLow = 0x08
        /// Write: the high half of the next alarm time.
        case alarmHigh = 0x0c
        /// Bit 0: the interrupt output is enabled.
        case irqEnabled = 0x10
        /// Write: disarms the alarm.
        case clearAlarm = 0x14
        /// Read: 1 while the alarm is armed and has not fired.
        case alarmStatus = 0x18
        /// Write: acknowledges the interrupt (lowers the line).
        case clearInterrupt = 0x1c
    }

    /// Device-tree `compatible`.
    package static let compatible = "google,goldfish-rtc"
    /// The window QEMU's virt maps.
    package static let windowSize: UInt64 = 0x1000

    /// The snapshot of the RTC (DESIGN.md §5). Times are relative to the machine's
    /// `VirtualClock`, which travels in the same stream, so the clock goes on from where it was
    /// saved (QEMU's goldfish RTC migrates its offset against the virtual clock too).
    package struct State: Codable, Sendable, Equatable {
        package static let currentVersion: UInt32 = 1

        package var version: UInt32
        /// RTC nanoseconds minus `VirtualClock` nanoseconds (wrapping).
        package var tickOffset: Int64
        /// The high half latched by the last TIME_LOW read.
        package var timeHigh: UInt32
        /// The alarm time, in RTC nanoseconds.
        package var alarmNext: UInt64
        /// Armed and not yet fired (ALARM_STATUS).
        package var alarmRunning: Bool
        /// The alarm fired and CLEAR_INTERRUPT has not been written since.
        package var irqPending: Bool
        /// IRQ_ENABLED bit 0.
        package var irqEnabled: Bool

        package init(
            version: UInt32 = State.currentVersion, tickOffset: Int64 = 0, timeHigh: UInt32 = 0, alarmNext: UInt64 = 0,
            alarmRunning: Bool = false, irqPending: Bool = false, irqEnabled: Bool = false
        ) {
            self.version = version
            self.tickOffset = tickOffset
            self.timeHigh = timeHigh
            self.alarmNext = alarmNext
            self.alarmRunning = alarmRunning
            self.irqPending = irqPending
            self.irqEnabled = irqEnabled
        }
    }

    package let name = "goldfish_rtc"
    private let clock: VirtualClock
    private let irq: any InterruptLine
    private let registers: Mutex<RTCRegisters>

    /// CLOCK_REALTIME in nanoseconds since the Unix epoch.
    package static func hostRealtimeNanoseconds() -> Int64 {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return Int64(ts.tv_sec) * 1_000_000_000 + Int64(ts.tv_nsec)
    }

    /// - Parameters:
    ///   - clock: the machine's guest time.
    ///   - irq: the interrupt output (PLIC source 11 on virt), driven level-triggered.
    ///   - wallClockNanoseconds: the time the RTC shows now, in nanoseconds since the Unix
    ///     epoch; the host's wall clock unless a test injects one.
    package init(clock: VirtualClock, irq: any InterruptLine,
                 wallClockNanoseconds: Int64 = GoldfishRTC.hostRealtimeNanoseconds()) {
        self.clock = clock
        self.irq = irq
        registers = Mutex(RTCRegisters(tickOffset: wallClockNanoseconds &- clock.nanoseconds))
        irq.set(level: false)
    }

    /// The time the guest would read now, in nanoseconds since the Unix epoch.
    package var timeNanoseconds: UInt64 {
        let now = clock.nanoseconds
        return registers.withLock { $0.count(at: now) }
    }

    /// When, in `VirtualClock` nanoseconds (the clock's own timeline, not a delay), the next
    /// alarm raises the line: nil when no alarm is armed or the interrupt is disabled (an alarm
    /// that expires then has no visible effect until a register access, which notices it).
    /// A value at or before `clock.nanoseconds` means `poll()` is due now.
    package var nextDeadlineNanoseconds: Int64? {
        let now = clock.nanoseconds
        return registers.withLock { r -> Int64? in
            guard r.alarmRunning, r.irqEnabled else { return nil }
            let current = r.count(at: now)
            guard r.alarmNext > current else { return now }
            let (deadline, overflow) = now.addingReportingOverflow(Int64(clamping: r.alarmNext - current))
            return overflow ? .max : deadline
        }
    }

    /// Fires an alarm whose time has come. Cheap when none has; the board calls it when
    /// `nextDeadlineNanoseconds` passes.
    package func poll() {
        let now = clock.nanoseconds
        let level = registers.withLock { r -> Bool? in
            r.checkAlarm(now: now)
            return r.settle()
        }
        drive(level)
    }

    // MARK: BusDevice

    package func read(offset: UInt64, size: Int) -> UInt64 {
        guard let register = decode(offset: offset, size: size, write: false) else { return 0 }
        let now = clock.nanoseconds
        let (value, level) = registers.withLock { r -> (UInt32, Bool?) in
            r.checkAlarm(now: now)
            let value: UInt32
            switch register {
            case .timeLow:
                let time = r.count(at: now)
                r.timeHigh = UInt32(truncatingIfNeeded: time >> 32)
                value = UInt32(truncatingIfNeeded: time)
            case .timeHigh:
                value = r.timeHigh
            case .alarmLow:
                value = UInt32(truncatingIfNeeded: r.alarmNext)
            case .alarmHigh:
                value = UInt32(truncatingIfNeeded: r.alarmNext >> 32)
            case .irqEnabled:
                value = r.irqEnabled ? 1 : 0
            case .alarmStatus:
                value = r.alarmRunning ? 1 : 0
            case .clearAlarm, .clearInterrupt:
                DebugLog.log(.guestErrors, "\(name): read of write-only register \(register) at offset \(rtcHex(offset))")
                value = 0
            }
            return (value, r.settle())
        }
        drive(level)
        return UInt64(value)
    }

    package func write(offset: UInt64, value: UInt64, size: Int) {
        guard let register = decode(offset: offset, size: size, write: true) else { return }
        let value = UInt32(truncatingIfNeeded: value)
        let now = clock.nanoseconds
        let level = registers.withLock { r -> Bool? in
            r.checkAlarm(now: now)
            switch register {
            case .timeLow:
                r.setTime(bits: 0, to: value, now: now)
            case .timeHigh:
                r.setTime(bits: 32, to: value, now: now)
            case .alarmLow:
                r.alarmNext = (r.alarmNext & 0xffff_ffff_0000_0000) | UInt64(value)
                r.alarmRunning = true
            case .alarmHigh:
                r.alarmNext = (r.alarmNext & 0x0000_0000_ffff_ffff) | UInt64(value) << 32
            case .irqEnabled:
                r.irqEnabled = value & 1 != 0
            case .clearAlarm:
                r.alarmRunning = false
            case .clearInterrupt:
                r.irqPending = false
            case .alarmStatus:
                DebugLog.log(.guestErrors, "\(name): write to read-only ALARM_STATUS")
            }
            // A new alarm already due, or a clock set past the alarm, fires now.
            r.checkAlarm(now: now)
            return r.settle()
        }
        drive(level)
    }

    /// QEMU allows 32-bit accesses only; others and unknown offsets hit nothing.
    private func decode(offset: UInt64, size: Int, write: Bool) -> Register? {
        let access = write ? "write" : "read"
        guard size == 4 else {
            DebugLog.log(.guestErrors, "\(name): \(size)-byte \(access) at offset \(rtcHex(offset)): registers are 32-bit")
            return nil
        }
        guard let register = Register(rawValue: offset) else {
            DebugLog.log(.guestErrors, "\(name): \(access) of a register that does not exist at offset \(rtcHex(offset))")
            return nil
        }
        return register
    }

    // MARK: Reset and snapshots

    /// Machine reset, as QEMU's: the clock takes the host's wall-clock time again, the alarm
    /// and the interrupt are cleared.
    package func reset(wallClockNanoseconds: Int64 = GoldfishRTC.hostRealtimeNanoseconds()) {
        let now = clock.nanoseconds
        let level = registers.withLock { r -> Bool? in
            var fresh = RTCRegisters(tickOffset: wallClockNanoseconds &- now)
            fresh.drivenLevel = r.drivenLevel
            r = fresh
            return r.settle()
        }
        drive(level)
    }

    package func saveState() -> State {
        registers.withLock { r in
            State(tickOffset: r.tickOffset, timeHigh: r.timeHigh, alarmNext: r.alarmNext, alarmRunning: r.alarmRunning,
                  irqPending: r.irqPending, irqEnabled: r.irqEnabled)
        }
    }

    /// Loads a saved state (untrusted: from a snapshot or a migration stream). Every 64-bit
    /// time is a valid value; only the version can be wrong. Restore the `VirtualClock` first
    /// or after: the state is relative to it, and an alarm due is noticed on the next poll or
    /// access.
    package func restore(_ state: State) throws(SystemError) {
        guard state.version == State.currentVersion else {
            throw .badInput("RTC '\(name)' snapshot: state version \(state.version) is not supported "
                + "(this build reads version \(State.currentVersion))")
        }
        let level = registers.withLock { r -> Bool? in
            var new = RTCRegisters(tickOffset: state.tickOffset)
            new.timeHigh = state.timeHigh
            new.alarmNext = state.alarmNext
            new.alarmRunning = state.alarmRunning
            new.irqPending = state.irqPending
            new.irqEnabled = state.irqEnabled
            new.drivenLevel = r.drivenLevel
            r = new
            return r.settle()
        }
        drive(level)
    }

    // MARK: Output, outside the lock

    /// Sets the line, then re-reads the wanted level: another thread may have settled the RTC
    /// before this (now stale) `set` landed; whoever sets last leaves the wire right.
    private func drive(_ level: Bool?) {
        guard var level else { return }
        while true {
            irq.set(level: level)
            let wanted = registers.withLock { $0.drivenLevel }
            if wanted == level { return }
            level = wanted
        }
    }
}

/// Everything the RTC holds, guarded by its mutex.
private struct RTCRegisters {
    var tickOffset: Int64
    var timeHigh: UInt32 = 0
    var alarmNext: UInt64 = 0
    var alarmRunning = false
    var irqPending = false
    var irqEnabled = false
    /// The level the line was last told to take. Not device state.
    var drivenLevel = false

    init(tickOffset: Int64) { self.tickOffset = tickOffset }

    /// The RTC time at guest time `now` (QEMU's goldfish_rtc_get_count: wrapping u64).
    func count(at now: Int64) -> UInt64 {
        UInt64(bitPattern: tickOffset &+ now)
    }

    /// Replaces 32 bits of the current time with `value`, keeping the others.
    mutating func setTime(bits shift: UInt64, to value: UInt32, now: Int64) {
        let current = count(at: now)
        let mask: UInt64 = 0xffff_ffff << shift
        let new = (current & ~mask) | (UInt64(value) << shift)
        tickOffset &+= Int64(bitPattern: new &- current)
    }

    /// The alarm fires when the clock reaches it (unsigned, as QEMU compares).
    mutating func checkAlarm(now: Int64) {
        guard alarmRunning, count(at: now) >= alarmNext else { return }
        alarmRunning = false
        irqPending = true
    }

    /// The new line level, if it differs from the one driven.
    mutating func settle() -> Bool? {
        let level = irqPending && irqEnabled
        guard level != drivenLevel else { return nil }
        drivenLevel = level
        return level
    }
}

private func rtcHex(_ value: UInt64) -> String {
    "0x" + String(value, radix: 16)
}
