import Block
import Chardev
import QMP
import SystemSupport

/// One `-drive` option (QEMU's -drive syntax, the subset swemu's block layer offers).
struct DriveSpec: Sendable, Equatable {
    enum Interface: String, Sendable {
        case virtio, none
    }

    var file: String
    var id: String?
    var interface: Interface
    var readOnly: Bool
    /// `snapshot=on` (or the global `-snapshot`): writes go to a temporary overlay.
    var snapshot: Bool
    /// `format=`; nil when not given (then the format is probed, which QEMU warns about for raw).
    var format: String?
    var cache: BlockCacheMode
    /// `file.locking=` and `force-share=`: the image's locks (Block's ImageLock.swift).
    var locking: ImageLocking
    /// The option as given (`-drive file=...`), which starts the drive's error messages.
    var option: String
    /// -blockdev's node names: the format node (also the drive's id) and its file node.
    var formatNode: String?
    var fileNode: String?
}

extension DriveSpec {
    init(parsing text: String) throws(SystemError) {
        let opts = try OptionGroup.drive.parse(text, option: "-drive")
        option = "-drive \(text)"
        guard let file = opts.string("file"), !file.isEmpty else {
            throw .configuration("-drive: file=PATH is required")
        }
        self.file = file
        id = opts.string("id")
        readOnly = try opts.bool("readonly", default: false)
        let interfaceName = opts.string("if") ?? "virtio"
        guard let interface = Interface(rawValue: interfaceName) else {
            throw .configuration("-drive: if=\(interfaceName) is not available; accepted: virtio, none")
        }
        self.interface = interface
        if interface == .none && id == nil { throw .configuration("-drive: if=none needs id=NAME for -device ...,drive=NAME") }
        if let media = opts.string("media"), media != "disk" {
            throw .configuration("-drive: media=\(media) is not available; accepted: disk")
        }
        let cacheName = opts.string("cache") ?? "writeback"
        guard let cache = BlockCacheMode(rawValue: cacheName) else {
            let accepted = BlockCacheMode.allCases.map(\.rawValue).joined(separator: ", ")
            throw .unsupported("-drive: cache=\(cacheName) is not available in this build; accepted: \(accepted)")
        }
        self.cache = cache
        snapshot = try opts.bool("snapshot", default: false)
        let lockingName = opts.string("file.locking") ?? "auto"
        guard let mode = LockingMode(rawValue: lockingName) else {
            throw .configuration("-drive \(text): invalid parameter value: \(lockingName)")  // QEMU's words
        }
        let forceShare = try opts.bool("force-share", default: false)
        guard !forceShare || readOnly else {
            throw .configuration("-drive \(text): force-share=on can only be used with read-only images")
        }
        locking = ImageLocking(mode: mode, forceShare: forceShare, shared: ImageLocking.device.shared)
        format = opts.string("format")
        if let format, !DiskImage.formats.contains(format) {
            throw .configuration("-drive: format=\(format) is not a format swemu reads; accepted: \(DiskImage.formats.joined(separator: ", "))")
        }
    }

    /// The drive's format: `format=`, or QEMU's probe (qcow2 by its magic, otherwise raw, with
    /// QEMU's warning for a guessed raw).
    func probe() throws(SystemError) -> (format: String, warning: String?) {
        if let format { return (format, nil) }
        let probed = try DiskImage.probe(path: file)
        return (probed, probed == "raw" ? DiskImage.probedRawWarning(path: file) : nil)
    }
}

/// One `-device` option.
struct DeviceSpec: Sendable, Equatable {
    enum Driver: Sendable, Equatable {
        case virtioBlock(drive: String)
        case virtioRNG
        case virtioKeyboard
        /// `deflate-on-oom=on`: the guest may deflate on its own when it runs out of memory.
        case virtioBalloon(deflateOnOOM: Bool)
        /// The microvm's UART on a chardev (libvirt's x86 serial port).
        case isaSerial(chardev: String, index: Int)
        case virtioSerial
        case virtconsole(chardev: String)
        case virtioNet(NICSpec)
    }

    /// `id=`: the device's name under /machine/peripheral (QMP `qom-list`, `query-block`'s qdev).
    var id: String?
    /// virtio-blk-device `write-cache=on|off` (nil: auto, the drive's cache mode decides):
    /// off makes a writeback drive writethrough, as QEMU's.
    var writeCache: Bool?

    /// `-device help`: (name, bus, description), as QEMU lists them.
    static let catalog: [(name: String, category: String, description: String)] = [
        ("virtio-blk-device", "Storage devices", "virtio block device (drive=ID of an if=none -drive)"),
        ("virtio-rng-device", "Misc devices", "virtio entropy source, fed from the host's getrandom(2)"),
        ("virtio-keyboard-device", "Input devices", "virtio keyboard, also the power button that system_powerdown presses"),
        ("virtio-balloon-device", "Misc devices", "virtio memory balloon (QMP balloon, query-balloon; deflate-on-oom=on|off)"),
        ("virtio-serial-device", "Input devices", "virtio serial bus for virtconsole"),
        ("virtconsole", "Display devices", "virtio console port on a chardev (chardev=ID)"),
        ("virtio-net-device", "Network devices", "virtio network adapter (netdev=ID of a -netdev, mac=52:54:00:12:34:56)"),
        ("isa-serial", "Input devices", "the microvm's 8250 UART on a chardev (chardev=ID; -M microvm only)"),
    ]

    var driver: Driver

    /// The QOM type (`-device` name) of this device.
    var typeName: String {
        switch driver {
        case .virtioBlock: "virtio-blk-device"
        case .virtioRNG: "virtio-rng-device"
        case .virtioKeyboard: "virtio-keyboard-device"
        case .virtioSerial: "virtio-serial-device"
        case .virtconsole: "virtconsole"
        case .virtioNet: "virtio-net-device"
        case .virtioBalloon: "virtio-balloon-device"
        case .isaSerial: "isa-serial"
        }
    }

    /// A device's keys: `id` and the properties QMP reports for it (`QOMTypes`, one list for both).
    static func keys(_ device: String) -> [String] {
        ["id"] + ((QOMTypes.devices + [QOMTypes.isaSerial]).first { $0.name == device }?.properties.map(\.name) ?? [])
    }

    init(parsing text: String) throws(SystemError) {
        let opts = try QemuOpts.parse(jsonOrKeyval: text, impliedKey: "driver", option: "-device")
        let name = opts.string("driver") ?? ""
        if let id = opts.string("id") {
            try NetdevSpec.checkIdentifier(id, option: "-device")
            self.id = id
        }
        switch name {
        case "virtio-blk-device":
            let v = try opts.validate(accepted: Self.keys(name), context: "device '\(name)'")
            guard let drive = v.string("drive") else { throw .configuration("-device virtio-blk-device: drive=ID is required") }
            driver = .virtioBlock(drive: drive)
            writeCache = v.string("write-cache") == "auto" ? nil : try v.bool("write-cache")
            // bootindex orders firmware boot devices; the boards boot -kernel/-bios themselves,
            // so any order is the one they follow. It must still be a number, as QEMU's.
            _ = try v.int("bootindex", in: -1...Int(Int32.max))
        case "virtio-rng-device":
            _ = try opts.validate(accepted: Self.keys(name), context: "device '\(name)'")
            driver = .virtioRNG
        case "virtio-keyboard-device":
            _ = try opts.validate(accepted: Self.keys(name), context: "device '\(name)'")
            driver = .virtioKeyboard
        case "virtio-balloon-device":
            let v = try opts.validate(accepted: Self.keys(name), context: "device '\(name)'")
            // Free page reporting (§5.5.6.7) is not implemented: only its default, off.
            guard try !v.bool("free-page-reporting", default: false) else {
                throw .unsupported("-device virtio-balloon-device: free-page-reporting=on is not available; accepted: off")
            }
            driver = .virtioBalloon(deflateOnOOM: try v.bool("deflate-on-oom", default: false))
        case "isa-serial":
            let v = try opts.validate(accepted: Self.keys(name), context: "device '\(name)'")
            guard let chardev = v.string("chardev") else { throw .configuration("-device isa-serial: chardev=ID is required") }
            driver = .isaSerial(chardev: chardev, index: try v.int("index", in: 0...3) ?? 0)
        case "virtio-serial-device":
            _ = try opts.validate(accepted: Self.keys(name), context: "device '\(name)'")
            driver = .virtioSerial
        case "virtconsole":
            let v = try opts.validate(accepted: Self.keys(name), context: "device '\(name)'")
            guard let chardev = v.string("chardev") else { throw .configuration("-device virtconsole: chardev=ID is required") }
            driver = .virtconsole(chardev: chardev)
        case "virtio-net-device":
            let v = try opts.validate(accepted: Self.keys(name), context: "device '\(name)'")
            driver = .virtioNet(NICSpec(netdev: v.string("netdev"), mac: try NICSpec.mac(v.string("mac"), option: "-device"), id: v.string("id")))
        default:
            let names = DeviceSpec.catalog.map(\.name).joined(separator: ", ")
            throw .configuration("-device: '\(name)' is not a device swemu provides; available: \(names) (see -device help)")
        }
    }
}
