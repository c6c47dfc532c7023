import Block
import DeviceModel
import Glibc
import SystemSupport

/// `swemu-img`, the counterpart of `qemu-img`: the same commands, options and output formats,
/// so scripts written for one work with the other.
public enum ImageTool {
    static let commands: [(name: String, synopsis: String)] = [
        ("check", "check [-f fmt] [--output=ofmt] [-r [leaks | all]] [-q] filename"),
        ("commit", "commit [-f fmt] [-d] [-q] filename"),
        ("compare", "compare [-f fmt] [-F fmt] [-q] filename1 filename2"),
        ("convert", "convert [-c] [-p] [-q] [-f fmt] [-t cache] [-O output_fmt] [-o options] filename output_filename"),
        ("create", "create [-q] [-f fmt] [-b backing_file [-F backing_fmt]] [-o options] filename [size]"),
        ("info", "info [-f fmt] [--output=ofmt] [--backing-chain] [-U] filename"),
        ("map", "map [-f fmt] [--output=ofmt] filename"),
        ("measure", "measure [--output=ofmt] [-O output_fmt] [-o options] [--size N | [-f fmt] filename]"),
        ("rebase", "rebase [-f fmt] [-u] [-q] -b backing_file [-F backing_fmt] filename"),
        ("resize", "resize [--shrink] [-f fmt] [-q] filename [+ | -]size"),
        ("snapshot", "snapshot [-q] [-l | -a snapshot | -c snapshot | -d snapshot] filename"),
    ]

    static func help() -> String {
        var out = "swemu-img version \(swemuVersion)\nusage: swemu-img [standard options] command [command options]\n"
        out += "Disk image utility, with qemu-img's commands and syntax\n\n"
        out += "    '-h', '--help'       display this help and exit\n"
        out += "    '-V', '--version'    output version information and exit\n\n"
        out += "Command syntax:\n"
        for c in commands { out += "  \(c.synopsis)\n" }
        out += "\nSupported formats: \(DiskImage.formats.joined(separator: " "))\n"
        return out
    }

    /// What a command prints and its exit status.
    struct Output {
        var status: Int32 = 0
        var stdout = ""
        var stderr = ""
    }

    /// Runs `swemu-img` with `arguments` (without the program name); returns the exit status
    /// and what to print on stdout and stderr. `progress` receives `-p` updates as they happen.
    static func run(_ arguments: [String], progress: (String) -> Void = { _ in }) -> (status: Int32, stdout: String, stderr: String) {
        guard let first = arguments.first else {
            return (1, "", "swemu-img: Not enough arguments\nTry 'swemu-img --help' for more information\n")
        }
        let rest = Array(arguments.dropFirst())
        var out = Output()
        do {
            switch first {
            case "-h", "--help", "help": out.stdout = help()
            case "-V", "--version": out.stdout = "swemu-img version \(swemuVersion)\nCopyright (c) 2026 the swemu developers\n"
            case "create": try create(rest, &out)
            case "info": try info(rest, &out)
            case "convert": try convert(rest, &out, progress: progress)
            case "check": try check(rest, &out)
            case "resize": try resize(rest, &out)
            case "snapshot": try snapshot(rest, &out)
            case "rebase": try rebase(rest, &out)
            case "commit": try commit(rest, &out)
            case "map": try map(rest, &out)
            case "compare": try compare(rest, &out)
            case "measure": try measure(rest, &out)
            default:
                return (1, "", "swemu-img: Command not found: \(first)\nTry 'swemu-img --help' for more information\n")
            }
        } catch {
            out.stderr += "swemu-img: \(error)\n"
            if out.status == 0 { out.status = 1 }
        }
        return (out.status, out.stdout, out.stderr)
    }

    public static func main(arguments: [String]) -> Never {
        let result = run(arguments) { writeOut($0, fd: 1) }
        writeOut(result.stdout, fd: 1)
        writeOut(result.stderr, fd: 2)
        exit(result.status)
    }

    // MARK: Argument parsing (getopt-like, as qemu-img's)

    struct Arguments {
        var flags: Set<String> = []
        var values: [String: String] = [:]
        /// `-o` may repeat; the lists join with commas.
        var options: [String: String] = [:]
        var positional: [String] = []

        /// `valued`: options that take an argument ("-f", "--output").
        init(_ args: [String], valued: Set<String>, flags known: Set<String>) throws(SystemError) {
            var i = 0
            while i < args.count {
                let a = args[i]
                i += 1
                if a.hasPrefix("--"), let eq = a.firstIndex(of: "=") {
                    let name = String(a[..<eq])
                    guard valued.contains(name) else { throw .configuration("unrecognized option '\(a)'") }
                    values[name] = String(a[a.index(after: eq)...])
                } else if valued.contains(a) {
                    guard i < args.count else { throw .configuration("option '\(a)' requires an argument") }
                    if a == "-o" {
                        for item in args[i].split(separator: ",") {
                            let kv = item.split(separator: "=", maxSplits: 1)
                            options[String(kv[0])] = kv.count > 1 ? String(kv[1]) : "on"
                        }
                    } else {
                        values[a] = args[i]
                    }
                    i += 1
                } else if known.contains(a) {
                    flags.insert(a)
                } else if a.hasPrefix("-") && a.count > 1 && !(a.dropFirst().first?.isNumber ?? false) {
                    throw .configuration("invalid option -- '\(a.dropFirst())'")
                } else {
                    positional.append(a)
                }
            }
        }

        /// `-U` / `--force-share`: open sharing every permission, so an image another process
        /// uses can still be read (qemu-img refuses it for a command that writes). `base`: what
        /// the command shares without it.
        func locking(path: String, readOnly: Bool, base: ImageLocking = .tool) throws(SystemError) -> ImageLocking {
            guard flags.contains("-U") || flags.contains("--force-share") else { return base }
            guard readOnly else { throw .configuration("Could not open '\(path)': force-share=on can only be used with read-only images") }
            var locking = base
            locking.forceShare = true
            return locking
        }

        func output() throws(SystemError) -> Bool {
            switch values["--output"] ?? "human" {
            case "human": return false
            case "json": return true
            case let other: throw .configuration("--output must be used with human or json as argument (not '\(other)')")
            }
        }
    }

    /// qemu-img's sizes: a number with an optional k, M, G, T, P, E suffix (powers of 1024).
    static func parseSize(_ text: String) throws(SystemError) -> UInt64 {
        let units: [Character: UInt64] = ["b": 1, "k": 1 << 10, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40, "P": 1 << 50, "E": 1 << 60]
        var digits = Substring(text)
        var multiplier: UInt64 = 1
        if let last = digits.last, let m = units[last] {
            multiplier = m
            digits = digits.dropLast()
        }
        guard let value = Double(digits), value >= 0, value * Double(multiplier) < 9.2e18 else {
            throw .configuration("Invalid image size specified. You may use k, M, G, T, P or E suffixes for\nkilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes.")
        }
        return UInt64(value * Double(multiplier))
    }

    /// QEMU's `size_to_str` (Block's `SizeText`).
    static func humanSize(_ bytes: UInt64) -> String { SizeText.human(bytes) }

    /// Opens an image as qemu-img's `img_open` does: taking its locks (`locking`), and saying
    /// "Could not open 'PATH': " before why another user's lock refused it.
    static func open(_ path: String, format: String?, readOnly: Bool, backing: Bool = true,
                     locking: ImageLocking = .tool) throws(SystemError) -> any BlockBackend {
        try opening(path) { () throws(SystemError) in
            let format = try DiskImage.probedFormat(format, path: path)
            if format == "qcow2" && !backing { return try Qcow2Image(path: path, readOnly: readOnly, backingMode: .skip, locking: locking) }
            return try DiskImage.open(path: path, format: format, readOnly: readOnly, locking: locking)
        }
    }

    /// Runs `body`, which creates `path`; a lock conflict (the file is an image in use, which
    /// is then left alone) starts with the path, as qemu-img says it.
    static func creating<T>(_ path: String, _ body: () throws(SystemError) -> T) throws(SystemError) -> T {
        do {
            return try body()
        } catch where error.code == .imageLocked {
            throw SystemError(.imageLocked, "\(path): \(error.message)")
        }
    }

    /// Runs `body`, which opens `path`; a lock conflict gets qemu-img's "Could not open" prefix.
    static func opening<T>(_ path: String, _ body: () throws(SystemError) -> T) throws(SystemError) -> T {
        do {
            return try body()
        } catch where error.code == .imageLocked {
            throw SystemError(.imageLocked, "Could not open '\(path)': \(error.message)")
        }
    }

    static func qcow2(_ image: any BlockBackend, _ command: String) throws(SystemError) -> Qcow2Image {
        guard let q = image as? Qcow2Image else { throw .unsupported("\(command): this image format does not support \(command)") }
        return q
    }

    /// Closes an image cleanly (qcow2: clears the dirty bit), or flushes a raw one.
    static func finish(_ image: any BlockBackend) throws(SystemError) {
        if let q = DiskImage.qcow2(image) { try q.close() } else { try image.flush() }
    }

    // MARK: create

    static func create(_ args: [String], _ out: inout Output) throws(SystemError) {
        let a = try Arguments(args, valued: ["-f", "-b", "-F", "-o"], flags: ["-q"])
        let format = a.values["-f"] ?? "raw"
        guard let path = a.positional.first else { throw .configuration("Expecting image file name") }
        var options = Qcow2CreateOptions()
        options.backingFile = a.values["-b"] ?? a.options["backing_file"]
        options.backingFormat = a.values["-F"] ?? a.options["backing_fmt"]
        var size: UInt64
        if a.positional.count > 1 {
            size = try parseSize(a.positional[1])
        } else if let backing = options.backingFile {
            size = try open(DiskImage.resolveBacking(backing, relativeTo: path), format: options.backingFormat, readOnly: true).size
        } else if let s = a.options["size"] {
            size = try parseSize(s)
        } else {
            throw .configuration("Image creation needs a size parameter")
        }
        size = (size + 511) / 512 * 512
        let known: Set<String> = ["cluster_size", "backing_file", "backing_fmt", "preallocation", "compat", "lazy_refcounts", "refcount_bits", "size"]
        if let unknown = a.options.keys.sorted().first(where: { !known.contains($0) }) {
            throw .configuration("Invalid parameter '\(unknown)'")
        }
        if let p = a.options["preallocation"] {
            guard let mode = Qcow2CreateOptions.Preallocation(rawValue: p) else {
                throw .configuration("Parameter 'preallocation' does not accept value '\(p)'; accepted: off, metadata, full")
            }
            options.preallocation = mode
        }
        var line = "Formatting '\(path)', fmt=\(format)"
        switch format {
        case "raw":
            guard options.backingFile == nil else { throw .configuration("Backing file not supported for file format 'raw'") }
            guard options.preallocation != .metadata else { throw .configuration("Invalid preallocation mode: 'metadata'") }
            line += " size=\(size)"
            let file = try ImageTool.creating(path) { () throws(SystemError) in try ImageFile.create(path: path) }
            try file.truncate(to: size)
            if options.preallocation == .full { try writeZeroFile(file, size: size) }
        case "qcow2":
            if let cs = a.options["cluster_size"] { options.clusterSize = try parseSize(cs) }
            switch a.options["compat"] ?? "1.1" {
            case "0.10", "v2": options.version = 2
            case "1.1", "v3": options.version = 3
            case let other: throw .configuration("Invalid compatibility level: '\(other)'")
            }
            if let bits = a.options["refcount_bits"] {
                guard let n = UInt64(bits) else { throw .configuration("Invalid refcount_bits '\(bits)'") }
                options.refcountBits = n
            }
            options.lazyRefcounts = a.options["lazy_refcounts"] == "on"
            if let backing = options.backingFile, options.backingFormat == nil {
                options.backingFormat = try DiskImage.probe(path: DiskImage.resolveBacking(backing, relativeTo: path))
            }
            line += " cluster_size=\(options.clusterSize) extended_l2=off"
            if options.preallocation != .off { line += " preallocation=\(options.preallocation.rawValue)" }
            line += " compression_type=zlib size=\(size)"
            if let b = options.backingFile { line += " backing_file=\(b)" }
            if let f = options.backingFormat { line += " backing_fmt=\(f)" }
            if options.version == 2 { line += " compat=0.10" }
            line += " lazy_refcounts=\(options.lazyRefcounts ? "on" : "off") refcount_bits=\(options.refcountBits)"
            try ImageTool.creating(path) { () throws(SystemError) in try Qcow2Image.create(path: path, size: size, options: options) }
        default:
            throw .configuration("Unknown file format '\(format)'")
        }
        if !a.flags.contains("-q") { out.stdout += line + "\n" }
    }

    static func writeZeroFile(_ file: ImageFile, size: UInt64) throws(SystemError) {
        let zeroes = [UInt8](repeating: 0, count: 1 << 20)
        var done: UInt64 = 0
        while done < size {
            let n = Int(min(UInt64(zeroes.count), size - done))
            try file.writeBytes(at: done, Array(zeroes[0..<n]))
            done += UInt64(n)
        }
    }

    // MARK: info

    static func info(_ args: [String], _ out: inout Output) throws(SystemError) {
        let a = try Arguments(args, valued: ["-f", "--output"], flags: ["--backing-chain", "-U", "--force-share"])
        guard let path = a.positional.first else { throw .configuration("Expecting one image file name") }
        let json = try a.output()
        var chain: [(path: String, format: String?)] = [(path, a.values["-f"])]
        var infos: [String] = []
        var seen: Set<String> = []
        while let (current, format) = chain.popLast() {
            guard seen.insert(realPath(current) ?? current).inserted else { throw .badInput("\(current): backing file loop") }
            let image = try open(current, format: format, readOnly: true, backing: false,
                                 locking: try a.locking(path: current, readOnly: true))
            infos.append(json ? infoJSON(image, path: current, indent: a.flags.contains("--backing-chain") ? 1 : 0) : infoHuman(image, path: current))
            if a.flags.contains("--backing-chain"), let q = image as? Qcow2Image, let backing = q.header.backingFile {
                chain.append((DiskImage.resolveBacking(backing, relativeTo: current), q.header.backingFormat))
            }
        }
        if json && a.flags.contains("--backing-chain") {
            out.stdout += "[\n" + infos.joined(separator: ",\n") + "\n]\n"
        } else {
            out.stdout += infos.joined(separator: "\n") + (json ? "\n" : "")
        }
    }

    static func infoHuman(_ image: any BlockBackend, path: String) -> String {
        let file = (image as? Qcow2Image)?.file ?? (try? ImageFile(path: path, readOnly: true))
        let disk = (try? file?.allocatedBytes()) ?? nil
        var s = "image: \(path)\nfile format: \(image is Qcow2Image ? "qcow2" : "raw")\n"
        s += "virtual size: \(humanSize(image.size)) (\(image.size) bytes)\n"
        s += "disk size: \(humanSize(disk ?? 0))\n"
        guard let q = image as? Qcow2Image else { return s }
        let h = q.header
        s += "cluster_size: \(h.clusterSize)\n"
        if let b = h.backingFile {
            let resolved = DiskImage.resolveBacking(b, relativeTo: path)
            s += "backing file: \(b)" + (resolved == b ? "" : " (actual path: \(resolved))") + "\n"
        }
        if let f = h.backingFormat { s += "backing file format: \(f)\n" }
        if !q.snapshots.isEmpty { s += "Snapshot list:\n" + snapshotTable(q.snapshots) }
        if h.incompatibleFeatures & Qcow2Header.dirtyBit != 0 { s += "cleanly shut down: no\n" }
        s += "Format specific information:\n"
        s += "    compat: \(h.version == 2 ? "0.10" : "1.1")\n"
        s += "    compression type: zlib\n"
        if h.version == 3 {
            s += "    lazy refcounts: \(h.compatibleFeatures & Qcow2Header.lazyRefcountsBit != 0)\n"
        }
        s += "    refcount bits: \(1 << h.refcountOrder)\n"
        if h.version == 3 {
            s += "    corrupt: \(h.incompatibleFeatures & Qcow2Header.corruptBit != 0)\n"
            s += "    extended l2: false\n"
        }
        return s
    }

    static func jsonString(_ s: String) -> String {
        var r = "\""
        for u in s.unicodeScalars {
            switch u {
            case "\"": r += "\\\""
            case "\\": r += "\\\\"
            case "\n": r += "\\n"
            case _ where u.value < 0x20: r += "\\u" + String(repeating: "0", count: 4 - String(u.value, radix: 16).count) + String(u.value, radix: 16)
            default: r.unicodeScalars.append(u)
            }
        }
        return r + "\""
    }

    /// A JSON object in QEMU's layout (4-space indent, fields in the order given).
    static func jsonObject(_ fields: [(String, String)], indent: Int) -> String {
        let pad = String(repeating: "    ", count: indent)
        let inner = fields.map { "\(pad)    \(jsonString($0.0)): \($0.1)" }.joined(separator: ",\n")
        return "{\n\(inner)\n\(pad)}"
    }

    static func infoJSON(_ image: any BlockBackend, path: String, indent: Int) -> String {
        let file = (image as? Qcow2Image)?.file ?? (try? ImageFile(path: path, readOnly: true))
        let disk = (try? file?.allocatedBytes()) ?? nil
        var fields: [(String, String)] = []
        if let q = image as? Qcow2Image {
            let h = q.header
            if !q.snapshots.isEmpty {
                let list = q.snapshots.map { s in
                    // QEMU omits icount when the snapshot has none (-1).
                    jsonObject((s.icount.map { [("icount", String($0))] } ?? []) + [
                        ("vm-clock-nsec", String(s.vmClockNanoseconds % 1_000_000_000)), ("name", jsonString(s.name)),
                        ("date-sec", String(s.dateSeconds)), ("date-nsec", String(s.dateNanoseconds)),
                        ("vm-clock-sec", String(s.vmClockNanoseconds / 1_000_000_000)), ("id", jsonString(s.id)),
                        ("vm-state-size", String(s.vmStateBytes))], indent: indent + 2)
                }
                let pad = String(repeating: "    ", count: indent + 2)
                fields.append(("snapshots", "[\n" + list.map { pad + $0 }.joined(separator: ",\n") + "\n" + String(repeating: "    ", count: indent + 1) + "]"))
            }
            if let f = h.backingFormat { fields.append(("backing-filename-format", jsonString(f))) }
            fields.append(("virtual-size", String(image.size)))
            fields.append(("filename", jsonString(path)))
            fields.append(("cluster-size", String(h.clusterSize)))
            fields.append(("format", "\"qcow2\""))
            fields.append(("actual-size", String(disk ?? 0)))
            var data: [(String, String)] = [("compat", h.version == 2 ? "\"0.10\"" : "\"1.1\""), ("compression-type", "\"zlib\"")]
            if h.version == 3 {
                data.append(("lazy-refcounts", String(h.compatibleFeatures & Qcow2Header.lazyRefcountsBit != 0)))
            }
            data.append(("refcount-bits", String(1 << h.refcountOrder)))
            if h.version == 3 {
                data.append(("corrupt", String(h.incompatibleFeatures & Qcow2Header.corruptBit != 0)))
                data.append(("extended-l2", "false"))
            }
            fields.append(("format-specific", jsonObject([("type", "\"qcow2\""), ("data", jsonObject(data, indent: indent + 2))], indent: indent + 1)))
            if let b = h.backingFile {
                fields.append(("full-backing-filename", jsonString(DiskImage.resolveBacking(b, relativeTo: path))))
                fields.append(("backing-filename", jsonString(b)))
            }
            fields.append(("dirty-flag", String(h.incompatibleFeatures & Qcow2Header.dirtyBit != 0)))
        } else {
            fields = [("virtual-size", String(image.size)), ("filename", jsonString(path)), ("format", "\"raw\""),
                      ("actual-size", String(disk ?? 0)), ("dirty-flag", "false")]
        }
        return String(repeating: "    ", count: indent) + jsonObject(fields, indent: indent)
    }

    static func snapshotTable(_ snapshots: [Qcow2Snapshot]) -> String { Qcow2Snapshot.table(snapshots) }

    static func padRight(_ s: String, _ n: Int) -> String { SizeText.padRight(s, n) }
    static func padLeft(_ s: String, _ n: Int) -> String { SizeText.padLeft(s, n) }
}

/// Writes `text` to `fd` whole (stdout/stderr of the CLI tools).
func writeOut(_ text: String, fd: Int32) {
    var bytes = Array(text.utf8)[...]
    while !bytes.isEmpty {
        let n = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
        if n < 0 && errno == EINTR { continue }
        if n <= 0 { return }
        bytes = bytes.dropFirst(n)
    }
}
