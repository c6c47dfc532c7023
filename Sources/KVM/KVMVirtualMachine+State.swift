import CLinux
import SystemSupport

/// The saved state of a VM's in-kernel devices and clock (DESIGN.md §5): the 8259 PICs and the
/// IOAPIC (KVM_GET_IRQCHIP, where `createIRQChip()` made them), the 8254 PIT (KVM_GET_PIT2,
/// where `createPIT()` made it) and kvmclock (KVM_GET_CLOCK). The vCPUs' own state, local APICs
/// included, is `KVMVcpu.State`.
///
/// Restore order (Firecracker's VM `restore_state`): PIT, clock, PIC master, PIC slave, IOAPIC;
/// a board restores this before its vCPUs (their LAPICs then receive what the IOAPIC
/// re-delivers from its saved IRR, and keep what they had pending themselves).
///
/// The clock is restored with no flags: kvmclock goes on from the value it had when it was
/// saved, so the guest sees no jump, neither forwards (by the time the machine spent stopped or
/// in transit) nor backwards. KVM_CLOCK_TSC_STABLE is a report, not an input (kernels before
/// 5.16 refuse every flag), and KVM_CLOCK_REALTIME would advance the guest's clock by the real
/// time elapsed since the save.
extension KVMVirtualMachine {
    /// Where KVM's IOAPIC decodes its registers (IOAPIC_DEFAULT_BASE_ADDRESS), which a restored
    /// state must not move.
    package static let ioapicBase: UInt64 = 0xfec0_0000
    /// KVM_IOAPIC_NUM_PINS.
    package static let ioapicPins = 24

    package struct State: Codable, Sendable, Equatable {
        package static let currentVersion: UInt32 = 1

        package var version: UInt32
        /// KVM_IRQCHIP_PIC_MASTER, _SLAVE and _IOAPIC; nil without an in-kernel irqchip.
        package var picMaster: PIC?
        package var picSlave: PIC?
        package var ioapic: IOAPIC?
        /// nil without an in-kernel PIT.
        package var pit: PIT?
        package var clock: Clock

        package init(version: UInt32 = State.currentVersion, picMaster: PIC?, picSlave: PIC?, ioapic: IOAPIC?, pit: PIT?, clock: Clock) {
            self.version = version
            self.picMaster = picMaster
            self.picSlave = picSlave
            self.ioapic = ioapic
            self.pit = pit
            self.clock = clock
        }
    }

    /// Reads the in-kernel devices' state and the clock. Only while every vCPU is outside KVM_RUN.
    package func saveState() throws(SystemError) -> State {
        var picMaster: PIC?
        var picSlave: PIC?
        var ioapic: IOAPIC?
        if hasIRQChip.load(ordering: .sequentiallyConsistent) {
            picMaster = PIC(try irqchip(UInt32(KVM_IRQCHIP_PIC_MASTER)).chip.pic)
            picSlave = PIC(try irqchip(UInt32(KVM_IRQCHIP_PIC_SLAVE)).chip.pic)
            ioapic = IOAPIC(try irqchip(UInt32(KVM_IRQCHIP_IOAPIC)))
        }
        var pit: PIT?
        if hasPIT.load(ordering: .sequentiallyConsistent) {
            var raw = kvm_pit_state2()
            try ioctl(clx_KVM_GET_PIT2, "KVM_GET_PIT2", &raw)
            pit = PIT(raw)
        }
        var clock = kvm_clock_data()
        try ioctl(clx_KVM_GET_CLOCK, "KVM_GET_CLOCK", &clock)
        return State(picMaster: picMaster, picSlave: picSlave, ioapic: ioapic, pit: pit,
                     clock: Clock(nanoseconds: clock.clock, flags: clock.flags, realtime: clock.realtime, hostTSC: clock.host_tsc))
    }

    /// kvmclock now, in nanoseconds (KVM_GET_CLOCK), for a snapshot's VM clock; 0 when KVM
    /// cannot say.
    package var clockNanoseconds: UInt64 {
        var clock = kvm_clock_data()
        return (try? ioctl(clx_KVM_GET_CLOCK, "KVM_GET_CLOCK", &clock)) != nil ? clock.clock : 0
    }

    private func irqchip(_ id: UInt32) throws(SystemError) -> kvm_irqchip {
        var chip = kvm_irqchip()
        chip.chip_id = id
        try ioctl(clx_KVM_GET_IRQCHIP, "KVM_GET_IRQCHIP \(id)", &chip)
        return chip
    }

    /// Checks `state` against this VM without changing anything.
    package func validate(_ state: State) throws(SystemError) {
        func bad(_ what: String) -> SystemError { .badInput("VM state: \(what)") }
        guard state.version == State.currentVersion else {
            throw bad("version \(state.version) is not supported (this build reads version \(State.currentVersion))")
        }
        let irqchip = hasIRQChip.load(ordering: .sequentiallyConsistent)
        switch (state.picMaster, state.picSlave, state.ioapic) {
        case let (master?, slave?, ioapic?):
            guard irqchip else { throw bad("it has in-kernel PICs and an IOAPIC, and this VM has no in-kernel irqchip") }
            try master.validate(elcrMask: PIC.masterELCRMask, "PIC master", bad)
            try slave.validate(elcrMask: PIC.slaveELCRMask, "PIC slave", bad)
            try ioapic.validate(bad)
        case (nil, nil, nil):
            guard !irqchip else { throw bad("it has no interrupt controller state, and this VM has an in-kernel irqchip") }
        default:
            throw bad("it needs both PICs and the IOAPIC, or none of them")
        }
        switch (state.pit, hasPIT.load(ordering: .sequentiallyConsistent)) {
        case (let pit?, true): try pit.validate(bad)
        case (nil, false): break
        case (nil, true): throw bad("it has no PIT state, and this VM has an in-kernel PIT")
        case (_?, false): throw bad("it has a PIT state, and this VM has no in-kernel PIT")
        }
    }

    /// Loads a saved state (PIT, clock, PICs, IOAPIC). `validate(_:)` runs first, so a state
    /// that does not fit changes nothing.
    package func restore(_ state: State) throws(SystemError) {
        try validate(state)
        if let pit = state.pit {
            var raw = pit.kvm
            try ioctl(clx_KVM_SET_PIT2, "KVM_SET_PIT2", &raw)
        }
        var clock = kvm_clock_data()
        clock.clock = state.clock.nanoseconds
        clock.flags = 0  // go on from the saved value (see above)
        try ioctl(clx_KVM_SET_CLOCK, "KVM_SET_CLOCK", &clock)
        if let master = state.picMaster, let slave = state.picSlave, let ioapic = state.ioapic {
            var chip = kvm_irqchip()
            chip.chip_id = UInt32(KVM_IRQCHIP_PIC_MASTER)
            chip.chip.pic = master.kvm
            try ioctl(clx_KVM_SET_IRQCHIP, "KVM_SET_IRQCHIP (PIC master)", &chip)
            chip = kvm_irqchip()
            chip.chip_id = UInt32(KVM_IRQCHIP_PIC_SLAVE)
            chip.chip.pic = slave.kvm
            try ioctl(clx_KVM_SET_IRQCHIP, "KVM_SET_IRQCHIP (PIC slave)", &chip)
            chip = kvm_irqchip()
            chip.chip_id = UInt32(KVM_IRQCHIP_IOAPIC)
            ioapic.store(into: &chip)
            try ioctl(clx_KVM_SET_IRQCHIP, "KVM_SET_IRQCHIP (IOAPIC)", &chip)
        }
    }
}

// MARK: - Codable mirrors of KVM's structures

extension KVMVirtualMachine {
    /// `struct kvm_clock_data`: kvmclock in nanoseconds, with what KVM_GET_CLOCK reported
    /// beside it (KVM_CLOCK_* flags; with KVM_CLOCK_REALTIME the host's real time and with
    /// KVM_CLOCK_HOST_TSC its TSC at that instant).
    package struct Clock: Codable, Sendable, Equatable {
        package var nanoseconds: UInt64
        package var flags: UInt32
        package var realtime: UInt64
        package var hostTSC: UInt64
    }

    /// `struct kvm_pic_state`: one 8259A (Intel 8259A data sheet; KVM's arch/x86/kvm/i8259.c).
    package struct PIC: Codable, Sendable, Equatable {
        package var lastIRR, irr, imr, isr, priorityAdd, irqBase, readRegisterSelect, poll, specialMask: UInt8
        package var initState, autoEOI, rotateOnAutoEOI, specialFullyNestedMode, init4, elcr, elcrMask: UInt8

        /// The ELCR bits that exist (PIIX: IRQ 0, 1, 2, 8 and 13 are always edge-triggered),
        /// as KVM sets them.
        static let masterELCRMask: UInt8 = 0xf8
        static let slaveELCRMask: UInt8 = 0xde

        init(_ p: kvm_pic_state) {
            lastIRR = p.last_irr; irr = p.irr; imr = p.imr; isr = p.isr; priorityAdd = p.priority_add; irqBase = p.irq_base
            readRegisterSelect = p.read_reg_select; poll = p.poll; specialMask = p.special_mask; initState = p.init_state
            autoEOI = p.auto_eoi; rotateOnAutoEOI = p.rotate_on_auto_eoi; specialFullyNestedMode = p.special_fully_nested_mode
            init4 = p.init4; elcr = p.elcr; elcrMask = p.elcr_mask
        }

        var kvm: kvm_pic_state {
            kvm_pic_state(last_irr: lastIRR, irr: irr, imr: imr, isr: isr, priority_add: priorityAdd, irq_base: irqBase,
                          read_reg_select: readRegisterSelect, poll: poll, special_mask: specialMask, init_state: initState,
                          auto_eoi: autoEOI, rotate_on_auto_eoi: rotateOnAutoEOI,
                          special_fully_nested_mode: specialFullyNestedMode, init4: init4, elcr: elcr, elcr_mask: elcrMask)
        }

        func validate(elcrMask expected: UInt8, _ name: String, _ bad: (String) -> SystemError) throws(SystemError) {
            for (field, value) in [("read_reg_select", readRegisterSelect), ("poll", poll), ("special_mask", specialMask),
                                   ("auto_eoi", autoEOI), ("rotate_on_auto_eoi", rotateOnAutoEOI),
                                   ("special_fully_nested_mode", specialFullyNestedMode), ("init4", init4)] where value > 1 {
                throw bad("\(name) \(field) is \(value) (a flag: 0 or 1)")
            }
            // i8259.c: init_state counts the ICWs still expected (0 = ready, up to ICW4 = 3).
            guard initState <= 3 else { throw bad("\(name) init_state \(initState) (0-3)") }
            guard priorityAdd <= 7 else { throw bad("\(name) priority_add \(priorityAdd) (0-7)") }
            // ICW2: the vector base's low three bits are the IRQ number.
            guard irqBase & 7 == 0 else { throw bad("\(name) vector base \(hex(irqBase)) is not a multiple of 8") }
            guard elcrMask == expected, elcr & ~expected == 0 else {
                throw bad("\(name) ELCR \(hex(elcr)) / mask \(hex(elcrMask)): only \(hex(expected)) may be level-triggered")
            }
        }
    }

    /// `struct kvm_ioapic_state` (82093AA data sheet): where it is, IOREGSEL, its id, the
    /// pins' IRR and the 24 redirection entries.
    package struct IOAPIC: Codable, Sendable, Equatable {
        package var baseAddress: UInt64
        package var ioregsel: UInt32
        package var id: UInt32
        package var irr: UInt32
        package var redirectionTable: [UInt64]

        /// Where `redirtbl` starts in a `struct kvm_irqchip`: after chip_id and pad (8 bytes),
        /// then base_address, ioregsel, id, irr and pad (24). Swift cannot import `redirtbl`, an
        /// array of anonymous unions, so the entries are read and written as bytes.
        static let redirectionTableOffset = 8 + 24

        init(_ chip: kvm_irqchip) {
            let s = chip.chip.ioapic
            baseAddress = s.base_address
            ioregsel = s.ioregsel
            id = s.id
            irr = s.irr
            // SAFETY: 32 + 24 * 8 bytes lie inside the 520-byte kvm_irqchip (offset checked
            // against the headers by KVMStateTests).
            redirectionTable = withUnsafeBytes(of: chip) { raw in
                (0..<KVMVirtualMachine.ioapicPins).map { raw.load(fromByteOffset: IOAPIC.redirectionTableOffset + 8 * $0, as: UInt64.self) }
            }
        }

        /// Needs `ioapicPins` redirection entries (validated).
        func store(into chip: inout kvm_irqchip) {
            chip.chip.ioapic.base_address = baseAddress
            chip.chip.ioapic.ioregsel = ioregsel
            chip.chip.ioapic.id = id
            chip.chip.ioapic.irr = irr
            // SAFETY: as in init; at most ioapicPins entries are written.
            withUnsafeMutableBytes(of: &chip) { raw in
                for (i, entry) in redirectionTable.prefix(KVMVirtualMachine.ioapicPins).enumerated() {
                    raw.storeBytes(of: entry, toByteOffset: IOAPIC.redirectionTableOffset + 8 * i, as: UInt64.self)
                }
            }
        }

        func validate(_ bad: (String) -> SystemError) throws(SystemError) {
            guard baseAddress == KVMVirtualMachine.ioapicBase else {
                throw bad("IOAPIC at \(hex(baseAddress)); KVM's sits at \(hex(KVMVirtualMachine.ioapicBase))")
            }
            guard redirectionTable.count == KVMVirtualMachine.ioapicPins else {
                throw bad("\(redirectionTable.count) IOAPIC redirection entries (it has \(KVMVirtualMachine.ioapicPins) pins)")
            }
            guard id < 16 else { throw bad("IOAPIC id \(id) (4 bits)") }
            guard ioregsel <= 0xff else { throw bad("IOAPIC IOREGSEL \(hex(ioregsel)) (8 bits)") }
            guard irr >> KVMVirtualMachine.ioapicPins == 0 else { throw bad("IOAPIC IRR \(hex(irr)) names pins past 23") }
        }
    }

    /// `struct kvm_pit_state2`: the 8254's three channels and the HPET-legacy / speaker flags.
    /// The channels' load times are the host's clock and do not travel: KVM_SET_PIT2 reloads
    /// each counter from `count` at the moment of the restore.
    package struct PIT: Codable, Sendable, Equatable {
        package struct Channel: Codable, Sendable, Equatable {
            package var count: UInt32
            package var latchedCount: UInt16
            package var countLatched, statusLatched, status, readState, writeState, writeLatch, rwMode, mode, bcd, gate: UInt8

            init(_ c: kvm_pit_channel_state) {
                count = c.count; latchedCount = c.latched_count; countLatched = c.count_latched; statusLatched = c.status_latched
                status = c.status; readState = c.read_state; writeState = c.write_state; writeLatch = c.write_latch
                rwMode = c.rw_mode; mode = c.mode; bcd = c.bcd; gate = c.gate
            }

            var kvm: kvm_pit_channel_state {
                kvm_pit_channel_state(count: count, latched_count: latchedCount, count_latched: countLatched,
                                      status_latched: statusLatched, status: status, read_state: readState,
                                      write_state: writeState, write_latch: writeLatch, rw_mode: rwMode, mode: mode,
                                      bcd: bcd, gate: gate, count_load_time: 0)
            }
        }

        package var channels: [Channel]
        package var flags: UInt32

        init(_ s: kvm_pit_state2) {
            channels = [Channel(s.channels.0), Channel(s.channels.1), Channel(s.channels.2)]
            flags = s.flags
        }

        /// Needs three channels (validated).
        var kvm: kvm_pit_state2 {
            var s = kvm_pit_state2()
            s.channels = (channels[0].kvm, channels[1].kvm, channels[2].kvm)
            s.flags = flags
            return s
        }

        static let knownFlags = UInt32(KVM_PIT_FLAGS_HPET_LEGACY | KVM_PIT_FLAGS_SPEAKER_DATA_ON)

        func validate(_ bad: (String) -> SystemError) throws(SystemError) {
            guard channels.count == 3 else { throw bad("\(channels.count) PIT channels (the 8254 has 3)") }
            guard flags & ~PIT.knownFlags == 0 else { throw bad("PIT flags \(hex(flags)) (known: \(hex(PIT.knownFlags)))") }
            for (n, c) in channels.enumerated() {
                // i8254.c: a count of 0 is loaded as 0x10000; modes 6 and 7 are stored as 2 and 3;
                // 0xff is the "never programmed" mode of a reset channel.
                guard c.count <= 0x1_0000 else { throw bad("PIT channel \(n) count \(hex(c.count)) (at most 0x10000)") }
                guard c.mode <= 5 || c.mode == 0xff else { throw bad("PIT channel \(n) mode \(c.mode) (0-5)") }
                guard c.rwMode <= 3 else { throw bad("PIT channel \(n) access mode \(c.rwMode) (0-3)") }
                guard c.readState <= 4, c.writeState <= 4, c.countLatched <= 4 else {
                    throw bad("PIT channel \(n) read/write state \(c.readState)/\(c.writeState)/\(c.countLatched) (0-4)")
                }
                guard c.bcd <= 1, c.gate <= 1, c.statusLatched <= 1 else {
                    throw bad("PIT channel \(n) BCD/gate/status-latched \(c.bcd)/\(c.gate)/\(c.statusLatched) (flags: 0 or 1)")
                }
            }
        }
    }
}
