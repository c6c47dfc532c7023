import CLinux
import Glibc
import Synchronization
import SystemSupport

/// A timerfd on the event loop: runs `action` on the loop thread when it fires. Backends use
/// it to poll for a pty's slave side and to reconnect a client socket, as QEMU's chardevs do.
final class LoopTimer: Sendable {
    private let fd: Mutex<DescriptorSlot>
    private let loop: EventLoop
    private let action: @Sendable () -> Void

    init(loop: EventLoop, _ action: @escaping @Sendable () -> Void) throws(SystemError) {
        self.loop = loop
        let raw = try syscall("timerfd_create") {
            timerfd_create(CLOCK_MONOTONIC, Int32(TFD_NONBLOCK | TFD_CLOEXEC))
        }
        fd = Mutex(DescriptorSlot(fd: FileDescriptor(owning: raw)))
        self.action = action
        try loop.register(fd: raw, events: EventLoop.readable) { [weak self] _ in self?.fire() }
    }

    private func fire() {
        // Drain the count so the level-triggered fd goes quiet. Under the lock, so a timer
        // closed meanwhile is never read through a reused descriptor number.
        let fired = fd.withLock { slot -> Bool in
            guard let raw = slot.rawValue else { return false }
            var expirations: UInt64 = 0
            return Glibc.read(raw, &expirations, 8) == 8
        }
        if fired { action() }
    }

    deinit { close() }

    /// Fires after `milliseconds`, then every `milliseconds` when `repeating`.
    func arm(milliseconds: Int, repeating: Bool) {
        let ms = max(1, milliseconds)
        let interval = timespec(tv_sec: ms / 1000, tv_nsec: (ms % 1000) * 1_000_000)
        var spec = itimerspec(it_interval: repeating ? interval : timespec(), it_value: interval)
        fd.withLock { slot in
            if let raw = slot.rawValue { _ = timerfd_settime(raw, 0, &spec, nil) }
        }
    }

    func disarm() {
        var spec = itimerspec()
        fd.withLock { slot in
            if let raw = slot.rawValue { _ = timerfd_settime(raw, 0, &spec, nil) }
        }
    }

    func close() {
        fd.withLock { slot in
            if let raw = slot.rawValue { loop.unregister(fd: raw) }
            slot.fd = nil
        }
    }
}
