import DeviceModel
import Glibc
import Synchronization
import SystemSupport

/// A raw disk image: the file's bytes are the disk's bytes, as QEMU's `raw` format over its
/// `file` protocol. Works on regular files and on host block devices.
///
/// **Size.** The disk is the file's length rounded up to a whole 512-byte sector, as QEMU
/// does: the bytes of the last sector past the end of the file read as zeroes, and a write
/// there extends the file. The size is taken at open; the file is not resized under the guest.
///
/// **I/O.** Positional reads and writes on one `ImageFile`, so calls from several threads need
/// no lock. Nothing is cached here: `flush()` is `fdatasync(2)`, which is what makes the
/// guest's flush durable (DESIGN.md §6). `direct` opens the file O_DIRECT (`cache=none`).
///
/// **Discard and write-zeroes** use `fallocate(2)` (`PUNCH_HOLE`, `ZERO_RANGE`, both with
/// `KEEP_SIZE`); where the file system or the device cannot do it, discard does nothing
/// (it is advisory) and write-zeroes writes zero blocks.
package final class RawImage: BlockBackend {
    package let path: String
    package let size: UInt64
    package let readOnly: Bool
    /// The length of the file itself, which may end inside the last sector.
    package let fileLength: UInt64
    private let file: ImageFile
    private var fd: Int32 { file.descriptor }

    package var label: String { "raw:\(path)" }

    /// The permissions this image takes on its file while active (see ImageLock.swift).
    private let lockRequest: LockRequest
    /// Like an inactive qcow2 image (an incoming migration's destination): no locks are held
    /// until `activate()`, as QEMU holds none on an inactive node.
    private let inactive: Mutex<Bool>
    /// Locks taken by `activate()` on an image opened inactive.
    private let lateLocks = Mutex<ImageLockHolder?>(nil)

    /// Opens `path`, for reading and writing, or for reading only when `readOnly` (QEMU's
    /// `readonly=on`: the file is then opened `O_RDONLY`, so even a bug here cannot write it).
    /// `locking`: the permissions to take on the file, which a user of the image in another
    /// process may refuse (QEMU's image locking); `inactive`: none until `activate()`.
    package init(path: String, readOnly: Bool = false, direct: Bool = false, locking: ImageLocking = .tool,
                 inactive: Bool = false) throws(SystemError) {
        lockRequest = locking.request(readOnly: readOnly, metadata: false)
        self.inactive = Mutex(inactive)
        file = try ImageFile(path: path, readOnly: readOnly, direct: direct, lock: inactive ? nil : lockRequest)
        // lseek(SEEK_END) gives the length of both regular files and block devices.
        let length = try file.length()
        self.path = path
        self.readOnly = readOnly
        fileLength = length
        // Round up to a whole sector (cannot overflow: off_t is at most 2^63 - 1).
        size = (length + blockSectorSize - 1) / blockSectorSize * blockSectorSize
    }

    /// The file's lock holder (nil when it holds none).
    package var locks: ImageLockHolder? { file.locks ?? lateLocks.withLock { $0 } }

    /// Takes the image's locks (a migration's destination taking over, or a source whose
    /// migration failed); QEMU's lock error if another process still uses the image.
    package func activate() throws(SystemError) {
        try inactive.withLock { (inactive: inout Bool) throws(SystemError) in
            guard inactive else { return }
            if let holder = locks {
                try holder.change(perm: lockRequest.perm, shared: lockRequest.shared)
            } else {
                let holder = try ImageLocks.acquire(fd: fd, path: path, lockRequest)
                lateLocks.withLock { $0 = holder }
            }
            inactive = false
        }
    }

    /// Gives the image over to another process (a migration's source handing over): from now
    /// on this process only reads, and shares everything.
    package func inactivate() throws(SystemError) {
        try inactive.withLock { (inactive: inout Bool) throws(SystemError) in
            guard !inactive else { return }
            if !readOnly { _ = try syscall("\(label): flush (fdatasync) failed") { fdatasync(fd) } }
            try locks?.change(perm: .consistentRead, shared: .all)
            inactive = true
        }
    }

    /// Whether `[offset, offset + count)` lies in a hole of the file (`lseek(SEEK_DATA)`), so it
    /// reads as zeroes without I/O. False when the file system cannot tell.
    package func isHole(at offset: UInt64, count: UInt64) -> Bool {
        let seekData: Int32 = 3  // SEEK_DATA (Linux), which Glibc does not import without _GNU_SOURCE
        let next = lseek(fd, off_t(offset), seekData)
        if next < 0 { return errno == ENXIO }  // no data at or after `offset`
        return UInt64(next) >= offset + count
    }

    package func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws(SystemError) {
        try checkRange(offset: offset, count: UInt64(buffer.count))
        // End of file: the tail of the last sector past the file's end (or a file that someone
        // else shortened) reads as zeroes.
        try file.read(at: offset, into: buffer)
    }

    package func write(at offset: UInt64, from buffer: UnsafeRawBufferPointer) throws(SystemError) {
        try checkWritable("write")
        try checkRange(offset: offset, count: UInt64(buffer.count))
        try file.write(at: offset, from: buffer)
    }

    package func flush() throws(SystemError) {
        // Nothing of ours can be dirty on a read-only descriptor.
        guard !readOnly else { return }
        _ = try syscall("\(label): flush (fdatasync) failed") { fdatasync(fd) }
    }

    package func discard(at offset: UInt64, count: UInt64) throws(SystemError) {
        try checkWritable("discard")
        try checkRange(offset: offset, count: count)
        guard count > 0 else { return }
        switch Fallocate.call(fd, Fallocate.punchHole | Fallocate.keepSize, offset, count) {
        case .done, .unsupported:
            return  // Advisory: a file system without hole punching keeps the data.
        case .failed(let err):
            throw SystemError(.syscall, "\(label): discard of \(count) bytes at offset \(offset) failed", errno: err)
        }
    }

    package func writeZeroes(at offset: UInt64, count: UInt64, mayUnmap: Bool) throws(SystemError) {
        try checkWritable("write-zeroes")
        try checkRange(offset: offset, count: count)
        guard count > 0 else { return }
        // Punching a hole frees the space and reads back zeroes; ZERO_RANGE keeps it allocated.
        let mode = (mayUnmap ? Fallocate.punchHole : Fallocate.zeroRange) | Fallocate.keepSize
        switch Fallocate.call(fd, mode, offset, count) {
        case .done:
            return
        case .unsupported:
            try writeZeroBlocks(at: offset, count: count)
        case .failed(let err):
            throw SystemError(.syscall, "\(label): write-zeroes of \(count) bytes at offset \(offset) failed", errno: err)
        }
    }

    /// The fallback for write-zeroes: plain writes of a zeroed buffer.
    private func writeZeroBlocks(at offset: UInt64, count: UInt64) throws(SystemError) {
        let chunk = Int(min(count, 1 << 20))
        let zeroes = [UInt8](repeating: 0, count: chunk)
        var done: UInt64 = 0
        while done < count {
            let n = Int(min(UInt64(chunk), count - done))
            try zeroes.withUnsafeBytes { b in
                Result { () throws(SystemError) in try write(at: offset + done, from: UnsafeRawBufferPointer(rebasing: b[..<n])) }
            }.get()
            done += UInt64(n)
        }
    }
}

/// `fallocate(2)`, which glibc declares only under `_GNU_SOURCE` and so the Swift `Glibc`
/// module does not import. It is looked up once by name with `dlsym`, which needs no C shim;
/// the `@convention(c)` type below is glibc's prototype on LP64:
/// `int fallocate(int fd, int mode, off_t offset, off_t len)`.
private enum Fallocate {
    typealias Function = @convention(c) (Int32, Int32, Int, Int) -> Int32

    // linux/falloc.h
    static let keepSize: Int32 = 0x01
    static let punchHole: Int32 = 0x02
    static let zeroRange: Int32 = 0x10

    static let function: Function? = {
        guard let symbol = dlsym(dlopen(nil, RTLD_NOW), "fallocate") else { return nil }
        // SAFETY: the symbol is glibc's fallocate, whose C prototype `Function` spells out.
        return unsafeBitCast(symbol, to: Function.self)
    }()

    enum Outcome { case done, unsupported, failed(Errno) }

    static func call(_ fd: Int32, _ mode: Int32, _ offset: UInt64, _ count: UInt64) -> Outcome {
        guard let function, offset <= UInt64(Int.max), count <= UInt64(Int.max) else { return .unsupported }
        while true {
            if function(fd, mode, Int(offset), Int(count)) == 0 { return .done }
            let err = Errno.current
            switch err.rawValue {
            case EINTR: continue
            // Not for this file system, file type or kernel.
            case EOPNOTSUPP, ENOSYS, ENODEV, EINVAL: return .unsupported
            default: return .failed(err)
            }
        }
    }
}
