import Glibc
import SystemSupport

/// The shared `main` of swemu's libFuzzer targets (NOTES.md: "Fuzzing Swift with libFuzzer
/// under SwiftPM"). With libFuzzer linked in (and exported, so dlsym finds it) the fuzzer's
/// driver runs `runOne` on its inputs; built normally the program replays inputs instead:
/// each argument is a file, or a directory of files, run once through the same harness. That
/// keeps the targets building with the rest of the package and lets a crash input be replayed
/// anywhere. `cleanup` runs before the process ends.
public func fuzzMain(name: String, cleanup: @escaping () -> Void = {}, _ runOne: @escaping (UnsafeRawBufferPointer) -> Void) -> Never {
    typealias FuzzCallback = @convention(c) (UnsafePointer<UInt8>?, Int) -> Int32
    typealias RunDriver = @convention(c) (UnsafeMutablePointer<Int32>, UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>>,
                                          FuzzCallback) -> Int32
    // A C callback captures nothing: the harness goes through a global.
    FuzzTarget.runOne = runOne
    let callback: FuzzCallback = { data, size in
        FuzzTarget.runOne?(UnsafeRawBufferPointer(start: data, count: size))
        return 0
    }
    if let symbol = dlsym(dlopen(nil, RTLD_NOW), "LLVMFuzzerRunDriver") {
        // SAFETY: the symbol is libFuzzer's `int LLVMFuzzerRunDriver(int *argc, char ***argv,
        // int (*UserCb)(const uint8_t *Data, size_t Size))`, which `RunDriver` spells out.
        let driver = unsafeBitCast(symbol, to: RunDriver.self)
        var argc = CommandLine.argc
        var argv = CommandLine.unsafeArgv
        let status = driver(&argc, &argv, callback)
        cleanup()
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
    cleanup()
    print("\(name): replayed \(inputs.count) inputs (libFuzzer not linked in; scripts/fuzz builds the fuzzer)")
    exit(0)
}

/// The harness the C callback calls.
enum FuzzTarget {
    // SAFETY: set once by `fuzzMain` before the driver starts; libFuzzer calls back on the
    // thread that called it, one input at a time.
    nonisolated(unsafe) static var runOne: ((UnsafeRawBufferPointer) -> Void)?
}
