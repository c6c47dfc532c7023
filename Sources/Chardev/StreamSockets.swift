import CLinux
import Glibc
import SystemSupport

/// Blocking stream sockets for the migration channel (`tcp:HOST:PORT`, `unix:PATH`), on the
/// same address code as the chardevs.
package enum StreamSockets {
    /// Connects to `host:port`, trying each address it resolves to.
    package static func connect(host: String, port: UInt16) throws(SystemError) -> FileDescriptor {
        var last: SystemError?
        for address in try RawSocketAddress.tcp(host: host, port: port, passive: false) {
            do throws(SystemError) {
                return try connect(address, what: "\(host):\(port)")
            } catch {
                last = error
            }
        }
        throw last ?? SystemError(.configuration, "cannot connect to \(host):\(port)")
    }

    package static func connect(unixPath path: String) throws(SystemError) -> FileDescriptor {
        try connect(try RawSocketAddress.unix(path), what: path)
    }

    private static func connect(_ address: RawSocketAddress, what: String) throws(SystemError) -> FileDescriptor {
        let fd = try Sockets.stream(family: address.family, nonBlocking: false)
        _ = try address.withSockaddr { (sa, length) in
            Result { () throws(SystemError) in try syscall("cannot connect to \(what)") { Glibc.connect(fd.rawValue, sa, length) } }
        }.get()
        return fd
    }

    /// A listening socket on `host:port` (port 0: any free port, see `localPort`).
    package static func listen(host: String, port: UInt16) throws(SystemError) -> FileDescriptor {
        guard let address = try RawSocketAddress.tcp(host: host, port: port, passive: true).first else {
            throw SystemError(.configuration, "cannot listen on \(host):\(port)")
        }
        let fd = try Sockets.stream(family: address.family, nonBlocking: false)
        Sockets.setOption(fd.rawValue, SOL_SOCKET, SO_REUSEADDR)
        try bindAndListen(fd, address, what: "\(host):\(port)")
        return fd
    }

    /// A listening socket at `path` (an old socket file there is replaced, as QEMU does).
    package static func listen(unixPath path: String) throws(SystemError) -> FileDescriptor {
        let address = try RawSocketAddress.unix(path)
        let fd = try Sockets.stream(family: AF_UNIX, nonBlocking: false)
        unlink(path)
        try bindAndListen(fd, address, what: path)
        return fd
    }

    private static func bindAndListen(_ fd: borrowing FileDescriptor, _ address: RawSocketAddress, what: String) throws(SystemError) {
        let raw = fd.rawValue
        try Sockets.bind(raw, address, what: "cannot listen on \(what)")
        _ = try syscall("cannot listen on \(what)") { Glibc.listen(raw, 1) }
    }

    /// The port a TCP listener is bound to.
    package static func localPort(_ fd: borrowing FileDescriptor) -> UInt16? { Sockets.localPort(fd.rawValue) }

    /// Waits for one connection, giving up when `cancelled` says so (polled every 100 ms).
    package static func accept(_ listener: borrowing FileDescriptor, cancelled: () -> Bool) throws(SystemError) -> FileDescriptor {
        while true {
            if cancelled() { throw SystemError(.configuration, "cancelled while waiting for a connection") }
            guard Sockets.wait(listener.rawValue, events: Int16(POLLIN), milliseconds: 100) else { continue }
            let fd = Glibc.accept(listener.rawValue, nil, nil)
            if fd >= 0 {
                _ = clx_set_cloexec(fd)
                return FileDescriptor(owning: fd)
            }
            let err = Errno.current
            if err == .interrupted || err == .wouldBlock { continue }
            throw SystemError(.syscall, "cannot accept a connection", errno: err)
        }
    }

    /// Waits up to `milliseconds` for `fd` to be readable (or closed).
    package static func waitReadable(_ fd: Int32, milliseconds: Int32) -> Bool {
        Sockets.wait(fd, events: Int16(POLLIN), milliseconds: milliseconds)
    }
}
