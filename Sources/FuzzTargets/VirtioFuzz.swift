import DeviceModel
import Devices
import Glibc
import GuestMemory
import Synchronization
import SystemSupport
import VirtIO

/// The virtio devices driven through their virtio-mmio transport by a fake guest whose every
/// move the input decides: which features it accepts, the queue sizes, descriptor tables
/// (direct and indirect chains, or raw descriptors anywhere), the available ring and its idx,
/// notifies, config-space and register writes in any order, and the backend's own events
/// (frames for the NIC, console input, a disk that fails). The guest RAM is 64 KiB: eight
/// 4 KiB queue areas, then 32 KiB of buffers. Devices complete on the notifying thread (no
/// I/O thread), so each input runs the same way every time.
///
/// Input: a header (device options: one byte, two for virtio-net; a mask of offered features
/// to refuse; four queue size selectors), then operations, one opcode byte each (`Op`) and its operands.
enum VirtioFuzz {
    static let ramBase: UInt64 = 0x8000_0000
    static let ramSize: UInt64 = 64 << 10
    static let dataStart: UInt64 = 32 << 10
    static let maxQueueSize: UInt16 = 32
    static let maxOperations = 256

    enum Op: UInt8, CaseIterable {
        /// q, n (bit 7: indirect), then per descriptor: flags (bit 0: device-writable), length
        /// u16, and for a readable one its contents (at most 1 KiB) from the input. The chain
        /// goes in the queue's next descriptors and the available ring (no notify).
        case chain = 0
        case notify
        /// q, index, flags u16, next u16, length u32, address: u16 offset into RAM, or with
        /// bit 0 of a selector byte a raw u64.
        case descriptor
        /// q, head u16: one more available ring entry.
        case availPush
        /// q, idx u16 (rewinds, or jumps past entries never written).
        case availIdx
        /// q, flags u16, used_event u16.
        case availFlags
        /// offset u8, size selector, value u64.
        case configWrite
        case configRead
        /// register index, value u32 (queue selection, sizes, addresses, status, reset...).
        case registerWrite
        case registerRead
        /// offset u16, n u8, bytes: anything in RAM, rings included.
        case ram
        case acknowledge
        /// Device specific: a frame for the NIC, console input, backend ready, disk failing.
        case backend
        /// Reset and initialize again (header fields read again).
        case reinitialize
    }

    /// The device under test and what its backend can do.
    struct Device {
        let device: any VirtioDevice
        /// Runs a `backend` operation.
        let backend: (inout FuzzInput) -> Void
        /// Breaks reference cycles at the end of the input.
        let close: () -> Void
    }

    final class Guest {
        let memory: GuestMemory
        let mmio: VirtioMMIO
        let irq = LevelInterruptLine()
        var sizes: [UInt16] = []
        var nextDescriptor: [UInt16] = []
        var availIdx: [UInt16] = []
        var bump: UInt64 = dataStart

        init(device: any VirtioDevice) {
            do throws(SystemError) {
                memory = try GuestMemory(base: GuestAddress(VirtioFuzz.ramBase), size: VirtioFuzz.ramSize)
            } catch {
                fatalError("cannot allocate the fuzz guest's RAM: \(error)")
            }
            mmio = VirtioMMIO(name: "virtio-fuzz", device: device, memory: memory, irq: irq)
        }

        func desc(_ q: Int) -> UInt64 { ramBase + UInt64(q) * 0x1000 }
        func avail(_ q: Int) -> UInt64 { desc(q) + 0x200 }
        func used(_ q: Int) -> UInt64 { desc(q) + 0x300 }

        func write(_ r: VirtioMMIO.Register, _ value: UInt32) { mmio.write(offset: r.rawValue, value: UInt64(value), size: 4) }
        func read(_ r: VirtioMMIO.Register) -> UInt32 { UInt32(truncatingIfNeeded: mmio.read(offset: r.rawValue, size: 4)) }
        func poke<T: FixedWidthInteger>(_ value: T, _ address: UInt64) { try? memory.write(value, at: GuestAddress(address)) }

        /// Data space for a buffer, wrapping round the buffer area.
        func allocate(_ size: Int) -> UInt64 {
            let size = UInt64(min(max(size, 1), 4096))
            if bump + size > ramSize { bump = dataStart }
            defer { bump = (bump + size + 15) & ~15 }
            return ramBase + bump
        }

        /// Linux's probe: reset, negotiate, set every queue up, DRIVER_OK.
        func initialize(_ input: inout FuzzInput) {
            let refuse = input.u64()
            let sizeSelectors = (0..<4).map { _ in input.u8() }
            write(.status, 0)
            write(.status, VirtioStatus.acknowledge.rawValue)
            write(.status, VirtioStatus([.acknowledge, .driver]).rawValue)
            write(.deviceFeaturesSel, 1)
            let high = UInt64(read(.deviceFeatures))
            write(.deviceFeaturesSel, 0)
            let offered = high << 32 | UInt64(read(.deviceFeatures))
            let accepted = offered & ~refuse
            write(.driverFeaturesSel, 1)
            write(.driverFeatures, UInt32(truncatingIfNeeded: accepted >> 32))
            write(.driverFeaturesSel, 0)
            write(.driverFeatures, UInt32(truncatingIfNeeded: accepted))
            write(.status, VirtioStatus([.acknowledge, .driver, .featuresOK]).rawValue)
            sizes = []
            for q in 0..<8 {
                write(.queueSel, UInt32(q))
                let max = read(.queueNumMax)
                if max == 0 { break }
                let size = min(UInt16(truncatingIfNeeded: max), maxQueueSize >> (sizeSelectors[q % 4] % 6))
                // Zeroed rings, as Linux leaves them.
                try? memory.writeBytes([UInt8](repeating: 0, count: 0x1000), at: GuestAddress(desc(q)))
                write(.queueNum, UInt32(size))
                write(.queueDescLow, UInt32(truncatingIfNeeded: desc(q)))
                write(.queueDescHigh, 0)
                write(.queueDriverLow, UInt32(truncatingIfNeeded: avail(q)))
                write(.queueDriverHigh, 0)
                write(.queueDeviceLow, UInt32(truncatingIfNeeded: used(q)))
                write(.queueDeviceHigh, 0)
                write(.queueReady, 1)
                sizes.append(size)
            }
            nextDescriptor = sizes.map { _ in 0 }
            availIdx = sizes.map { _ in 0 }
            write(.status, VirtioStatus([.acknowledge, .driver, .featuresOK, .driverOK]).rawValue)
        }

        func queue(_ input: inout FuzzInput) -> Int? {
            let q = Int(input.u8())
            return sizes.isEmpty ? nil : q % sizes.count
        }

        func pushAvailable(_ q: Int, head: UInt16) {
            let size = max(sizes[q], 1)
            poke(head, avail(q) + 4 + 2 * UInt64(availIdx[q] % size))
            availIdx[q] &+= 1
            poke(availIdx[q], avail(q) + 2)
        }

        func writeDescriptor(table: UInt64, _ index: UInt16, address: UInt64, length: UInt32, flags: UInt16, next: UInt16) {
            let at = table + 16 * UInt64(index)
            poke(address, at)
            poke(length, at + 8)
            poke(flags, at + 12)
            poke(next, at + 14)
        }

        func chain(_ input: inout FuzzInput) {
            guard let q = queue(&input) else { return }
            let n = input.u8()
            let count = Int(n & 7) + 1
            var buffers: [(address: UInt64, length: UInt32, flags: UInt16)] = []
            for _ in 0..<count {
                let flags = input.u8()
                let length = input.u16()
                let address = allocate(Int(length))
                if flags & 1 == 0 {
                    try? memory.writeBytes(input.bytes(min(Int(length), 1024)), at: GuestAddress(address))
                }
                buffers.append((address, UInt32(length), flags & 1 == 0 ? 0 : VirtqDescriptorFlags.write.rawValue))
            }
            let size = max(sizes[q], 1)
            if n & 0x80 != 0 {
                let table = allocate(16 * buffers.count)
                for (i, b) in buffers.enumerated() {
                    let last = i == buffers.count - 1
                    writeDescriptor(table: table, UInt16(i), address: b.address, length: b.length,
                                    flags: last ? b.flags : b.flags | VirtqDescriptorFlags.next.rawValue, next: UInt16(i + 1))
                }
                let head = nextDescriptor[q]
                nextDescriptor[q] = (head + 1) % size
                writeDescriptor(table: desc(q), head, address: table, length: UInt32(16 * buffers.count),
                                flags: VirtqDescriptorFlags.indirect.rawValue, next: 0)
                pushAvailable(q, head: head)
            } else {
                let indices = buffers.map { _ in
                    defer { nextDescriptor[q] = (nextDescriptor[q] + 1) % size }
                    return nextDescriptor[q]
                }
                for (i, b) in buffers.enumerated() {
                    let last = i == buffers.count - 1
                    writeDescriptor(table: desc(q), indices[i], address: b.address, length: b.length,
                                    flags: last ? b.flags : b.flags | VirtqDescriptorFlags.next.rawValue, next: last ? 0 : indices[i + 1])
                }
                pushAvailable(q, head: indices[0])
            }
        }

        func step(_ op: Op, _ input: inout FuzzInput, device: Device) {
            switch op {
            case .chain: chain(&input)
            case .notify: write(.queueNotify, UInt32(input.u8() % 4))
            case .descriptor:
                guard let q = queue(&input) else { return }
                let index = UInt16(input.u8()) % maxQueueSize
                let flags = input.u16(), next = input.u16(), length = input.u32()
                let address = input.u8() & 1 == 0 ? ramBase + UInt64(input.u16()) : input.u64()
                writeDescriptor(table: desc(q), index, address: address, length: length, flags: flags, next: next)
            case .availPush:
                guard let q = queue(&input) else { return }
                pushAvailable(q, head: input.u16())
            case .availIdx:
                guard let q = queue(&input) else { return }
                availIdx[q] = input.u16()
                poke(availIdx[q], avail(q) + 2)
            case .availFlags:
                guard let q = queue(&input) else { return }
                poke(input.u16(), avail(q))
                poke(input.u16(), avail(q) + 4 + 2 * UInt64(sizes[q]))
            case .configWrite, .configRead:
                let offset = UInt64(input.u8())
                let size = [1, 2, 4, 8][Int(input.u8() % 4)]
                if op == .configWrite {
                    mmio.write(offset: VirtioMMIO.configOffset + offset, value: input.u64(), size: size)
                } else {
                    _ = mmio.read(offset: VirtioMMIO.configOffset + offset, size: size)
                }
            case .registerWrite, .registerRead:
                let registers = VirtioMMIO.Register.allCases
                let register = registers[Int(input.u8()) % registers.count]
                if op == .registerWrite { write(register, input.u32()) } else { _ = read(register) }
            case .ram:
                let offset = UInt64(input.u16()) % ramSize
                let bytes = input.bytes(Int(input.u8()))
                try? memory.writeBytes(bytes.prefix(Int(ramSize - offset)), at: GuestAddress(ramBase + offset))
            case .acknowledge:
                write(.interruptACK, read(.interruptStatus))
            case .backend:
                device.backend(&input)
            case .reinitialize:
                initialize(&input)
            }
        }
    }

    /// Runs one input against the device `make` builds from the header's first byte(s).
    static func run(_ data: UnsafeRawBufferPointer, make: (inout FuzzInput) -> Device) {
        var input = FuzzInput(data)
        let device = make(&input)
        let guest = Guest(device: device.device)
        guest.initialize(&input)
        var operations = 0
        while !input.isAtEnd && operations < maxOperations {
            let byte = input.u8()
            guest.step(Op(rawValue: byte % UInt8(Op.allCases.count))!, &input, device: device)
            operations += 1
        }
        device.close()
        guest.write(.status, 0)
    }

    // MARK: The devices

    /// An in-memory disk of up to 64 sectors that can be made to fail.
    /// SAFETY: the buffers are the device's, valid for their count during each call; every
    /// copy is bounded by `checkRange` against the disk and by the buffer's own count.
    final class Disk: BlockBackend {
        let label = "fuzz"
        let size: UInt64
        let readOnly: Bool
        let data: Mutex<[UInt8]>
        let failing = Atomic<Bool>(false)

        init(sectors: Int, readOnly: Bool) {
            size = UInt64(sectors) * 512
            self.readOnly = readOnly
            data = Mutex([UInt8](repeating: 0x5a, count: sectors * 512))
        }
        func check() throws(SystemError) {
            if failing.load(ordering: .relaxed) { throw SystemError(.syscall, "injected failure", errno: Errno(rawValue: EIO)) }
        }
        func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws(SystemError) {
            try check()
            try checkRange(offset: offset, count: UInt64(buffer.count))
            data.withLock { d in buffer.copyBytes(from: d[Int(offset)..<Int(offset) + buffer.count]) }
        }
        func write(at offset: UInt64, from buffer: UnsafeRawBufferPointer) throws(SystemError) {
            try check()
            try checkWritable("write")
            try checkRange(offset: offset, count: UInt64(buffer.count))
            data.withLock { d in d.replaceSubrange(Int(offset)..<Int(offset) + buffer.count, with: buffer) }
        }
        func flush() throws(SystemError) { try check() }
        func discard(at offset: UInt64, count: UInt64) throws(SystemError) {
            try check()
            try checkRange(offset: offset, count: count)
        }
        func writeZeroes(at offset: UInt64, count: UInt64, mayUnmap: Bool) throws(SystemError) {
            try check()
            try checkWritable("write zeroes")
            try checkRange(offset: offset, count: count)
            data.withLock { d in d.replaceSubrange(Int(offset)..<Int(offset + count), with: repeatElement(0, count: Int(count))) }
        }
    }

    /// A character backend that drops output and offers input as far as the frontend takes it.
    final class CharSink: CharBackend {
        let label = "fuzz"
        let frontend = Mutex<(any CharFrontend)?>(nil)
        func attach(_ frontend: (any CharFrontend)?) { self.frontend.withLock { $0 = frontend } }
        func write(_ bytes: [UInt8]) {}
        func acceptInput() {}
        func type(_ bytes: [UInt8]) {
            guard let frontend = frontend.withLock({ $0 }) else { return }
            var rest = bytes[...]
            while !rest.isEmpty {
                let n = frontend.receiveCapacity()
                if n <= 0 { return }
                frontend.receive(Array(rest.prefix(n)))
                rest = rest.dropFirst(n)
            }
        }
    }

    /// A network backend that takes every frame, or refuses from the n-th on (back-pressure).
    final class Wire: NetBackend {
        let id = "fuzz"
        let info = "fuzz"
        let offloads: NetOffloads
        let frontend = Mutex<(any NetFrontend)?>(nil)
        let room = Atomic<Int>(Int.max)
        init(offloads: NetOffloads) { self.offloads = offloads }
        func attach(_ frontend: (any NetFrontend)?) { self.frontend.withLock { $0 = frontend } }
        func send(_ frame: [UInt8]) -> Bool { room.subtract(1, ordering: .relaxed).newValue > 0 }
        func frontendReady() {}
        func close() {}
    }

    static let block = FuzzTarget(name: "virtio-blk", summary: "virtio-blk requests through virtio-mmio from a fake guest", maxLength: 4096,
                                  run: { data in
        run(data) { input in
            let options = input.u8()
            let disk = Disk(sectors: Int(options >> 2) + 1, readOnly: options & 1 != 0)
            disk.failing.store(options & 2 != 0, ordering: .relaxed)
            return Device(device: VirtioBlock(backend: disk, serial: "fuzz-serial"), backend: { input in
                disk.failing.store(input.u8() & 1 != 0, ordering: .relaxed)
            }, close: {})
        }
    }, seeds: { blockSeeds() })

    static let console = FuzzTarget(name: "virtio-console", summary: "virtio-console queues, config and input from a fake guest", maxLength: 4096,
                                    run: { data in
        run(data) { input in
            _ = input.u8()
            let sink = CharSink()
            let console = VirtioConsole(backend: sink)
            return Device(device: console, backend: { input in sink.type(input.bytes(Int(input.u8()))) },
                          close: { console.detachFromBackend() })
        }
    }, seeds: { consoleSeeds() })

    static let rng = FuzzTarget(name: "virtio-rng", summary: "virtio-rng requests from a fake guest", maxLength: 2048,
                                run: { data in
        run(data) { input in
            let failing = input.u8() & 1 != 0
            let rng = VirtioRNG { (buffer) throws(SystemError) in
                if failing { throw SystemError(.syscall, "no entropy", errno: Errno(rawValue: EIO)) }
                for i in buffer.indices { buffer[i] = UInt8(truncatingIfNeeded: i) }
            }
            return Device(device: rng, backend: { _ in }, close: {})
        }
    }, seeds: { rngSeeds() })

    static let input = FuzzTarget(name: "virtio-input", summary: "virtio-input (keyboard) config selects, event and status queues from a fake guest",
                                  maxLength: 2048, run: { data in
        run(data) { input in
            _ = input.u8()
            let keyboard = VirtioInput()
            return Device(device: keyboard, backend: { input in
                // The host's side: the power button, or one key up or down.
                let byte = input.u8()
                if byte & 1 == 0 {
                    keyboard.pressPowerButton()
                } else {
                    keyboard.send(VirtioInput.Event.key(UInt16(byte >> 1), pressed: byte & 0x80 != 0))
                }
            }, close: {})
        }
    }, seeds: { inputSeeds() })

    static let balloon = FuzzTarget(name: "virtio-balloon", summary: "virtio-balloon PFN lists, stats and targets from a fake guest",
                                    maxLength: 4096, run: { data in
        run(data) { input in
            // Bit 0: DEFLATE_ON_OOM offered; bit 1: only the upper half of RAM is the
            // machine's (the lower half stands for a ROM the balloon must not touch).
            let options = input.u8()
            let upper = AddressRange(base: GuestAddress(ramBase + ramSize / 2), size: ramSize / 2)!
            let ram = options & 2 != 0 ? [upper] : [AddressRange(base: GuestAddress(ramBase), size: ramSize)!]
            let balloon = VirtioBalloon(ram: ram, deflateOnOOM: options & 1 != 0)
            return Device(device: balloon, backend: { input in
                // The host's side: a new target, a stats request, a save's quiesce.
                switch input.u8() % 3 {
                case 0: balloon.setTarget(bytes: UInt64(input.u32()) << 8)
                case 1: balloon.requestStatistics()
                default: balloon.quiesce()
                }
            }, close: {})
        }
    }, seeds: { balloonSeeds() })

    static let net = FuzzTarget(name: "virtio-net", summary: "virtio-net tx, rx and control queues from a fake guest and wire", maxLength: 4096,
                                run: { data in
        run(data) { input in
            // Two header bytes: the wire's offloads (every bit: whatever NetOffloads defines),
            // and how many frames it takes before it pushes back (bit 7 set: 1 + bits 0-1).
            let wire = Wire(offloads: NetOffloads(rawValue: UInt32(input.u8())))
            let room = input.u8()
            if room & 0x80 != 0 { wire.room.store(Int(room & 3) + 1, ordering: .relaxed) }
            let nic = VirtioNet(backend: wire, mac: MACAddress([0x52, 0x54, 0, 0x12, 0x34, 0x56]))
            return Device(device: nic, backend: { input in
                // A frame from the wire, the wire ready again, set_link, stop/cont.
                let selector = input.u8()
                switch selector & 3 {
                case 0: _ = nic.receive(input.bytes(Int(input.u16() % 2048)))
                case 1:
                    wire.room.store(Int(selector >> 2), ordering: .relaxed)
                    nic.backendReady()
                case 2: nic.setLinkUp(selector & 4 != 0)
                default: nic.setRunning(selector & 4 != 0)
                }
            }, close: { nic.detachFromBackend() })
        }
    }, seeds: { netSeeds() })
}
