import SystemSupport

/// The host side of a disk (DESIGN.md §2): what virtio-blk (and later other disk controllers)
/// read and write. Implementations live in `Block` (`RawImage`, later `Qcow2Image`); devices
/// see only this protocol.
///
/// Offsets and counts are in bytes. Every call is synchronous and may block (the caller picks
/// the thread); every method may be called from several threads at once, so an
/// implementation keeps no per-call state outside its lock (positional I/O, no seek pointer).
///
/// A request that does not fit inside `size` is refused with `SystemError.Code.outOfRange`
/// before anything is read or written; a write, discard or write-zeroes to a read-only backend
/// with `.readOnly`. Host I/O failures come back as `.syscall` errors carrying the `Errno`.
public protocol BlockBackend: AnyObject, Sendable {
    /// A short description for `info block` and messages ("raw:/var/lib/disk.img").
    var label: String { get }
    /// The disk's size in bytes, a multiple of `sectorSize`.
    var size: UInt64 { get }
    /// Whether the disk refuses writes (`readonly=on`, or an image opened read-only).
    var readOnly: Bool { get }
    /// Fills `buffer` with the bytes at `[offset, offset + buffer.count)`.
    func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws(SystemError)
    /// Stores `buffer` at `[offset, offset + buffer.count)`. The data is durable only after
    /// `flush()`.
    func write(at offset: UInt64, from buffer: UnsafeRawBufferPointer) throws(SystemError)
    /// Makes every completed write durable (the guest's cache flush, and clean shutdown:
    /// DESIGN.md §6, data the user gave us is never lost).
    func flush() throws(SystemError)
    /// Tells the backend the guest no longer needs `[offset, offset + count)`. Advisory: the
    /// range may read back as its old contents or as zeroes afterwards, and a backend that
    /// cannot free space succeeds without doing anything.
    func discard(at offset: UInt64, count: UInt64) throws(SystemError)
    /// Makes `[offset, offset + count)` read back as zeroes; `mayUnmap` lets the backend free
    /// the space (punch a hole) instead of writing zeroes.
    func writeZeroes(at offset: UInt64, count: UInt64, mayUnmap: Bool) throws(SystemError)
}

extension SystemError.Code {
    /// A block request reaches past the end of the disk.
    public static let outOfRange = SystemError.Code(rawValue: "out-of-range")
    /// A write-class request went to a read-only disk.
    public static let readOnly = SystemError.Code(rawValue: "read-only")
}

/// The sector of every disk protocol we speak: virtio-blk counts in 512-byte sectors whatever
/// the logical block size (virtio 1.2 §5.2.6), as do qcow2 and QEMU's block layer.
public let blockSectorSize: UInt64 = 512

extension BlockBackend {
    /// The disk's size in 512-byte sectors.
    public var sectorCount: UInt64 { size / blockSectorSize }

    /// Whether `[offset, offset + count)` lies inside the disk (no overflow possible).
    public func contains(offset: UInt64, count: UInt64) -> Bool {
        offset <= size && count <= size - offset
    }

    /// Whether both ends of `[offset, offset + count)` sit on sector boundaries.
    public func isSectorAligned(offset: UInt64, count: UInt64) -> Bool {
        offset % blockSectorSize == 0 && count % blockSectorSize == 0
    }

    /// Throws `.outOfRange` unless `[offset, offset + count)` lies inside the disk.
    public func checkRange(offset: UInt64, count: UInt64) throws(SystemError) {
        guard contains(offset: offset, count: count) else {
            throw SystemError(
                .outOfRange,
                "\(label): request of \(count) bytes at offset \(offset) passes the end of the disk (\(size) bytes)")
        }
    }

    /// Throws `.readOnly` when the disk refuses writes.
    public func checkWritable(_ what: String) throws(SystemError) {
        guard !readOnly else {
            throw SystemError(.readOnly, "\(label): \(what) refused: the disk is read-only")
        }
    }
}
