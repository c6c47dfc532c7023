import Glibc
import Synchronization

/// The files a board reads or opens again at every reset (disk images and their backing files,
/// firmware, kernel, initrd, device tree, /dev/kvm), kept open from the first board on, for a
/// process that is about to lose the way to them by path: `-chroot` (the paths are outside its
/// new root), `-runas` (the new user may not open them) and `-daemonize` (which moves to `/`,
/// so relative paths change meaning). QEMU opens these once and never again; swemu builds a
/// fresh board at each reset (DESIGN.md §3), so after `seal()` it opens a kept file as a
/// duplicate of the descriptor the first board opened, as QEMU would still hold it.
///
/// Only openers that ask (`FileDescriptor.open(_:_:reopenable:)`) take part, and only paths
/// opened without O_CREAT: a pty, a socket or a file the machine creates is opened anew.
public enum KeptFiles {
    private struct Key: Hashable {
        let path: String
        let writable: Bool
    }

    private struct State {
        var recording = false
        var sealed = false
        var files: [Key: Int32] = [:]
        var realPaths: [String: String] = [:]
    }

    private static let state = Mutex(State())

    /// From now on, files opened with `reopenable` are kept (call before the first board).
    public static func startRecording() {
        state.withLock { $0.recording = true }
    }

    /// From now on, a kept path opens as a duplicate of what was kept; nothing more is kept.
    public static func seal() {
        state.withLock {
            $0.recording = false
            $0.sealed = true
        }
    }

    /// The flags of `open` that `fcntl(F_SETFL)` changes on a duplicate.
    private static let statusFlags = Int32(O_APPEND | O_NONBLOCK) | 0o40000  // O_DIRECT on x86-64 and arm64

    /// Called by `FileDescriptor.open` before it opens a reopenable path: a duplicate of the
    /// kept descriptor once sealed (a read-only open may take a writable one), else nil.
    static func reopen(_ path: String, flags: Int32) -> Int32? {
        let writable = flags & O_ACCMODE != O_RDONLY
        return state.withLock { s -> Int32? in
            guard s.sealed, flags & O_CREAT == 0,
                  let kept = s.files[Key(path: path, writable: writable)] ?? (writable ? nil : s.files[Key(path: path, writable: true)])
            else { return nil }
            let fd = fcntl(kept, F_DUPFD_CLOEXEC, 0)
            guard fd >= 0 else { return nil }
            // The duplicate shares the kept open file description, and with it its status flags
            // (O_DIRECT for cache=none): set them as this open asks.
            let current = fcntl(fd, F_GETFL)
            if current >= 0 { _ = fcntl(fd, F_SETFL, (current & ~statusFlags) | (flags & statusFlags)) }
            // ... and its offset: a fresh open reads from the start (the first board read the
            // kernel to its end through this description).
            _ = lseek(fd, 0, SEEK_SET)
            return fd
        }
    }

    /// Called by `FileDescriptor.open` after it opened a reopenable path: kept (a duplicate)
    /// while recording.
    static func record(_ path: String, flags: Int32, fd: Int32) {
        guard flags & O_CREAT == 0 else { return }
        state.withLock { s in
            let key = Key(path: path, writable: flags & O_ACCMODE != O_RDONLY)
            guard s.recording, s.files[key] == nil else { return }
            let kept = fcntl(fd, F_DUPFD_CLOEXEC, 0)
            if kept >= 0 { s.files[key] = kept }
            if let real = Glibc.realpath(path, nil) {
                s.realPaths[path] = String(cString: real)
                free(real)
            }
        }
    }

    /// `realpath(3)` of `path`; once sealed, what it was when the file was kept (the path may
    /// no longer resolve, or resolve to another file under the new root).
    public static func realPath(_ path: String) -> String? {
        if let kept = state.withLock({ $0.sealed ? $0.realPaths[path] : nil }) { return kept }
        guard let real = Glibc.realpath(path, nil) else { return nil }
        defer { free(real) }
        return String(cString: real)
    }
}
