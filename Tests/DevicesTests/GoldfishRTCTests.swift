import DeviceModel
import Devices
import Synchronization
import SystemSupport
import Testing

/// An RTC on a stopped virtual clock (so time moves only when a test moves it), with an
/// observable interrupt line. Offsets are rtc-goldfish.c's TIMER_* values written out.
private struct RTCHarness {
    static let timeLow: UInt64 = 0x00
    static let timeHigh: UInt64 = 0x04
    static let alarmLow: UInt64 = 0x08
    static let alarmHigh: UInt64 = 0x0c
    static let irqEnabled: UInt64 = 0x10
    static let clearAlarm: UInt64 = 0x14
    static let alarmStatus: UInt64 = 0x18
    static let clearInterrupt: UInt64 = 0x1c

    /// 2023-11-14T22:13:20.123456789Z.
    static let wall: Int64 = 1_700_000_000_123_456_789

    let clock: VirtualClock
    let irq: LevelInterruptLine
    let rtc: GoldfishRTC

    init(wall: Int64 = RTCHarness.wall, startingAt guestTime: Int64 = 0) {
        clock = VirtualClock()
        clock.stop()
        clock.set(nanoseconds: guestTime)
        irq = LevelInterruptLine()
        rtc = GoldfishRTC(clock: clock, irq: irq, wallClockNanoseconds: wall)
    }

    func read(_ offset: UInt64) -> UInt32 {
        UInt32(exactly: rtc.read(offset: offset, size: 4)) ?? 0xDEAD_BEEF
    }

    func write(_ offset: UInt64, _ value: UInt32) {
        rtc.write(offset: offset, value: UInt64(value), size: 4)
    }

    /// Linux's goldfish_rtc_read_time: TIME_LOW, then TIME_HIGH.
    func readTime() -> UInt64 {
        let low = read(Self.timeLow)
        let high = read(Self.timeHigh)
        return UInt64(high) << 32 | UInt64(low)
    }

    /// Linux's goldfish_rtc_set_time: TIME_HIGH, then TIME_LOW.
    func setTime(_ ns: UInt64) {
        write(Self.timeHigh, UInt32(truncatingIfNeeded: ns >> 32))
        write(Self.timeLow, UInt32(truncatingIfNeeded: ns))
    }

    /// Linux's goldfish_rtc_set_alarm with the alarm enabled.
    func setAlarm(_ ns: UInt64, enableIRQ: Bool = true) {
        write(Self.alarmHigh, UInt32(truncatingIfNeeded: ns >> 32))
        write(Self.alarmLow, UInt32(truncatingIfNeeded: ns))
        if enableIRQ { write(Self.irqEnabled, 1) }
    }

    func advance(by ns: Int64) { clock.set(nanoseconds: clock.nanoseconds + ns) }
}

/// A line that records every `set`, changed or not.
private final class RecordingRTCLine: InterruptLine {
    let calls = Mutex<[Bool]>([])
    func set(level: Bool) { calls.withLock { $0.append(level) } }
}

private let second: Int64 = 1_000_000_000

@Suite struct GoldfishRTCTests {
    // MARK: Time

    @Test func timeIsTheWallClockPlusGuestTime() {
        let h = RTCHarness(startingAt: 42 * second)
        #expect(h.rtc.name == "goldfish_rtc")
        #expect(GoldfishRTC.compatible == "google,goldfish-rtc")
        #expect(GoldfishRTC.windowSize == 0x1000)
        #expect(h.readTime() == UInt64(RTCHarness.wall))
        #expect(h.rtc.timeNanoseconds == UInt64(RTCHarness.wall))
        h.advance(by: 5 * second + 7)
        #expect(h.readTime() == UInt64(RTCHarness.wall + 5 * second + 7))
        // Paused: guest time stops, so does the RTC.
        #expect(h.readTime() == UInt64(RTCHarness.wall + 5 * second + 7))
        #expect(!h.irq.level)
    }

    @Test func aRunningClockReadsCloseToTheWallClock() {
        let clock = VirtualClock()
        let rtc = GoldfishRTC(clock: clock, irq: LevelInterruptLine(), wallClockNanoseconds: RTCHarness.wall)
        let low = UInt64(rtc.read(offset: 0, size: 4))
        let high = UInt64(rtc.read(offset: 4, size: 4))
        let time = high << 32 | low
        #expect(time >= UInt64(RTCHarness.wall))
        #expect(time < UInt64(RTCHarness.wall + 60 * second))
        // The default is the host's CLOCK_REALTIME.
        let host = GoldfishRTC(clock: clock, irq: LevelInterruptLine())
        let difference = Int64(bitPattern: host.timeNanoseconds) - GoldfishRTC.hostRealtimeNanoseconds()
        #expect(abs(difference) < 60 * second)
        #expect(GoldfishRTC.hostRealtimeNanoseconds() > 1_600_000_000 * second)
    }

    @Test func timeHighIsLatchedByTheTimeLowRead() {
        // 0x1_FFFF_FFF0: the low half wraps 16 ns from now.
        let h = RTCHarness(wall: 0x1_FFFF_FFF0)
        #expect(h.read(RTCHarness.timeHigh) == 0)  // nothing latched yet
        #expect(h.read(RTCHarness.timeLow) == 0xFFFF_FFF0)
        h.advance(by: 0x100)
        // Still the high half of the time TIME_LOW was read at.
        #expect(h.read(RTCHarness.timeHigh) == 1)
        #expect(h.read(RTCHarness.timeHigh) == 1)
        #expect(h.read(RTCHarness.timeLow) == 0xF0)
        #expect(h.read(RTCHarness.timeHigh) == 2)
    }

    @Test func theGuestSetsTheTime() {
        let h = RTCHarness()
        let target: UInt64 = 0x1234_5678_9ABC_DEF0
        h.setTime(target)
        #expect(h.readTime() == target)
        h.advance(by: second)
        #expect(h.readTime() == target + UInt64(second))
        // Each half replaces those bits of the current time at once.
        h.write(RTCHarness.timeHigh, 0x10)
        #expect(h.readTime() == 0x10_0000_0000 | ((target + UInt64(second)) & 0xFFFF_FFFF))
        h.write(RTCHarness.timeLow, 5)
        #expect(h.readTime() == 0x10_0000_0005)
        // Back before the epoch's first 4 s and around: wrapping, as in QEMU.
        h.setTime(0)
        #expect(h.readTime() == 0)
        h.advance(by: 3)
        #expect(h.readTime() == 3)
        #expect(h.rtc.saveState().tickOffset == -h.clock.nanoseconds + 3)
    }

    // MARK: Alarm

    @Test func anAlarmFiresThroughPollWhenItsTimeComes() {
        let h = RTCHarness(startingAt: 10 * second)
        let now = UInt64(RTCHarness.wall)
        #expect(h.rtc.nextDeadlineNanoseconds == nil)
        h.setAlarm(now + UInt64(second))
        #expect(h.read(RTCHarness.alarmStatus) == 1)
        #expect(h.read(RTCHarness.alarmLow) == UInt32(truncatingIfNeeded: now + UInt64(second)))
        #expect(h.read(RTCHarness.alarmHigh) == UInt32(truncatingIfNeeded: (now + UInt64(second)) >> 32))
        #expect(h.read(RTCHarness.irqEnabled) == 1)
        #expect(h.rtc.nextDeadlineNanoseconds == 11 * second)
        h.rtc.poll()
        #expect(!h.irq.level)
        h.advance(by: second - 1)
        h.rtc.poll()
        #expect(!h.irq.level)
        #expect(h.rtc.nextDeadlineNanoseconds == 11 * second)
        h.advance(by: 1)
        #expect(!h.irq.level)  // nobody looked yet
        #expect(h.rtc.nextDeadlineNanoseconds == 11 * second)  // due now
        h.rtc.poll()
        #expect(h.irq.level)
        #expect(h.read(RTCHarness.alarmStatus) == 0)
        #expect(h.rtc.nextDeadlineNanoseconds == nil)
        // Level: high until CLEAR_INTERRUPT, however much time passes.
        h.advance(by: 100 * second)
        h.rtc.poll()
        #expect(h.irq.level)
        h.write(RTCHarness.clearInterrupt, 1)
        #expect(!h.irq.level)
        h.rtc.poll()
        #expect(!h.irq.level)
        #expect(h.irq.risingEdges == 1)
    }

    @Test func anAlarmIsNoticedOnAnyRegisterAccess() {
        let h = RTCHarness()
        h.setAlarm(UInt64(RTCHarness.wall + 2 * second))
        h.advance(by: 3 * second)
        #expect(!h.irq.level)
        _ = h.read(RTCHarness.timeLow)
        #expect(h.irq.level)
    }

    @Test func theLineIsRaisedOnlyWhileTheInterruptIsEnabled() {
        let h = RTCHarness()
        h.setAlarm(UInt64(RTCHarness.wall + second), enableIRQ: false)
        #expect(h.read(RTCHarness.irqEnabled) == 0)
        // Nothing would be visible at the deadline: no wakeup needed.
        #expect(h.rtc.nextDeadlineNanoseconds == nil)
        h.advance(by: 2 * second)
        h.rtc.poll()
        #expect(!h.irq.level)
        // The alarm did fire (QEMU: irq_pending is set whatever IRQ_ENABLED says) ...
        #expect(h.read(RTCHarness.alarmStatus) == 0)
        #expect(!h.irq.level)
        // ... so enabling the interrupt raises the line, disabling it lowers it.
        h.write(RTCHarness.irqEnabled, 1)
        #expect(h.irq.level)
        h.write(RTCHarness.irqEnabled, 0)
        #expect(!h.irq.level)
        h.write(RTCHarness.clearInterrupt, 1)
        h.write(RTCHarness.irqEnabled, 0xFFFF_FFFF)
        #expect(h.read(RTCHarness.irqEnabled) == 1)
        #expect(!h.irq.level)
        h.write(RTCHarness.irqEnabled, 2)  // bit 0 only
        #expect(h.read(RTCHarness.irqEnabled) == 0)
    }

    @Test func anAlarmAlreadyDueFiresWhenArmed() {
        let h = RTCHarness()
        h.write(RTCHarness.irqEnabled, 1)
        h.setAlarm(UInt64(RTCHarness.wall - 1), enableIRQ: false)
        #expect(h.irq.level)
        #expect(h.read(RTCHarness.alarmStatus) == 0)
        h.write(RTCHarness.clearInterrupt, 1)
        // Exactly now counts as due.
        h.setAlarm(UInt64(RTCHarness.wall), enableIRQ: false)
        #expect(h.irq.level)
        #expect(h.irq.risingEdges == 2)
    }

    @Test func clearAlarmDisarmsIt() {
        let h = RTCHarness()
        h.setAlarm(UInt64(RTCHarness.wall + second))
        h.write(RTCHarness.clearAlarm, 1)
        #expect(h.read(RTCHarness.alarmStatus) == 0)
        #expect(h.rtc.nextDeadlineNanoseconds == nil)
        h.advance(by: 10 * second)
        h.rtc.poll()
        #expect(!h.irq.level)
        // ALARM_HIGH alone does not arm.
        h.write(RTCHarness.alarmHigh, 0)
        #expect(h.read(RTCHarness.alarmStatus) == 0)
    }

    @Test func settingTheClockPastTheAlarmFiresIt() {
        let h = RTCHarness()
        h.setAlarm(UInt64(RTCHarness.wall + 3600 * second))
        h.setTime(UInt64(RTCHarness.wall + 7200 * second))
        #expect(h.irq.level)
    }

    @Test func aDistantAlarmSaturatesTheDeadline() {
        let h = RTCHarness(startingAt: 5)
        h.setAlarm(.max)
        #expect(h.rtc.nextDeadlineNanoseconds == .max)
        h.setAlarm(UInt64(RTCHarness.wall) + UInt64(Int64.max) - 3)
        #expect(h.rtc.nextDeadlineNanoseconds == .max)
        h.setAlarm(UInt64(RTCHarness.wall) + UInt64(Int64.max) - 10)
        #expect(h.rtc.nextDeadlineNanoseconds == Int64.max - 5)
        h.setAlarm(UInt64(RTCHarness.wall) + 100)
        #expect(h.rtc.nextDeadlineNanoseconds == 105)
    }

    @Test func theLineIsDrivenOnlyWhenItsLevelChanges() {
        let clock = VirtualClock()
        clock.stop()
        clock.set(nanoseconds: 0)
        let line = RecordingRTCLine()
        let rtc = GoldfishRTC(clock: clock, irq: line, wallClockNanoseconds: 1000)
        #expect(line.calls.withLock { $0 } == [false])
        rtc.write(offset: 0x10, value: 1, size: 4)
        rtc.write(offset: 0x0c, value: 0, size: 4)
        rtc.write(offset: 0x08, value: 2000, size: 4)
        for _ in 0..<3 { rtc.poll() }
        clock.set(nanoseconds: 1000)
        for _ in 0..<3 { rtc.poll() }
        _ = rtc.read(offset: 0, size: 4)
        rtc.write(offset: 0x10, value: 1, size: 4)
        rtc.write(offset: 0x1c, value: 1, size: 4)
        rtc.write(offset: 0x1c, value: 1, size: 4)
        #expect(line.calls.withLock { $0 } == [false, true, false])
    }

    // MARK: Bad accesses

    @Test func badSizesAndUnknownOffsetsAreHarmless() {
        let h = RTCHarness()
        h.setAlarm(UInt64(RTCHarness.wall + second))
        let before = h.rtc.saveState()
        for size in [1, 2, 8] {
            #expect(h.rtc.read(offset: 0, size: size) == 0)
            h.rtc.write(offset: RTCHarness.timeHigh, value: 0xFFFF_FFFF, size: size)
            h.rtc.write(offset: RTCHarness.clearAlarm, value: 1, size: size)
            h.rtc.write(offset: RTCHarness.irqEnabled, value: 0, size: size)
        }
        for offset: UInt64 in [0x01, 0x02, 0x20, 0x24, 0xFFC, UInt64.max - 3] {
            #expect(h.rtc.read(offset: offset, size: 4) == 0)
            h.rtc.write(offset: offset, value: 0xFFFF_FFFF, size: 4)
        }
        // Read-only and write-only registers.
        h.write(RTCHarness.alarmStatus, 0)
        #expect(h.read(RTCHarness.clearAlarm) == 0)
        #expect(h.read(RTCHarness.clearInterrupt) == 0)
        #expect(h.rtc.saveState() == before)
        #expect(h.read(RTCHarness.alarmStatus) == 1)
    }

    // MARK: Reset and snapshots

    @Test func resetClearsTheAlarmAndTakesTheWallClockAgain() {
        let h = RTCHarness()
        h.setAlarm(UInt64(RTCHarness.wall - 1))
        #expect(h.irq.level)
        h.setAlarm(UInt64(RTCHarness.wall + second))
        h.rtc.reset(wallClockNanoseconds: 5 * second)
        #expect(!h.irq.level)
        #expect(h.readTime() == UInt64(5 * second))
        #expect(h.read(RTCHarness.alarmStatus) == 0)
        #expect(h.read(RTCHarness.irqEnabled) == 0)
        #expect(h.read(RTCHarness.alarmLow) == 0)
        #expect(h.rtc.nextDeadlineNanoseconds == nil)
    }

    @Test func saveThenRestoreReproducesTheDevice() throws {
        let a = RTCHarness(startingAt: 7 * second)
        a.setTime(0x22_0000_1111)
        a.setAlarm(0x22_0000_1111 + UInt64(second))
        _ = a.read(RTCHarness.timeLow)
        let saved = a.rtc.saveState()
        #expect(saved.version == GoldfishRTC.State.currentVersion)
        #expect(saved.alarmRunning && saved.irqEnabled && !saved.irqPending)
        #expect(saved.timeHigh == 0x22)
        #expect(saved.alarmNext == 0x22_0000_1111 + UInt64(second))

        // Another machine whose clock was restored to the same guest time, created at a
        // different wall-clock time.
        let b = RTCHarness(wall: 99, startingAt: 7 * second)
        try b.rtc.restore(saved)
        #expect(b.rtc.saveState() == saved)
        #expect(b.read(RTCHarness.timeHigh) == 0x22)
        for h in [a, b] {
            #expect(h.readTime() == 0x22_0000_1111)
            #expect(h.rtc.nextDeadlineNanoseconds == 8 * second)
            h.advance(by: second)
            h.rtc.poll()
            #expect(h.irq.level)
        }
        // A state with the interrupt pending raises the line; the reset state lowers it.
        let pending = b.rtc.saveState()
        #expect(pending.irqPending && !pending.alarmRunning)
        let c = RTCHarness()
        try c.rtc.restore(pending)
        #expect(c.irq.level)
        try c.rtc.restore(GoldfishRTC.State())
        #expect(!c.irq.level)
        #expect(c.readTime() == 0)
    }

    @Test(arguments: [0, 2, UInt32.max])
    func restoreRejectsAnUnknownVersionAndKeepsTheOldState(version: UInt32) {
        let h = RTCHarness()
        h.setAlarm(UInt64(RTCHarness.wall - 1))
        let before = h.rtc.saveState()
        let error = #expect(throws: SystemError.self) {
            try h.rtc.restore(GoldfishRTC.State(version: version, irqPending: false))
        }
        #expect(error?.code == .badInput)
        #expect(error?.message.contains("goldfish_rtc") == true)
        #expect(h.rtc.saveState() == before)
        #expect(h.irq.level)
    }
}
