import Block
import DeviceModel
import Glibc
import SystemSupport

// A libFuzzer target for the qcow2 header and table parsers (NOTES.md: "Fuzzing Swift with
// libFuzzer under SwiftPM"; scripts/fuzz-qcow2 builds and runs it). Each input is an image
// file: it is opened read-only, read (every L1/L2 lookup, compressed clusters) and checked
// (every table and refcount), then opened for writing and written, zeroed, discarded,
// snapshotted and repaired. Any outcome but a clean error or success is a bug.
//
// Built normally (no libFuzzer linked in) the program replays inputs instead: each argument
// is a file, or a directory of files, run once through the same harness. That keeps this
// target building with the rest of the package and lets a crash input be replayed anywhere.

/// The scratch file inputs are written to (tmpfs when available).
let scratch = (access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp") + "/swemu-fuzz-qcow2-\(getpid()).img"

func runOne(_ data: UnsafeRawBufferPointer) {
    let fd = open(scratch, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
    guard fd >= 0 else { fatalError("cannot create \(scratch)") }
    var done = 0
    while done < data.count {
        let n = write(fd, data.baseAddress! + done, data.count - done)
        guard n > 0 else { fatalError("cannot write \(scratch)") }
        done += n
    }
    close(fd)
    do throws(SystemError) {
        let image = try Qcow2Image(path: scratch, readOnly: true, backingMode: .skip)
        // Bounded work per input: at most 1 MiB of guest data, in cluster-sized reads.
        var buffer = [UInt8](repeating: 0, count: Int(image.clusterSize))
        var offset: UInt64 = 0
        while offset < min(image.size, 1 << 20) {
            let n = Int(min(image.clusterSize, image.size - offset))
            try buffer.withUnsafeMutableBytes { b in
                Result { () throws(SystemError) in try image.read(at: offset, into: UnsafeMutableRawBufferPointer(rebasing: b[0..<n])) }
            }.get()
            offset += UInt64(n)
        }
        _ = try image.check(repair: .none)
    } catch {
        // A clean refusal is the expected outcome for most inputs.
    }
    // Then writes, which allocate clusters and update refcounts over whatever tables the
    // input has: a partial cluster (copy-on-write), a zeroed range, a discard, a snapshot.
    do throws(SystemError) {
        let image = try Qcow2Image(path: scratch, readOnly: false, backingMode: .skip, cache: .unsafe)
        let size = min(image.size, 1 << 20)
        guard size >= 4096 else { return }
        let bytes = [UInt8](repeating: 0x5a, count: 3000)
        try bytes.withUnsafeBytes { b in Result { () throws(SystemError) in try image.write(at: size / 2 + 17, from: b) } }.get()
        try image.writeZeroes(at: 0, count: 4096, mayUnmap: true)
        try image.discard(at: size - 4096, count: 4096)
        try image.createSnapshot(name: "fuzz")
        _ = try image.check(repair: .all)
        try image.close()
    } catch {
    }
}

typealias FuzzCallback = @convention(c) (UnsafePointer<UInt8>?, Int) -> Int32
typealias RunDriver = @convention(c) (UnsafeMutablePointer<Int32>, UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>>, FuzzCallback) -> Int32

let callback: FuzzCallback = { data, size in
    runOne(UnsafeRawBufferPointer(start: data, count: size))
    return 0
}

// libFuzzer's driver, present only when the fuzzer runtime is linked in (and exported).
if let symbol = dlsym(dlopen(nil, RTLD_NOW), "LLVMFuzzerRunDriver") {
    // SAFETY: the symbol is libFuzzer's `int LLVMFuzzerRunDriver(int *argc, char ***argv,
    // int (*UserCb)(const uint8_t *Data, size_t Size))`, which `RunDriver` spells out.
    let driver = unsafeBitCast(symbol, to: RunDriver.self)
    var argc = CommandLine.argc
    var argv = CommandLine.unsafeArgv
    let status = driver(&argc, &argv, callback)
    unlink(scratch)
    exit(status)
}

// Replay mode.
var inputs: [String] = []
for argument in CommandLine.arguments.dropFirst() where !argument.hasPrefix("-") {
    var st = stat()
    guard stat(argument, &st) == 0 else { fatalError("\(argument): no such file") }
    if st.st_mode & S_IFMT == S_IFDIR, let dir = opendir(argument) {
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            if name != "." && name != ".." { inputs.append(argument + "/" + name) }
        }
        closedir(dir)
    } else {
        inputs.append(argument)
    }
}
for input in inputs.sorted() {
    do throws(SystemError) {
        let bytes = try FileDescriptor.readWholeFile(input, limit: 64 << 20)
        bytes.withUnsafeBytes { runOne($0) }
    } catch {
        fatalError("\(input): \(error)")
    }
}
unlink(scratch)
print("swemu-fuzz-qcow2: replayed \(inputs.count) inputs (libFuzzer not linked in; scripts/fuzz-qcow2 builds the fuzzer)")
