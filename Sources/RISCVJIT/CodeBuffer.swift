import CLinux
import Glibc
import SystemSupport

/// Where translated code lives: one memfd mapped twice, read+write for the emitter and
/// read+execute for running, so no page is ever writable and executable at once (W^X; the
/// speed issue's "safe code buffer"). Bounded: when full, the owner flushes it whole.
///
/// One per hart: a hart's translations are used only by its own thread, so writing (new
/// blocks, chain patches) never races with another thread executing the same bytes.
final class CodeBuffer {
    // SAFETY: `writable` and `executable` are two MAP_SHARED views of the same `size` bytes of
    // one memfd, mapped in init and unmapped in deinit; `used` never exceeds `size`, so every
    // offset handed out is inside both views. Only the owning hart's thread touches either.
    let size: Int
    private let writable: UnsafeMutableRawPointer
    let executable: UnsafeRawPointer
    private(set) var used = 0

    init(size: Int) throws(SystemError) {
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        let size = (size + page - 1) / page * page
        let fd = clx_memfd_create("swemu-jit")
        guard fd >= 0 else { throw SystemError(.syscall, "cannot create the JIT's code buffer (memfd_create)", errno: .current) }
        defer { close(fd) }  // the mappings keep the memory
        guard ftruncate(fd, off_t(size)) == 0 else {
            throw SystemError(.syscall, "cannot size the JIT's code buffer to \(size) bytes", errno: .current)
        }
        let rw = mmap(nil, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)
        guard let rw, clx_is_map_failed(rw) == 0 else {
            throw SystemError(.syscall, "cannot map the JIT's code buffer for writing", errno: .current)
        }
        let rx = mmap(nil, size, PROT_READ | PROT_EXEC, MAP_SHARED, fd, 0)
        guard let rx, clx_is_map_failed(rx) == 0 else {
            let error = SystemError(.syscall, "cannot map the JIT's code buffer for execution", errno: .current)
            munmap(rw, size)
            throw error
        }
        self.size = size
        writable = rw
        executable = UnsafeRawPointer(rx)
    }

    deinit {
        munmap(writable, size)
        munmap(UnsafeMutableRawPointer(mutating: executable), size)
    }

    private var nextStart: Int { (used + 15) & ~15 }

    /// The executable address the next `append` places its bytes at.
    var nextAddress: UInt { UInt(bitPattern: executable + nextStart) }

    /// Copies `bytes` in at the next 16-byte boundary; returns their executable address, or
    /// nil when the buffer is full.
    func append(_ bytes: [UInt8]) -> UnsafeRawPointer? {
        let start = nextStart
        guard start + bytes.count <= size else { return nil }
        bytes.withUnsafeBytes { source in
            (writable + start).copyMemory(from: source.baseAddress!, byteCount: bytes.count)
        }
        used = start + bytes.count
        return executable + start
    }

    /// Rewrites the rel32 at executable address `site` to reach `target` (block chaining).
    func patchRel32(at site: UnsafeRawPointer, to target: UnsafeRawPointer) {
        let offset = site - executable
        precondition(offset >= 0 && offset + 4 <= used, "patch outside the code buffer")
        let rel = Int32(target - (site + 4))
        // A 4-byte aligned store is atomic on x86-64; sites are not always aligned, but only
        // this hart's thread executes this buffer, and it is not executing generated code now.
        (writable + offset).storeBytes(of: rel.littleEndian, toByteOffset: 0, as: Int32.self)
    }

    /// Forgets every translation (the owner drops its block tables with it).
    func reset() { used = 0 }
}
