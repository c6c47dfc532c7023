import Glibc
import Synchronization

/// QEMU's `-d ITEM,... -D FILE` logging: off by default, one category at a time, lines to
/// stderr or to the `-D` file. Devices report guest mistakes (`guest_errors`) and registers we
/// do not model (`unimp`) through it instead of failing.
public enum DebugLog {
    public struct Category: OptionSet, Sendable, Hashable {
        public let rawValue: UInt32
        public init(rawValue: UInt32) { self.rawValue = rawValue }
        /// The guest did something invalid (bad register offset, bad descriptor).
        public static let guestErrors = Category(rawValue: 1 << 0)
        /// The guest used a feature swemu does not implement.
        public static let unimplemented = Category(rawValue: 1 << 1)
        /// Each translated/decoded guest instruction (QEMU `in_asm`).
        public static let instructions = Category(rawValue: 1 << 2)
        /// Every instruction executed, with its pc (QEMU `exec`).
        public static let execution = Category(rawValue: 1 << 3)
        /// CPU state before each executed instruction (QEMU `cpu`).
        public static let cpuState = Category(rawValue: 1 << 4)
        /// Interrupts and exceptions taken (QEMU `int`).
        public static let interrupts = Category(rawValue: 1 << 5)
        /// MMU translations that fault or fill (QEMU `mmu`).
        public static let mmu = Category(rawValue: 1 << 6)
        /// The host code the JIT emits for each block (QEMU `out_asm`).
        public static let hostCode = Category(rawValue: 1 << 7)
        /// The JIT does not chain blocks: every block returns to its dispatcher (QEMU `nochain`).
        public static let noChain = Category(rawValue: 1 << 8)
    }

    /// The `-d` items this build understands, with QEMU's names and help lines.
    public static let items: [(name: String, category: Category, help: String)] = [
        ("guest_errors", .guestErrors, "log when the guest OS does something invalid (eg accessing a non-existent register)"),
        ("unimp", .unimplemented, "log unimplemented functionality"),
        ("in_asm", .instructions, "show target assembly code for each compiled TB"),
        ("exec", .execution, "show trace before each executed TB (lots of logs)"),
        ("cpu", .cpuState, "show CPU registers before entering a TB (lots of logs)"),
        ("int", .interrupts, "show interrupts/exceptions in short format"),
        ("mmu", .mmu, "log MMU-related activities"),
        ("out_asm", .hostCode, "show generated host assembly code for each compiled TB"),
        ("nochain", .noChain, "do not chain compiled TBs so that \"exec\" and \"cpu\" show complete traces"),
    ]

    private static let enabled = Atomic<UInt32>(0)
    /// The `-D` file's descriptor, or 2 (stderr). Written whole lines with one write(2) each,
    /// so lines from several threads never interleave.
    private static let outputFD = Mutex<Int32>(2)

    /// Turns on `categories` (replacing what was on).
    public static func enable(_ categories: Category) {
        enabled.store(categories.rawValue, ordering: .relaxed)
    }

    /// Sends log lines to `path` (`-D`), created or truncated; stderr when nil.
    public static func setOutput(path: String?) throws(SystemError) {
        let fd = try path.map { (p) throws(SystemError) in
            try FileDescriptor.open(p, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND).release()
        } ?? 2
        let old = outputFD.withLock { current in
            defer { current = fd }
            return current
        }
        if old != 2 { close(old) }
    }

    @inline(__always)
    public static func isEnabled(_ category: Category) -> Bool {
        enabled.load(ordering: .relaxed) & category.rawValue != 0
    }

    /// Writes `message()` as one line when `category` is on; the message is not built otherwise.
    @inline(__always)
    public static func log(_ category: Category, _ message: @autoclosure () -> String) {
        guard isEnabled(category) else { return }
        let line = Array((message() + "\n").utf8)
        outputFD.withLock { fd in
            _ = line.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
        }
    }
}
