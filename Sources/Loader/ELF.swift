import SystemSupport

/// A parsed ELF64 little-endian executable (System V gABI, "ELF-64 Object File Format"):
/// what the loaders need — segments to place, the entry point, symbols (riscv-tests'
/// `tohost`/`fromhost`), notes (PVH entry). The file is untrusted input: every offset and
/// size is checked against the file before use, and a bad file is a clear error.
public struct ELFFile: Sendable {
    public struct Segment: Sendable, Equatable {
        /// Where the segment goes (p_paddr: physical, as QEMU's loaders use).
        public let physicalAddress: UInt64
        public let virtualAddress: UInt64
        /// Bytes from the file; the rest up to `memorySize` is zero.
        public let fileOffset: Int
        public let fileSize: Int
        public let memorySize: UInt64
    }

    public struct Symbol: Sendable, Equatable {
        public let name: String
        public let value: UInt64
        public let size: UInt64
    }

    public let machine: UInt16
    public let entry: UInt64
    public let segments: [Segment]
    public let symbols: [Symbol]
    /// (type, name, descriptor) of every note in PT_NOTE segments.
    public let notes: [(type: UInt32, name: String, descriptor: [UInt8])]
    public let bytes: [UInt8]

    public static let machineRISCV: UInt16 = 243
    public static let machineX86_64: UInt16 = 62

    /// Whether `bytes` start with the ELF magic.
    public static func isELF(_ bytes: [UInt8]) -> Bool { bytes.count >= 4 && bytes[0..<4] == [0x7f, 0x45, 0x4c, 0x46] }

    public init(bytes: [UInt8], name: String) throws(SystemError) {
        self.bytes = bytes
        var r = Reader(bytes: bytes, name: name)
        guard ELFFile.isELF(bytes) else { throw r.error("not an ELF file (no \\x7fELF magic)") }
        guard try r.u8(at: 4) == 2 else { throw r.error("not a 64-bit ELF file (EI_CLASS is not ELFCLASS64)") }
        guard try r.u8(at: 5) == 1 else { throw r.error("not a little-endian ELF file") }
        let type = try r.u16(at: 16)
        guard type == 2 || type == 3 else { throw r.error("ELF type \(type) is not an executable (ET_EXEC or ET_DYN)") }
        machine = try r.u16(at: 18)
        entry = try r.u64(at: 24)
        let phoff = try r.offset(r.u64(at: 32))
        let shoff = try r.offset(r.u64(at: 40))
        let phentsize = Int(try r.u16(at: 54))
        let phnum = Int(try r.u16(at: 56))
        let shentsize = Int(try r.u16(at: 58))
        let shnum = Int(try r.u16(at: 60))
        guard phnum == 0 || phentsize >= 56 else { throw r.error("program header entries are too small (\(phentsize) bytes)") }

        var segments: [Segment] = []
        var notes: [(UInt32, String, [UInt8])] = []
        for i in 0..<phnum {
            let h = phoff + i * phentsize
            let ptype = try r.u32(at: h)
            let offset = try r.offset(r.u64(at: h + 8))
            let vaddr = try r.u64(at: h + 16)
            let paddr = try r.u64(at: h + 24)
            let filesz = try r.offset(r.u64(at: h + 32))
            let memsz = try r.u64(at: h + 40)
            try r.checkRange(offset, filesz, what: "segment \(i)")
            switch ptype {
            case 1:  // PT_LOAD
                guard UInt64(filesz) <= memsz else { throw r.error("segment \(i) has p_filesz > p_memsz") }
                guard paddr.addingReportingOverflow(memsz).overflow == false else {
                    throw r.error("segment \(i) wraps around the address space")
                }
                if memsz > 0 {
                    segments.append(Segment(physicalAddress: paddr, virtualAddress: vaddr, fileOffset: offset,
                                            fileSize: filesz, memorySize: memsz))
                }
            case 4:  // PT_NOTE
                notes += try ELFFile.parseNotes(&r, offset: offset, size: filesz)
            default:
                break
            }
        }
        guard !segments.isEmpty else { throw r.error("no loadable segments") }
        self.segments = segments
        self.notes = notes

        // Symbols: the first SHT_SYMTAB and the string table it links to. Optional.
        var symbols: [Symbol] = []
        if shoff != 0 && shnum > 0 && shentsize >= 64 {
            for i in 0..<shnum {
                let h = shoff + i * shentsize
                guard try r.u32(at: h + 4) == 2 else { continue }  // SHT_SYMTAB
                let symOffset = try r.offset(r.u64(at: h + 24))
                let symSize = try r.offset(r.u64(at: h + 32))
                let link = Int(try r.u32(at: h + 40))
                let entsize = try r.offset(r.u64(at: h + 56))
                guard link < shnum, entsize >= 24 else { throw r.error("malformed symbol table") }
                try r.checkRange(symOffset, symSize, what: "symbol table")
                let strHeader = shoff + link * shentsize
                let strOffset = try r.offset(r.u64(at: strHeader + 24))
                let strSize = try r.offset(r.u64(at: strHeader + 32))
                try r.checkRange(strOffset, strSize, what: "string table")
                for s in 0..<(symSize / entsize) {
                    let e = symOffset + s * entsize
                    let nameOffset = Int(try r.u32(at: e))
                    guard nameOffset < strSize else { continue }
                    let name = r.cString(at: strOffset + nameOffset, limit: strOffset + strSize)
                    guard !name.isEmpty else { continue }
                    symbols.append(Symbol(name: name, value: try r.u64(at: e + 8), size: try r.u64(at: e + 16)))
                }
                break
            }
        }
        self.symbols = symbols
    }

    public func symbol(named name: String) -> Symbol? { symbols.first { $0.name == name } }

    private static func parseNotes(_ r: inout Reader, offset: Int, size: Int) throws(SystemError) -> [(UInt32, String, [UInt8])] {
        var notes: [(UInt32, String, [UInt8])] = []
        var p = offset
        let end = offset + size
        while p + 12 <= end {
            let namesz = Int(try r.u32(at: p))
            let descsz = Int(try r.u32(at: p + 4))
            let type = try r.u32(at: p + 8)
            let nameStart = p + 12
            let descStart = nameStart + (namesz + 3) & ~3
            let next = descStart + (descsz + 3) & ~3
            guard namesz <= size, descsz <= size, next <= end else { throw r.error("malformed note") }
            let name = r.cString(at: nameStart, limit: nameStart + namesz)
            notes.append((type, name, Array(r.bytes[descStart..<(descStart + descsz)])))
            p = next
        }
        return notes
    }
}

/// Bounds-checked little-endian reads from an untrusted byte array.
struct Reader {
    let bytes: [UInt8]
    let name: String

    func error(_ message: String) -> SystemError { .badInput("\(name): \(message)") }

    func checkRange(_ offset: Int, _ count: Int, what: String) throws(SystemError) {
        guard offset >= 0, count >= 0, offset <= bytes.count, count <= bytes.count - offset else {
            throw error("\(what) (offset \(offset), \(count) bytes) lies outside the \(bytes.count)-byte file")
        }
    }

    /// A file offset or size that must fit the file's index range.
    func offset(_ value: UInt64) throws(SystemError) -> Int {
        guard value <= UInt64(bytes.count) else { throw error("offset or size \(value) is beyond the end of the file") }
        return Int(value)
    }

    func u8(at o: Int) throws(SystemError) -> UInt8 {
        try checkRange(o, 1, what: "field")
        return bytes[o]
    }

    func u16(at o: Int) throws(SystemError) -> UInt16 { UInt16(try le(at: o, 2)) }
    func u32(at o: Int) throws(SystemError) -> UInt32 { UInt32(try le(at: o, 4)) }
    func u64(at o: Int) throws(SystemError) -> UInt64 { try le(at: o, 8) }

    private func le(at o: Int, _ n: Int) throws(SystemError) -> UInt64 {
        try checkRange(o, n, what: "field")
        var v: UInt64 = 0
        for i in 0..<n { v |= UInt64(bytes[o + i]) << (8 * UInt64(i)) }
        return v
    }

    func cString(at start: Int, limit: Int) -> String {
        var end = start
        while end < min(limit, bytes.count) && bytes[end] != 0 { end += 1 }
        return String(decoding: bytes[start..<end], as: UTF8.self)
    }
}
