import Glibc
import Synchronization
import Testing
@testable import SystemSupport

@Suite struct SyscallTests {
    @Test func failureCarriesErrnoAndWhatWasAttempted() {
        do {
            _ = try FileDescriptor.open("/nonexistent/swemu-test", O_RDONLY)
            Issue.record("open of a missing file succeeded")
        } catch {
            #expect(error.errno == .noEntry)
            #expect(error.code == .syscall)
            #expect(error.description.contains("/nonexistent/swemu-test"))
            #expect(error.description.contains("No such file"))
        }
    }

    @Test func retriesInterruptedCalls() throws {
        var calls = 0
        let result = try syscall("test") { () -> Int32 in
            calls += 1
            if calls < 3 {
                errno = EINTR
                return -1
            }
            return 7
        }
        #expect(result == 7 && calls == 3)
    }

    @Test func doesNotRetryWhenAskedNotTo() {
        var calls = 0
        #expect(throws: SystemError.self) {
            try syscall("test", retryOnInterrupt: false) { () -> Int32 in
                calls += 1
                errno = EINTR
                return -1
            }
        }
        #expect(calls == 1)
    }
}

@Suite struct FileDescriptorTests {
    @Test func closesOnDeinit() throws {
        let (a, b) = try FileDescriptor.socketPair()
        do {
            let owner = FileDescriptor(owning: a)
            _ = owner
        }
        // a is closed now: fcntl on it fails with EBADF.
        #expect(fcntl(a, F_GETFD) == -1 && errno == EBADF)
        close(b)
    }

    @Test func releaseKeepsTheDescriptorOpen() throws {
        let (a, b) = try FileDescriptor.socketPair()
        let raw = FileDescriptor(owning: a).release()
        #expect(fcntl(raw, F_GETFD) >= 0)
        close(raw)
        close(b)
    }

    @Test func nonBlockingReadReportsWouldBlock() throws {
        let (a, b) = try FileDescriptor.socketPair()
        let reader = FileDescriptor(owning: a)
        let writer = FileDescriptor(owning: b)
        try reader.setNonBlocking()
        var buffer = [UInt8](repeating: 0, count: 8)
        #expect(try buffer.withUnsafeMutableBytes { try reader.read(into: $0) } == nil)
        try writer.writeAll("hi")
        #expect(try buffer.withUnsafeMutableBytes { try reader.read(into: $0) } == 2)
        #expect(buffer[0..<2] == [0x68, 0x69])
    }
}

@Suite struct MappedRegionTests {
    @Test(arguments: [4096, 2 << 20])
    func alignsAndZeroes(alignment: Int) throws {
        let region = try MappedRegion(count: 3 * 4096, alignment: alignment)
        #expect(Int(bitPattern: region.base) % alignment == 0)
        #expect(region.base.load(fromByteOffset: 3 * 4096 - 1, as: UInt8.self) == 0)
        region.base.storeBytes(of: 0xab, toByteOffset: 0, as: UInt8.self)
    }

    @Test func refusesBadSizes() {
        #expect(throws: SystemError.self) { _ = try MappedRegion(count: 0) }
        #expect(throws: SystemError.self) { _ = try MappedRegion(count: 100) }
        #expect(throws: SystemError.self) { _ = try MappedRegion(count: 4096, alignment: 3 * 4096) }
    }
}

@Suite struct EventLoopTests {
    @Test func dispatchesReadinessAndTasks() throws {
        let loop = try EventLoop()
        let (a, b) = try FileDescriptor.socketPair()
        let reader = FileDescriptor(owning: a)
        let writer = FileDescriptor(owning: b)
        let fired = Mutex(0)
        let fd = reader.rawValue
        try loop.register(fd: fd, events: EventLoop.readable) { events in
            var byte: UInt8 = 0
            _ = Glibc.read(fd, &byte, 1)
            fired.withLock { $0 += Int(byte) }
        }
        try writer.writeAll([5])
        loop.runOnce(timeoutMilliseconds: 1000)
        #expect(fired.withLock { $0 } == 5)
        let ran = Mutex(false)
        loop.execute { ran.withLock { $0 = true } }
        loop.runOnce(timeoutMilliseconds: 1000)
        #expect(ran.withLock { $0 })
        loop.unregister(fd: fd)
        try writer.writeAll([1])
        loop.runOnce(timeoutMilliseconds: 10)
        #expect(fired.withLock { $0 } == 5, "an unregistered fd must not fire")
        loop.stop()
        #expect(!loop.runOnce(timeoutMilliseconds: 10))
    }

    @Test func runsOnItsOwnThread() throws {
        let loop = try EventLoop()
        try loop.start()
        let done = Mutex(false)
        loop.execute { done.withLock { $0 = true } }
        let deadline = Monotonic.now() + 5_000_000_000
        while !done.withLock({ $0 }) && Monotonic.now() < deadline { usleep(1000) }
        #expect(done.withLock { $0 })
        loop.stop()
    }
}

/// Monotonic nanoseconds for test deadlines (SystemSupport has no clock of its own).
enum Monotonic {
    static func now() -> Int64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Int64(ts.tv_sec) * 1_000_000_000 + Int64(ts.tv_nsec)
    }
}

/// QEMU's error_report line layout, with -msg timestamp=on and guest-name=on.
@Suite(.serialized) struct ErrorReportTests {
    @Test func lineLayout() throws {
        defer { ErrorReport.configure(program: "swemu", timestamp: false, guestName: nil) }
        ErrorReport.configure(program: "swemu-system-riscv64", timestamp: false, guestName: nil)
        #expect(ErrorReport.line("disk full") == "swemu-system-riscv64: disk full\n")
        ErrorReport.configure(program: "swemu-system-riscv64", timestamp: true, guestName: "web1")
        let line = ErrorReport.line("disk full", lineEnd: "\r\n")
        // 2026-12-07T03:14:08.825123Z web1 swemu-system-riscv64: disk full
        let stamp = try #require(line.split(separator: " ").first)
        #expect(stamp.count == 27 && stamp.hasSuffix("Z") && stamp.dropFirst(10).first == "T" && stamp.dropFirst(19).first == ".")
        #expect(stamp.allSatisfy { $0.isNumber || "-T:.Z".contains($0) })
        #expect(line.hasSuffix(" web1 swemu-system-riscv64: disk full\r\n"))
    }
}

/// -add-fd: /dev/fdset/N opens a duplicate of the set's descriptor with the access mode asked.
@Suite struct FdSetTests {
    @Test func fdSetPathsOpenDuplicates() throws {
        var template = Array("/tmp/swemu-fdset.XXXXXX".utf8CString)
        Glibc.close(mkstemp(&template))
        let path = template.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
        defer { unlink(path) }
        // The access mode must be the one asked for, exactly (QEMU's qemu_fdset_dup_fd).
        let writer = open(path, O_WRONLY)
        let reader = open(path, O_RDONLY)
        let set = 900 + Int(getpid() % 50)
        try FdSets.add(FdSets.Entry(set: set, fd: writer, opaque: "log"))
        try FdSets.add(FdSets.Entry(set: set, fd: reader, opaque: nil))
        let written = try FileDescriptor.open("/dev/fdset/\(set)", O_WRONLY | O_APPEND)
        #expect(written.rawValue != writer)
        try written.writeAll(Array("hello".utf8))
        let read = try FileDescriptor.open("/dev/fdset/\(set)", O_RDONLY)
        var buffer = [UInt8](repeating: 0, count: 5)
        #expect(pread(read.rawValue, &buffer, 5, 0) == 5 && buffer == Array("hello".utf8))
        #expect(throws: SystemError.self) { _ = try FileDescriptor.open("/dev/fdset/\(set)", O_RDWR) }
        #expect(throws: SystemError.self) { _ = try FileDescriptor.open("/dev/fdset/\(set + 1000)", O_RDONLY) }
        #expect(throws: SystemError.self) { try FdSets.add(FdSets.Entry(set: set, fd: writer, opaque: nil)) }
        #expect(throws: SystemError.self) { try FdSets.add(FdSets.Entry(set: set, fd: 1, opaque: nil)) }
    }
}
