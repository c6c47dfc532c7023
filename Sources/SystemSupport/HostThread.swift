import CLinux
import Glibc

/// Starts a detached host thread running `body` (vCPU threads, the I/O event loop).
/// A thin pthread wrapper so low layers need no Foundation.
public enum HostThread {
    private final class Box: @unchecked Sendable {
        // SAFETY: written once before pthread_create, read once by the new thread.
        let body: @Sendable () -> Void
        let name: String
        init(_ body: @escaping @Sendable () -> Void, name: String) { self.body = body; self.name = name }
    }

    /// The kernel's id of the calling thread (what `ps -L` and QEMU's thread_id show).
    public static func currentID() -> Int { Int(clx_gettid()) }

    public static func spawn(name: String, _ body: @escaping @Sendable () -> Void) throws(SystemError) {
        let box = Unmanaged.passRetained(Box(body, name: name)).toOpaque()
        var tid = pthread_t()
        let rc = pthread_create(&tid, nil, { arg in
            let box = Unmanaged<Box>.fromOpaque(arg!).takeRetainedValue()
            _ = clx_set_thread_name(box.name)
            box.body()
            return nil
        }, box)
        if rc != 0 {
            Unmanaged<Box>.fromOpaque(box).release()
            throw SystemError(.syscall, "cannot start thread '\(name)'", errno: Errno(rawValue: rc))
        }
        pthread_detach(tid)
    }
}
