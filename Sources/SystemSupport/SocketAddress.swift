import CLinux
import Glibc

/// A socket address as raw bytes (sockaddr_in, sockaddr_in6 or sockaddr_un) and its family,
/// so the pointer casts the socket calls need stay in the few functions here. Shared by the
/// character and network backends (`Chardev`, `Net`), which are siblings (DESIGN.md §2).
///
/// Named `Raw…` because `Chardev.SocketAddress` is the `-chardev socket` option value.
package struct RawSocketAddress: Sendable, Equatable {
    package var family: Int32
    package var bytes: [UInt8]

    package init(family: Int32, bytes: [UInt8]) {
        self.family = family
        self.bytes = bytes
    }

    /// A sockaddr_un for `path`; it must fit sun_path (107 bytes and a NUL).
    package static func unix(_ path: String) throws(SystemError) -> RawSocketAddress {
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        let utf8 = Array(path.utf8)
        let capacity = MemoryLayout.size(ofValue: addr.sun_path)
        guard utf8.count < capacity, !utf8.contains(0) else {
            throw SystemError(.configuration, "unix socket path '\(path)' is too long: at most \(capacity - 1) bytes")
        }
        // SAFETY: sun_path is a fixed C array of `capacity` bytes inside `addr`; we copy
        // utf8.count < capacity bytes, leaving the NUL that sockaddr_un() zeroed.
        withUnsafeMutableBytes(of: &addr.sun_path) { $0.copyBytes(from: utf8) }
        // SAFETY: copies the bytes of the local sockaddr_un during the call only.
        return RawSocketAddress(family: AF_UNIX, bytes: withUnsafeBytes(of: &addr) { Array($0) })
    }

    /// Resolves `host` and `port` with getaddrinfo for sockets of `socketType` (SOCK_STREAM,
    /// SOCK_DGRAM); numeric addresses and names both work. An empty host is 0.0.0.0 when
    /// `passive` (QEMU listens on every IPv4 interface), else localhost.
    package static func resolve(host: String, port: UInt16, socketType: Int32, passive: Bool) throws(SystemError) -> [RawSocketAddress] {
        var hints = addrinfo()
        hints.ai_family = host.isEmpty && passive ? AF_INET : AF_UNSPEC
        hints.ai_socktype = socketType
        hints.ai_flags = AI_NUMERICSERV | (passive ? AI_PASSIVE : 0)
        var list: UnsafeMutablePointer<addrinfo>?
        let node: String? = host.isEmpty ? (passive ? nil : "localhost") : host
        let rc = getaddrinfo(node, String(port), &hints, &list)
        guard rc == 0 else {
            throw SystemError(.configuration, "cannot resolve host '\(host)': \(String(cString: gai_strerror(rc)))")
        }
        defer { freeaddrinfo(list) }
        var result: [RawSocketAddress] = []
        var entry = list
        // SAFETY: getaddrinfo returned a valid list, freed only by the defer above; each
        // ai_addr points to ai_addrlen bytes.
        while let info = entry {
            if let addr = info.pointee.ai_addr {
                let raw = UnsafeRawBufferPointer(start: addr, count: Int(info.pointee.ai_addrlen))
                result.append(RawSocketAddress(family: info.pointee.ai_family, bytes: Array(raw)))
            }
            entry = info.pointee.ai_next
        }
        guard !result.isEmpty else { throw SystemError(.configuration, "host '\(host)' has no address") }
        return result
    }

    /// An IPv4 address and port (multicast groups, `localaddr=`).
    package static func ipv4(_ address: in_addr, port: UInt16) -> RawSocketAddress {
        var sin = sockaddr_in()
        sin.sin_family = sa_family_t(AF_INET)
        sin.sin_port = port.bigEndian
        sin.sin_addr = address
        // SAFETY: copies the bytes of the local sockaddr_in during the call only.
        return RawSocketAddress(family: AF_INET, bytes: withUnsafeBytes(of: &sin) { Array($0) })
    }

    /// The local (getsockname) or remote (getpeername) address of a socket.
    package static func of(_ fd: Int32, peer: Bool) -> RawSocketAddress? {
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        // SAFETY: the kernel writes at most `length` bytes into `storage`, which holds any
        // address; we keep only the `length` bytes it reports.
        let rc = withUnsafeMutablePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { peer ? getpeername(fd, $0, &length) : getsockname(fd, $0, &length) }
        }
        guard rc == 0 else { return nil }
        let count = min(Int(length), MemoryLayout<sockaddr_storage>.size)
        // SAFETY: copies at most sizeof(sockaddr_storage) bytes of the local `storage`.
        return RawSocketAddress(family: Int32(storage.ss_family), bytes: withUnsafeBytes(of: &storage) { Array($0.prefix(count)) })
    }

    /// Runs `body` with the address as a `sockaddr` pointer and length.
    package func withSockaddr<R>(_ body: (UnsafePointer<sockaddr>, socklen_t) -> R) -> R {
        // SAFETY: `bytes` holds a complete sockaddr_* of its family, built above or filled
        // by the kernel; the pointer does not escape `body`.
        bytes.withUnsafeBytes { b in
            body(b.baseAddress!.assumingMemoryBound(to: sockaddr.self), socklen_t(b.count))
        }
    }

    /// The IPv4 address of an AF_INET address.
    package var ipv4Address: in_addr? {
        guard family == AF_INET, bytes.count >= MemoryLayout<sockaddr_in>.size else { return nil }
        // SAFETY: `bytes` holds a whole sockaddr_in (checked above); loadUnaligned copies it.
        return bytes.withUnsafeBytes { $0.loadUnaligned(as: sockaddr_in.self).sin_addr }
    }

    /// The port of an inet address.
    package var port: UInt16? {
        switch family {
        case AF_INET where bytes.count >= MemoryLayout<sockaddr_in>.size:
            // SAFETY: a whole sockaddr_in (checked in the case), copied out unaligned.
            return bytes.withUnsafeBytes { UInt16(bigEndian: $0.loadUnaligned(as: sockaddr_in.self).sin_port) }
        case AF_INET6 where bytes.count >= MemoryLayout<sockaddr_in6>.size:
            // SAFETY: a whole sockaddr_in6 (checked in the case), copied out unaligned.
            return bytes.withUnsafeBytes { UInt16(bigEndian: $0.loadUnaligned(as: sockaddr_in6.self).sin6_port) }
        default:
            return nil
        }
    }

    /// "127.0.0.1:1234", "[::1]:1234" or the unix path ("" for an unnamed unix socket).
    package var text: String {
        if family == AF_UNIX {
            let offset = MemoryLayout<sa_family_t>.size
            guard bytes.count > offset else { return "" }
            let path = bytes[offset...].prefix { $0 != 0 }
            return String(decoding: path, as: UTF8.self)
        }
        var host = [CChar](repeating: 0, count: Int(NI_MAXHOST))
        // SAFETY: getnameinfo reads the address during the call and writes at most host.count
        // bytes (NUL included) into `host`.
        let rc = withSockaddr { addr, length in
            getnameinfo(addr, length, &host, socklen_t(host.count), nil, 0, NI_NUMERICHOST)
        }
        let name = rc == 0 ? String(decoding: host.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self) : "?"
        return "\(Self.bracketed(name)):\(port ?? 0)"
    }

    /// QEMU's socket_uri: "tcp:127.0.0.1:1234" or "unix:/path".
    package var uri: String { family == AF_UNIX ? "unix:\(text)" : "tcp:\(text)" }

    /// An IPv6 literal is written in brackets before a port.
    package static func bracketed(_ host: String) -> String { host.contains(":") ? "[\(host)]" : host }
}

/// Small socket calls shared by the character and network backends.
package enum Sockets {
    /// A close-on-exec socket of `type` (SOCK_STREAM, SOCK_DGRAM), non-blocking when asked;
    /// `what` is the message if the kernel refuses.
    package static func open(family: Int32, type: Int32, nonBlocking: Bool, what: @autoclosure () -> String) throws(SystemError) -> FileDescriptor {
        let flags = Int32(SOCK_CLOEXEC.rawValue) | (nonBlocking ? Int32(SOCK_NONBLOCK.rawValue) : 0)
        return FileDescriptor(owning: try syscall(what()) { socket(family, type | flags, 0) })
    }

    /// setsockopt with an int value (1: on).
    package static func setOption(_ fd: Int32, _ level: Int32, _ name: Int32, _ value: Int32 = 1) {
        var v = value
        _ = setsockopt(fd, level, name, &v, socklen_t(MemoryLayout<Int32>.size))
    }

    /// A stream socket the parent process left open as `fd` (libvirt's `fd=N`): checked to
    /// be listening (`listening`) or connected, then owned, close-on-exec and non-blocking.
    /// `what` starts the messages ("-netdev stream", "chardev 'charmonitor'").
    package static func inheritedStream(_ fd: Int32, listening: Bool, what: String) throws(SystemError) -> FileDescriptor {
        guard intOption(fd, SOL_SOCKET, SO_TYPE) == Int32(SOCK_STREAM.rawValue) else {
            throw SystemError(.configuration, "\(what): fd \(fd) is not a stream socket")
        }
        if listening {
            guard intOption(fd, SOL_SOCKET, SO_ACCEPTCONN) == 1 else {
                throw SystemError(.configuration, "\(what): fd \(fd) is not a listening socket (server=on takes one; server=off takes a connected socket)")
            }
        } else {
            guard intOption(fd, SOL_SOCKET, SO_ACCEPTCONN) != 1, RawSocketAddress.of(fd, peer: true) != nil else {
                throw SystemError(.configuration, "\(what): fd \(fd) is not a connected socket (server=off takes one; server=on takes a listening socket)")
            }
        }
        _ = clx_set_cloexec(fd)
        _ = clx_fcntl_setfl(fd, clx_fcntl_getfl(fd) | O_NONBLOCK)
        return FileDescriptor(owning: fd)
    }

    /// getsockopt of an int option (SO_TYPE, SO_ACCEPTCONN); nil when it fails.
    package static func intOption(_ fd: Int32, _ level: Int32, _ name: Int32) -> Int32? {
        var value: Int32 = 0
        var length = socklen_t(MemoryLayout<Int32>.size)
        return getsockopt(fd, level, name, &value, &length) == 0 ? value : nil
    }

    package static func bind(_ fd: Int32, _ address: RawSocketAddress, what: @autoclosure () -> String) throws(SystemError) {
        let rc = address.withSockaddr { Glibc.bind(fd, $0, $1) }
        if rc < 0 { throw SystemError(.syscall, what(), errno: Errno.current) }
    }

    /// A blocking connect (at start-up, as QEMU 7.2's clients connect before the guest runs),
    /// leaving the socket non-blocking.
    package static func connect(_ fd: Int32, _ address: RawSocketAddress, what: @autoclosure () -> String) throws(SystemError) {
        _ = clx_fcntl_setfl(fd, clx_fcntl_getfl(fd) & ~O_NONBLOCK)
        defer { _ = clx_fcntl_setfl(fd, clx_fcntl_getfl(fd) | O_NONBLOCK) }
        while true {
            let rc = address.withSockaddr { Glibc.connect(fd, $0, $1) }
            if rc == 0 { return }
            let err = Errno.current
            if err == .interrupted { continue }
            throw SystemError(.syscall, what(), errno: err)
        }
    }

    /// The next connection of `listener`, non-blocking and close-on-exec; nil when there is
    /// none now (EAGAIN, or one reset before it was taken: ECONNABORTED, EPROTO). Throws when
    /// the process cannot take one (EMFILE, ENFILE, ENOBUFS, ENOMEM): the connection stays in
    /// the backlog, so a caller watching the listener must stop for a while or the loop would
    /// wake for it without end.
    package static func accept(_ listener: Int32) throws(SystemError) -> FileDescriptor? {
        while true {
            let fd = Glibc.accept(listener, nil, nil)
            if fd >= 0 {
                _ = clx_set_cloexec(fd)
                _ = clx_fcntl_setfl(fd, clx_fcntl_getfl(fd) | O_NONBLOCK)
                return FileDescriptor(owning: fd)
            }
            let error = Errno.current
            switch error {
            case .interrupted: continue
            case .wouldBlock, Errno(rawValue: ECONNABORTED), Errno(rawValue: EPROTO): return nil
            default: throw SystemError(.badInput, "accept", errno: error)
            }
        }
    }

    /// `accept` on a listener `loop` watches (`watched`): when it fails (out of descriptors,
    /// say) the connection stays in the backlog, so the listener is unwatched, or the loop would
    /// wake for it without end; the caller watches it again later (after a second, say) and
    /// reports the error thrown. Call with the lock that guards `watched` held.
    package static func acceptOrUnwatch(_ listener: Int32, loop: EventLoop, watched: inout Bool) throws(SystemError) -> FileDescriptor? {
        do throws(SystemError) {
            return try accept(listener)
        } catch {
            if watched { loop.unregister(fd: listener) }
            watched = false
            throw error
        }
    }

    /// Waits up to `milliseconds` (-1: forever) for `fd` to have `events` (POLLIN, POLLOUT).
    package static func wait(_ fd: Int32, events: Int16, milliseconds: Int32) -> Bool {
        var p = pollfd(fd: fd, events: events, revents: 0)
        while true {
            let n = Glibc.poll(&p, 1, milliseconds)
            if n < 0 && Errno.current == .interrupted { continue }
            return n > 0
        }
    }

    /// TCP_NODELAY on a TCP socket (nothing for a unix one): a console sends a byte at a
    /// time, a network peer a frame at a time, and each wants it sent now.
    package static func setNoDelay(_ fd: Int32, family: Int32) {
        if family == AF_INET || family == AF_INET6 { setOption(fd, Int32(IPPROTO_TCP), TCP_NODELAY) }
    }
}
