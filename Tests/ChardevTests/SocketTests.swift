import Glibc
import Synchronization
import SystemSupport
import Testing

@testable import Chardev

@Suite struct SocketTests {
    @Test func unixServerServesOneClientAtATimeAndListensAgain() throws {
        let path = temporaryPath("serial.sock")
        try withLoop { loop in
            let server = try SocketBackend(.init(address: .unix(path: path), server: true, wait: false), loop: loop)
            #expect(server.label == "unix:\(path),server=on")
            let fe = RecordingFrontend()
            server.attach(fe)
            server.write(Array("nobody hears this".utf8))  // dropped: no client yet

            let first = try connectClient(.unix(path: path))
            #expect(eventually { server.isConnected })
            first.write("hello")
            #expect(eventually { fe.text == "hello" })
            server.write(Array("welcome".utf8))
            #expect(first.readText(count: 7) == "welcome")

            // A second client while the first is connected is closed at once.
            let second = try connectClient(.unix(path: path))
            #expect(second.seesEOF())
            server.write(Array("still first".utf8))
            #expect(first.readText(count: 11) == "still first")

            // The first leaves; the server listens again and a new client gets through.
            shutdown(first.fd, Int32(SHUT_RDWR))
            #expect(eventually { !server.isConnected })
            let third = try connectClient(.unix(path: path))
            #expect(eventually { server.isConnected })
            third.write("again")
            #expect(eventually { fe.text == "helloagain" })
            server.write(Array("bye".utf8))
            #expect(third.readText(count: 3) == "bye")

            server.close()
            #expect(third.seesEOF())
            #expect(access(path, F_OK) != 0, "close removes the socket file")
        }
    }

    /// fd=N: a listening socket the parent left (libvirt's monitor socket) serves clients;
    /// anything else is refused with what fd= takes.
    @Test func inheritedListeningSocket() throws {
        let path = temporaryPath("inherited.sock")
        let listener = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        let raw = try RawSocketAddress.unix(path)
        #expect(raw.withSockaddr { Glibc.bind(listener, $0, $1) } == 0 && Glibc.listen(listener, 1) == 0)
        let spec = try ChardevSpec.parse(chardev: "socket,id=charmonitor,fd=\(listener),server=on,wait=off")
        guard case .socket(let options) = spec.backend else {
            Issue.record("\(spec.backend)")
            return
        }
        #expect(options.address == .fd(listener))
        try withLoop { loop in
            let server = try SocketBackend(options, loop: loop)
            let fe = RecordingFrontend()
            server.attach(fe)
            let client = try connectClient(.unix(path: path))
            #expect(eventually { server.isConnected })
            client.write("{}")
            #expect(eventually { fe.text == "{}" })
            server.close()
        }
        let stream = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        defer { Glibc.close(stream) }
        #expect(throws: SystemError.self) { _ = try withLoop { loop in try SocketBackend(.init(address: .fd(stream), server: true, wait: false), loop: loop) } }
        #expect(throws: SystemError.self) { _ = try ChardevSpec.parse(chardev: "socket,id=c,fd=7,path=/tmp/x") }
        #expect(throws: SystemError.self) { _ = try ChardevSpec.parse(chardev: "socket,id=c,fd=7,reconnect=1") }
    }

    @Test func unixServerReplacesAStaleSocketButNotAFile() throws {
        let path = temporaryPath("stale.sock")
        defer { unlink(path) }
        try withLoop { loop in
            // A socket file left behind by an earlier run (bound, never unlinked).
            let stale = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
            let raw = try RawSocketAddress.unix(path)
            #expect(raw.withSockaddr { bind(stale, $0, $1) } == 0)
            Glibc.close(stale)
            let server = try SocketBackend(.init(address: .unix(path: path), server: true, wait: false), loop: loop)
            let client = try connectClient(.unix(path: path))
            #expect(eventually { server.isConnected })
            _ = client
            server.close()

            let plain = open(path, O_CREAT | O_WRONLY, 0o600)
            Glibc.close(plain)
            let error = #expect(throws: SystemError.self) {
                try SocketBackend(.init(address: .unix(path: path), server: true, wait: false), loop: loop)
            }
            #expect(error?.message == "cannot listen on unix:\(path): it exists and is not a socket; remove it or choose another path")
            #expect(access(path, F_OK) == 0, "a regular file is never removed")
        }
    }

    @Test func tcpServerOnAKernelChosenPort() throws {
        try withLoop { loop in
            let server = try SocketBackend(.init(address: .tcp(host: "127.0.0.1", port: 0), server: true, wait: false), loop: loop)
            defer { server.close() }
            let port = try #require(server.boundPort)
            #expect(port != 0)
            #expect(server.label == "tcp:127.0.0.1:\(port),server=on")
            let fe = RecordingFrontend()
            server.attach(fe)
            let client = try connectClient(.tcp(host: "127.0.0.1", port: port))
            #expect(eventually { server.isConnected })
            client.write("ping")
            #expect(eventually { fe.text == "ping" })
            server.write(Array("pong".utf8))
            #expect(client.readText(count: 4) == "pong")
        }
    }

    @Test func tcpServerSetsNoDelayOnTheConnection() throws {
        try withLoop { loop in
            let server = try SocketBackend(.init(address: .tcp(host: "127.0.0.1", port: 0), server: true, wait: false), loop: loop)
            defer { server.close() }
            let client = try connectClient(.tcp(host: "127.0.0.1", port: try #require(server.boundPort)))
            #expect(eventually { server.isConnected })
            _ = client
            #expect(server.noDelayOnClient() == true)
        }
    }

    @Test func tcpClientConnectsToAListener() throws {
        let (listener, port) = try SocketTestSupport.listenTCP()
        try withLoop { loop in
            let client = try SocketBackend(.init(address: .tcp(host: "127.0.0.1", port: port), server: false), loop: loop)
            defer { client.close() }
            #expect(client.label == "tcp:127.0.0.1:\(port)")
            let peer = try #require(SocketTestSupport.accept(listener))
            let fe = RecordingFrontend()
            client.attach(fe)
            #expect(client.isConnected)
            client.write(Array("from guest".utf8))
            #expect(peer.readText(count: 10) == "from guest")
            peer.write("to guest")
            #expect(eventually { fe.text == "to guest" })
            #expect(client.noDelayOnClient() == true)
        }
    }

    @Test func clientThatCannotConnectSaysWhy() throws {
        let port = try {
            let (listener, port) = try SocketTestSupport.listenTCP()
            _ = listener  // closed at the end of this closure: nothing listens on `port` after
            return port
        }()
        _ = try withLoop { loop in
            let error = #expect(throws: SystemError.self) {
                try SocketBackend(.init(address: .tcp(host: "127.0.0.1", port: port), server: false), loop: loop, id: "c0")
            }
            #expect(error?.message == "cannot connect chardev 'c0' to tcp:127.0.0.1:\(port)")
            #expect(error?.errno == .connectionRefused)
            #expect(error?.description == "cannot connect chardev 'c0' to tcp:127.0.0.1:\(port): Connection refused")
        }
    }

    @Test func clientReconnectsAfterLosingTheServer() throws {
        let path = temporaryPath("reconnect.sock")
        try withLoop { loop in
            let reports = Reports()
            // Nothing listens yet: with reconnect the client keeps trying instead of failing.
            let client = try SocketBackend(.init(address: .unix(path: path), server: false, reconnectSeconds: 1),
                                           loop: loop, report: reports.sink)
            defer { client.close() }
            #expect(!client.isConnected)
            #expect(reports.all.count == 1)
            #expect(reports.all.first?.hasPrefix("swemu: cannot connect to unix:\(path): ") == true)

            let server = try SocketBackend(.init(address: .unix(path: path), server: true, wait: false), loop: loop)
            defer { server.close() }
            let serverSide = RecordingFrontend()
            server.attach(serverSide)
            #expect(eventually(8) { client.isConnected && server.isConnected })
            client.write(Array("x".utf8))
            #expect(eventually { serverSide.text == "x" })

            server.close()
            #expect(eventually { !client.isConnected })
            let server2 = try SocketBackend(.init(address: .unix(path: path), server: true, wait: false), loop: loop)
            defer { server2.close() }
            #expect(eventually(8) { client.isConnected && server2.isConnected })
        }
    }

    @Test func waitOnBlocksUntilTheFirstClient() throws {
        let path = temporaryPath("wait.sock")
        try withLoop { loop in
            let reports = Reports()
            let result = Mutex<Result<SocketBackend, SystemError>?>(nil)
            try HostThread.spawn(name: "wait-test") {
                let r = Result { () throws(SystemError) in
                    try SocketBackend(.init(address: .unix(path: path), server: true, wait: true), loop: loop, report: reports.sink)
                }
                result.withLock { $0 = r }
            }
            #expect(eventually { access(path, F_OK) == 0 && !reports.all.isEmpty })
            #expect(reports.all == ["swemu: waiting for connection on: disconnected:unix:\(path),server=on"])
            usleep(20_000)
            #expect(result.withLock { $0 == nil }, "init returned before any client connected")
            let client = try connectClient(.unix(path: path))
            #expect(eventually { result.withLock { $0 != nil } })
            let server = try #require(try result.withLock { $0 }?.get())
            defer { server.close() }
            #expect(server.isConnected)
            let fe = RecordingFrontend()
            server.attach(fe)
            client.write("first")
            #expect(eventually { fe.text == "first" })
        }
    }

    @Test func frontendFlowControlLosesNothing() throws {
        let path = temporaryPath("flow.sock")
        try withLoop { loop in
            let server = try SocketBackend(.init(address: .unix(path: path), server: true, wait: false), loop: loop)
            defer { server.close() }
            let fe = RecordingFrontend(capacity: 0)
            server.attach(fe)
            let client = try connectClient(.unix(path: path))
            #expect(eventually { server.isConnected })
            let payload = (0..<20000).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ $0 >> 8) }
            client.write(payload)
            usleep(50_000)
            #expect(fe.received.isEmpty, "a full frontend gets nothing")

            // Room for 16 bytes at a time: every acceptInput brings at most that much.
            fe.setCapacity(16)
            server.acceptInput()
            #expect(eventually { fe.received.count >= 16 })
            fe.setCapacity(1 << 20)
            server.acceptInput()
            #expect(eventually { fe.received.count == payload.count })
            #expect(fe.received == payload)
            #expect(fe.overruns == 0)
        }
    }

    @Test func inputPendingAtHangupIsStillDelivered() throws {
        let path = temporaryPath("hup.sock")
        try withLoop { loop in
            let server = try SocketBackend(.init(address: .unix(path: path), server: true, wait: false), loop: loop)
            defer { server.close() }
            let fe = RecordingFrontend(capacity: 0)
            server.attach(fe)
            do {
                let client = try connectClient(.unix(path: path))
                #expect(eventually { server.isConnected })
                client.write("last words")
            }  // client closes with data unread
            usleep(50_000)
            fe.setCapacity(100)
            server.acceptInput()
            #expect(eventually { fe.text == "last words" })
            #expect(eventually { !server.isConnected })
        }
    }

    @Test func slowPeerGetsQueuedOutputThenDropsBeyondTheLimit() throws {
        let path = temporaryPath("slow.sock")
        try withLoop { loop in
            let server = try SocketBackend(.init(address: .unix(path: path), server: true, wait: false), loop: loop)
            defer { server.close() }
            let client = try connectClient(.unix(path: path))
            #expect(eventually { server.isConnected })
            // Far more than the socket buffer plus our queue, written while the peer reads
            // nothing: a write that waited for the peer would never return, so the writes
            // finishing at all (on another thread, within a deadline that only catches a hang)
            // shows that write never blocks.
            let chunk = [UInt8](repeating: 0x41, count: 64 * 1024)
            let written = Atomic<Int>(0)
            try HostThread.spawn(name: "slow-peer-writer") {
                for _ in 0..<64 {
                    server.write(chunk)
                    written.add(1, ordering: .releasing)
                }
            }
            #expect(eventually(60) { written.load(ordering: .acquiring) == 64 }, "write blocked on a peer that does not read")
            // At least the queue's worth arrives; then whatever else is under way, until the
            // stream stays quiet. The rest was dropped, not delivered late.
            var got = client.read(count: StreamChannel.outputQueueLimit, seconds: 60)
            #expect(got.count >= StreamChannel.outputQueueLimit)
            while true {
                let more = client.read(count: 64 * 64 * 1024 - got.count, seconds: 0.5)
                if more.isEmpty { break }
                got += more
            }
            #expect(got.count < 64 * 64 * 1024)
        }
    }
}

extension SocketBackend {
    /// TCP_NODELAY on the connected socket (test hook).
    func noDelayOnClient() -> Bool? {
        clientDescriptor().flatMap { fd in
            var value: Int32 = 0
            var length = socklen_t(4)
            return getsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &value, &length) == 0 ? value != 0 : nil
        }
    }
}
