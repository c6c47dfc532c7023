import CLinux
import GuestMemory
import SystemSupport

/// Virtual memory (Privileged §4.3-4.5: Sv39, Sv48, Sv57), physical memory protection
/// (§3.7) and the software TLB in front of them.
///
/// A and D bits are updated by the hart itself, atomically, when an access needs them (the
/// scheme Privileged 1.12 §4.3.1 permits besides raising a page fault; Linux handles both).
/// Page tables are read through `PhysicalMemory`, so a walk into MMIO or outside RAM is an
/// access fault of the original access type, never a host crash.
extension Hart {
    package static let pageSize: UInt64 = 4096
    /// The data key of S-mode with mstatus.SUM set (privilege 2 is otherwise unused).
    package static let supervisorUserKey: UInt64 = 2

    // PTE bits (§4.3.1).
    static let pteV: UInt64 = 1 << 0
    static let pteR: UInt64 = 1 << 1
    static let pteW: UInt64 = 1 << 2
    static let pteX: UInt64 = 1 << 3
    static let pteU: UInt64 = 1 << 4
    static let pteA: UInt64 = 1 << 6
    static let pteD: UInt64 = 1 << 7

    // MARK: - Translation

    /// Translates `vaddr` for `access` at privilege `key` (0 U, 1 S, 2 S with SUM, 3 M). Returns the physical
    /// address; throws the page fault or access fault the spec requires.
    /// `debug`: a look-up for the monitor or a debugger, which must not set A/D bits.
    func translate(_ vaddr: UInt64, _ access: AccessType, key: UInt64, debug: Bool = false) throws(Trap) -> UInt64 {
        let s = state
        let satp = s.pointee.satp
        let mode = satp >> 60
        if key == 3 || mode == 0 { return vaddr }
        let levels: Int
        switch mode {
        case 8: levels = 3
        case 9: levels = 4
        case 10: levels = 5
        default: return vaddr  // satp writes keep only supported modes
        }
        // The address must be sign-extended from its top virtual bit (§4.4.1).
        let vaBits = UInt64(12 + 9 * levels)
        let high = Int64(bitPattern: vaddr) >> (vaBits - 1)
        guard high == 0 || high == -1 else { throw Trap(access.pageFault, tval: vaddr) }

        var table = (satp & ((1 << 44) - 1)) << 12
        var level = levels - 1
        while true {
            let vpn = (vaddr >> (12 + 9 * UInt64(level))) & 0x1ff
            let pteAddress = table + vpn * 8
            let pte = try readPageTableEntry(pteAddress, access: access, vaddr: vaddr)
            // Reserved bits 63:54 (no Svpbmt/Svnapot here) must be zero; V=0 or W without R
            // is invalid (§4.3.2 step 3).
            if pte & Hart.pteV == 0 || (pte & Hart.pteR == 0 && pte & Hart.pteW != 0) || pte >> 54 != 0 {
                throw Trap(access.pageFault, tval: vaddr)
            }
            let ppn = (pte >> 10) & ((1 << 44) - 1)
            if pte & (Hart.pteR | Hart.pteX) == 0 {
                // A pointer to the next level (step 4); A/D/U must be zero in non-leaf PTEs.
                guard level > 0, pte & (Hart.pteA | Hart.pteD | Hart.pteU) == 0 else {
                    throw Trap(access.pageFault, tval: vaddr)
                }
                table = ppn << 12
                level -= 1
                continue
            }
            try checkLeafPermissions(pte, access, key: key, vaddr: vaddr)
            // A misaligned superpage is a page fault (step 6).
            let superpageMask: UInt64 = (1 << (9 * UInt64(level))) - 1
            if ppn & superpageMask != 0 { throw Trap(access.pageFault, tval: vaddr) }
            // Step 7: set A, and D on a write, atomically with respect to the PTE.
            let needed = Hart.pteA | (access == .write ? Hart.pteD : 0)
            if pte & needed != needed && !debug {
                try updatePageTableEntry(pteAddress, old: pte, new: pte | needed, access: access, vaddr: vaddr)
            }
            let offsetMask: UInt64 = (1 << (12 + 9 * UInt64(level))) - 1
            let physical = (ppn << 12 & ~offsetMask) | (vaddr & offsetMask)
            DebugLog.log(.mmu, "riscv mmu: vaddr \(hex(vaddr)) -> paddr \(hex(physical)) (\(access), priv \(key), level \(level))")
            return physical
        }
    }

    private func checkLeafPermissions(_ pte: UInt64, _ access: AccessType, key: UInt64, vaddr: UInt64) throws(Trap) {
        let mstatus = state.pointee.mstatus
        let userPage = pte & Hart.pteU != 0
        if key == 0 {
            guard userPage else { throw Trap(access.pageFault, tval: vaddr) }
        } else if userPage {
            // S-mode: never execute user pages; load/store them only with SUM (§4.3.1), which
            // the data key carries.
            guard access != .execute, key == Hart.supervisorUserKey else { throw Trap(access.pageFault, tval: vaddr) }
        }
        let allowed: Bool
        switch access {
        case .read: allowed = pte & Hart.pteR != 0 || (mstatus & MStatus.mxr != 0 && pte & Hart.pteX != 0)
        case .write: allowed = pte & Hart.pteW != 0
        case .execute: allowed = pte & Hart.pteX != 0
        }
        guard allowed else { throw Trap(access.pageFault, tval: vaddr) }
    }

    /// The host address of the PTE at physical `address` if PMP lets S-mode (page-table
    /// accesses are S-mode accesses, §3.7.1) `access` it and it is RAM. Pages PMP allows
    /// whole for both reads and writes are remembered in `pageTablePages` (until the next
    /// full TLB flush, which every PMP write makes): a walk reads three to five PTEs, and
    /// asking PMP and the RAM map for each was most of a walk's time.
    private func pageTableEntryPointer(_ address: UInt64, access: AccessType) -> UnsafeMutableRawPointer? {
        let page = address & ~(Hart.pageSize - 1)
        let cached = pageTablePages + Int((page >> 12) & UInt64(Hart.pageTablePagesSize - 1))
        if cached.pointee.page == page, let host = cached.pointee.host { return host + Int(address - page) }
        guard pmpAllows(address, size: 8, access: access, key: 1),
              let host = memory.ram.hostPointer(at: GuestAddress(address), count: 8) else { return nil }
        if pmpAllows(page, size: Hart.pageSize, access: .read, key: 1) && pmpAllows(page, size: Hart.pageSize, access: .write, key: 1),
           let hostPage = memory.ram.hostPointer(at: GuestAddress(page), count: Hart.pageSize) {
            cached.pointee = PageTablePage(page: page, host: hostPage)
        }
        return host
    }

    /// Reads a PTE from RAM, after PMP.
    private func readPageTableEntry(_ address: UInt64, access: AccessType, vaddr: UInt64) throws(Trap) -> UInt64 {
        guard let host = pageTableEntryPointer(address, access: .read) else { throw Trap(access.accessFault, tval: vaddr) }
        return clx_atomic_load_u64(host)
    }

    private func updatePageTableEntry(_ address: UInt64, old: UInt64, new: UInt64, access: AccessType, vaddr: UInt64) throws(Trap) {
        guard let host = pageTableEntryPointer(address, access: .write) else { throw Trap(access.accessFault, tval: vaddr) }
        // If another hart changed the PTE meanwhile, the walk is redone by faulting back into
        // the same instruction: a retry the guest cannot tell from a TLB miss.
        if clx_atomic_cas_u64(host, old, new) != old {
            throw Trap(access.pageFault, tval: vaddr)
        }
        memory.ram.noteWrite(at: GuestAddress(address), count: 8)
    }

    /// The physical address the current data privilege (S or U, with MPRV as the hart has it)
    /// reaches at `vaddr`, for the monitor's `x` and debuggers; nil when it does not map.
    /// Changes nothing: no A/D updates, no TLB fill.
    public func debugTranslate(_ vaddr: UInt64) -> UInt64? {
        try? translate(vaddr, .read, key: state.pointee.dataKey, debug: true)
    }

    // MARK: - PMP (§3.7)

    /// Whether PMP lets privilege `key` do `access` on `[address, address + size)`.
    func pmpAllows(_ address: UInt64, size: UInt64, access: AccessType, key: UInt64) -> Bool {
        // Only the entries that can match, decoded (`pmpRegions`), lowest index first (the
        // priority order). Every TLB fill checks PMP, so this loop is hot.
        let last = address &+ size &- 1
        for i in 0..<pmpRegionCount {
            let region = pmpRegions[i]
            let (base, top, cfg) = (region.base, region.top, region.cfg)
            let overlaps = address < top && last >= base
            if !overlaps { continue }
            // Partial matches fail (§3.7.1: the entry must cover all bytes of the access).
            guard address >= base && last < top else { return false }
            let locked = cfg & 0x80 != 0
            if key == 3 && !locked { return true }
            switch access {
            case .read: return cfg & 1 != 0
            case .write: return cfg & 2 != 0
            case .execute: return cfg & 4 != 0
            }
        }
        // No match: M-mode succeeds; S/U fail because PMP entries are implemented.
        return key == 3
    }

    /// Rebuilds `pmpRegions` from the PMP CSRs: the entries whose A field (cfg bits 4:3) is
    /// not OFF and whose range is not empty, lowest index first.
    func decodePMP() {
        let s = state
        pmpRegionCount = 0
        for i in 0..<16 where s.pointee.pmpcfg[i] & 0x18 != 0 {
            let cfg = s.pointee.pmpcfg[i]
            // TOR's bottom is the previous entry's address, whatever that entry's mode.
            let previousTop = i == 0 ? 0 : s.pointee.pmpaddr[i - 1] << 2
            let (base, top) = pmpRange(index: i, cfg: cfg, previousTop: previousTop)
            guard base < top else { continue }
            pmpRegions[pmpRegionCount] = PMPRegion(base: base, top: top, cfg: cfg)
            pmpRegionCount += 1
        }
    }

    /// The byte range `[base, top)` entry `index` covers (A = OFF/TOR/NA4/NAPOT).
    func pmpRange(index: Int, cfg: UInt8, previousTop: UInt64) -> (UInt64, UInt64) {
        let addr = state.pointee.pmpaddr[index]
        switch (cfg >> 3) & 3 {
        case 1: return (previousTop, addr << 2)  // TOR
        case 2: return (addr << 2, (addr << 2) &+ 4)  // NA4
        case 3:  // NAPOT: trailing ones give the size
            let ones = UInt64((~addr).trailingZeroBitCount)
            if ones >= 54 { return (0, .max) }
            let size: UInt64 = 1 << (ones + 3)
            let base = (addr & ~((1 << ones) - 1)) << 2
            return (base, base &+ size)
        default: return (0, 0)
        }
    }

    /// Whether PMP gives the same answer for every byte of the 4 KiB page at `page`, so the
    /// translation may be cached in the TLB.
    func pmpUniform(page: UInt64, access: AccessType, key: UInt64) -> Bool {
        guard pmpAllows(page, size: Hart.pageSize, access: access, key: key) else { return false }
        // Allowed for the whole page means one entry (or none, in M-mode) covers it all.
        return true
    }

    // MARK: - Data access

    /// The TLB entry translating `vaddr` for `access` under `key`, when it is cached and RAM.
    @inline(__always)
    func tlbEntry(_ vaddr: UInt64, _ access: AccessType, key: UInt64) -> UnsafeMutablePointer<TLBEntry>? {
        let vpn = vaddr >> 12
        let entry = tlb + access.rawValue * Hart.tlbSize + Int(vpn & UInt64(Hart.tlbSize - 1))
        guard entry.pointee.tag == (vpn << 2 | key), entry.pointee.addend != 0 else { return nil }
        return entry
    }

    /// Host pointer for a naturally aligned access of `size` bytes at `vaddr` that hits the TLB.
    @inline(__always)
    func tlbLookup(_ vaddr: UInt64, _ access: AccessType, key: UInt64) -> UnsafeMutableRawPointer? {
        tlbEntry(vaddr, access, key: key)?.pointee.host(vaddr)
    }

    /// Translates, checks PMP and, for RAM pages PMP treats uniformly, fills the TLB.
    /// Returns the physical address and the host pointer when it is RAM.
    package func resolve(_ vaddr: UInt64, size: UInt64, _ access: AccessType, key: UInt64) throws(Trap) -> (UInt64, UnsafeMutableRawPointer?) {
        // Watchpoints are checked before the access does anything, so the instruction can be
        // restarted after the debugger has looked (GDB's non-steppable watchpoints).
        if state.pointee.checkWatchpoints && access != .execute { try checkWatchpoints(vaddr, size: size, access) }
        let physical = try translate(vaddr, access, key: key)
        guard pmpAllows(physical, size: size, access: access, key: key) else {
            throw Trap(access.accessFault, tval: vaddr)
        }
        let page = physical & ~(Hart.pageSize - 1)
        guard let hostPage = memory.ram.hostPointer(at: GuestAddress(page), count: Hart.pageSize) else {
            // Not a whole RAM page: MMIO, or RAM whose page is cut (never on our boards).
            return (physical, memory.ram.hostPointer(at: GuestAddress(physical), count: size))
        }
        // With watchpoints set, data pages stay out of the TLB so every access comes here.
        // Writes to pages holding code go to the code-page write cache instead, so that
        // `storeSlow` notes them (CodePages).
        if pmpUniform(page: page, access: access, key: key) && !(state.pointee.checkWatchpoints && access != .execute) {
            let vpn = vaddr >> 12
            // Stores through the entry about to be cached are not seen one by one: a
            // migration counts the page written now (DirtyBitmap).
            if access == .write { memory.ram.markDirtyForWriteTranslation(GuestAddress(page)) }
            if access == .write && memory.ram.isCodePage(GuestAddress(page)) {
                let code = codeWriteTLB + Int(vpn & UInt64(Hart.codeWriteTLBSize - 1))
                code.pointee.tag = vpn << 2 | key
                code.pointee.addend = Int(bitPattern: hostPage) &- Int(bitPattern: UInt(vaddr & ~(Hart.pageSize - 1)))
                code.pointee.generation = memory.ram.codePageGenerationPointer(GuestAddress(page))
                return (physical, hostPage + Int(physical - page))
            }
            let entry = tlb + access.rawValue * Hart.tlbSize + Int(vpn & UInt64(Hart.tlbSize - 1))
            entry.pointee.addend = Int(bitPattern: hostPage) &- Int(bitPattern: UInt(vaddr & ~(Hart.pageSize - 1)))
            physicalPage(of: entry).pointee = page
            if access == .write {
                // Publish the tag, then look again: a page that became code in between was
                // scanned by `dropWriteTranslations` perhaps before this entry existed.
                let tag = UnsafeMutableRawPointer(entry) + TLBEntry.tagOffset
                clx_atomic_store_u64(tag, vpn << 2 | key)
                if memory.ram.isCodePage(GuestAddress(page)) { clx_atomic_store_u64(tag, .max) }
            } else {
                entry.pointee.tag = vpn << 2 | key
            }
        }
        return (physical, hostPage + Int(physical - page))
    }

    /// Loads `size` (1, 2, 4, 8) bytes, zero-extended, at `vaddr` with the data privilege.
    /// Misaligned loads are done in hardware (byte by byte across a page boundary), as QEMU
    /// and Linux expect of a hart that does not trap them.
    @inline(__always)
    func load(_ vaddr: UInt64, size: Int) throws(Trap) -> UInt64 {
        if let value = loadIfMapped(vaddr, size: size) { return value }
        return try loadSlow(vaddr, size: size, key: state.pointee.dataKey)
    }

    /// `load`'s fast path alone: the value when the access is naturally aligned and hits the
    /// TLB, else nil (the caller then takes `load`, which does the rest). No call, no trap.
    @inline(__always)
    func loadIfMapped(_ vaddr: UInt64, size: Int) -> UInt64? {
        guard vaddr & UInt64(size - 1) == 0, let p = tlbLookup(vaddr, .read, key: state.pointee.dataKey) else {
            return nil
        }
        switch size {
        case 1: return UInt64(p.load(as: UInt8.self))
        case 2: return UInt64(UInt16(littleEndian: p.load(as: UInt16.self)))
        case 4: return UInt64(UInt32(littleEndian: p.load(as: UInt32.self)))
        default: return UInt64(littleEndian: p.load(as: UInt64.self))
        }
    }

    package func loadSlow(_ vaddr: UInt64, size: Int, key: UInt64) throws(Trap) -> UInt64 {
        if (vaddr & (Hart.pageSize - 1)) + UInt64(size) > Hart.pageSize {
            var value: UInt64 = 0
            for i in 0..<size {
                value |= try loadSlow(vaddr &+ UInt64(i), size: 1, key: key) << (8 * UInt64(i))
            }
            return value
        }
        let (physical, host) = try resolve(vaddr, size: UInt64(size), .read, key: key)
        if let host { return Hart.loadHost(host, size: size) }
        guard let value = memory.mmio.read(at: GuestAddress(physical), size: size) else {
            throw Trap(.loadAccessFault, tval: vaddr)
        }
        return size == 8 ? value : value & ((1 << (8 * UInt64(size))) - 1)
    }

    /// Stores the low `size` bytes of `value` at `vaddr` with the data privilege.
    @inline(__always)
    func store(_ vaddr: UInt64, _ value: UInt64, size: Int) throws(Trap) {
        if storeIfMapped(vaddr, value, size: size) { return }
        try storeSlow(vaddr, value, size: size, key: state.pointee.dataKey)
    }

    /// `store`'s fast paths alone, with no call: stores and returns true when the access is
    /// naturally aligned and hits the write TLB, or hits the code-page write cache; else does
    /// nothing and returns false.
    @inline(__always)
    func storeIfMapped(_ vaddr: UInt64, _ value: UInt64, size: Int) -> Bool {
        let key = state.pointee.dataKey
        if vaddr & UInt64(size - 1) == 0, let p = tlbLookup(vaddr, .write, key: key) {
            Hart.storeHost(p, value, size: size)
            return true
        }
        return storeToCodePage(vaddr, value, size: size, key: key)
    }

    /// A store to a page holding code, through the code-page write cache (never in the write
    /// TLB, so that it is noted): stores, moves the page's write generation and returns true
    /// on a hit that does not cross the page; else returns false.
    @inline(__always)
    private func storeToCodePage(_ vaddr: UInt64, _ value: UInt64, size: Int, key: UInt64) -> Bool {
        let vpn = vaddr >> 12
        let code = codeWriteTLB + Int(vpn & UInt64(Hart.codeWriteTLBSize - 1))
        guard code.pointee.tag == vpn << 2 | key && (vaddr & (Hart.pageSize - 1)) + UInt64(size) <= Hart.pageSize,
              let generation = code.pointee.generation else { return false }
        // SAFETY: the entry was filled by `resolve` from a RAM page this hart may write, and is
        // dropped with the rest of the write TLB whenever that could change; the host address
        // stays inside that page (the access does not cross it).
        let host = UnsafeMutableRawPointer(bitPattern: Int(bitPattern: UInt(vaddr)) &+ code.pointee.addend)!
        Hart.storeHost(host, value, size: size)
        _ = clx_atomic_fetch_add_u32(generation, 1)
        return true
    }

    package func storeSlow(_ vaddr: UInt64, _ value: UInt64, size: Int, key: UInt64) throws(Trap) {
        if storeToCodePage(vaddr, value, size: size, key: key) { return }
        if (vaddr & (Hart.pageSize - 1)) + UInt64(size) > Hart.pageSize {
            // Translate both pages before writing anything, so a fault leaves memory unchanged.
            let split = Int(Hart.pageSize - (vaddr & (Hart.pageSize - 1)))
            _ = try resolve(vaddr, size: UInt64(split), .write, key: key)
            _ = try resolve(vaddr &+ UInt64(split), size: UInt64(size - split), .write, key: key)
            for i in 0..<size {
                try storeSlow(vaddr &+ UInt64(i), value >> (8 * UInt64(i)), size: 1, key: key)
            }
            return
        }
        let (physical, host) = try resolve(vaddr, size: UInt64(size), .write, key: key)
        if let host {
            Hart.storeHost(host, value, size: size)
            memory.ram.noteWrite(at: GuestAddress(physical), count: UInt64(size))
            return
        }
        guard memory.mmio.write(at: GuestAddress(physical), value: value, size: size) else {
            throw Trap(.storeAccessFault, tval: vaddr)
        }
        // A device store may make an interrupt pending for this hart (a self-IPI through
        // msip, a timer compare in the past): end the chunk, so that the run loop looks at
        // interrupts before the next instruction, as a hart takes one at once.
        state.pointee.endChunk = true
    }

    @inline(__always)
    static func loadHost(_ p: UnsafeMutableRawPointer, size: Int) -> UInt64 {
        switch size {
        case 1: return UInt64(p.load(as: UInt8.self))
        case 2: return UInt64(UInt16(littleEndian: p.loadUnaligned(as: UInt16.self)))
        case 4: return UInt64(UInt32(littleEndian: p.loadUnaligned(as: UInt32.self)))
        default: return UInt64(littleEndian: p.loadUnaligned(as: UInt64.self))
        }
    }

    @inline(__always)
    static func storeHost(_ p: UnsafeMutableRawPointer, _ value: UInt64, size: Int) {
        switch size {
        case 1: p.storeBytes(of: UInt8(truncatingIfNeeded: value), as: UInt8.self)
        case 2: p.storeBytes(of: UInt16(truncatingIfNeeded: value).littleEndian, as: UInt16.self)
        case 4: p.storeBytes(of: UInt32(truncatingIfNeeded: value).littleEndian, as: UInt32.self)
        default: p.storeBytes(of: value.littleEndian, as: UInt64.self)
        }
    }

    /// Host pointer for an atomic access (LR/SC/AMO): naturally aligned (else a misaligned
    /// trap), RAM only (an AMO on a device is an access fault: our MMIO regions do not support
    /// atomics, Privileged §3.6.3), with store permission unless it is an LR.
    func atomicPointer(_ vaddr: UInt64, size: Int, forLoadReserved: Bool) throws(Trap) -> (UnsafeMutableRawPointer, UInt64) {
        let access: AccessType = forLoadReserved ? .read : .write
        if vaddr & UInt64(size - 1) != 0 {
            throw Trap(forLoadReserved ? .loadAddressMisaligned : .storeAddressMisaligned, tval: vaddr)
        }
        let key = state.pointee.dataKey
        // A TLB hit, as for loads and stores: a walk per AMO was most of the time the JIT
        // spent on Linux's atomics (perf, modprobe). A write entry exists only for a page
        // already counted dirty and not holding code, as for a store.
        // SAFETY: the entry maps this virtual page to RAM (`resolve` filled it for a whole
        // RAM page PMP treats uniformly), and the access is aligned within the page.
        if let entry = tlbEntry(vaddr, access, key: key), let host = entry.pointee.host(vaddr) {
            return (host, physicalPage(of: entry).pointee | (vaddr & (Hart.pageSize - 1)))
        }
        let (physical, host) = try resolve(vaddr, size: UInt64(size), access, key: key)
        guard let host else { throw Trap(access.accessFault, tval: vaddr) }
        return (host, physical)
    }

    // MARK: - Instruction fetch

    /// The decoded-instruction slots for the page holding `vaddr`, translated for execution at
    /// the current privilege (through the TLB, filling it on a miss).
    func decodedPageForFetch(_ vaddr: UInt64) throws(Trap) -> UnsafeMutablePointer<DecodedInstruction> {
        let key = state.pointee.fetchKey
        if let entry = tlbEntry(vaddr, .execute, key: key) { return decodedPage(physicalPage(of: entry).pointee) }
        let (physical, host) = try resolve(vaddr, size: 2, .execute, key: key)
        guard host != nil else { throw Trap(.instructionAccessFault, tval: vaddr) }
        return decodedPage(physical & ~(Hart.pageSize - 1))
    }

    /// Fetches 16 bits of instruction at `vaddr` (2-byte aligned) at the current privilege.
    @inline(__always)
    func fetch16(_ vaddr: UInt64) throws(Trap) -> UInt16 {
        let key = state.pointee.fetchKey
        if let p = tlbLookup(vaddr, .execute, key: key) {
            return UInt16(littleEndian: p.load(as: UInt16.self))
        }
        let (_, host) = try resolve(vaddr, size: 2, .execute, key: key)
        // Instructions run only from RAM (the boot ROM is RAM-backed on our boards).
        guard let host else { throw Trap(.instructionAccessFault, tval: vaddr) }
        return UInt16(littleEndian: host.load(as: UInt16.self))
    }
}
