import Glibc
import GuestMemory
import Synchronization
import SystemSupport
import Testing
@testable import DeviceModel

/// A device that records accesses and returns its offset, so tests see where a lookup landed.
final class ProbeDevice: BusDevice {
    let name: String
    let writes = Mutex<[(UInt64, UInt64, Int)]>([])
    init(_ name: String) { self.name = name }
    func read(offset: UInt64, size: Int) -> UInt64 { offset }
    func write(offset: UInt64, value: UInt64, size: Int) { writes.withLock { $0.append((offset, value, size)) } }
}

@Suite struct AddressSpaceTests {
    @Test func routesAccessesByOffset() throws {
        let bus = AddressSpace(name: "memory")
        let uart = ProbeDevice("serial0")
        let rtc = ProbeDevice("rtc")
        try bus.add(rtc, at: GuestAddress(0x101000), size: 0x1000)
        try bus.add(uart, at: GuestAddress(0x1000_0000), size: 0x100)
        #expect(bus.read(at: GuestAddress(0x1000_0005), size: 1) == 5)
        #expect(bus.read(at: GuestAddress(0x101ff8), size: 8) == 0xff8)
        #expect(bus.write(at: GuestAddress(0x1000_0000), value: 0x41, size: 1))
        #expect(uart.writes.withLock { $0.map(\.1) } == [0x41])
        #expect(rtc.writes.withLock { $0.isEmpty })
        #expect(bus.allMappings.map(\.device.name) == ["rtc", "serial0"])
    }

    @Test func unmappedAddressesReturnNil() throws {
        let bus = AddressSpace(name: "memory")
        try bus.add(ProbeDevice("a"), at: GuestAddress(0x2000), size: 0x1000)
        #expect(bus.read(at: GuestAddress(0x1fff), size: 1) == nil)
        #expect(bus.read(at: GuestAddress(0x3000), size: 1) == nil)
        #expect(!bus.write(at: GuestAddress(0), value: 0, size: 4))
        #expect(AddressSpace(name: "empty").lookup(GuestAddress(0)) == nil)
    }

    @Test func lookupFindsEveryWindowAmongMany() throws {
        let bus = AddressSpace(name: "memory")
        // Insert out of order; the binary search must still find each window.
        for i in [5, 1, 7, 3, 0, 6, 2, 4] {
            try bus.add(ProbeDevice("d\(i)"), at: GuestAddress(UInt64(0x1000_1000 + i * 0x1000)), size: 0x200)
        }
        for i in 0..<8 {
            let hit = bus.lookup(GuestAddress(UInt64(0x1000_1000 + i * 0x1000 + 0x1ff)))
            #expect(hit?.device.name == "d\(i)")
            #expect(hit?.offset == 0x1ff)
            #expect(bus.lookup(GuestAddress(UInt64(0x1000_1000 + i * 0x1000 + 0x200))) == nil)
        }
    }

    @Test(arguments: [
        (0x1000_0000 as UInt64, 0x100 as UInt64),  // same window
        (0x0fff_ff00, 0x101),  // ends one byte into the UART
        (0x1000_00ff, 0x10),  // starts at its last byte
        (0x0f00_0000, 0x0200_0000),  // encloses it
    ])
    func overlapIsAConfigurationErrorNamingBothDevices(base: UInt64, size: UInt64) throws {
        let bus = AddressSpace(name: "memory")
        try bus.add(ProbeDevice("serial0"), at: GuestAddress(0x1000_0000), size: 0x100)
        do {
            try bus.add(ProbeDevice("virtio-mmio0"), at: GuestAddress(base), size: size)
            Issue.record("overlap was accepted")
        } catch {
            #expect(error.code == .configuration)
            #expect(error.message.contains("'virtio-mmio0'"))
            #expect(error.message.contains("'serial0'"))
        }
        #expect(bus.allMappings.count == 1)
    }

    @Test func adjacentWindowsAreFine() throws {
        let bus = AddressSpace(name: "io")
        try bus.add(ProbeDevice("a"), at: GuestAddress(0x3f8), size: 8)
        try bus.add(ProbeDevice("b"), at: GuestAddress(0x400), size: 8)
        try bus.add(ProbeDevice("c"), at: GuestAddress(0x3f0), size: 8)
        #expect(bus.allMappings.count == 3)
    }

    @Test func emptyOrWrappingWindowIsRefused() {
        let bus = AddressSpace(name: "memory")
        #expect(throws: SystemError.self) { try bus.add(ProbeDevice("x"), at: GuestAddress(0), size: 0) }
        #expect(throws: SystemError.self) { try bus.add(ProbeDevice("x"), at: GuestAddress(UInt64.max), size: 2) }
    }
}

@Suite struct InterruptLineTests {
    @Test func levelAndEdges() {
        let seen = Mutex<[Bool]>([])
        let line = LevelInterruptLine { level in seen.withLock { $0.append(level) } }
        line.set(level: true)
        line.set(level: true)  // no change, no callback
        line.set(level: false)
        line.pulse()
        #expect(seen.withLock { $0 } == [true, false, true, false])
        #expect(line.risingEdges == 2)
        #expect(!line.level)
    }
}

@Suite struct VirtualClockTests {
    /// Bounds come from host time measured around each step, never from a fixed window: a
    /// loaded machine may deschedule the test between any two lines.
    @Test func stopsWhilePausedAndResumesWithoutAJump() throws {
        let beforeCreation = VirtualClock.hostMonotonicNanoseconds()
        let clock = VirtualClock()
        let t0 = clock.nanoseconds
        let afterFirstRead = VirtualClock.hostMonotonicNanoseconds()
        // A new clock starts at zero: it has run at most the host time around its creation.
        #expect(t0 >= 0 && t0 <= afterFirstRead - beforeCreation, "t0 \(t0) ns, \(afterFirstRead - beforeCreation) ns of host time")
        clock.stop()
        #expect(!clock.isRunning)
        let frozen = clock.nanoseconds
        // Sleep through some host time; guest time must not move while stopped.
        let hostStart = VirtualClock.hostMonotonicNanoseconds()
        usleep(50_000)
        let paused = VirtualClock.hostMonotonicNanoseconds() - hostStart
        #expect(paused >= 50_000_000)
        #expect(clock.nanoseconds == frozen)
        // After resume guest time advances by at most the host time from just before resume()
        // to just after the read: none of the 50 ms pause may leak into it.
        let beforeResume = VirtualClock.hostMonotonicNanoseconds()
        clock.resume()
        let after = clock.nanoseconds
        let afterRead = VirtualClock.hostMonotonicNanoseconds()
        #expect(clock.isRunning)
        #expect(after >= frozen)
        #expect(after - frozen <= afterRead - beforeResume,
                "the paused interval leaked into guest time: +\(after - frozen) ns in \(afterRead - beforeResume) ns of host time")
    }

    @Test func setMovesGuestTime() {
        let clock = VirtualClock()
        clock.set(nanoseconds: 5_000_000_000)
        #expect(clock.nanoseconds >= 5_000_000_000)
        clock.stop()
        clock.set(nanoseconds: 42)
        #expect(clock.nanoseconds == 42)
        clock.resume()
        #expect(clock.nanoseconds >= 42)
    }

    @Test func isMonotonic() {
        let clock = VirtualClock()
        var last = clock.nanoseconds
        for _ in 0..<1000 {
            let now = clock.nanoseconds
            #expect(now >= last)
            last = now
        }
    }
}
