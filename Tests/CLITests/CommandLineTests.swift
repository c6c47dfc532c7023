import RISCVJIT
import Testing
import Block
@testable import CLI
import Chardev
import GuestMemory
import SystemSupport
import DeviceModel
import VMM

/// The command line as a QEMU user meets it: help texts, accepted options, and one clear line
/// for every mistake or not-yet-available feature.
@Suite struct CommandLineTests {
    func decide(_ args: [String], target: EmulatorTarget = .riscv64) throws(CLIError) -> Action {
        try SystemEmulator.decide(target: target, arguments: args)
    }

    func printed(_ args: [String], target: EmulatorTarget = .riscv64) throws -> String {
        guard case .print(let text) = try decide(args, target: target) else {
            Issue.record("\(args) did not print")
            return ""
        }
        return text
    }

    func config(_ args: [String], target: EmulatorTarget = .riscv64) throws -> SystemConfiguration {
        guard case .run(let config) = try decide(args, target: target) else {
            Issue.record("\(args) did not run")
            throw CLIError(option: nil, "no run")
        }
        return config
    }

    func error(_ args: [String], target: EmulatorTarget = .riscv64) -> String {
        do {
            _ = try decide(args, target: target)
            Issue.record("\(args) was accepted")
            return ""
        } catch {
            return error.line(program: target.programName)
        }
    }

    @Test func helpListsOptionsInQEMUsLayout() throws {
        let help = try printed(["--help"])
        #expect(help.hasPrefix("swemu emulator version"))
        #expect(help.contains("usage: swemu-system-riscv64 [options]"))
        for option in ["-machine [type=]name", "-m [size=]megs", "-smp", "-nographic", "-serial dev", "-chardev", "-kernel bzImage",
                       "-d item1,...", "-no-reboot", "ctrl-a x"] {
            #expect(help.contains(option), "help lacks \(option)")
        }
        #expect(try printed(["-h"]) == help)
        #expect(try printed(["-help"]) == help)
        // --help wins wherever it stands, even after a bad option value
        #expect(try printed(["-m", "bogus", "--help"]) == help)
    }

    @Test func versionAndMachineList() throws {
        #expect(try printed(["--version"]).hasPrefix("swemu emulator version"))
        let machines = try printed(["-M", "help"])
        #expect(machines.hasPrefix("Supported machines are:\n"))
        #expect(machines.contains("virt "))
        #expect(machines.contains("spike "))
        #expect(machines.contains("none "))
        #expect(try printed(["-machine", "help"]) == machines)
        #expect(try printed(["-M", "help"], target: .x86_64).contains("microvm"))
        #expect(try printed(["-cpu", "help"]).contains("rv64"))
        #expect(try printed(["-d", "help"]).contains("guest_errors"))
        #expect(try printed(["-device", "help"]).contains("name \"virtio-balloon-device\""))
        #expect(try printed(["-device", "help"]).contains("name \"virtio-blk-device\", bus virtio-bus"))
        #expect(try printed(["-accel", "help"]).contains("tcg"))
    }

    @Test func invalidOptionsGetOneLine() {
        #expect(error(["-frobnicate"]) == "swemu-system-riscv64: -frobnicate: invalid option (see --help for the options swemu accepts)")
        #expect(error(["-m"]) == "swemu-system-riscv64: -m: requires an argument")
        #expect(error(["disk.img"]).contains("use -drive file=disk.img"))
        #expect(error(["-M", "pc"]).contains("unsupported machine type 'pc'; available: none, spike, virt"))
        #expect(error(["-M", "microvm"], target: .x86_64).contains("machine 'microvm' has no firmware and needs -kernel"))
        #expect(error(["-M", "microvm", "-accel", "tcg", "-kernel", "k"], target: .x86_64)
            .contains("accelerator 'tcg' is not available: swemu does not emulate x86 in software; use -accel kvm; accepted: kvm"))
        #expect(error(["-M", "microvm", "-kernel", "k", "-dtb", "d"], target: .x86_64).contains("describes itself with ACPI"))
        for e in [error(["-m", "lots"]), error(["-m", "0"]), error(["-m", "2T"])] {
            #expect(e.hasPrefix("swemu-system-riscv64: -m: "), "\(e)")
            #expect(!e.contains("\n"))
        }
        #expect(error(["-cpu", "cortex-a53"]).contains("accepted: rv64, max"))
        #expect(error(["-accel", "kvm"]).contains("accepted: tcg"))
        #expect(error(["-display", "gtk"]).contains("accepted: -display none"))
        #expect(error(["-d", "in_asm,bogus"]).contains("unknown log item 'bogus'"))
        #expect(error(["-M", "none", "-serial", "chardev:nope"]).contains("chardev 'nope' is not defined"))
        #expect(error(["-M", "none", "-chardev", "null,id=a", "-chardev", "null,id=a"]).contains("duplicate chardev id 'a'"))
        #expect(error(["-M", "none", "-chardev", "carrier-pigeon,id=a"]).hasPrefix("swemu-system-riscv64: -chardev: "))
    }

    /// `-accel tcg`'s engine properties: jit=on|off picks the JIT or the interpreter,
    /// tb-size sizes the JIT's buffer, thread=multi is the only threading mode.
    @Test func tcgEngineOptions() throws {
        // The JIT is the default where it runs (x86-64 hosts).
        #expect(try config(["-M", "virt", "-kernel", "k"]).jit == JITEngine.hostSupported)
        #expect(try config(["-M", "virt", "-kernel", "k", "-accel", "tcg"]).jit == JITEngine.hostSupported)
        let jit = try config(["-M", "virt", "-kernel", "k", "-accel", "tcg,jit=on,tb-size=64,thread=multi"])
        #expect(jit.jit && jit.tbSizeMiB == 64)
        #expect(try config(["-M", "virt", "-kernel", "k", "-accel", "tcg,jit=off"]).jit == false)
        #expect(try config(["-M", "virt", "-kernel", "k", "-accel", "tcg,tb-size=64"]).tbSizeMiB == 64)
        #expect(error(["-M", "virt", "-kernel", "k", "-accel", "tcg,jit=off,tb-size=64"]).contains("tb-size sizes the JIT's code buffer; it needs jit=on"))
        #expect(error(["-M", "virt", "-kernel", "k", "-accel", "tcg,jit=on,tb-size=0"]).contains("tb-size"))
        #expect(error(["-M", "virt", "-kernel", "k", "-accel", "tcg,jit=maybe"]).contains("option 'jit' takes on or off"))
        #expect(error(["-M", "virt", "-kernel", "k", "-accel", "tcg,thread=single"])
            .contains("thread=single is not supported: each hart runs on its own host thread; accepted: thread=multi"))
        #expect(error(["-M", "microvm", "-kernel", "k", "-accel", "kvm,jit=on"], target: .x86_64)
            .contains("'jit' is a property of the tcg accelerator"))
    }

    /// -incoming takes QEMU's URI forms and says which when it is given something else.
    @Test func incomingURIs() throws {
        #expect(try config(["-M", "virt", "-kernel", "k", "-incoming", "tcp:127.0.0.1:4444"]).incoming == .tcp(host: "127.0.0.1", port: 4444))
        #expect(try config(["-M", "virt", "-kernel", "k", "-incoming", "tcp:[::1]:5"]).incoming == .tcp(host: "::1", port: 5))
        #expect(try config(["-M", "virt", "-kernel", "k", "-incoming", "tcp::4444"]).incoming == .tcp(host: "", port: 4444))
        #expect(try config(["-M", "virt", "-kernel", "k", "-incoming", "unix:/tmp/s"]).incoming == .unix("/tmp/s"))
        #expect(try config(["-M", "virt", "-kernel", "k", "-incoming", "file:/tmp/f"]).incoming == .file("/tmp/f"))
        #expect(try config(["-M", "virt", "-kernel", "k", "-incoming", "exec:cat f"]).incoming == .exec("cat f"))
        #expect(try config(["-M", "virt", "-kernel", "k", "-incoming", "defer"]).incoming == .deferred)
        #expect(error(["-M", "virt", "-kernel", "k", "-incoming", "x"])
            == "swemu-system-riscv64: -incoming: migration URI 'x' is not one of tcp:HOST:PORT, unix:PATH, file:PATH, exec:COMMAND, fd:NAME or defer")
        #expect(error(["-M", "virt", "-kernel", "k", "-incoming", "tcp:h:99999"]).contains("a port number from 0 to 65535"))
        #expect(error(["-M", "virt", "-kernel", "k", "-incoming", "rdma:h:1"]).contains("unknown transport 'rdma'"))
    }

    @Test func loadvmNamesTheSnapshot() throws {
        #expect(try config(["-M", "virt", "-kernel", "k", "-loadvm", "before-upgrade"]).loadvm == "before-upgrade")
    }

    /// -netdev, -nic, -device virtio-net-device and -object filter-dump as QEMU takes them, and
    /// one clear line for each mistake.
    @Test func networkOptions() throws {
        let base = ["-M", "virt", "-kernel", "k"]
        let c = try config(base + ["-netdev", "user,id=n0,hostfwd=tcp::2222-:22,hostfwd=udp::5353-:53",
                                   "-device", "virtio-net-device,netdev=n0,mac=52:54:00:aa:bb:cc,id=nic0",
                                   "-nic", "user,model=virtio-net-device", "-object", "filter-dump,id=f0,netdev=n0,file=/tmp/x.pcap"])
        #expect(c.netdevs.map(\.id) == ["n0", "__org.qemu.nic0"])
        #expect(c.netdevs[0].options.strings("hostfwd") == ["tcp::2222-:22", "udp::5353-:53"])
        // -nic NICs come first, as QEMU numbers them for default MACs.
        #expect(c.nics == [NICSpec(netdev: "__org.qemu.nic0", mac: nil, id: nil),
                           NICSpec(netdev: "n0", mac: MACAddress([0x52, 0x54, 0, 0xaa, 0xbb, 0xcc]), id: "nic0")])
        #expect(c.dumpFilters == [try DumpFilterSpec(QemuOpts(parsing: "filter-dump,id=f0,netdev=n0,file=/tmp/x.pcap", impliedKey: "qom-type", option: "-object"))])
        #expect(try config(base + ["-nic", "none"]).netdevs.isEmpty)
        #expect(try printed(["-netdev", "help"]).hasPrefix("Available netdev backend types:\nsocket\nstream\ndgram\nuser\ntap\n"))
        #expect(try printed(["-nic", "model=help"]) == "Supported NIC models:\nvirtio-net-device\n")
        let refused: [([String], String)] = [
            (["-netdev", "bogus,id=x"], "-netdev: 'bogus' is not a network backend swemu provides; available: socket, stream, dgram, user, tap (see -netdev help)"),
            (["-netdev", "user"], "-netdev: Parameter 'id' is missing"),
            (["-netdev", "user,id=1x"], "-netdev: Parameter 'id' expects an identifier (a letter, then letters, digits, '-', '.', '_'), not '1x'"),
            (["-netdev", "user,id=a", "-netdev", "tap,id=a"], "-netdev: Duplicate ID 'a' for netdev"),
            (["-device", "virtio-net-device,netdev=n9"], "-device: virtio-net-device: netdev 'n9' is not defined (define it with -netdev TYPE,id=n9)"),
            (["-netdev", "user,id=a", "-device", "virtio-net-device,netdev=a", "-device", "virtio-net-device,netdev=a"],
             "-device: virtio-net-device: netdev 'a' is already in use by another NIC"),
            (["-device", "virtio-net-device,mac=52:54:00:12:34"], "-device: Property 'mac' expects a MAC address like 52:54:00:12:34:56, not '52:54:00:12:34'"),
            (["-device", "virtio-net-device,mac=01:00:5e:00:00:01"], "-device: mac=01:00:5e:00:00:01 is a multicast address; a NIC needs a unicast one"),
            (["-nic", "user,model=e1000"], "-nic: model=e1000 is not a NIC swemu provides; available: virtio-net-device"),
            (["-object", "memory-backend-ram,id=m0"], "-object: memory-backend-ram: Parameter 'size' is missing"),
            (["-object", "iothread,id=io0"],
             "-object: type 'iothread' is not available in this build; available: filter-dump, memory-backend-file, memory-backend-memfd, memory-backend-ram, secret"),
            (["-object", "filter-dump,id=f,netdev=zz,file=x"], "-object: filter-dump: netdev 'zz' is not defined"),
        ]
        for (arguments, message) in refused {
            #expect(error(base + arguments) == "swemu-system-riscv64: " + message)
        }
        #expect(error(["-M", "spike", "-bios", "none", "-kernel", "k", "-netdev", "user,id=n"])
            == "swemu-system-riscv64: -netdev: machine 'spike' has no network interfaces; use -M virt")
    }

    /// -object memory-backend-* and -machine memory-backend= as QEMU (and libvirt's JSON
    /// form): the backend's size is the RAM's, its settings reach the board; secrets are read
    /// and checked at start; what cannot be honoured is refused, never ignored.
    @Test func memoryBackendsAndSecrets() throws {
        let base = ["-M", "virt", "-bios", "none", "-kernel", "k"]
        let json = #"{"qom-type":"memory-backend-file","id":"riscv_virt_board.ram","size":268435456,"mem-path":"/dev/shm","share":true,"prealloc":true}"#
        let c = try config(base + ["-object", json, "-machine", "virt,usb=off,dump-guest-core=off,memory-backend=riscv_virt_board.ram"])
        #expect(c.ramSize == 256 << 20)
        var expected = RAMBackendSpec(storage: .file(path: "/dev/shm", shared: true))
        expected.prealloc = true
        expected.dump = false
        #expect(c.ramBackend == expected)
        // merge= and dump= on the backend win over the machine's.
        let memfd = try config(base + ["-m", "64M", "-object", "memory-backend-memfd,id=m,size=64M,seal=off,merge=off,dump=on",
                                       "-machine", "memory-backend=m,dump-guest-core=off"])
        var memfdSpec = RAMBackendSpec(storage: .memfd(seal: false))
        memfdSpec.merge = false
        #expect(memfd.ramBackend == memfdSpec)
        #expect(try config(base + ["-machine", "mem-merge=off"]).ramBackend.merge == false)
        _ = try config(base + ["-object", "secret,id=sec0,data=aGVsbG8=,format=base64", "-object", #"{"qom-type":"secret","id":"k","data":"x"}"#])
        #expect(SecretSpec.base64Decode(Array("aGVsbG8=".utf8)) == Array("hello".utf8))
        #expect(SecretSpec.base64Decode(Array("aGVsbA==".utf8)) == Array("hell".utf8))
        #expect(SecretSpec.base64Decode(Array("aGV=bG8=".utf8)) == nil)
        #expect(SecretSpec.base64Decode(Array("aGVsbG8".utf8)) == nil)
        let refused: [([String], String)] = [
            (["-object", "memory-backend-ram,id=m,size=64M", "-m", "128M", "-machine", "memory-backend=m"],
             "-m: Size specified by -m option must match size of explicitly specified 'memory-backend' property"),
            (["-machine", "memory-backend=m"], "-machine: Memory backend 'm' not found (define it with -object memory-backend-ram,id=m,size=...)"),
            (["-object", "secret,id=m,data=x", "-machine", "memory-backend=m"],
             "-machine: Memory backend 'm' is not a memory backend (define it with -object memory-backend-ram,id=m,size=...)"),
            (["-object", "memory-backend-ram,id=m,size=64M"],
             "-object: memory backend 'm' is not used: -machine memory-backend=m makes it the machine's RAM (swemu has no NUMA nodes or memory devices to give it to)"),
            (["-object", "memory-backend-ram,id=m,size=64M", "-object", "memory-backend-ram,id=m,size=64M"],
             "-object: attempt to add duplicate property 'm' to object (type 'container')"),
            (["-object", "memory-backend-ram,id=m,size=1000"], "-object: memory-backend-ram: size 1000 is not a multiple of the 4 KiB page size"),
            (["-object", "memory-backend-file,id=m,size=64M"], "-object: memory-backend-file: mem-path property not set"),
            (["-object", "memory-backend-file,id=m,size=64M,mem-path=/tmp,pmem=on"],
             "-object: memory-backend-file: pmem=on is not supported: swemu has no persistent-memory support (libpmem)"),
            (["-object", "memory-backend-memfd,id=m,size=64M,hugetlb=on"],
             "-object: memory-backend-memfd: hugetlb=on is not supported: guest RAM uses transparent huge pages instead"),
            (["-object", "memory-backend-ram,id=m,size=64M,policy=bind"],
             "-object: memory-backend-ram: policy=bind is not supported: swemu does not bind guest RAM to host NUMA nodes (accepted: policy=default)"),
            (["-object", "memory-backend-ram,id=m,size=64M,bogus=1"],
             "-object: unknown option 'bogus' for object 'memory-backend-ram'; accepted: qom-type, id, size, share, prealloc, prealloc-threads, merge, dump, reserve, policy"),
            (["-object", #"{"qom-type":"memory-backend-ram","id":"m","size":1.5}"#], "-object: 'size' takes a whole number, not number"),
            (["-object", "secret,id=s"], "-object: secret 's': 'file' or 'data' property must be set"),
            (["-object", "secret,id=s,data=@@@,format=base64"], "-object: secret 's': the data is not valid base64"),
            (["-object", "secret,id=s,data=x,keyid=k,iv=AAAA"],
             "-object: secret 's': secrets encrypted with another secret (keyid=, iv=) are not supported: give the data in plain form"),
            (["-machine", "usb=on"], "-machine: usb=on is not supported: machine 'virt' has no USB controller (accepted: usb=off)"),
        ]
        for (arguments, message) in refused {
            #expect(error(base + arguments) == "swemu-system-riscv64: " + message)
        }
    }

    /// -blockdev as libvirt writes it: a file node and a format node on it become the drive a
    /// device names; inline file nodes, cache settings and write-cache=off map onto drives;
    /// what swemu's block layer cannot do is refused.
    @Test func blockdevChains() throws {
        let base = ["-M", "virt", "-bios", "none", "-kernel", "k"]
        let storage = #"{"driver":"file","filename":"/images/a.img","node-name":"libvirt-1-storage","auto-read-only":true,"discard":"unmap"}"#
        let format = #"{"node-name":"libvirt-1-format","read-only":false,"driver":"raw","file":"libvirt-1-storage"}"#
        let c = try config(base + ["-blockdev", storage, "-blockdev", format,
                                   "-device", "virtio-blk-device,drive=libvirt-1-format,id=virtio-disk0,bootindex=1"])
        let drive = try #require(c.drives.first)
        #expect(drive.file == "/images/a.img" && drive.format == "raw" && drive.id == "libvirt-1-format" && drive.interface == .none)
        #expect(drive.cache == .writeback && !drive.readOnly && drive.formatNode == "libvirt-1-format" && drive.fileNode == "libvirt-1-storage")
        #expect(c.devices.first?.id == "virtio-disk0")
        let inline = try config(base + ["-blockdev", #"{"driver":"raw","node-name":"d","read-only":true,"cache":{"direct":true},"file":{"driver":"file","filename":"/i.img","locking":"off"}}"#,
                                        "-device", #"{"driver":"virtio-blk-device","drive":"d","write-cache":"off"}"#])
        #expect(inline.drives.first?.cache == .directsync && inline.drives.first?.readOnly == true)
        #expect(inline.drives.first?.fileNode == "#block1" && inline.drives.first?.locking.mode == .off)
        let refused: [([String], String)] = [
            (["-blockdev", storage], "-blockdev: node 'libvirt-1-storage' is not used by any device (-device virtio-blk-device,drive=libvirt-1-storage); swemu cannot attach it later"),
            (["-blockdev", storage, "-blockdev", storage], "-blockdev: Duplicate nodes with node-name='libvirt-1-storage'"),
            (["-blockdev", #"{"driver":"nbd","node-name":"n"}"#], "-blockdev: driver 'nbd' is not available; accepted: file (an image file), raw, qcow2"),
            (["-blockdev", #"{"driver":"raw","node-name":"f","file":"nowhere"}"#, "-device", "virtio-blk-device,drive=f"],
             "-blockdev: Cannot find device='' nor node-name='nowhere'"),
            (["-blockdev", #"{"driver":"file","node-name":"s","filename":"/x","detect-zeroes":"unmap"}"#],
             "-blockdev: node 's': detect-zeroes=unmap is not supported (accepted: off)"),
        ]
        for (arguments, message) in refused {
            #expect(error(base + arguments) == "swemu-system-riscv64: " + message)
        }
        // libvirt's x86 serial port: isa-serial on the microvm is its UART on that chardev.
        let x86 = ["-M", "microvm", "-kernel", "k", "-chardev", "file,id=c0,path=/tmp/s.log"]
        #expect(try config(x86 + ["-device", "isa-serial,chardev=c0,id=serial0"], target: .x86_64).serials == [.chardev(id: "c0")])
        #expect(error(x86 + ["-device", "isa-serial,chardev=c0,index=1"], target: .x86_64)
            == "swemu-system-x86_64: -device: isa-serial: the microvm has one serial port (index=0)")
        #expect(error(x86 + ["-no-acpi"], target: .x86_64)
            == "swemu-system-x86_64: -no-acpi: machine 'microvm' describes its devices to the guest with ACPI only; keep ACPI (libvirt: <features><acpi/></features>)")
        #expect(error(["-M", "virt", "-kernel", "k", "-chardev", "null,id=c0", "-device", "isa-serial,chardev=c0"])
            == "swemu-system-riscv64: -device: isa-serial: machine 'virt' has no ISA bus; its serial port is -serial")
        _ = try config(["-M", "virt", "-kernel", "k", "-no-acpi"])
        let fdSet = try config(["-M", "none", "-add-fd", "fd=5,set=2,opaque=serial0-source"])
        #expect(fdSet.fdSets == [FdSets.Entry(set: 2, fd: 5, opaque: "serial0-source")])
        #expect(error(["-M", "none", "-add-fd", "fd=5"]).contains("-add-fd: set option is required"))
        let netdev = try config(base + ["-netdev", #"{"type":"user","id":"n0","hostfwd":[{"str":"tcp::2222-:22"},{"str":"udp::5353-:53"}]}"#,
                                        "-device", "virtio-net-device,netdev=n0"])
        #expect(netdev.netdevs.count == 1)
    }

    /// -s is -gdb tcp::1234; tcp: and unix: get server=on,wait=off as QEMU's gdbserver_start
    /// gives tcp:; other short forms are taken as they are.
    @Test func gdbStubOptions() throws {
        func gdb(_ args: [String]) throws -> ChardevSpec.Target? { try config(["-M", "virt"] + args).gdb }
        guard case .new(let s, _)? = try gdb(["-s"]), case .socket(let socket) = s.backend else {
            Issue.record("-s is not a socket")
            return
        }
        #expect(socket.server && !socket.wait)
        #expect(try gdb(["-gdb", "tcp::1234"]) == gdb(["-s"]))
        guard case .new(let u, _)? = try gdb(["-gdb", "unix:/tmp/g.sock"]), case .socket(let unix) = u.backend else {
            Issue.record("-gdb unix: is not a socket")
            return
        }
        #expect(unix.server && !unix.wait)
        #expect(try gdb(["-gdb", "none"]) == nil)
        #expect(try gdb(["-gdb", "tcp::1234", "-gdb", "none"]) == nil)  // the last one wins, as in QEMU
        #expect(error(["-M", "virt", "-gdb", "x"]).contains("-gdb: 'x' is not supported; accepted:"))
        #expect(error(["-M", "none", "-s"]).contains("machine 'none' has no CPU to debug"))
        #expect(error(["-M", "none", "-gdb", "tcp::1"], target: .x86_64).contains("machine 'none' has no CPU to debug; use -M microvm"))
        #expect(try config(["-M", "microvm", "-accel", "kvm", "-kernel", "k.elf", "-s"], target: .x86_64).gdb == gdb(["-s"]))
    }

    @Test func memorySizes() throws {
        #expect(try config(["-M", "none", "-m", "512"]).ramSize == 512 << 20)
        #expect(try config(["-M", "none", "-m", "1G"]).ramSize == 1 << 30)
        #expect(try config(["-M", "none", "-m", "size=64M"]).ramSize == 64 << 20)
        #expect(try config(["-M", "none", "-m", "1.5G"]).ramSize == 3 << 29)
        #expect(try config(["-M", "none", "-m", "100k"]).ramSize == 102_400)  // rounded to whole pages: 100 KiB is 25 pages
        #expect(error(["-M", "none", "-m", "64M,slots=2"]).contains("unknown option 'slots'"))
    }

    @Test func smpTopology() throws {
        #expect(try config(["-M", "none", "-smp", "1"]).cpus == 1)
        #expect(try config(["-M", "none", "-smp", "cpus=1,sockets=1,cores=1,threads=1"]).cpus == 1)
        #expect(error(["-M", "none", "-smp", "4"]).contains("supports at most 1"))
        #expect(error(["-M", "none", "-smp", "cpus=2,sockets=1,cores=1"]).contains("Invalid CPU topology"))
        #expect(error(["-M", "none", "-smp", "0"]).contains("-smp"))
    }

    @Test func bootOptions() throws {
        #expect(error(["-M", "virt", "-bios", "none"]).contains("nothing to boot: add -kernel"))
        #expect(error(["-M", "spike"]).contains("needs a program: -kernel"))
        #expect(error(["-M", "spike", "-kernel", "x.elf"]).contains("accepted: -bios none"))
        #expect(error(["-M", "virt", "-initrd", "x.img"]) == "swemu-system-riscv64: -initrd: needs -kernel")
        for option in ["-kernel", "-initrd", "-append", "-dtb", "-bios"] {
            #expect(error(["-M", "none", option, "x"]).contains("machine 'none' has no CPU to boot"))
        }
        let linux = try config(["-M", "virt", "-kernel", "Image", "-initrd", "initrd.gz", "-append", "console=ttyS0",
                                "-machine", "virt,dumpdtb=/tmp/x.dtb"])
        #expect(linux.kernel == "Image" && linux.initrd == "initrd.gz" && linux.append == "console=ttyS0")
        #expect(linux.bios == nil && linux.dumpDTB == "/tmp/x.dtb")
        #expect(error(["-M", "spike,dumpdtb=x", "-bios", "none", "-kernel", "p"]).contains("has no device tree"))
    }

    /// The options libvirt 9.0 passes (its capability probe and a riscv64 `virt` domain): each
    /// taken with QEMU's meaning where swemu has it, refused in one line where it has not.
    @Test func libvirtOptions() throws {
        let probe = try config(["-S", "-no-user-config", "-nodefaults", "-nographic", "-machine", "none,accel=kvm:tcg",
                                "-qmp", "unix:/tmp/p.sock,server=on,wait=off", "-pidfile", "/tmp/p.pid", "-daemonize"])
        #expect(probe.accelerator == "tcg", "kvm:tcg: the first this binary has")
        #expect(probe.noDefaults && probe.daemonize && probe.startPaused)
        guard case .new(let serial, let muxed)? = probe.serials.first else {
            Issue.record("serial0: \(probe.serials)")
            return
        }
        #expect(serial.backend == .null && !muxed, "-nodefaults: nothing on stdio")
        #expect(error(["-M", "none", "-nographic", "-daemonize"]).contains("-nographic cannot be used with -daemonize"))
        #expect(try config(["-M", "microvm", "-kernel", "k", "-machine", "accel=kvm:tcg"], target: .x86_64).accelerator == "kvm")
        #expect(error(["-M", "none", "-machine", "accel=kvm"]).contains("accelerator 'kvm' is not available"))
        #expect(error(["-M", "none", "-enable-kvm"]).contains("accelerator 'kvm' is not available"))

        #expect(try config(["-M", "none", "-uuid", "C0FFEE00-1234-5678-9abc-def012345678"]).uuid == "c0ffee00-1234-5678-9abc-def012345678")
        #expect(error(["-M", "none", "-uuid", "1234"]).contains("Fail to parse UUID string"))
        let msg = try config(["-M", "none", "-msg", "timestamp=on", "-msg", "guest-name=on"])
        #expect(msg.messageTimestamps && msg.messageGuestName)
        #expect(error(["-M", "none", "-msg", "color=on"]).contains("-msg: unknown option 'color'; accepted: timestamp, guest-name"))
        #expect(try config(["-M", "none", "-overcommit", "mem-lock=off"]).memLock == false)
        #expect(try config(["-M", "none", "-overcommit", "mem-lock=on,cpu-pm=off"]).memLock)
        #expect(error(["-M", "none", "-overcommit", "cpu-pm=on"]).contains("cpu-pm=on is not supported"))
        _ = try config(["-M", "none", "-boot", "strict=on", "-rtc", "base=utc,clock=host,driftfix=none"])
        #expect(error(["-M", "none", "-boot", "order=dc"]).contains("no boot order to choose"))
        #expect(error(["-M", "none", "-rtc", "base=localtime"]).contains("base=localtime is not supported"))
        _ = try config(["-M", "none", "-audiodev", #"{"id":"audio1","driver":"none"}"#, "-audiodev", "none,id=a2"])
        #expect(error(["-M", "none", "-audiodev", "pa,id=a"]).contains("audio driver 'pa' is not available"))
        #expect(error(["-M", "none", "-audiodev", #"{"driver":"none"}"#]).contains("Parameter 'id' is missing"))
    }

    @Test func serialDefaults() throws {
        // no display options: serial0 on mon:stdio (swemu has no graphical display)
        let plain = try config(["-M", "none"])
        guard case .new(let spec, let monitor) = plain.serials.first else {
            Issue.record("serial0 is not a new chardev")
            return
        }
        #expect(monitor && spec.mux)
        // -display none alone: serial0 goes nowhere, as in QEMU
        guard case .new(let null, _) = try config(["-M", "none", "-display", "none"]).serials.first else {
            Issue.record("serial0 is not a new chardev")
            return
        }
        #expect(null.backend == .null)
        #expect(try config(["-M", "none", "-serial", "none"]).serials == [.none])
        let named = try config(["-M", "none", "-chardev", "socket,id=s0,path=/tmp/x.sock,server=on,wait=off", "-serial", "chardev:s0"])
        #expect(named.serials == [.chardev(id: "s0")])
    }

    @Test func drivesAndDevices() throws {
        let virt = ["-M", "virt", "-kernel", "Image"]
        let c = try config(virt + ["-drive", "file=a.img,format=raw,if=virtio", "-drive", "file=b.img,if=none,id=d1,readonly=on",
                                   "-device", "virtio-blk-device,drive=d1", "-device", "virtio-rng-device",
                                   "-chardev", "null,id=c0", "-device", "virtio-serial-device", "-device", "virtconsole,chardev=c0"])
        #expect(c.drives.map(\.file) == ["a.img", "b.img"])
        #expect(c.drives[1].readOnly && c.drives[1].interface == .none && !c.drives[0].snapshot)
        #expect(c.devices.map(\.driver) == [.virtioBlock(drive: "d1"), .virtioRNG, .virtioSerial, .virtconsole(chardev: "c0")])
        #expect(try config(virt + ["-snapshot", "-drive", "file=a.img"]).drives[0].snapshot)
        #expect(try config(virt + ["-drive", "file=a.img,snapshot=on"]).drives[0].snapshot)
        let q = try config(virt + ["-drive", "file=a.qcow2,format=qcow2,cache=unsafe"]).drives[0]
        #expect(q.format == "qcow2" && q.cache == .unsafe)
        #expect(try config(virt + ["-drive", "file=a.img"]).drives[0].format == nil)  // probed when opened
        #expect(error(virt + ["-drive", "file=a.vmdk,format=vmdk"]).contains("format=vmdk is not a format swemu reads; accepted: raw, qcow2"))
        #expect(try config(virt + ["-drive", "file=a.img,cache=none"]).drives[0].cache == .none)
        #expect(error(virt + ["-drive", "file=a.img,cache=fast"]).contains("cache=fast is not available in this build; accepted: writeback, none, writethrough, directsync, unsafe"))
        #expect(error(virt + ["-drive", "if=virtio"]).contains("file=PATH is required"))
        #expect(error(virt + ["-drive", "file=a,if=ide"]).contains("accepted: virtio, none"))
        #expect(error(virt + ["-drive", "file=a,if=none,id=x"]).contains("no -device virtio-blk-device,drive=x uses it"))
        #expect(error(virt + ["-device", "virtio-blk-device,drive=nope"]).contains("drive 'nope' is not defined"))
        #expect(error(virt + ["-device", "virtconsole,chardev=c0"]).contains("put -device virtio-serial-device before it"))
        #expect(error(virt + ["-device", "e1000"]).contains("'e1000' is not a device swemu provides"))
        #expect(error(["-M", "none", "-drive", "file=a"]).contains("no disk interfaces"))
    }

    /// virtio-balloon-device as libvirt writes it (`<memballoon model='virtio'/>`, plain or JSON),
    /// with QEMU's properties and refusals.
    @Test func balloonDevice() throws {
        let virt = ["-M", "virt", "-kernel", "Image"]
        #expect(try config(virt + ["-device", "virtio-balloon-device"]).devices.map(\.driver) == [.virtioBalloon(deflateOnOOM: false)])
        #expect(try config(virt + ["-device", #"{"driver":"virtio-balloon-device","id":"balloon0","deflate-on-oom":true}"#])
            .devices.map(\.driver) == [.virtioBalloon(deflateOnOOM: true)])
        #expect(try config(virt + ["-device", "virtio-balloon-device,id=b,deflate-on-oom=on,free-page-reporting=off"])
            .devices.map(\.driver) == [.virtioBalloon(deflateOnOOM: true)])
        #expect(error(virt + ["-device", "virtio-balloon-device,free-page-reporting=on"]).contains("free-page-reporting=on is not available"))
        #expect(error(virt + ["-device", "virtio-balloon-device,page-poison=on"]).contains("page-poison"))
        #expect(error(virt + ["-device", "virtio-balloon-device", "-device", "virtio-balloon-device"])
            .contains("Only one balloon device is supported"))
    }

    @Test func monitors() throws {
        let virt = ["-M", "virt", "-kernel", "Image"]
        let c = try config(virt + ["-qmp", "unix:/tmp/q.sock,server=on,wait=off", "-monitor", "tcp:127.0.0.1:4444,server=on,wait=off",
                                   "-chardev", "socket,id=m0,path=/tmp/m.sock,server=on,wait=off", "-mon", "chardev=m0,mode=control", "-S"])
        #expect(c.monitors.map(\.mode) == [.control, .readline, .control])
        #expect(c.monitors[2].target == .chardev(id: "m0"))
        #expect(c.startPaused)
        #expect(try config(virt + ["-monitor", "none"]).noDefaultMonitor)
        // -M none answers on its monitors (libvirt's probe): MonitorTests.libvirtsCapabilityProbeLine.
        #expect(try config(["-M", "none", "-qmp", "unix:/tmp/q.sock,server=on,wait=off"]).monitors.count == 1)
        #expect(error(virt + ["-mon", "chardev=nope"]).contains("chardev 'nope' is not defined"))
        #expect(error(virt + ["-mon", "chardev=m0,mode=fancy", "-chardev", "null,id=m0"]).contains("accepted: readline, control"))
    }

    @Test func nameAndFlags() throws {
        let c = try config(["-M", "none", "-name", "guest=web1,debug-threads=on", "-no-reboot", "-nographic", "-d", "guest_errors,int"])
        #expect(c.name == "web1")
        #expect(c.noReboot && c.nographic)
        #expect(c.debugItems == [.guestErrors, .interrupts])
        #expect(try config(["-M", "none", "-name", "plain"]).name == "plain")
        #expect(try config(["-M", "none", "-name", "web1,process=swemu-web1"]).processName == "swemu-web1")
    }

    @Test func prettyMonitors() throws {
        let virt = ["-M", "virt", "-kernel", "Image"]
        let qmp = try config(virt + ["-chardev", "null,id=m", "-mon", "chardev=m,mode=control,pretty=on"])
        #expect(qmp.monitors.map(\.pretty) == [true] && qmp.warnings.isEmpty)
        let hmp = try config(virt + ["-chardev", "null,id=m", "-mon", "chardev=m,pretty=on"])
        #expect(hmp.monitors.map(\.pretty) == [true])
        #expect(hmp.warnings == ["-mon chardev=m,pretty=on: warning: 'pretty' is deprecated for HMP monitors, it has no effect and will be removed in future versions"])
        #expect(error(virt + ["-chardev", "null,id=m", "-mon", "chardev=m,pretty=maybe"]).contains("pretty"))
    }

    /// `-action` as QEMU's, for what swemu's machines have: reboot= and shutdown= (the same
    /// switches as -no-reboot and -no-shutdown); the rest is refused, saying what is accepted.
    @Test func actions() throws {
        #expect(try config(["-M", "none", "-no-shutdown"]).noShutdown)
        let both = try config(["-M", "none", "-action", "reboot=shutdown,shutdown=pause"])
        #expect(both.noReboot && both.noShutdown)
        let undone = try config(["-M", "none", "-no-reboot", "-no-shutdown", "-action", "reboot=reset", "-action", "shutdown=poweroff"])
        #expect(!undone.noReboot && !undone.noShutdown)
        #expect(error(["-M", "none", "-action", "shutdown=halt"]).contains("Parameter 'shutdown' does not accept value 'halt' (accepted: poweroff, pause)"))
        #expect(error(["-M", "none", "-action", "panic=pause"]).contains("panic"))
    }

    /// `-sandbox` with QEMU's keys and messages, `-runas` and `-chroot`.
    @Test func sandboxRunasAndChroot() throws {
        #expect(try config(["-M", "none"]).sandbox == nil)
        #expect(try config(["-M", "none", "-sandbox", "off"]).sandbox == nil)
        #expect(try config(["-M", "none", "-sandbox", "on"]).sandbox == SandboxPolicy())
        // libvirt's line, when query-command-line-options lists the group.
        let libvirt = try #require(try config(["-M", "none", "-sandbox", "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"]).sandbox)
        #expect(!libvirt.obsolete && libvirt.elevatePrivileges == .deny && !libvirt.spawn && !libvirt.resourceControl)
        #expect(!libvirt.allowedCalls.contains("execve") && !libvirt.allowedCalls.contains("setuid")
                && !libvirt.allowedCalls.contains("clone") && !libvirt.allowedCalls.contains("sched_setaffinity"))
        let open = try #require(try config(["-M", "none", "-sandbox", "on,obsolete=allow,elevateprivileges=children"]).sandbox)
        #expect(open.obsolete && open.elevatePrivileges == .children && open.spawn && open.resourceControl)
        #expect(open.allowedCalls.contains("execve") && open.allowedCalls.contains("ustat") && !open.allowedCalls.contains("setresuid"))
        // Never, whatever the options: what no emulator needs.
        for forbidden in ["ptrace", "mount", "kexec_load", "init_module", "bpf", "reboot", "process_vm_writev", "chroot"] {
            #expect(!open.allowedCalls.contains(forbidden), "\(forbidden)")
        }
        #expect(error(["-M", "none", "-sandbox", "on,spawn=maybe"]).contains("invalid argument for spawn"))
        #expect(error(["-M", "none", "-sandbox", "on,elevateprivileges=root"]).contains("invalid argument for elevateprivileges"))
        #expect(error(["-M", "none", "-sandbox", "on,colour=red"]).contains("colour"))
        #expect(error(["-M", "virt", "-sandbox", "on,spawn=deny", "-netdev", "user,id=n0,guestfwd=tcp:10.0.2.100:80-cmd:cat",
                       "-device", "virtio-net-device,netdev=n0"]).contains("guestfwd=...-cmd: starts a program for each connection, which -sandbox spawn=deny forbids"))
        #expect(try config(["-M", "none", "-runas", "1234:5678"]).runAs == RunAs(uid: 1234, gid: 5678, groups: [5678]))
        let root = try #require(try config(["-M", "none", "-runas", "root"]).runAs)
        #expect(root.uid == 0 && root.gid == 0 && root.groups.contains(0))
        #expect(error(["-M", "none", "-runas", "no-such-user-here"]).contains("User \"no-such-user-here\" doesn't exist"))
        #expect(try config(["-M", "none", "-chroot", "/var/empty"]).chroot == "/var/empty")
        #expect(try printed(["--help"]).contains("-sandbox on|off"))
    }

    @Test func imageTool() {
        #expect(ImageTool.run(["--help"]).stdout.contains("usage: swemu-img"))
        #expect(ImageTool.run(["--version"]).status == 0)
        let create = ImageTool.run(["create", "-f", "qcow2", "/nonexistent-dir/x.qcow2", "1G"])
        #expect(create.status == 1 && create.stderr.contains("cannot open '/nonexistent-dir/x.qcow2'"))
        #expect(ImageTool.run(["create", "-f", "qcow2", "x.qcow2"]).stderr.contains("Image creation needs a size parameter"))
        #expect(ImageTool.run(["frob"]).stderr.hasPrefix("swemu-img: Command not found: frob"))
        #expect(ImageTool.run([]).status == 1)
    }
}
