import Glibc
import SystemSupport
import Testing

@testable import Chardev

@Suite struct FileAndNullTests {
    private func contents(_ path: String) -> String {
        guard let f = fopen(path, "r") else { return "<missing>" }
        defer { fclose(f) }
        var out: [UInt8] = []
        while true {
            let c = fgetc(f)
            if c == EOF { break }
            out.append(UInt8(c))
        }
        return String(decoding: out, as: UTF8.self)
    }

    @Test func fileTruncatesThenWrites() throws {
        let path = temporaryPath("out.log")
        defer { unlink(path) }
        do {
            let old = try FileBackend(path: path)
            old.write(Array("old contents that must go\n".utf8))
            old.close()
        }
        let file = try FileBackend(path: path)
        file.write(Array("hello ".utf8))
        file.write(Array("world\r\n".utf8))
        #expect(file.label == "file:\(path)")
        file.close()
        file.write(Array("after close".utf8))  // dropped, no crash
        #expect(contents(path) == "hello world\r\n")
        var st = stat()
        #expect(stat(path, &st) == 0)
        #expect(st.st_mode & 0o777 == 0o644 & ~umaskValue())
    }

    @Test func fileAppends() throws {
        let path = temporaryPath("append.log")
        defer { unlink(path) }
        let first = try FileBackend(path: path)
        first.write(Array("one\n".utf8))
        first.close()
        let second = try FileBackend(path: path, append: true)
        second.write(Array("two\n".utf8))
        second.close()
        #expect(contents(path) == "one\ntwo\n")
    }

    @Test func fileThroughTheFactory() throws {
        let path = temporaryPath("factory.log")
        defer { unlink(path) }
        try withLoop { loop in
            let dev = try CharDevice.open(try ChardevSpec.parse(chardev: "file,id=f0,path=\(path)"), loop: loop, quit: {})
            let backend = try dev.claim(for: "serial0")
            backend.write(Array("boot\n".utf8))
            dev.close()
        }
        #expect(contents(path) == "boot\n")
    }

    @Test func fileInAMissingDirectoryIsAClearError() {
        let error = #expect(throws: SystemError.self) { try FileBackend(path: "/nonexistent-dir-swemu/x.log") }
        #expect(error?.message == "cannot open chardev output file '/nonexistent-dir-swemu/x.log'")
        #expect(error?.errno == .noEntry)
    }

    @Test func nullDiscardsAndNeverFeeds() {
        let null = NullBackend()
        let fe = RecordingFrontend()
        null.attach(fe)
        null.write(Array("anything".utf8))
        null.acceptInput()
        #expect(fe.received.isEmpty)
        #expect(null.label == "null")
    }

    @Test func singleFrontendUnlessMuxed() throws {
        try withLoop { loop in
            let dev = try CharDevice.open(ChardevSpec(id: "n0", backend: .null), loop: loop, quit: {})
            _ = try dev.claim(for: "serial0")
            let error = #expect(throws: SystemError.self) { try dev.claim(for: "monitor") }
            #expect(error?.message == "chardev 'n0' is already used by serial0, so monitor cannot use it too; add mux=on to share it")
            let muxed = try CharDevice.open(ChardevSpec(id: "n1", backend: .null, mux: true), loop: loop, quit: {})
            let a = try muxed.claim(for: "serial0")
            let b = try muxed.claim(for: "monitor")
            #expect(a !== b)
        }
    }
}

private func umaskValue() -> mode_t {
    let old = umask(0o022)
    umask(old)
    return old
}
