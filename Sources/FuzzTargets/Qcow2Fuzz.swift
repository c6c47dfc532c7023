import Block
import DeviceModel
import Glibc
import SystemSupport

/// The qcow2 header and table parsers (formerly swemu-fuzz-qcow2). Each input is an image
/// file: it is opened read-only, read (every L1/L2 lookup, compressed clusters) and checked
/// (every table and refcount), then opened for writing and written, zeroed, discarded,
/// snapshotted and repaired. Seeds: scripts/fuzz makes images with swemu-img.
enum Qcow2Fuzz {
    /// The scratch file inputs are written to (tmpfs when available).
    static let scratch = (access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp") + "/swemu-fuzz-qcow2-\(getpid()).img"

    static let target = FuzzTarget(name: "qcow2", summary: "qcow2 images opened, read, checked, written and repaired", maxLength: 262144,
                                   run: { run($0) }, seeds: { [] })

    static func run(_ data: UnsafeRawBufferPointer) {
        defer { unlink(scratch) }
        let fd = open(scratch, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard fd >= 0 else { fatalError("cannot create \(scratch)") }
        var done = 0
        // SAFETY: `data` is libFuzzer's input, valid for `data.count` bytes during this call;
        // each write reads `data.count - done` bytes from `done` on, inside it.
        while done < data.count {
            let n = write(fd, data.baseAddress! + done, data.count - done)
            guard n > 0 else { fatalError("cannot write \(scratch)") }
            done += n
        }
        close(fd)
        do throws(SystemError) {
            let image = try Qcow2Image(path: scratch, readOnly: true, backingMode: .skip)
            // Bounded work per input: at most 1 MiB of guest data, in cluster-sized reads.
            var buffer = [UInt8](repeating: 0, count: Int(image.clusterSize))
            var offset: UInt64 = 0
            while offset < min(image.size, 1 << 20) {
                let n = Int(min(image.clusterSize, image.size - offset))
                try buffer.withUnsafeMutableBytes { b in
                    Result { () throws(SystemError) in try image.read(at: offset, into: UnsafeMutableRawBufferPointer(rebasing: b[0..<n])) }
                }.get()
                offset += UInt64(n)
            }
            _ = try image.check(repair: .none)
        } catch {
            // A clean refusal is the expected outcome for most inputs.
        }
        // Then writes, which allocate clusters and update refcounts over whatever tables the
        // input has: a partial cluster (copy-on-write), a zeroed range, a discard, a snapshot.
        do throws(SystemError) {
            let image = try Qcow2Image(path: scratch, readOnly: false, backingMode: .skip, cache: .unsafe)
            let size = min(image.size, 1 << 20)
            guard size >= 4096 else { return }
            let bytes = [UInt8](repeating: 0x5a, count: 3000)
            try bytes.withUnsafeBytes { b in Result { () throws(SystemError) in try image.write(at: size / 2 + 17, from: b) } }.get()
            try image.writeZeroes(at: 0, count: 4096, mayUnmap: true)
            try image.discard(at: size - 4096, count: 4096)
            try image.createSnapshot(name: "fuzz")
            _ = try image.check(repair: .all)
            try image.close()
        } catch {
        }
    }
}
