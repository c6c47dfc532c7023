import Glibc

/// The guest-facing side of a character device: a UART, virtio-console, the monitor.
/// Backends push input to it, asking first how much it can take (QEMU's can_read/read pair),
/// so a slow guest applies back-pressure instead of losing bytes.
public protocol CharFrontend: AnyObject, Sendable {
    /// How many bytes `receive` can take now; 0 stops the flow until `CharBackend.acceptInput()`.
    func receiveCapacity() -> Int
    /// Takes at most `receiveCapacity()` bytes of input.
    func receive(_ bytes: [UInt8])
    /// The host side connected or disconnected (QEMU's CHR_EVENT_OPENED/CLOSED): a socket
    /// client came or went, a pty was opened. Monitors send their greeting on `.opened`.
    func backendEvent(_ event: CharEvent)
    /// Descriptors that came with the input that follows (SCM_RIGHTS on a unix socket): the
    /// frontend owns them. Has a default (close them: devices take none).
    func receiveDescriptors(_ fds: [Int32])
}

/// Connection events of a character backend.
public enum CharEvent: Sendable, Equatable {
    case opened
    case closed
}

extension CharFrontend {
    /// Devices (UARTs, virtio-console) do not care who is on the other end.
    public func backendEvent(_ event: CharEvent) {}
    public func receiveDescriptors(_ fds: [Int32]) { for fd in fds { Glibc.close(fd) } }
}

/// The host-facing side of a character device (stdio, pty, socket, file), DESIGN.md §2.
/// Implementations live in `Chardev`; devices see only this protocol.
public protocol CharBackend: AnyObject, Sendable {
    /// A short description for `info chardev` ("stdio", "pty:/dev/pts/3", "tcp:127.0.0.1:4444").
    var label: String { get }
    /// Connects the frontend that receives this backend's input (nil disconnects it).
    func attach(_ frontend: (any CharFrontend)?)
    /// Sends guest output to the host. Never blocks the caller for long: output to a peer that
    /// is not connected or not reading is dropped, as a real serial line drops it.
    func write(_ bytes: [UInt8])
    /// The frontend can take input again after reporting a capacity of 0.
    func acceptInput()
}
