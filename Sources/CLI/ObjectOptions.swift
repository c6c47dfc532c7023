import GuestMemory
import QMP
import SystemSupport

extension QemuOpts {
    /// An option's value in either of QEMU's syntaxes: `key=value,...` (with `impliedKey` for
    /// a leading bare word) or, when it starts with `{`, a JSON object, as libvirt writes
    /// `-object`, `-device`, `-netdev` and `-audiodev` (QEMU's keyval/QAPI visitor). JSON
    /// members become keys: strings as written, numbers in decimal, booleans on/off, nested
    /// objects as dotted keys (`{"addr":{"type":"inet"}}` is `addr.type=inet`), lists as a
    /// `repeatable` key given once per element (`"hostfwd":[{"str":"tcp::2222-:22"}]`, the
    /// String wrapper QAPI uses in lists, is `hostfwd=tcp::2222-:22`), null as an empty value.
    static func parse(jsonOrKeyval text: String, impliedKey: String?, option: String, repeatable: Set<String> = []) throws(SystemError) -> QemuOpts {
        guard text.hasPrefix("{") else { return try QemuOpts(parsing: text, impliedKey: impliedKey, option: option, repeatable: repeatable) }
        let value: JSONValue
        do { value = try JSONParser.parse(text) } catch {
            throw .configuration("\(option): invalid JSON: \(error)")
        }
        guard case .object(let object) = value else { throw .configuration("\(option): the JSON form must be an object") }
        var entries: [Entry] = []
        func scalar(_ value: JSONValue, key: String) throws(SystemError) -> String {
            switch value {
            case .string(let s): return s
            case .int(let v): return String(v)
            case .uint(let v): return String(v)
            case .bool(let b): return b ? "on" : "off"
            case .object(let o) where o.count == 1 && o["str"]?.stringValue != nil: return o["str"]?.stringValue ?? ""
            case .null: return ""  // QAPI's "or null" alternates (-blockdev backing: null): the empty value
            default:
                throw .configuration("\(option): '\(key)' takes a \(value.typeName == "number" ? "whole number" : "string, number or boolean"), not \(value.typeName)")
            }
        }
        func flatten(_ object: JSONObject, prefix: String) throws(SystemError) {
            for member in object.members {
                let key = prefix + member.key
                switch member.value {
                case .object(let inner): try flatten(inner, prefix: key + ".")
                case .array(let items) where repeatable.contains(key):
                    for item in items { entries.append(Entry(key: key, value: try scalar(item, key: key))) }
                default: entries.append(Entry(key: key, value: try scalar(member.value, key: key)))
                }
            }
        }
        try flatten(object, prefix: "")
        return try QemuOpts(option: option, impliedKey: impliedKey, entries: entries, repeatable: repeatable)
    }
}

/// `-object TYPE,id=ID,...` (or its JSON form): the objects swemu creates. Each is checked
/// here in full; what refers to them (`-machine memory-backend=`, a filter's netdev) is
/// checked once the whole command line is read.
enum ObjectSpec: Sendable, Equatable {
    /// `filter-dump`: a pcap of a netdev's traffic.
    case filterDump(DumpFilterSpec)
    /// `memory-backend-ram|memfd|file`: host memory for the machine's RAM.
    case memoryBackend(MemoryBackendSpec)
    /// `secret`: data other objects take by id (libvirt's master key).
    case secret(SecretSpec)

    static let types = ["filter-dump", "memory-backend-file", "memory-backend-memfd", "memory-backend-ram", "secret"]

    var id: String {
        switch self {
        case .filterDump(let f): f.id
        case .memoryBackend(let m): m.id
        case .secret(let s): s.id
        }
    }

    init(parsing text: String) throws(SystemError) {
        let opts = try QemuOpts.parse(jsonOrKeyval: text, impliedKey: "qom-type", option: "-object")
        let type = opts.string("qom-type") ?? ""
        switch type {
        case "filter-dump": self = .filterDump(try DumpFilterSpec(opts))
        case "memory-backend-ram", "memory-backend-memfd", "memory-backend-file": self = .memoryBackend(try MemoryBackendSpec(opts, type: type))
        case "secret": self = .secret(try SecretSpec(opts))
        case "": throw .configuration("-object: Parameter 'qom-type' is missing")
        default: throw .configuration("-object: type '\(type)' is not available in this build; available: \(Self.types.joined(separator: ", "))")
        }
    }

    /// `id` is required and, as QEMU's object ids, a letter then letters, digits, '-', '.', '_'.
    static func checkedID(_ opts: QemuOpts, type: String) throws(SystemError) -> String {
        guard let id = opts.string("id") else { throw .configuration("\(type): Parameter 'id' is missing") }
        guard let first = id.unicodeScalars.first, first.properties.isAlphabetic, first.isASCII,
              id.unicodeScalars.allSatisfy({ $0.isASCII && ($0.properties.isAlphabetic || ("0"..."9").contains($0) || "-._".unicodeScalars.contains($0)) })
        else {
            throw .configuration("\(type): Parameter 'id' expects an identifier (a letter, then letters, digits, '-', '.', '_'), not '\(id)'")
        }
        return id
    }
}

/// `-object memory-backend-ram|memfd|file,id=ID,size=SIZE,...` (backends/hostmem*.c): the
/// machine's RAM when `-machine memory-backend=ID` names it.
struct MemoryBackendSpec: Sendable, Equatable {
    var id: String
    var type: String
    var size: UInt64
    var backend: RAMBackendSpec
    /// merge= and dump= as given (nil: the machine's mem-merge and dump-guest-core decide).
    var merge: Bool?
    var dump: Bool?

    /// The properties each type takes, as `qom-list-properties` reports them (QOMTypes).
    static let commonKeys = ["size", "share", "prealloc", "prealloc-threads", "merge", "dump", "reserve", "policy"]
    static func keys(_ type: String) -> [String] {
        switch type {
        case "memory-backend-memfd": commonKeys + ["seal", "hugetlb"]
        case "memory-backend-file": commonKeys + ["mem-path", "align", "readonly", "discard-data", "pmem"]
        default: commonKeys
        }
    }

    init(_ opts: QemuOpts, type: String) throws(SystemError) {
        let what = type
        let keys = Self.keys(type)
        let v = try opts.validate(accepted: ["qom-type", "id"] + keys,
                                  booleans: ["share", "prealloc", "merge", "dump", "reserve", "seal", "hugetlb", "readonly", "discard-data", "pmem"],
                                  context: "object '\(type)'")
        id = try ObjectSpec.checkedID(v, type: type)
        self.type = type
        guard let size = try v.size("size") else { throw .configuration("\(what): Parameter 'size' is missing") }
        guard size > 0 else { throw .configuration("\(what): can't create backend with size 0") }
        guard size % 4096 == 0 else { throw .configuration("\(what): size \(size) is not a multiple of the 4 KiB page size") }
        self.size = size
        switch type {
        case "memory-backend-file":
            guard let path = v.string("mem-path"), !path.isEmpty else { throw .configuration("\(what): mem-path property not set") }
            backend = RAMBackendSpec(storage: .file(path: path, shared: try v.bool("share", default: false)))
            if let align = try v.size("align"), align != 0 {
                guard align >= 4096, align & (align - 1) == 0, align <= 1 << 30 else {
                    throw .configuration("\(what): align=\(align) must be a power of two from 4 KiB to 1 GiB")
                }
                backend.alignment = Int(align)
            }
            // What swemu does not do, refused rather than ignored.
            for (key, why) in [("readonly", "guest RAM is writable"),
                               ("discard-data", "the file keeps what the guest wrote; punch it yourself after the run"),
                               ("pmem", "swemu has no persistent-memory support (libpmem)")] where try v.bool(key, default: false) {
                throw .configuration("\(what): \(key)=on is not supported: \(why)")
            }
        case "memory-backend-memfd":
            // QEMU's memfd backend seals its size by default; share= only matters for
            // processes given the fd, and swemu gives it to none: both forms map it shared.
            backend = RAMBackendSpec(storage: .memfd(seal: try v.bool("seal", default: true)))
            if try v.bool("hugetlb", default: false) {
                throw .configuration("\(what): hugetlb=on is not supported: guest RAM uses transparent huge pages instead")
            }
        default:
            // memory-backend-ram: anonymous memory; swemu's is a memfd (DESIGN.md §3), shared or not.
            backend = RAMBackendSpec(storage: .memfd(seal: false))
        }
        backend.prealloc = try v.bool("prealloc", default: false)
        // prealloc-threads: how many threads QEMU touches the pages with; the kernel fills
        // them in one MADV_POPULATE_WRITE call here, whatever the count.
        _ = try v.int("prealloc-threads", in: 1...Int(UInt16.max))
        backend.reserve = try v.bool("reserve", default: false)
        merge = try v.bool("merge")
        dump = try v.bool("dump")
        if let policy = v.string("policy"), policy != "default" {
            throw .configuration("\(what): policy=\(policy) is not supported: swemu does not bind guest RAM to host NUMA nodes (accepted: policy=default)")
        }
    }
}

/// `-object secret,id=ID,data=TEXT|file=PATH[,format=raw|base64]` (crypto/secret.c): read and
/// checked at start, as QEMU does, so a missing or bad file is refused before the machine runs.
struct SecretSpec: Sendable, Equatable {
    var id: String
    var bytes: [UInt8]

    init(_ opts: QemuOpts) throws(SystemError) {
        let v = try opts.validate(accepted: ["qom-type", "id", "data", "file", "format", "keyid", "iv", "loaded"],
                                  booleans: ["loaded"], context: "object 'secret'")
        id = try ObjectSpec.checkedID(v, type: "secret")
        let what = "secret '\(id)'"
        if v.string("keyid") != nil || v.string("iv") != nil {
            throw .configuration("\(what): secrets encrypted with another secret (keyid=, iv=) are not supported: give the data in plain form")
        }
        let raw: [UInt8]
        switch (v.string("data"), v.string("file")) {
        case (let data?, nil): raw = Array(data.utf8)
        case (nil, let file?):
            do { raw = try FileDescriptor.readWholeFile(file, limit: 64 << 20) } catch {
                throw .configuration("\(what): Unable to read \(file): \(error)")
            }
        case (nil, nil): throw .configuration("\(what): 'file' or 'data' property must be set")
        case (_?, _?): throw .configuration("\(what): 'data' and 'file' are mutually exclusive")
        }
        switch v.string("format") ?? "raw" {
        case "raw": bytes = raw
        case "base64":
            // A file usually ends in a newline; anything else not base64 is refused.
            guard let decoded = Self.base64Decode(raw.reversed().drop { $0 == 0x0a || $0 == 0x0d }.reversed()) else {
                throw .configuration("\(what): the data is not valid base64")
            }
            bytes = decoded
        case let other: throw .configuration("\(what): format=\(other) is not a secret format (accepted: raw, base64)")
        }
    }

    /// RFC 4648 §4 base64, strict: whole 4-character groups, '=' padding only at the end.
    static func base64Decode(_ text: [UInt8]) -> [UInt8]? {
        guard text.count % 4 == 0 else { return nil }
        func sextet(_ c: UInt8) -> UInt32? {
            switch c {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"): UInt32(c - UInt8(ascii: "A"))
            case UInt8(ascii: "a")...UInt8(ascii: "z"): UInt32(c - UInt8(ascii: "a") + 26)
            case UInt8(ascii: "0")...UInt8(ascii: "9"): UInt32(c - UInt8(ascii: "0") + 52)
            case UInt8(ascii: "+"): 62
            case UInt8(ascii: "/"): 63
            default: nil
            }
        }
        var out: [UInt8] = []
        out.reserveCapacity(text.count / 4 * 3)
        for start in stride(from: 0, to: text.count, by: 4) {
            let group = text[start..<start + 4]
            let padding = group.reversed().prefix { $0 == UInt8(ascii: "=") }.count
            guard padding <= 2, padding == 0 || start + 4 == text.count else { return nil }
            var word: UInt32 = 0
            for c in group.prefix(4 - padding) {
                guard let s = sextet(c) else { return nil }
                word = word << 6 | s
            }
            word <<= UInt32(6 * padding)
            out.append(contentsOf: [UInt8(word >> 16 & 0xff), UInt8(word >> 8 & 0xff), UInt8(word & 0xff)].prefix(3 - padding))
        }
        return out
    }
}
