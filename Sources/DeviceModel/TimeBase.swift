/// A machine's time base: a tick counter over the `VirtualClock`. On RISC-V the `time` CSR,
/// Sstc's `stimecmp` and the ACLINT's `mtime` all count ticks of this one clock (QEMU virt:
/// 10 MHz), so harts and the timer device always agree.
public struct TimeBase: Sendable {
    public let clock: VirtualClock
    public let frequency: UInt64

    public init(clock: VirtualClock, frequency: UInt64 = 10_000_000) {
        self.clock = clock
        self.frequency = frequency
    }

    /// Ticks since the clock started.
    public func now() -> UInt64 {
        let ns = UInt64(max(0, clock.nanoseconds))
        // ns * f / 1e9 without overflow for centuries of uptime at 10 MHz.
        return ns / 1_000_000_000 * frequency + (ns % 1_000_000_000) * frequency / 1_000_000_000
    }

    /// Nanoseconds of guest time until `ticks` is reached (0 if already past).
    public func nanoseconds(until ticks: UInt64) -> Int64 {
        let current = now()
        guard ticks > current else { return 0 }
        let delta = ticks - current
        if delta > UInt64(Int64.max) / 1_000_000_000 { return Int64.max }
        return Int64((delta * 1_000_000_000 + frequency - 1) / frequency)
    }
}

