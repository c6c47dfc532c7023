import Glibc
import SystemSupport

// The socket address code itself is SystemSupport's (`RawSocketAddress`, `Sockets`), shared
// with Net; these are the stream-only shorthands the chardevs and the migration channel use.

extension RawSocketAddress {
    /// The addresses of `host`:`port` for a stream socket (`resolve` with SOCK_STREAM).
    static func tcp(host: String, port: UInt16, passive: Bool) throws(SystemError) -> [RawSocketAddress] {
        try resolve(host: host, port: port, socketType: Int32(SOCK_STREAM.rawValue), passive: passive)
    }
}

extension Sockets {
    /// A close-on-exec stream socket.
    static func stream(family: Int32, nonBlocking: Bool) throws(SystemError) -> FileDescriptor {
        try open(family: family, type: Int32(SOCK_STREAM.rawValue), nonBlocking: nonBlocking, what: "cannot create a socket")
    }

    /// The local port of a bound TCP socket.
    static func localPort(_ fd: Int32) -> UInt16? { RawSocketAddress.of(fd, peer: false)?.port }
}
