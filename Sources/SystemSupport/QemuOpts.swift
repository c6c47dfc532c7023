/// A QEMU option string: `[implied,]key=value,key2=value2,flag` (QEMU's QemuOpts syntax,
/// `docs/system/invocation` "-chardev", util/qemu-option.c).
///
/// - Elements are separated by `,`; a literal comma inside a value is written `,,`.
/// - The first element may have no `=`: with an `impliedKey` (the backend of `-chardev`,
///   the type of `-machine`) it is that key's value, else it is a bare flag.
/// - A bare `flag` means `flag=on`; a bare `noflag` means `flag=off` (QEMU's legacy form:
///   `server,nowait`). Which bare words are flags is only known against the accepted keys,
///   so `validate(accepted:)` resolves them; until then they are kept as written.
/// - A key may appear once (after resolving flags).
///
/// Errors are `SystemError(.configuration)` with one line naming the option (`-chardev`)
/// and saying what is accepted. Used for `-chardev`/`-serial` here and by the CLI for
/// `-drive`, `-machine`, `-netdev` and the like.
public struct QemuOpts: Equatable, Sendable {
    public struct Entry: Equatable, Sendable {
        public var key: String
        /// nil for a bare word (`server`, `nowait`) not yet resolved by `validate`.
        public var value: String?
        public init(key: String, value: String?) {
            self.key = key
            self.value = value
        }
    }

    /// The command-line option the string came from, for messages ("-chardev").
    public var option: String
    /// The key of an implied first value, if the option has one.
    public var impliedKey: String?
    /// Entries in the order given; the implied value, if any, first under `impliedKey`.
    public private(set) var entries: [Entry]
    /// Keys that may be given more than once (QEMU's list-valued options, such as
    /// `-netdev user`'s `hostfwd=`); read them with `strings(_:)`.
    public let repeatable: Set<String>

    /// Parses `text`. Empty elements (`a=1,,` at the start of a key, a trailing `,`) and
    /// empty keys (`=x`) are refused.
    public init(parsing text: String, impliedKey: String? = nil, option: String, repeatable: Set<String> = []) throws(SystemError) {
        self.option = option
        self.impliedKey = impliedKey
        self.repeatable = repeatable
        entries = []
        let chars = Array(text)
        if chars.isEmpty {
            throw SystemError(.configuration, "\(option): empty option string")
        }
        var i = 0
        var first = true
        while true {
            // QEMU (get_opt_name_value): the first element is implied unless '=' comes
            // before any ','; then it is read as a value, so ",," may put a comma in it.
            if first, let impliedKey, chars[i...].firstIndex(where: { $0 == "=" || $0 == "," }).map({ chars[$0] == "," }) ?? true {
                let (value, end) = Self.scanValue(chars, from: i)
                if value.isEmpty {
                    throw SystemError(.configuration, "\(option): missing \(impliedKey) in '\(text)'")
                }
                entries.append(Entry(key: impliedKey, value: value))
                i = end
                first = false
                if i >= chars.count { break }
                i += 1
                if i >= chars.count {
                    throw SystemError(.configuration, "\(option): empty option at the end of '\(text)' (a literal comma is written ',,')")
                }
                continue
            }
            first = false
            var key = ""
            while i < chars.count, chars[i] != "=", chars[i] != "," {
                key.append(chars[i])
                i += 1
            }
            if key.isEmpty {
                let what = i < chars.count && chars[i] == "=" ? "option name missing before '='" : "empty option"
                throw SystemError(.configuration, "\(option): \(what) in '\(text)' (options are key=value separated by ',', a literal comma is written ',,')")
            }
            if i < chars.count, chars[i] == "=" {
                let (value, end) = Self.scanValue(chars, from: i + 1)
                entries.append(Entry(key: key, value: value))
                i = end
            } else {
                entries.append(Entry(key: key, value: nil))
            }
            if i >= chars.count { break }
            i += 1  // the separating ','
            if i >= chars.count {
                throw SystemError(.configuration, "\(option): empty option at the end of '\(text)' (a literal comma is written ',,')")
            }
        }
        try checkDuplicates()
    }

    /// Builds options from entries (tests, defaults), checking duplicates.
    public init(option: String, impliedKey: String? = nil, entries: [Entry], repeatable: Set<String> = []) throws(SystemError) {
        self.option = option
        self.impliedKey = impliedKey
        self.repeatable = repeatable
        self.entries = entries
        try checkDuplicates()
    }

    /// Reads a value up to a single ',' (",," is a literal comma); returns it and the index
    /// of the terminating ',' or the end.
    private static func scanValue(_ chars: [Character], from start: Int) -> (String, Int) {
        var value = ""
        var i = start
        while i < chars.count {
            if chars[i] == "," {
                if i + 1 < chars.count, chars[i + 1] == "," {
                    value.append(",")
                    i += 2
                    continue
                }
                break
            }
            value.append(chars[i])
            i += 1
        }
        return (value, i)
    }

    private func checkDuplicates() throws(SystemError) {
        var seen = Set<String>()
        for entry in entries where !repeatable.contains(entry.key) && !seen.insert(entry.key).inserted {
            throw SystemError(.configuration, "\(option): option '\(entry.key)' is given more than once")
        }
    }

    /// The implied first value (`socket` in `socket,id=x`), if there was one.
    public var implied: String? {
        guard let impliedKey else { return nil }
        return entries.first { $0.key == impliedKey }?.value
    }

    /// The keys present, in order.
    public var keys: [String] { entries.map(\.key) }

    public func contains(_ key: String) -> Bool { entries.contains { $0.key == key } }

    /// Checks every key against `accepted` and resolves bare words: `flag` → `flag=on`,
    /// `noflag` → `flag=off` (only where `flag` is in `booleans`). `context` names what the
    /// keys belong to in the error ("backend 'socket'"). Returns the resolved options.
    public func validate(accepted: [String], booleans: Set<String> = [], context: String? = nil) throws(SystemError) -> QemuOpts {
        let acceptedSet = Set(accepted).union(impliedKey.map { [$0] } ?? [])
        var resolved: [Entry] = []
        for entry in entries {
            if entry.value != nil || entry.key == impliedKey {
                guard acceptedSet.contains(entry.key) else { throw unknown(entry.key, accepted, context) }
                resolved.append(entry)
                continue
            }
            if booleans.contains(entry.key) {
                resolved.append(Entry(key: entry.key, value: "on"))
            } else if entry.key.hasPrefix("no"), booleans.contains(String(entry.key.dropFirst(2))) {
                resolved.append(Entry(key: String(entry.key.dropFirst(2)), value: "off"))
            } else if acceptedSet.contains(entry.key) {
                throw SystemError(.configuration, "\(option): option '\(entry.key)' needs a value: \(entry.key)=VALUE")
            } else {
                throw unknown(entry.key, accepted, context)
            }
        }
        return try QemuOpts(option: option, impliedKey: impliedKey, entries: resolved, repeatable: repeatable)
    }

    private func unknown(_ key: String, _ accepted: [String], _ context: String?) -> SystemError {
        let whose = context.map { " for \($0)" } ?? ""
        let list = accepted.isEmpty ? "none" : accepted.joined(separator: ", ")
        return SystemError(.configuration, "\(option): unknown option '\(key)'\(whose); accepted: \(list)")
    }

    // MARK: typed getters

    /// The value of `key` as written; nil when absent. A bare flag reads as "on".
    public func string(_ key: String) -> String? {
        guard let entry = entries.first(where: { $0.key == key }) else { return nil }
        return entry.value ?? "on"
    }

    /// Every value of a `repeatable` key, in the order given.
    public func strings(_ key: String) -> [String] {
        entries.filter { $0.key == key }.map { $0.value ?? "on" }
    }

    /// QEMU booleans: on/off, yes/no, true/false (any case). nil when absent.
    public func bool(_ key: String) throws(SystemError) -> Bool? {
        guard let text = string(key) else { return nil }
        switch text.lowercased() {
        case "on", "yes", "true": return true
        case "off", "no", "false": return false
        default:
            throw SystemError(.configuration, "\(option): option '\(key)' takes on or off (also yes/no, true/false), not '\(text)'")
        }
    }

    public func bool(_ key: String, default value: Bool) throws(SystemError) -> Bool {
        try bool(key) ?? value
    }

    /// A decimal integer (or 0x hex) within `range`. nil when absent.
    public func int(_ key: String, in range: ClosedRange<Int> = Int.min...Int.max) throws(SystemError) -> Int? {
        guard let text = string(key) else { return nil }
        let value: Int?
        if text.hasPrefix("0x") || text.hasPrefix("0X") {
            value = Int(text.dropFirst(2), radix: 16)
        } else {
            value = Int(text)
        }
        guard let value, range.contains(value) else {
            let bounds = range == Int.min...Int.max ? "an integer" : "an integer from \(range.lowerBound) to \(range.upperBound)"
            throw SystemError(.configuration, "\(option): option '\(key)' must be \(bounds), not '\(text)'")
        }
        return value
    }

    /// A size in bytes, QEMU style: a number with an optional suffix B, K, M, G, T, P, E
    /// (powers of 1024, any case), a fraction allowed with a suffix ("1.5G"). nil when absent.
    public func size(_ key: String) throws(SystemError) -> UInt64? {
        guard let text = string(key) else { return nil }
        guard let value = Self.parseSize(text) else {
            throw SystemError(.configuration, "\(option): option '\(key)' must be a size such as 4096, 512K, 64M or 2G, not '\(text)'")
        }
        return value
    }

    /// Parses a QEMU size ("512M"); nil when malformed or beyond UInt64.
    public static func parseSize(_ text: String) -> UInt64? {
        var digits = Substring(text)
        var shift: UInt64 = 0
        if let last = digits.last, last.isLetter {
            switch last.uppercased() {
            case "B": shift = 0
            case "K": shift = 10
            case "M": shift = 20
            case "G": shift = 30
            case "T": shift = 40
            case "P": shift = 50
            case "E": shift = 60
            default: return nil
            }
            digits = digits.dropLast()
        }
        let parts = digits.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 1 || parts.count == 2, !parts[0].isEmpty,
              parts.allSatisfy({ $0.allSatisfy { $0.isASCII && $0.isNumber } }),
              let whole = UInt64(parts[0]) else { return nil }
        let (scaled, overflow) = whole.multipliedReportingOverflow(by: 1 << shift)
        guard !overflow else { return nil }
        guard parts.count == 2 else { return scaled }
        // A fraction only makes sense with a unit ("1.5G"); QEMU refuses "1.5" bytes too.
        guard shift > 0, !parts[1].isEmpty, parts[1].count <= 9 else { return nil }
        guard let numerator = UInt64(parts[1]) else { return nil }
        var denominator: UInt64 = 1
        for _ in 0..<parts[1].count { denominator *= 10 }
        let (fraction, overflow2) = numerator.multipliedReportingOverflow(by: 1 << shift)
        guard !overflow2 else { return nil }
        let (total, overflow3) = scaled.addingReportingOverflow(fraction / denominator)
        return overflow3 ? nil : total
    }
}
