import Devices
import GuestMemory
import Testing
import VirtIO

/// virtio-input as a keyboard (virtio 1.2 §5.8), driven as Linux's virtio_input driver does:
/// it selects each configuration item, fills eventq with 8-byte buffers and returns statusq's.
@Suite struct VirtioInputTests {
    /// The configuration item `select`/`subsel` answers: size and bytes.
    static func item(_ guest: FakeGuest, select: UInt8, subsel: UInt8) -> [UInt8] {
        guest.mmio.write(offset: VirtioMMIO.configOffset, value: UInt64(select), size: 1)
        guest.mmio.write(offset: VirtioMMIO.configOffset + 1, value: UInt64(subsel), size: 1)
        let size = Int(guest.config(UInt8.self, at: 2))
        return (0..<size).map { guest.config(UInt8.self, at: 8 + $0) }
    }

    /// Linux's struct virtio_input_event from a used buffer.
    static func event(_ bytes: [UInt8]) -> VirtioInput.Event {
        VirtioInput.Event(type: UInt16(bytes[0]) | UInt16(bytes[1]) << 8, code: UInt16(bytes[2]) | UInt16(bytes[3]) << 8,
                          value: bytes[4..<8].reversed().reduce(0) { $0 << 8 | UInt32($1) })
    }

    @Test func identifiesAsQEMUsKeyboardWithAPowerKey() {
        let guest = FakeGuest(device: VirtioInput())
        #expect(guest.initialize())
        #expect(guest.reg(.deviceID) == 18)
        #expect(String(decoding: Self.item(guest, select: 1, subsel: 0), as: UTF8.self) == "QEMU Virtio Keyboard")
        #expect(Self.item(guest, select: 2, subsel: 0) == [], "no serial")
        #expect(Self.item(guest, select: 3, subsel: 0) == [0x06, 0, 0x27, 0x06, 1, 0, 1, 0], "BUS_VIRTUAL 0627:0001 v1")
        let keys = Self.item(guest, select: 0x11, subsel: 1)  // EV_BITS of EV_KEY
        #expect(keys.count == 32)
        #expect(keys[116 / 8] & 1 << (116 % 8) != 0, "KEY_POWER")
        #expect(keys[0] & 1 == 0, "KEY_RESERVED is no key")
        // Everything else is absent: size 0 (§5.8.5).
        #expect(Self.item(guest, select: 0x11, subsel: 2) == [], "no EV_REL")
        #expect(Self.item(guest, select: 0x11, subsel: 3) == [], "no EV_ABS")
        #expect(Self.item(guest, select: 0x10, subsel: 0) == [], "no properties")
        #expect(Self.item(guest, select: 0x7f, subsel: 0) == [], "unknown selector")
        #expect(Self.item(guest, select: 1, subsel: 1) == [], "ID_NAME has only subsel 0")
    }

    @Test func powerButtonReachesTheDriverAsKeyPowerDownAndUp() {
        let keyboard = VirtioInput()
        let guest = FakeGuest(device: keyboard)
        #expect(guest.initialize())
        var buffers: [GuestAddress] = []
        for _ in 0..<8 { buffers += guest.submit(queue: 0, readable: [], writable: [8], notify: false).writable }
        guest.notify(0)
        keyboard.pressPowerButton()
        let used = guest.takeUsed(queue: 0)
        #expect(used.map(\.length) == [8, 8, 8, 8])
        let events = buffers.prefix(4).map { Self.event(guest.bytes(at: $0, count: 8)) }
        #expect(events == VirtioInput.Event.key(116, pressed: true) + VirtioInput.Event.key(116, pressed: false))
        #expect(guest.irq.level)
        #expect(keyboard.pendingEvents.isEmpty)
    }

    @Test func eventsWaitForBuffersAndTheOldestGoBeyondTheLimit() {
        let keyboard = VirtioInput()
        let guest = FakeGuest(device: keyboard)
        #expect(guest.initialize())
        // Before the driver gives buffers, a press waits.
        keyboard.pressPowerButton()
        #expect(keyboard.pendingEvents.count == 4)
        #expect(guest.takeUsed(queue: 0).isEmpty)
        // Two buffers: the first two events go; the rest go with the next buffers.
        let first = (0..<2).flatMap { _ in guest.submit(queue: 0, readable: [], writable: [8], notify: false).writable }
        guest.notify(0)
        #expect(guest.takeUsed(queue: 0).count == 2)
        #expect(first.map { Self.event(guest.bytes(at: $0, count: 8)) } == VirtioInput.Event.key(116, pressed: true))
        #expect(keyboard.pendingEvents == VirtioInput.Event.key(116, pressed: false))
        // A flood with no buffers keeps the newest events, boundedly.
        for _ in 0..<100 { keyboard.send(VirtioInput.Event.key(30, pressed: true)) }
        #expect(keyboard.pendingEvents.count == VirtioInput.maxPendingEvents)
        #expect(keyboard.droppedEvents == 2 + 200 - VirtioInput.maxPendingEvents)
        // A reset forgets them.
        guest.write(.status, 0)
        #expect(keyboard.pendingEvents.isEmpty)
    }

    @Test func statusBuffersComeBackAndShortEventBuffersAreAnError() {
        let keyboard = VirtioInput()
        let guest = FakeGuest(device: keyboard)
        #expect(guest.initialize())
        // An LED report (EV_LED, LED_CAPSL, on): returned, unread.
        let (head, _) = guest.submit(queue: 1, readable: [[0x11, 0, 1, 0, 1, 0, 0, 0]], writable: [])
        #expect(guest.takeUsed(queue: 1) == [.init(id: UInt32(head), length: 0)])
        // An event buffer too small for one event breaks the protocol (§5.8.6.2).
        guest.submit(queue: 0, readable: [], writable: [4])
        keyboard.pressPowerButton()
        #expect(guest.needsReset)
    }
}
