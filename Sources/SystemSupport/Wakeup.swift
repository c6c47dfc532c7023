import CLinux
import Glibc

/// A wake-up signal for a thread that sleeps with a timeout: a vCPU in WFI waits here and
/// interrupt sources signal it. An eventfd, so signals sent before the wait are not lost and
/// the same descriptor can join an epoll set.
public final class Wakeup: Sendable {
    public let fd: Int32

    public init() throws(SystemError) {
        fd = try syscall("eventfd") { eventfd(0, Int32(EFD_CLOEXEC | EFD_NONBLOCK)) }
    }

    deinit { close(fd) }

    public func signal() {
        var one: UInt64 = 1
        _ = Glibc.write(fd, &one, 8)
    }

    /// Sleeps until `signal()` (or one already sent) or `timeoutNanoseconds` (-1 = forever),
    /// and consumes the signal.
    public func wait(timeoutNanoseconds: Int64) {
        var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        // poll(2) counts milliseconds; round up so a deadline is never missed, only reached
        // up to 1 ms late (guest timers tolerate that; a busy-wait would burn a host core).
        let ms = timeoutNanoseconds < 0 ? -1 : Int32(min(Int64(Int32.max), (timeoutNanoseconds + 999_999) / 1_000_000))
        _ = poll(&p, 1, ms)
        var value: UInt64 = 0
        _ = Glibc.read(fd, &value, 8)
    }
}
