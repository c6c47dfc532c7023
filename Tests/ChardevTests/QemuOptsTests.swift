import SystemSupport
import Testing

@testable import Chardev

@Suite struct QemuOptsTests {
    @Test func impliedFirstValueAndPairsInOrder() throws {
        let opts = try QemuOpts(parsing: "socket,id=mon0,path=/tmp/m.sock", impliedKey: "backend", option: "-chardev")
        #expect(opts.implied == "socket")
        #expect(opts.keys == ["backend", "id", "path"])
        #expect(opts.string("path") == "/tmp/m.sock")
        #expect(opts.string("missing") == nil)
    }

    @Test func firstElementWithEqualsIsNotImplied() throws {
        let opts = try QemuOpts(parsing: "id=x,path=/p", impliedKey: "backend", option: "-chardev")
        #expect(opts.implied == nil)
        #expect(opts.keys == ["id", "path"])
    }

    @Test func doubledCommaIsALiteralComma() throws {
        let opts = try QemuOpts(parsing: "file,,name,path=/a,,b,,,id=x", impliedKey: "backend", option: "-chardev")
        #expect(opts.implied == "file,name")
        #expect(opts.string("path") == "/a,b,")
        #expect(opts.string("id") == "x")
    }

    @Test func valuesMayContainEqualsAndColons() throws {
        let opts = try QemuOpts(parsing: "a=b=c,d=tcp:1:2", option: "-x")
        #expect(opts.string("a") == "b=c")
        #expect(opts.string("d") == "tcp:1:2")
    }

    @Test func bareFlagsResolveAgainstAcceptedBooleans() throws {
        let opts = try QemuOpts(parsing: "path=/s,server,nowait", option: "-serial")
        #expect(opts.entries[1] == QemuOpts.Entry(key: "server", value: nil))
        let checked = try opts.validate(accepted: ["path", "server", "wait"], booleans: ["server", "wait"])
        #expect(try checked.bool("server") == true)
        #expect(try checked.bool("wait") == false)
    }

    @Test(arguments: [
        ("on", true), ("off", false), ("yes", true), ("no", false), ("true", true), ("false", false), ("ON", true), ("Off", false),
    ])
    func booleanForms(text: String, value: Bool) throws {
        let opts = try QemuOpts(parsing: "k=\(text)", option: "-x")
        #expect(try opts.bool("k") == value)
    }

    @Test func badBooleanSaysWhatIsAccepted() throws {
        let opts = try QemuOpts(parsing: "server=maybe", option: "-chardev")
        let error = #expect(throws: SystemError.self) { try opts.bool("server") }
        #expect(error?.code == .configuration)
        #expect(error?.message == "-chardev: option 'server' takes on or off (also yes/no, true/false), not 'maybe'")
    }

    @Test func duplicateKeysAreRefused() {
        let error = #expect(throws: SystemError.self) { try QemuOpts(parsing: "a=1,b=2,a=3", option: "-drive") }
        #expect(error?.message == "-drive: option 'a' is given more than once")
    }

    @Test func flagAndItsNegationAreADuplicate() throws {
        let opts = try QemuOpts(parsing: "wait=on,nowait", option: "-serial")
        #expect(throws: SystemError.self) { try opts.validate(accepted: ["wait"], booleans: ["wait"]) }
    }

    @Test func doubledCommaAtTheEndBelongsToTheValue() throws {
        #expect(try QemuOpts(parsing: "a=1,,", option: "-x").string("a") == "1,")
        let opts = try QemuOpts(parsing: "a=1,,,b", option: "-x")
        #expect(opts.entries == [.init(key: "a", value: "1,"), .init(key: "b", value: nil)])
    }

    @Test(arguments: ["", ",", "a=1,", "=x", "a=1,,,", ",a=1", "a=1,,,,,=2"])
    func malformedStringsAreRefused(text: String) {
        let error = #expect(throws: SystemError.self) { try QemuOpts(parsing: text, option: "-x") }
        #expect(error?.code == .configuration)
        #expect(error?.message.hasPrefix("-x: ") == true)
    }

    @Test func unknownKeyListsAcceptedOnes() throws {
        let opts = try QemuOpts(parsing: "socket,id=a,colour=red", impliedKey: "backend", option: "-chardev")
        let error = #expect(throws: SystemError.self) {
            try opts.validate(accepted: ["id", "path"], context: "backend 'socket'")
        }
        #expect(error?.message == "-chardev: unknown option 'colour' for backend 'socket'; accepted: id, path")
    }

    @Test func bareWordThatIsNotABooleanNeedsAValue() throws {
        let opts = try QemuOpts(parsing: "path", option: "-x")
        let error = #expect(throws: SystemError.self) { try opts.validate(accepted: ["path"]) }
        #expect(error?.message == "-x: option 'path' needs a value: path=VALUE")
    }

    @Test func integersWithRange() throws {
        let opts = try QemuOpts(parsing: "port=4444,big=70000,hex=0x10,neg=-3,bad=12x", option: "-x")
        #expect(try opts.int("port", in: 0...65535) == 4444)
        #expect(try opts.int("hex") == 16)
        #expect(try opts.int("neg") == -3)
        let error = #expect(throws: SystemError.self) { try opts.int("big", in: 0...65535) }
        #expect(error?.message == "-x: option 'big' must be an integer from 0 to 65535, not '70000'")
        #expect(throws: SystemError.self) { try opts.int("bad") }
    }

    @Test(arguments: [
        ("4096", UInt64(4096)), ("512K", 512 << 10), ("64m", 64 << 20), ("2G", 2 << 30), ("1.5G", 3 << 29),
        ("1T", 1 << 40), ("0", 0), ("7B", 7), ("0.5k", 512),
    ])
    func sizes(text: String, value: UInt64) throws {
        let opts = try QemuOpts(parsing: "size=\(text)", option: "-m")
        #expect(try opts.size("size") == value)
    }

    @Test(arguments: ["", "G", "1.5", "12Q", "-1", "1..2G", "99999999999999999999", "16E", "1.G"])
    func badSizes(text: String) {
        #expect(QemuOpts.parseSize(text) == nil)
    }

    @Test func badSizeMessage() throws {
        let opts = try QemuOpts(parsing: "size=lots", option: "-m")
        let error = #expect(throws: SystemError.self) { try opts.size("size") }
        #expect(error?.message == "-m: option 'size' must be a size such as 4096, 512K, 64M or 2G, not 'lots'")
    }
}
