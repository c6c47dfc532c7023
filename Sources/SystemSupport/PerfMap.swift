import Glibc
import Synchronization

/// `-perfmap` (as QEMU 8.1): names each block of generated code in `/tmp/perf-<pid>.map`,
/// the file `perf report` reads to attribute samples in JIT code, so a profile says which
/// guest code the time went to ("guest 0x<pc> <instructions>") instead of bare addresses.
public enum PerfMap {
    /// The map's descriptor, -1 while off. One write(2) per line: lines from several harts'
    /// threads never interleave.
    private static let fd = Mutex<Int32>(-1)
    /// Read once per translated block: an atomic, not the descriptor's lock.
    private static let enabled = Atomic<Bool>(false)

    /// Creates (truncates) `/tmp/perf-<pid>.map`.
    public static func enable() throws(SystemError) {
        let path = "/tmp/perf-\(getpid()).map"
        let opened = try FileDescriptor.open(path, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND).release()
        let old = fd.withLock { current in
            defer { current = opened }
            return current
        }
        if old >= 0 { close(old) }
        enabled.store(true, ordering: .releasing)
    }

    @inline(__always)
    public static var isEnabled: Bool { enabled.load(ordering: .acquiring) }

    /// One symbol: `size` bytes of host code at `start` named `name` (perf's format:
    /// hexadecimal start and size, then the name).
    public static func record(start: UInt, size: Int, name: String) {
        let line = Array("\(String(start, radix: 16)) \(String(size, radix: 16)) \(name)\n".utf8)
        fd.withLock { fd in
            guard fd >= 0 else { return }
            _ = line.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
        }
    }
}
