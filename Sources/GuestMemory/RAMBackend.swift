import CLinux
import Glibc
import SystemSupport

/// How a machine's RAM is held on the host: QEMU's host memory backends
/// (`-object memory-backend-ram|memfd|file`, backends/hostmem*.c), chosen with
/// `-machine memory-backend=ID`; without one, a memfd as `memory-backend-ram` would give.
public struct RAMBackendSpec: Sendable, Equatable {
    public enum Storage: Sendable, Equatable {
        /// A memfd (memory-backend-ram and -memfd): anonymous memory with a file descriptor
        /// (DESIGN.md §3). `seal`: its size sealed (F_SEAL_GROW | F_SEAL_SHRINK).
        case memfd(seal: Bool)
        /// memory-backend-file: the file at `path`, or a new unlinked file when `path` is a
        /// directory (as QEMU's file_ram_open). `shared`: the guest writes the file's own
        /// pages (share=on); else private copies of them (share=off, the file is never written).
        case file(path: String, shared: Bool)
    }

    public var storage: Storage
    /// prealloc=on: every page allocated at start (a clear error then, not a SIGBUS later).
    public var prealloc = false
    /// merge=on (QEMU's default, following -machine mem-merge): MADV_MERGEABLE, the pages
    /// offered to KSM. The kernel merges private pages only, so it helps share=off files.
    public var merge = true
    /// dump=off (or -machine dump-guest-core=off): MADV_DONTDUMP, kept out of core dumps.
    public var dump = true
    /// reserve=on (QEMU's default): swap space committed for the pages at start; off:
    /// MAP_NORESERVE. swemu's default is off, so a large -m costs nothing until touched.
    public var reserve = false
    /// align=: the host alignment of the mapping (memory-backend-file); nil: 2 MiB.
    public var alignment: Int?

    public init(storage: Storage = .memfd(seal: false)) {
        self.storage = storage
    }
}

/// The host file holding a machine's RAM, made from a `RAMBackendSpec` when a board is built.
/// Every `GuestRAM` region maps a slice of it: the x86 board's RAM below and above the MMIO
/// hole are two slices of one backend, as QEMU's aliases of one RAM block.
public final class RAMBackend: Sendable {
    public let spec: RAMBackendSpec
    public let size: UInt64
    /// The memfd or file (owned; closed with this object).
    package let fd: Int32

    /// The default: a memfd named for the board.
    public convenience init(size: UInt64, name: String) throws(SystemError) {
        try self.init(RAMBackendSpec(), size: size, name: name)
    }

    public init(_ spec: RAMBackendSpec, size: UInt64, name: String) throws(SystemError) {
        guard size > 0, size % 4096 == 0, size <= UInt64(Int.max / 2) else {
            throw .configuration("RAM size \(size) must be a positive multiple of 4 KiB")
        }
        self.spec = spec
        self.size = size
        switch spec.storage {
        case .memfd(let seal):
            let fd = seal ? clx_memfd_create_sealable(name) : clx_memfd_create(name)
            guard fd >= 0 else { throw SystemError(.syscall, "cannot create memory for \(name)", errno: .current) }
            guard ftruncate(fd, off_t(size)) == 0, !seal || clx_memfd_seal_size(fd) == 0 else {
                let error = Errno.current
                close(fd)
                throw SystemError(.syscall, "cannot size memory for \(name) to \(size) bytes", errno: error)
            }
            self.fd = fd
        case .file(let path, let shared):
            self.fd = try Self.openFile(path, size: size, shared: shared)
        }
    }

    deinit { close(fd) }

    /// QEMU's file_ram_open: a directory gets a new file, unlinked at once (its pages live as
    /// long as the mapping); a file is used as it is, grown to `size` if shorter (never
    /// shrunk: it may hold other data past the RAM). Private mappings only read the file.
    /// Both are opened as files a reset opens again (`KeptFiles`), so a board built after
    /// -chroot or -runas still finds them.
    private static func openFile(_ path: String, size: UInt64, shared: Bool) throws(SystemError) -> Int32 {
        let what = "memory-backend-file: mem-path '\(path)'"
        let fd: Int32
        let isDirectory: Bool
        // O_PATH: a directory this user may write and search but not list is fine.
        if let directory = try? FileDescriptor.open(path, clx_O_PATH | O_DIRECTORY, reopenable: true), Self.isDirectory(directory.rawValue) {
            isDirectory = true
            fd = try newFile(in: directory.rawValue, path: path, what: what)
        } else {
            isDirectory = false
            let access = shared ? O_RDWR : O_RDONLY
            func open() throws(SystemError) -> Int32 {
                do { return try FileDescriptor.open(path, access, reopenable: true).release() } catch {
                    throw SystemError(.syscall, "\(what): cannot open", errno: error.errno ?? .current)
                }
            }
            do {
                fd = try open()
            } catch where error.errno == Errno(rawValue: ENOENT) {
                // Created here, then opened as a kept file (KeptFiles keeps only what exists).
                let created = Glibc.open(path, access | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
                if created >= 0 { close(created) }
                fd = try open()
            }
        }
        var now = stat()
        guard fstat(fd, &now) == 0 else {
            let error = Errno.current
            close(fd)
            throw SystemError(.syscall, "\(what): cannot stat", errno: error)
        }
        if UInt64(now.st_size) < size {
            // A private mapping past the end of a file faults (SIGBUS): the file must hold the RAM.
            guard shared || isDirectory else {
                close(fd)
                throw SystemError(.configuration, "\(what) holds \(now.st_size) bytes, less than the \(size) bytes of RAM; with share=off it is only read, so make it that large or use share=on")
            }
            guard ftruncate(fd, off_t(size)) == 0 else {
                let error = Errno.current
                close(fd)
                throw SystemError(.syscall, "\(what): cannot grow it to \(size) bytes", errno: error)
            }
        }
        return fd
    }

    private static func isDirectory(_ fd: Int32) -> Bool {
        var info = stat()
        return fstat(fd, &info) == 0 && (info.st_mode & S_IFMT) == S_IFDIR
    }

    /// A new file in the directory `directory` (at `path`), gone from it at once: O_TMPFILE
    /// through the kept directory (which works inside -chroot), else mkstemp and unlink by path
    /// (file systems without O_TMPFILE).
    private static func newFile(in directory: Int32, path: String, what: String) throws(SystemError) -> Int32 {
        let unnamed = openat(directory, ".", clx_O_TMPFILE | O_RDWR | O_CLOEXEC, 0o600)
        if unnamed >= 0 { return unnamed }
        var template = Array((path + "/swemu_back_mem.XXXXXX").utf8CString)
        let fd = mkstemp(&template)
        guard fd >= 0 else { throw SystemError(.syscall, "\(what): cannot create a file there", errno: .current) }
        _ = clx_set_cloexec(fd)
        _ = unlink(template)
        return fd
    }

    /// Maps `size` bytes of the backend from `offset`, with the spec's advice applied.
    func map(offset: UInt64, size: UInt64) throws(SystemError) -> MappedRegion {
        guard offset <= self.size, size <= self.size - offset else {
            throw .configuration("RAM slice of \(size) bytes at offset \(offset) passes the end of its \(self.size)-byte backend")
        }
        let shared: Bool
        switch spec.storage {
        case .memfd: shared = true
        case .file(_, let s): shared = s
        }
        let region = try MappedRegion(count: Int(size), alignment: spec.alignment ?? GuestRAM.hostAlignment, file: fd,
                                      offset: offset, shared: shared, reserve: spec.reserve)
        if spec.merge { _ = madvise(region.base, region.count, MADV_MERGEABLE) }
        if !spec.dump { _ = madvise(region.base, region.count, MADV_DONTDUMP) }
        if spec.prealloc { try Self.preallocate(region.base, region.count) }
        return region
    }

    /// prealloc=on: allocates every page now, as QEMU's qemu_prealloc_mem; a host short of
    /// memory is then refused at start with QEMU's message instead of killing the guest later.
    private static func preallocate(_ base: UnsafeMutableRawPointer, _ count: Int) throws(SystemError) {
        if clx_madvise_populate_write(base, count) == 0 { return }
        let error = Errno.current
        guard error.rawValue == EINVAL else {
            throw SystemError(.syscall, "os_mem_prealloc: preallocating memory failed", errno: error)
        }
        // Kernels before 5.14: touch each page. A fault here (SIGBUS with no memory left)
        // ends the process before the guest runs, which is what QEMU's fallback does too.
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        for offset in stride(from: 0, to: count, by: page) {
            // SAFETY: offset < count, inside the mapping `base` starts; a volatile-free
            // read-then-write of the same byte keeps the contents of a shared file.
            let p = (base + offset).assumingMemoryBound(to: UInt8.self)
            p.pointee = p.pointee
        }
    }
}
