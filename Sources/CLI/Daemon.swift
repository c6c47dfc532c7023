import CLinux
import Glibc
import Synchronization
import SystemSupport

/// `-daemonize` (QEMU's os_daemonize and os_setup_post): the process detaches from its
/// terminal and session, and the command returns only once the machine is built, with
/// status 0, or 1 if it could not be (the error is printed first, as the daemon still has
/// the caller's stderr until then).
final class Daemon: Sendable {
    /// The pipe's write end the waiting parent reads; -1 once the parent has been told.
    private let readyFD: Mutex<Int32>
    /// /dev/null, opened at once: `ready` comes after -chroot, whose root may have none.
    private let nullFD: Int32

    private init(readyFD: Int32, nullFD: Int32) {
        self.readyFD = Mutex(readyFD)
        self.nullFD = nullFD
    }

    /// Forks twice (the daemon is no session leader, so it can never get a controlling
    /// terminal again) and returns in the daemon only. Call before any thread starts: fork
    /// copies only the calling thread.
    static func detach() throws(SystemError) -> Daemon {
        var fds: [Int32] = [0, 0]
        _ = try syscall("pipe") { pipe(&fds) }
        for fd in fds { _ = clx_set_cloexec(fd) }
        let first = try syscall("fork") { fork() }
        if first > 0 {
            // The command the user ran: reap the intermediate child (it exits at once), wait
            // for the daemon's word, then end with it.
            close(fds[1])
            var childStatus: Int32 = 0
            while waitpid(first, &childStatus, 0) < 0 && errno == EINTR {}
            var status: UInt8 = 1
            while true {
                let n = read(fds[0], &status, 1)
                if n < 0 && errno == EINTR { continue }
                if n <= 0 { status = 1 }  // the daemon died before the machine was built
                break
            }
            exit(Int32(status))
        }
        close(fds[0])
        _ = setsid()
        let second = try syscall("fork") { fork() }
        if second > 0 { exit(0) }
        return Daemon(readyFD: fds[1], nullFD: open("/dev/null", O_RDWR | O_CLOEXEC))
    }

    /// The machine is built: the waiting command exits 0 and the daemon's stdin, stdout and
    /// stderr go to /dev/null. Only the first call acts.
    func ready() {
        let fd = readyFD.withLock { fd in
            defer { fd = -1 }
            return fd
        }
        guard fd >= 0 else { return }
        if nullFD >= 0 {
            for target: Int32 in [0, 1, 2] { _ = dup2(nullFD, target) }
            if nullFD > 2 { close(nullFD) }
        }
        var ok: UInt8 = 0
        _ = write(fd, &ok, 1)
        close(fd)
    }
}

/// `-pidfile FILE` (QEMU's qemu_write_pidfile): the process id, with a write lock held as long
/// as the process runs, so a second instance given the same file is refused; removed at the end.
final class PidFile {
    private let path: String
    private let fd: FileDescriptor

    init(path: String) throws(SystemError) {
        self.path = path
        fd = try FileDescriptor.open(path, O_WRONLY | O_CREAT | O_CLOEXEC, mode: 0o600)
        let raw = fd.rawValue
        guard lockf(raw, F_TLOCK, 0) == 0 else {
            // QEMU's words (qemu_write_pidfile, then vl.c's prefix).
            throw SystemError(.configuration, "cannot create PID file: Cannot lock pid file: \(String(cString: strerror(errno)))")
        }
        _ = ftruncate(raw, 0)
        try fd.writeAll("\(getpid())\n")
    }

    /// Removes the file (the lock goes with the descriptor).
    func remove() { unlink(path) }
}
