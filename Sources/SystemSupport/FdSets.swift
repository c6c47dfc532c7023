import CLinux
import Glibc
import Synchronization

/// QEMU's fd sets (`-add-fd set=N,fd=M[,opaque=TEXT]`, monitor/fds.c): descriptors a parent
/// process (libvirt) opened and left to swemu, which a path `/dev/fdset/N` then names wherever
/// a file is opened (`FileDescriptor.open`): the chardev file of a serial log, an image. Each
/// open gets a duplicate of the set's descriptor whose access mode (O_RDONLY, O_WRONLY,
/// O_RDWR) is the one asked for, as qemu_open does.
public enum FdSets {
    public struct Entry: Sendable, Equatable {
        public var set: Int
        public var fd: Int32
        public var opaque: String?
        public init(set: Int, fd: Int32, opaque: String?) {
            self.set = set
            self.fd = fd
            self.opaque = opaque
        }
    }
    private static let entries = Mutex<[Entry]>([])

    /// `-add-fd`: checks that `fd` is open, makes it close-on-exec (the guest's helpers must
    /// not inherit it) and files it under its set.
    public static func add(_ entry: Entry) throws(SystemError) {
        guard entry.fd > 2, clx_fcntl_getfl(entry.fd) >= 0 else {
            throw SystemError(.configuration, "-add-fd: fd \(entry.fd) is not an open file descriptor the parent process left (0 to 2 are stdio)")
        }
        try entries.withLock { (list: inout [Entry]) throws(SystemError) in
            guard !list.contains(where: { $0.fd == entry.fd }) else {
                throw SystemError(.configuration, "-add-fd: fd \(entry.fd) is already in set \(list.first { $0.fd == entry.fd }?.set ?? 0)")
            }
            list.append(entry)
        }
        _ = clx_set_cloexec(entry.fd)
    }

    /// The set number in a `/dev/fdset/N` path, or nil for any other path.
    static func set(inPath path: String) -> Int? {
        guard path.hasPrefix("/dev/fdset/") else { return nil }
        return Int(path.dropFirst("/dev/fdset/".count)).flatMap { $0 >= 0 ? $0 : nil }
    }

    /// A duplicate of the descriptor of `set` whose access mode matches `flags`.
    static func dup(set: Int, flags: Int32, path: String) throws(SystemError) -> FileDescriptor {
        let members = entries.withLock { $0.filter { $0.set == set } }
        guard !members.isEmpty else {
            throw SystemError(.configuration, "cannot open '\(path)': there is no fd set \(set) (-add-fd set=\(set),fd=N)")
        }
        let wanted = flags & O_ACCMODE
        guard let match = members.first(where: { clx_fcntl_getfl($0.fd) & O_ACCMODE == wanted }) else {
            throw SystemError(.configuration, "cannot open '\(path)': no descriptor in fd set \(set) is open for \(wanted == O_RDONLY ? "reading" : wanted == O_WRONLY ? "writing" : "reading and writing")")
        }
        let fd = try syscall("cannot duplicate fd \(match.fd) of fd set \(set)") { fcntl(match.fd, F_DUPFD_CLOEXEC, 3) }
        return FileDescriptor(owning: fd)
    }
}
