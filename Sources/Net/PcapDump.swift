import DeviceModel
import Glibc
import Synchronization
import SystemSupport

/// `-object filter-dump,id=ID,netdev=NETDEV,file=PATH[,maxlen=N]` (QEMU 7.2 net/dump.c): every
/// frame of one netdev, both directions, in a classic libpcap file that tcpdump and Wireshark
/// read: the file header (magic 0xa1b2c3d4, version 2.4, snaplen = maxlen, linktype 1 for
/// Ethernet), then per frame ts_sec, ts_usec, incl_len, orig_len and the first `maxlen` bytes.
/// Host byte order, as libpcap writes (readers recognise the magic either way round).
///
/// It wraps the backend: `send` records the guest's frame and passes it on; frames from the
/// network are recorded when the NIC takes them (a frame the NIC refuses is offered again
/// later and recorded once, as QEMU's filters see each packet once).
///
/// Writes never wait on the disk for long: records collect in a 64 KiB buffer written out
/// (one write(2), under a lock the frames of both directions share, so the file keeps their
/// order) when it fills, when a record comes more than a second after the last write, on
/// `flush()`, and at `close()`. A failed write (disk full) is reported once with `-d
/// guest_errors` and dumping stops; the link keeps working.
public final class PcapDump: NetBackend {
    public static let defaultMaxlen = 65536

    private let inner: any NetBackend
    private let recorder: PcapRecorder

    /// Wraps `inner` so its frames are written to `file` (created or truncated), each cut to
    /// `maxlen` bytes (1 to 2^31 - 1; QEMU's default is 65536).
    public static func wrap(_ inner: any NetBackend, file: String, maxlen: Int = defaultMaxlen) throws(SystemError) -> any NetBackend {
        try PcapDump(inner, file: file, maxlen: maxlen)
    }

    public init(_ inner: any NetBackend, file: String, maxlen: Int = defaultMaxlen) throws(SystemError) {
        self.inner = inner
        recorder = try PcapRecorder(file: file, maxlen: maxlen)
    }

    deinit { recorder.finish() }

    // MARK: NetBackend

    public var id: String { inner.id }
    public var info: String { inner.info }

    /// The inner backend's: the NIC sees through the dump.
    public var offloads: NetOffloads { inner.offloads }

    public func setGuestOffloads(_ offloads: NetOffloads) { inner.setGuestOffloads(offloads) }

    public func attach(_ frontend: (any NetFrontend)?) {
        let header = inner.offloads.isEmpty ? 0 : NetOffloads.headerSize
        inner.attach(frontend.map { Tap(frontend: $0, recorder: recorder, header: header) })
    }

    public func send(_ frame: [UInt8]) -> Bool {
        // The file holds Ethernet frames: a virtio_net_hdr in front is not recorded (QEMU's
        // dump skips it too). A GSO frame goes in whole, as tcpdump on the host shows it.
        recorder.record(frame, from: inner.offloads.isEmpty ? 0 : NetOffloads.headerSize)
        return inner.send(frame)
    }

    public func frontendReady() { inner.frontendReady() }

    public func close() {
        inner.close()
        recorder.finish()
    }

    /// Writes out what is buffered.
    public func flush() { recorder.flush() }

    /// The NIC side: records the frames the NIC takes. It holds the recorder, not the dump,
    /// so the backend it is attached to and the dump do not keep each other alive.
    private final class Tap: NetFrontend {
        let frontend: any NetFrontend
        let recorder: PcapRecorder
        /// Bytes of virtio_net_hdr before each frame, not recorded.
        let header: Int
        init(frontend: any NetFrontend, recorder: PcapRecorder, header: Int) {
            self.frontend = frontend
            self.recorder = recorder
            self.header = header
        }
        func receive(_ frame: [UInt8]) -> Bool {
            guard frontend.receive(frame) else { return false }
            recorder.record(frame, from: header)
            return true
        }
        func backendReady() { frontend.backendReady() }
    }
}

/// The pcap file and its buffer, shared by both directions.
final class PcapRecorder: Sendable {
    static let bufferSize = 64 * 1024

    private struct Writer: ~Copyable {
        var fd: FileDescriptor?
        var buffer: [UInt8] = []
        var lastWrite: Int64 = 0
        var failed = false
    }

    private let maxlen: Int
    private let path: String
    private let writer: Mutex<Writer>

    init(file: String, maxlen: Int) throws(SystemError) {
        let what = "-object filter-dump"
        guard maxlen > 0, maxlen <= Int(Int32.max) else {
            throw SystemError(.configuration, "\(what): maxlen must be from 1 to \(Int32.max), not \(maxlen)")
        }
        let fd: FileDescriptor
        do {
            fd = try FileDescriptor.open(file, O_WRONLY | O_CREAT | O_TRUNC, mode: 0o644)
        } catch {
            throw SystemError(.syscall, "\(what): cannot open '\(file)'", errno: error.errno)
        }
        self.maxlen = maxlen
        path = file
        var header: [UInt8] = []
        Self.append(UInt32(0xa1b2_c3d4), to: &header)  // magic (microsecond timestamps)
        Self.append(UInt16(2), to: &header)  // version_major
        Self.append(UInt16(4), to: &header)  // version_minor
        Self.append(Int32(0), to: &header)  // thiszone
        Self.append(UInt32(0), to: &header)  // sigfigs
        Self.append(UInt32(maxlen), to: &header)  // snaplen
        Self.append(UInt32(1), to: &header)  // network: LINKTYPE_ETHERNET
        do {
            try fd.writeAll(header)
        } catch {
            throw SystemError(.syscall, "\(what): cannot write '\(file)'", errno: error.errno)
        }
        writer = Mutex(Writer(fd: fd, lastWrite: Self.monotonicMilliseconds()))
    }

    deinit { finish() }

    func flush() {
        writer.withLock { w in write(&w) }
    }

    /// Writes out the buffer and closes the file; later records are ignored.
    func finish() {
        writer.withLock { w in
            write(&w)
            w.fd = nil
        }
    }

    // MARK: records

    /// Records `frame[start...]` (`start`: the bytes of virtio_net_hdr in front).
    func record(_ frame: [UInt8], from start: Int) {
        guard frame.count > start else { return }
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        let length = frame.count - start
        let captured = min(length, maxlen)
        let current = Self.monotonicMilliseconds()
        writer.withLock { w in
            guard w.fd != nil, !w.failed else { return }
            Self.append(UInt32(truncatingIfNeeded: now.tv_sec), to: &w.buffer)
            Self.append(UInt32(truncatingIfNeeded: now.tv_nsec / 1000), to: &w.buffer)
            Self.append(UInt32(captured), to: &w.buffer)
            Self.append(UInt32(truncatingIfNeeded: length), to: &w.buffer)
            w.buffer += frame[start..<start + captured]
            if w.buffer.count >= Self.bufferSize || current - w.lastWrite >= 1000 { write(&w) }
        }
    }

    private func write(_ w: inout Writer) {
        w.lastWrite = Self.monotonicMilliseconds()
        guard !w.buffer.isEmpty else { return }
        defer { w.buffer.removeAll(keepingCapacity: true) }
        guard !w.failed, let fd = w.fd?.rawValue else { return }
        var failure: Errno?
        w.buffer.withUnsafeBytes { b in
            var done = 0
            while done < b.count {
                // SAFETY: done < b.count, so the range stays inside the buffer during the call.
                let n = Glibc.write(fd, b.baseAddress! + done, b.count - done)
                if n > 0 {
                    done += n
                } else if n < 0 && Errno.current == .interrupted {
                    continue
                } else {
                    failure = n < 0 ? Errno.current : Errno(rawValue: ENOSPC)
                    return
                }
            }
        }
        if let failure {
            w.failed = true
            DebugLog.log(.guestErrors, "filter-dump: writing \(path) failed, no more frames are dumped: \(failure)")
        }
    }

    private static func append<T: FixedWidthInteger>(_ value: T, to buffer: inout [UInt8]) {
        // SAFETY: reads the bytes of a local integer during the call only.
        withUnsafeBytes(of: value) { buffer += $0 }
    }

    private static func monotonicMilliseconds() -> Int64 {
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        return Int64(now.tv_sec) * 1000 + Int64(now.tv_nsec) / 1_000_000
    }
}
