import CZlib
import Glibc
import SystemSupport

/// The host file under an image format (qcow2's "image file", or a raw disk): positional I/O
/// that retries `EINTR` and short transfers, so several threads may share it without a seek
/// pointer. Reads past the end of the file return zeroes, as a sparse file would.
///
/// **O_DIRECT** (`cache=none`, `directsync`): the host page cache is bypassed, which needs
/// offsets, lengths and buffer addresses aligned to the device's logical block (512 bytes
/// here). Aligned requests go straight through; others go through an aligned bounce buffer,
/// and an unaligned write reads the partial blocks at its ends first. That read-modify-write
/// is not atomic against a concurrent write to the same block: its callers are qcow2's
/// metadata and compressed writes, serialised by the image's lock (virtio-blk's requests are
/// whole sectors and never need it).
package final class ImageFile: Sendable {
    package let path: String
    package let readOnly: Bool
    package let direct: Bool
    private let fd: FileDescriptor

    /// Linux's O_DIRECT on x86-64 and arm64 (Glibc does not import it without _GNU_SOURCE).
    static let oDirect: Int32 = 0o40000
    /// The alignment O_DIRECT needs for offsets, lengths and buffers.
    static let directAlignment = 512

    /// The image's lock bytes, held as long as this file is open (see ImageLock.swift); nil when
    /// opened without `lock`, with `locking=off`, or where the file system cannot lock.
    package let locks: ImageLockHolder?

    /// Opens `path`; with `lock`, takes those permissions on it as QEMU's `file` driver does, and
    /// fails with QEMU's message if another user holds the image in a way they conflict with.
    package init(path: String, readOnly: Bool, direct: Bool = false, lock: LockRequest? = nil) throws(SystemError) {
        let opened = try FileDescriptor.open(path, (readOnly ? O_RDONLY : O_RDWR) | (direct ? ImageFile.oDirect : 0), reopenable: true)
        let raw = opened.rawValue
        var st = stat()
        _ = try syscall("cannot stat '\(path)'") { fstat(raw, &st) }
        let kind = st.st_mode & S_IFMT
        guard kind == S_IFREG || kind == S_IFBLK else {
            throw .configuration("disk image '\(path)' is not a regular file or a block device")
        }
        locks = try lock.flatMap { (request) throws(SystemError) in try ImageLocks.acquire(fd: raw, path: path, request) }
        fd = opened
        self.path = path
        self.readOnly = readOnly
        self.direct = direct
    }

    /// What `create` takes: write and resize, sharing all but resize (QEMU's `raw_co_create`).
    package static let createLock = LockRequest(perm: [.write, .resize], shared: BlockPermissions.all.subtracting(.resize))

    /// Creates (or empties) `path` and opens it for reading and writing. An existing file is
    /// emptied only once its locks are taken, so an image in use is refused untouched.
    package static func create(path: String, lock: LockRequest? = ImageFile.createLock) throws(SystemError) -> ImageFile {
        let fd = try FileDescriptor.open(path, O_RDWR | O_CREAT)
        let locks = try lock.flatMap { (request) throws(SystemError) in try ImageLocks.acquire(fd: fd.rawValue, path: path, request) }
        _ = try syscall("cannot empty '\(path)'") { ftruncate(fd.rawValue, 0) }
        return ImageFile(path: path, owning: fd, locks: locks)
    }

    private init(path: String, owning fd: consuming FileDescriptor, locks: ImageLockHolder?) {
        self.path = path
        readOnly = false
        direct = false
        self.fd = fd
        self.locks = locks
    }

    /// The descriptor, for calls this type does not wrap (fallocate, lseek SEEK_DATA).
    package var descriptor: Int32 { fd.rawValue }

    /// The file's length in bytes.
    package func length() throws(SystemError) -> UInt64 {
        let end = try syscall("cannot find the size of '\(path)'") { lseek(fd.rawValue, 0, SEEK_END) }
        return UInt64(end)
    }

    /// Bytes the file occupies on the host (`st_blocks`), what qemu-img calls "disk size".
    package func allocatedBytes() throws(SystemError) -> UInt64 {
        var st = stat()
        _ = try syscall("cannot stat '\(path)'") { fstat(fd.rawValue, &st) }
        return UInt64(max(0, st.st_blocks)) * 512
    }

    package func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws(SystemError) {
        guard direct && !isAligned(offset, buffer.count, buffer.baseAddress) else { return try readPlain(at: offset, into: buffer) }
        try withBounce(offset, buffer.count) { (start, bounce) throws(SystemError) in
            try readPlain(at: start, into: bounce)
            buffer.copyMemory(from: UnsafeRawBufferPointer(rebasing: bounce[Int(offset - start)..<(Int(offset - start) + buffer.count)]))
        }
    }

    package func write(at offset: UInt64, from buffer: UnsafeRawBufferPointer) throws(SystemError) {
        guard direct && !isAligned(offset, buffer.count, buffer.baseAddress) else { return try writePlain(at: offset, from: buffer) }
        try withBounce(offset, buffer.count) { (start, bounce) throws(SystemError) in
            let a = UInt64(ImageFile.directAlignment)
            if offset % a != 0 || UInt64(buffer.count) % a != 0 {
                // Keep the bytes around the request in its first and last blocks.
                try readPlain(at: start, into: UnsafeMutableRawBufferPointer(rebasing: bounce[0..<Int(a)]))
                let last = bounce.count - Int(a)
                try readPlain(at: start + UInt64(last), into: UnsafeMutableRawBufferPointer(rebasing: bounce[last...]))
            }
            UnsafeMutableRawBufferPointer(rebasing: bounce[Int(offset - start)..<(Int(offset - start) + buffer.count)]).copyMemory(from: buffer)
            try writePlain(at: start, from: UnsafeRawBufferPointer(bounce))
        }
    }

    private func isAligned(_ offset: UInt64, _ count: Int, _ address: UnsafeRawPointer?) -> Bool {
        let a = ImageFile.directAlignment
        return offset % UInt64(a) == 0 && count % a == 0 && Int(bitPattern: address) % a == 0
    }

    /// Runs `body` with an aligned buffer covering `[offset, offset + count)` rounded out to
    /// whole blocks, and the file offset where it starts.
    private func withBounce(_ offset: UInt64, _ count: Int,
                            _ body: (UInt64, UnsafeMutableRawBufferPointer) throws(SystemError) -> Void) throws(SystemError) {
        let a = UInt64(ImageFile.directAlignment)
        let start = offset / a * a
        let end = (offset + UInt64(count) + a - 1) / a * a
        let bounce = UnsafeMutableRawBufferPointer.allocate(byteCount: Int(end - start), alignment: 4096)
        defer { bounce.deallocate() }
        try body(start, bounce)
    }

    private func readPlain(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws(SystemError) {
        var done = 0
        while done < buffer.count {
            let n = try syscall("'\(path)': read of \(buffer.count) bytes at offset \(offset) failed") {
                pread(fd.rawValue, buffer.baseAddress! + done, buffer.count - done, off_t(offset) + off_t(done))
            }
            if n == 0 {
                UnsafeMutableRawBufferPointer(rebasing: buffer[done...]).initializeMemory(as: UInt8.self, repeating: 0)
                return
            }
            done += n
        }
    }

    private func writePlain(at offset: UInt64, from buffer: UnsafeRawBufferPointer) throws(SystemError) {
        ImageFileJournal.record(path, .write(offset: offset, bytes: Array(buffer)))
        var done = 0
        while done < buffer.count {
            let n = try syscall("'\(path)': write of \(buffer.count) bytes at offset \(offset) failed") {
                pwrite(fd.rawValue, buffer.baseAddress! + done, buffer.count - done, off_t(offset) + off_t(done))
            }
            guard n > 0 else {
                throw SystemError(.syscall, "'\(path)': write at offset \(offset + UInt64(done)) made no progress",
                                  errno: Errno(rawValue: ENOSPC))
            }
            done += n
        }
    }

    package func readBytes(at offset: UInt64, count: Int) throws(SystemError) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: count)
        try bytes.withUnsafeMutableBytes { b in Result { () throws(SystemError) in try read(at: offset, into: b) } }.get()
        return bytes
    }

    package func writeBytes(at offset: UInt64, _ bytes: [UInt8]) throws(SystemError) {
        try bytes.withUnsafeBytes { b in Result { () throws(SystemError) in try write(at: offset, from: b) } }.get()
    }

    package func truncate(to length: UInt64) throws(SystemError) {
        ImageFileJournal.record(path, .truncate(length: length))
        _ = try syscall("cannot resize '\(path)' to \(length) bytes") { ftruncate(fd.rawValue, off_t(length)) }
    }

    package func sync() throws(SystemError) {
        guard !readOnly else { return }
        _ = try syscall("'\(path)': flush (fdatasync) failed") { fdatasync(fd.rawValue) }
        ImageFileJournal.record(path, .sync)
    }
}

/// Big-endian fields, the byte order of every qcow2 structure (qcow2.txt: "All numbers in
/// qcow2 are stored in Big Endian byte order").
extension Array where Element == UInt8 {
    func be64(_ at: Int) -> UInt64 {
        var v: UInt64 = 0
        for i in 0..<8 { v = v << 8 | UInt64(self[at + i]) }
        return v
    }

    func be32(_ at: Int) -> UInt32 {
        var v: UInt32 = 0
        for i in 0..<4 { v = v << 8 | UInt32(self[at + i]) }
        return v
    }

    func be16(_ at: Int) -> UInt16 { UInt16(self[at]) << 8 | UInt16(self[at + 1]) }

    mutating func putBE64(_ v: UInt64, at: Int) {
        for i in 0..<8 { self[at + i] = UInt8(truncatingIfNeeded: v >> (56 - 8 * i)) }
    }

    mutating func putBE32(_ v: UInt32, at: Int) {
        for i in 0..<4 { self[at + i] = UInt8(truncatingIfNeeded: v >> (24 - 8 * i)) }
    }

    mutating func putBE16(_ v: UInt16, at: Int) {
        self[at] = UInt8(v >> 8)
        self[at + 1] = UInt8(truncatingIfNeeded: v)
    }

    static func be64(_ v: UInt64) -> [UInt8] {
        var b = [UInt8](repeating: 0, count: 8)
        b.putBE64(v, at: 0)
        return b
    }
}

/// qcow2's compressed clusters: raw deflate (RFC 1951, no zlib header) with a 4 KiB window,
/// as qcow2.txt's "compression type" zlib and QEMU's writer use (windowBits -12).
enum Deflate {
    /// Compresses `input`; nil when the result would not be smaller than `limit` bytes (such
    /// a cluster is stored uncompressed instead).
    static func compress(_ input: [UInt8], limit: Int) -> [UInt8]? {
        var stream = z_stream()
        guard deflateInit2_(&stream, Z_DEFAULT_COMPRESSION, Z_DEFLATED, -12, 9, Z_DEFAULT_STRATEGY,
                            ZLIB_VERSION, Int32(MemoryLayout<z_stream>.size)) == Z_OK else { return nil }
        defer { deflateEnd(&stream) }
        var output = [UInt8](repeating: 0, count: limit)
        var source = input
        let result: Int32 = source.withUnsafeMutableBufferPointer { src in
            output.withUnsafeMutableBufferPointer { out in
                stream.next_in = src.baseAddress
                stream.avail_in = UInt32(src.count)
                stream.next_out = out.baseAddress
                stream.avail_out = UInt32(out.count)
                return deflate(&stream, Z_FINISH)
            }
        }
        guard result == Z_STREAM_END else { return nil }  // Z_OK/Z_BUF_ERROR: did not fit in `limit`
        return Array(output[0..<Int(stream.total_out)])
    }

    /// Inflates `input` into exactly `count` bytes; false when the data is corrupt or short.
    static func decompress(_ input: [UInt8], into output: inout [UInt8]) -> Bool {
        var stream = z_stream()
        guard inflateInit2_(&stream, -12, ZLIB_VERSION, Int32(MemoryLayout<z_stream>.size)) == Z_OK else { return false }
        defer { inflateEnd(&stream) }
        var source = input
        let result: Int32 = source.withUnsafeMutableBufferPointer { src in
            output.withUnsafeMutableBufferPointer { out in
                stream.next_in = src.baseAddress
                stream.avail_in = UInt32(src.count)
                stream.next_out = out.baseAddress
                stream.avail_out = UInt32(out.count)
                return inflate(&stream, Z_FINISH)
            }
        }
        // QEMU's reader accepts a full output buffer even without the stream's end marker.
        return (result == Z_STREAM_END || result == Z_BUF_ERROR || result == Z_OK) && stream.avail_out == 0
    }
}
