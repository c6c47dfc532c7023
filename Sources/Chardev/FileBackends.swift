import DeviceModel
import Glibc
import Synchronization
import SystemSupport

/// A host character backend that can be shut down: what `CharDevice` owns. `close()` stops
/// its I/O, closes its descriptors, restores a terminal it changed and removes a socket file
/// it created; it is idempotent, and the backend drops output afterwards.
public protocol CharDriver: CharBackend {
    func close()
}

/// `-chardev null`, `-serial null`: output vanishes, input never comes. A frontend hears
/// `.opened` at attach (a monitor's greeting vanishes with the rest).
public final class NullBackend: CharDriver {
    public init() {}
    public var label: String { "null" }
    public func attach(_ frontend: (any CharFrontend)?) { frontend?.backendEvent(.opened) }
    public func write(_ bytes: [UInt8]) {}
    public func acceptInput() {}
    public func close() {}
}

/// `-chardev file,path=P[,append=on]`, `-serial file:P`: guest output to a file (mode 0644,
/// truncated unless appending), no input. Writes block, as a file write may.
public final class FileBackend: CharDriver {
    public let path: String
    private let fd: Mutex<DescriptorSlot>

    public init(path: String, append: Bool = false) throws(SystemError) {
        self.path = path
        let flags = O_WRONLY | O_CREAT | (append ? O_APPEND : O_TRUNC)
        do {
            fd = Mutex(DescriptorSlot(fd: try FileDescriptor.open(path, flags, mode: 0o644)))
        } catch {
            throw SystemError(.configuration, "cannot open chardev output file '\(path)'", errno: error.errno)
        }
    }

    public var label: String { "file:\(path)" }
    /// The file is open from the start: a frontend hears `.opened` at attach (a monitor on a
    /// file writes its greeting there, as QEMU's does).
    public func attach(_ frontend: (any CharFrontend)?) { frontend?.backendEvent(.opened) }
    public func acceptInput() {}

    public func write(_ bytes: [UInt8]) {
        fd.withLock { slot in
            guard let fd = slot.rawValue else { return }
            // A full disk or an I/O error loses console output, never the guest.
            if !writeAllBorrowed(fd, bytes) { slot.fd = nil }
        }
    }

    public func close() { fd.withLock { $0.fd = nil } }
}

/// Writes all of `bytes` to a descriptor we do not own (stdout), waiting while it is full.
/// False when the descriptor failed (EPIPE, EIO).
func writeAllBorrowed(_ fd: Int32, _ bytes: [UInt8]) -> Bool {
    var done = 0
    while done < bytes.count {
        // SAFETY: done < bytes.count, so the buffer is non-empty (baseAddress is set) and
        // baseAddress + done stays inside it for the b.count - done bytes written.
        let n = bytes.withUnsafeBytes { b in Glibc.write(fd, b.baseAddress! + done, b.count - done) }
        if n > 0 {
            done += n
            continue
        }
        let err = Errno.current
        if n < 0 && err == .interrupted { continue }
        if n < 0 && err == .wouldBlock {
            var p = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
            _ = Glibc.poll(&p, 1, -1)
            continue
        }
        return false
    }
    return true
}
