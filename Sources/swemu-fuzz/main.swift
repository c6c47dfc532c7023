import FuzzSupport
import FuzzTargets
import Glibc

// swemu's libFuzzer targets in one program (scripts/fuzz builds it with libFuzzer and runs
// each target; NOTES.md "Fuzzing Swift with libFuzzer under SwiftPM"). The target is chosen
// by `--target=NAME` or SWEMU_FUZZ_TARGET: libFuzzer ignores flags that start with "--" and
// passes them on to the processes it forks (-fork, -jobs), so the choice survives there too.
//   swemu-fuzz --list
//   swemu-fuzz --target=NAME --make-seeds=DIR     writes the target's seed inputs into DIR
//   swemu-fuzz --target=NAME [libFuzzer flags] [corpus dirs or files]
// Built without libFuzzer the program replays the files (or directories of files) instead.

let arguments = Array(CommandLine.arguments.dropFirst())
func option(_ name: String) -> String? {
    arguments.first { $0.hasPrefix("--\(name)=") }.map { String($0.dropFirst(name.count + 3)) }
}

if arguments.contains("--list") {
    for target in FuzzTarget.all { print("\(target.name)\t\(target.maxLength)\t\(target.summary)") }
    exit(0)
}
guard let name = option("target") ?? getenv("SWEMU_FUZZ_TARGET").map({ String(cString: $0) }), let target = FuzzTarget.named(name) else {
    FileHandleStderr.write("usage: swemu-fuzz --target=NAME [--make-seeds=DIR] [libFuzzer options] [corpus...]; targets: "
                           + FuzzTarget.all.map(\.name).joined(separator: " ") + "\n")
    exit(2)
}
if let directory = option("make-seeds") {
    for (file, bytes) in target.seeds() {
        let path = directory + "/" + file
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        // SAFETY: write(2) reads `$0.count` bytes of the array's storage, valid inside the closure.
        guard fd >= 0, bytes.withUnsafeBytes({ write(fd, $0.baseAddress, $0.count) }) == bytes.count else {
            FileHandleStderr.write("swemu-fuzz: cannot write \(path)\n")
            exit(1)
        }
        close(fd)
    }
    exit(0)
}
fuzzMain(name: "swemu-fuzz --target=\(name)") { target.run($0) }

enum FileHandleStderr {
    static func write(_ text: String) {
        var text = text
        // SAFETY: write(2) reads `$0.count` bytes of the string's UTF-8, valid inside the closure.
        text.withUTF8 { _ = Glibc.write(2, $0.baseAddress, $0.count) }
    }
}
