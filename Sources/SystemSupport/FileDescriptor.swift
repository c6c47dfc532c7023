import CLinux
import Glibc

/// An owned file descriptor (DESIGN.md §9.4): closed exactly once, when its owner ends.
/// `~Copyable` so two owners can never close the same number.
public struct FileDescriptor: ~Copyable, Sendable {
    public let rawValue: Int32

    /// Takes ownership of `rawValue`.
    public init(owning rawValue: Int32) { self.rawValue = rawValue }

    deinit { _ = Glibc.close(rawValue) }

    /// Gives up ownership without closing.
    public consuming func release() -> Int32 {
        let fd = rawValue
        discard self
        return fd
    }

    /// Opens `path`; `mode` applies when `O_CREAT` is in `flags`. `reopenable`: a file a board
    /// opens again at each reset (see `KeptFiles`).
    public static func open(_ path: String, _ flags: Int32, mode: mode_t = 0o644,
                            reopenable: Bool = false) throws(SystemError) -> FileDescriptor {
        if let set = FdSets.set(inPath: path) { return try FdSets.dup(set: set, flags: flags, path: path) }
        if reopenable, let kept = KeptFiles.reopen(path, flags: flags) { return FileDescriptor(owning: kept) }
        let fd = try syscall("cannot open '\(path)'") { Glibc.open(path, flags | O_CLOEXEC, mode) }
        if reopenable { KeptFiles.record(path, flags: flags, fd: fd) }
        return FileDescriptor(owning: fd)
    }

    /// Reads the file at `path` whole (kernels, firmware, device trees), refusing files larger
    /// than `limit` bytes: `-kernel /dev/zero` must be an error, not an endless read.
    public static func readWholeFile(_ path: String, limit: UInt64) throws(SystemError) -> [UInt8] {
        let fd = try FileDescriptor.open(path, O_RDONLY, reopenable: true)
        // A regular file is read in place, into an array of its size: grown chunk by chunk, a
        // 30 MB kernel was copied and faulted in twice over before the guest started (perf).
        var info = stat()
        let size = fstat(fd.rawValue, &info) == 0 && info.st_mode & S_IFMT == S_IFREG ? Int(info.st_size) : 0
        guard UInt64(size) <= limit else {
            throw SystemError(.configuration, "'\(path)' is larger than \(limit) bytes, more than fits where it goes")
        }
        var failure: SystemError?
        // SAFETY: `initialized` counts only the bytes `read` has written, each below `size`,
        // the capacity the buffer was made with; a short or failed read leaves the array shorter.
        var result = [UInt8](unsafeUninitializedCapacity: size) { buffer, initialized in
            while initialized < size {
                do throws(SystemError) {
                    let rest = UnsafeMutableRawBufferPointer(UnsafeMutableBufferPointer(rebasing: buffer[initialized...]))
                    guard let n = try fd.read(into: rest), n > 0 else { break }
                    initialized += n
                } catch {
                    failure = error
                    break
                }
            }
        }
        if let failure { throw failure }
        // Whatever a file that is not regular (or that grew meanwhile) has beyond that.
        var buffer = [UInt8](repeating: 0, count: 1 << 16)
        while true {
            let n = try buffer.withUnsafeMutableBytes { b in Result { () throws(SystemError) in try fd.read(into: b) } }.get()
            guard let n, n > 0 else { break }
            guard UInt64(result.count + n) <= limit else {
                throw SystemError(.configuration, "'\(path)' is larger than \(limit) bytes, more than fits where it goes")
            }
            result += buffer[0..<n]
        }
        return result
    }

    /// Reads up to `buffer.count` bytes. Returns 0 at end of file, nil when it would block.
    public func read(into buffer: UnsafeMutableRawBufferPointer) throws(SystemError) -> Int? {
        while true {
            let n = Glibc.read(rawValue, buffer.baseAddress, buffer.count)
            if n >= 0 { return n }
            let err = Errno.current
            if err == .interrupted { continue }
            if err == .wouldBlock { return nil }
            throw SystemError(.syscall, "read from fd \(rawValue) failed", errno: err)
        }
    }

    /// Writes as much of `bytes` as the descriptor takes now. Returns the count written
    /// (0 when it would block).
    public func write(_ bytes: UnsafeRawBufferPointer) throws(SystemError) -> Int {
        if bytes.isEmpty { return 0 }
        while true {
            let n = Glibc.write(rawValue, bytes.baseAddress, bytes.count)
            if n >= 0 { return n }
            let err = Errno.current
            if err == .interrupted { continue }
            if err == .wouldBlock { return 0 }
            throw SystemError(.syscall, "write to fd \(rawValue) failed", errno: err)
        }
    }

    /// Writes all of `bytes`, waiting (poll) while the descriptor is full.
    public func writeAll(_ bytes: UnsafeRawBufferPointer) throws(SystemError) {
        var done = 0
        while done < bytes.count {
            let n = try write(UnsafeRawBufferPointer(rebasing: bytes[done...]))
            if n == 0 { waitWritable() }
            done += n
        }
    }

    public func writeAll(_ bytes: [UInt8]) throws(SystemError) {
        var done = 0
        while done < bytes.count {
            let n = try bytes.withUnsafeBytes { b in
                Result { () throws(SystemError) in try write(UnsafeRawBufferPointer(rebasing: b[done...])) }
            }.get()
            if n == 0 { waitWritable() }
            done += n
        }
    }

    public func writeAll(_ text: String) throws(SystemError) {
        try writeAll(Array(text.utf8))
    }

    /// Blocks until the descriptor is writable (or has an error to report).
    public func waitWritable() {
        var p = pollfd(fd: rawValue, events: Int16(POLLOUT), revents: 0)
        _ = Glibc.poll(&p, 1, -1)
    }

    public func setNonBlocking(_ on: Bool = true) throws(SystemError) {
        let flags = try syscall("fcntl(F_GETFL)") { clx_fcntl_getfl(rawValue) }
        let new = on ? flags | O_NONBLOCK : flags & ~O_NONBLOCK
        _ = try syscall("fcntl(F_SETFL)") { clx_fcntl_setfl(rawValue, new) }
    }

    /// Creates a connected pair of `AF_UNIX` stream sockets, close-on-exec. The caller owns
    /// both numbers (wrap each in `FileDescriptor(owning:)`); a tuple of `~Copyable` values is
    /// not expressible yet.
    public static func socketPair() throws(SystemError) -> (Int32, Int32) {
        var fds: [Int32] = [0, 0]
        _ = try syscall("socketpair") { socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &fds) }
        return (fds[0], fds[1])
    }
}
