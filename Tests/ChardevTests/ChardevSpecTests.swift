import SystemSupport
import Testing

@testable import Chardev

@Suite struct ChardevSpecTests {
    @Test func unixSocketServer() throws {
        let spec = try ChardevSpec.parse(chardev: "socket,id=mon0,path=/tmp/m.sock,server=on,wait=off")
        #expect(spec == ChardevSpec(id: "mon0", backend: .socket(.init(address: .unix(path: "/tmp/m.sock"), server: true, wait: false))))
    }

    @Test func tcpSocketWithLegacyFlags() throws {
        let spec = try ChardevSpec.parse(chardev: "socket,id=s1,host=127.0.0.1,port=4444,server,nowait,nodelay")
        guard case .socket(let s) = spec.backend else { Issue.record("not a socket"); return }
        #expect(s.address == .tcp(host: "127.0.0.1", port: 4444))
        #expect(s.server && !s.wait)
    }

    @Test func serverWaitsByDefaultAndClientNever() throws {
        let server = try ChardevSpec.parse(chardev: "socket,id=a,port=5,server=on")
        #expect(server.backend == .socket(.init(address: .tcp(host: "", port: 5), server: true, wait: true)))
        let client = try ChardevSpec.parse(chardev: "socket,id=a,path=/s,reconnect=2")
        #expect(client.backend == .socket(.init(address: .unix(path: "/s"), server: false, wait: false, reconnectSeconds: 2)))
    }

    @Test func stdioMuxAndSignal() throws {
        #expect(try ChardevSpec.parse(chardev: "stdio,id=con,mux=on,signal=off")
            == ChardevSpec(id: "con", backend: .stdio(signal: false), mux: true))
        #expect(try ChardevSpec.parse(chardev: "stdio,id=con") == ChardevSpec(id: "con", backend: .stdio(signal: true)))
    }

    @Test func fileNullPty() throws {
        #expect(try ChardevSpec.parse(chardev: "file,id=f,path=/var/log/a,,b.log,append=on")
            == ChardevSpec(id: "f", backend: .file(path: "/var/log/a,b.log", append: true)))
        #expect(try ChardevSpec.parse(chardev: "null,id=n") == ChardevSpec(id: "n", backend: .null))
        #expect(try ChardevSpec.parse(chardev: "pty,id=p") == ChardevSpec(id: "p", backend: .pty))
    }

    @Test(arguments: [
        ("vc,id=x", "-chardev: backend 'vc' is not supported; accepted: null, stdio, pty, file, socket"),
        ("stdio", "-chardev: 'id' is required, e.g. -chardev stdio,id=char0"),
        ("stdio,id=9lives", "-chardev: id '9lives' is not valid: it must start with a letter and use only letters, digits, '-', '.', '_'"),
        ("pty,id=p,path=/x", "-chardev: unknown option 'path' for backend 'pty'; accepted: id, mux"),
        ("file,id=f", "-chardev: backend 'file' needs path=FILE"),
        ("socket,id=s", "-chardev: a socket needs path=PATH (unix) or host=HOST,port=PORT (tcp)"),
        ("socket,id=s,path=/a,port=3", "-chardev: a socket takes either path=PATH (unix) or host=HOST,port=PORT (tcp), not both"),
        ("socket,id=s,path=/a,wait=off", "-chardev: 'wait' applies only with server=on"),
        ("socket,id=s,port=70000", "-chardev: option 'port' must be an integer from 0 to 65535, not '70000'"),
        ("socket,id=s,path=/a,server=on,reconnect=1", "-chardev: 'reconnect' applies only to a client (server=off)"),
        ("id=x", "-chardev: the backend comes first: BACKEND,id=ID[,...] with BACKEND one of null, stdio, pty, file, socket"),
    ])
    func chardevErrors(text: String, message: String) {
        let error = #expect(throws: SystemError.self) { try ChardevSpec.parse(chardev: text) }
        #expect(error?.message == message)
        #expect(error?.code == .configuration)
    }

    @Test func knownButUnsupportedOptionSaysSo() {
        let error = #expect(throws: SystemError.self) { try ChardevSpec.parse(chardev: "socket,id=s,port=1,telnet=on") }
        #expect(error?.code == .unsupported)
        #expect(error?.message == "-chardev: option 'telnet' is not supported yet")
    }

    // MARK: short forms

    @Test func simpleShortForms() throws {
        #expect(try ChardevSpec.parse(shortForm: "stdio") == .new(ChardevSpec(id: nil, backend: .stdio(signal: true)), monitor: false))
        #expect(try ChardevSpec.parse(shortForm: "pty") == .new(ChardevSpec(id: nil, backend: .pty), monitor: false))
        #expect(try ChardevSpec.parse(shortForm: "null") == .new(ChardevSpec(id: nil, backend: .null), monitor: false))
        #expect(try ChardevSpec.parse(shortForm: "none") == .none)
        #expect(try ChardevSpec.parse(shortForm: "chardev:ser0") == .chardev(id: "ser0"))
        #expect(try ChardevSpec.parse(shortForm: "file:/tmp/a,b") == .new(ChardevSpec(id: nil, backend: .file(path: "/tmp/a,b", append: false)), monitor: false))
    }

    @Test func monStdioIsAMuxWithoutSignals() throws {
        #expect(try ChardevSpec.parse(shortForm: "mon:stdio")
            == .new(ChardevSpec(id: nil, backend: .stdio(signal: false), mux: true), monitor: true))
        #expect(try ChardevSpec.parse(shortForm: "mon:unix:/tmp/s,server,nowait")
            == .new(ChardevSpec(id: nil, backend: .socket(.init(address: .unix(path: "/tmp/s"), server: true, wait: false)), mux: true), monitor: true))
    }

    @Test func unixShortForm() throws {
        #expect(try ChardevSpec.parse(shortForm: "unix:/tmp/x.sock,server=on,wait=off")
            == .new(ChardevSpec(id: nil, backend: .socket(.init(address: .unix(path: "/tmp/x.sock"), server: true, wait: false))), monitor: false))
        #expect(try ChardevSpec.parse(shortForm: "unix:/tmp/x.sock")
            == .new(ChardevSpec(id: nil, backend: .socket(.init(address: .unix(path: "/tmp/x.sock"), server: false))), monitor: false))
    }

    @Test func tcpShortForms() throws {
        #expect(try ChardevSpec.parse(shortForm: "tcp::4444,server=on,wait=off")
            == .new(ChardevSpec(id: nil, backend: .socket(.init(address: .tcp(host: "", port: 4444), server: true, wait: false))), monitor: false))
        #expect(try ChardevSpec.parse(shortForm: "tcp:localhost:23")
            == .new(ChardevSpec(id: nil, backend: .socket(.init(address: .tcp(host: "localhost", port: 23), server: false))), monitor: false))
        #expect(try ChardevSpec.parse(shortForm: "tcp:[::1]:5555,server,nowait")
            == .new(ChardevSpec(id: nil, backend: .socket(.init(address: .tcp(host: "::1", port: 5555), server: true, wait: false))), monitor: false))
        #expect(SocketAddress.tcp(host: "::1", port: 5).description == "tcp:[::1]:5")
    }

    @Test(arguments: [
        ("vc", "-serial: 'vc' is not supported; accepted: \(ChardevSpec.acceptedShortForms)"),
        ("udp:1.2.3.4:5", "-serial: 'udp' is not supported; accepted: \(ChardevSpec.acceptedShortForms)"),
        ("tcp:4444", "-serial: expected tcp:[HOST]:PORT[,server=on,wait=off], e.g. tcp:127.0.0.1:4444,server=on,wait=off"),
        ("tcp::http", "-serial: option 'port' must be an integer from 0 to 65535, not 'http'"),
        ("tcp::1,server,colour=red", "-serial: unknown option 'colour' for tcp:; accepted: server, wait, nodelay, reconnect"),
        ("mon:none", "-serial: 'mon:' takes a backend (mon:stdio, mon:unix:PATH,server=on,wait=off, ...), not 'none'"),
        ("file:", "-serial: file: needs a path, e.g. file:serial.log"),
        ("chardev:", "-serial: id '' is not valid: it must start with a letter and use only letters, digits, '-', '.', '_'"),
        ("", "-serial: empty argument; accepted: \(ChardevSpec.acceptedShortForms)"),
    ])
    func shortFormErrors(text: String, message: String) {
        let error = #expect(throws: SystemError.self) { try ChardevSpec.parse(shortForm: text) }
        #expect(error?.message == message)
    }

    @Test func monitorOptionNameAppearsInErrors() {
        let error = #expect(throws: SystemError.self) { try ChardevSpec.parse(shortForm: "vc", option: "-monitor") }
        #expect(error?.message.hasPrefix("-monitor: 'vc' is not supported") == true)
    }
}
