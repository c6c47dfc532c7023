import CLinux
import Glibc
import Synchronization

/// An epoll-driven I/O loop on its own host thread (DESIGN.md §4): character and network
/// backends wait here for input, so vCPU threads never block on a file descriptor.
///
/// Handlers run on the loop thread. `execute` queues work for that thread from any other.
public final class EventLoop: Sendable {
    public typealias Handler = @Sendable (_ events: UInt32) -> Void

    private struct State {
        var handlers: [Int32: Handler] = [:]
        var tasks: [@Sendable () -> Void] = []
        var stopping = false
        var running = false
    }

    private let epollFD: Int32
    private let wakeFD: Int32
    private let state = Mutex(State())

    public init() throws(SystemError) {
        epollFD = try syscall("epoll_create1") { epoll_create1(Int32(EPOLL_CLOEXEC)) }
        do {
            wakeFD = try syscall("eventfd") { eventfd(0, Int32(EFD_CLOEXEC | EFD_NONBLOCK)) }
        } catch {
            close(epollFD)
            throw error
        }
        var ev = epoll_event(events: UInt32(clx_EPOLLIN), data: epoll_data_t(fd: wakeFD))
        _ = epoll_ctl(epollFD, EPOLL_CTL_ADD, wakeFD, &ev)
    }

    deinit {
        close(wakeFD)
        close(epollFD)
    }

    public static let readable = UInt32(clx_EPOLLIN)
    public static let writable = UInt32(clx_EPOLLOUT)
    public static let hangup = UInt32(clx_EPOLLHUP | clx_EPOLLRDHUP | clx_EPOLLERR)

    /// Watches `fd` for `events` (EPOLLIN/EPOLLOUT...); `handler` gets the events that fired.
    public func register(fd: Int32, events: UInt32, _ handler: @escaping Handler) throws(SystemError) {
        state.withLock { $0.handlers[fd] = handler }
        var ev = epoll_event(events: events, data: epoll_data_t(fd: fd))
        do {
            _ = try syscall("epoll_ctl(ADD, \(fd))") { epoll_ctl(epollFD, EPOLL_CTL_ADD, fd, &ev) }
        } catch {
            _ = state.withLock { $0.handlers.removeValue(forKey: fd) }
            throw error
        }
    }

    /// Changes the events watched on a registered `fd`.
    public func modify(fd: Int32, events: UInt32) throws(SystemError) {
        var ev = epoll_event(events: events, data: epoll_data_t(fd: fd))
        _ = try syscall("epoll_ctl(MOD, \(fd))") { epoll_ctl(epollFD, EPOLL_CTL_MOD, fd, &ev) }
    }

    /// Stops watching `fd`. Call before closing it.
    public func unregister(fd: Int32) {
        _ = epoll_ctl(epollFD, EPOLL_CTL_DEL, fd, nil)
        _ = state.withLock { $0.handlers.removeValue(forKey: fd) }
    }

    /// Runs `task` on the loop thread soon.
    public func execute(_ task: @escaping @Sendable () -> Void) {
        state.withLock { $0.tasks.append(task) }
        wake()
    }

    private func wake() {
        var one: UInt64 = 1
        _ = Glibc.write(wakeFD, &one, 8)
    }

    /// Starts the loop on a new host thread.
    public func start(name: String = "swemu-io") throws(SystemError) {
        let already = state.withLock { s in
            defer { s.running = true }
            return s.running
        }
        if already { return }
        try HostThread.spawn(name: name) { [self] in
            while runOnce(timeoutMilliseconds: -1) {}
        }
    }

    /// Asks the loop thread to end after its current round.
    public func stop() {
        state.withLock { $0.stopping = true }
        wake()
    }

    /// Waits once for events (or `timeoutMilliseconds`, -1 = forever), dispatches them and
    /// queued tasks. Returns false once `stop()` was called. Tests drive the loop with this.
    @discardableResult
    public func runOnce(timeoutMilliseconds: Int32) -> Bool {
        var events = [epoll_event](repeating: epoll_event(), count: 32)
        let n = epoll_wait(epollFD, &events, Int32(events.count), timeoutMilliseconds)
        if n > 0 {
            for i in 0..<Int(n) {
                let fd = events[i].data.fd
                if fd == wakeFD {
                    var value: UInt64 = 0
                    _ = Glibc.read(wakeFD, &value, 8)
                    continue
                }
                if let handler = state.withLock({ $0.handlers[fd] }) {
                    handler(events[i].events)
                }
            }
        }
        let (tasks, stopping) = state.withLock { s in
            defer { s.tasks.removeAll() }
            return (s.tasks, s.stopping)
        }
        for task in tasks { task() }
        return !stopping
    }
}
