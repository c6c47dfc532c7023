import Chardev
import Glibc
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
    /// Whether `format=` was given (otherwise the format was probed, which QEMU warns about).
    var formatGiven: Bool

    init(parsing text: String) throws(SystemError) {
        let opts = try QemuOpts(parsing: text, option: "-drive").validate(
            accepted: ["file", "format", "if", "id", "readonly", "media", "cache", "snapshot", "serial"],
            booleans: ["readonly", "snapshot"])
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
        if let cache = opts.string("cache"), cache != "writeback" {
            throw .unsupported("-drive: cache=\(cache) is not available in this build yet; accepted: cache=writeback (the default)")
        }
        snapshot = try opts.bool("snapshot", default: false)
        formatGiven = opts.string("format") != nil
        let format = opts.string("format") ?? "raw"
        guard format == "raw" else {
            throw .unsupported("-drive: format=\(format) is not available in this build yet; accepted: format=raw")
        }
    }

    /// QEMU refuses to guess a qcow2 file as raw; so do we, and warns when it guessed raw.
    func probe() throws(SystemError) -> String? {
        guard !formatGiven else { return nil }
        let fd = try FileDescriptor.open(file, O_RDONLY)
        var magic = [UInt8](repeating: 0, count: 4)
        let n = try magic.withUnsafeMutableBytes { b in Result { () throws(SystemError) in try fd.read(into: b) } }.get() ?? 0
        if n == 4 && magic == [0x51, 0x46, 0x49, 0xfb] {
            throw .unsupported("-drive: '\(file)' is a qcow2 image; qcow2 is not available in this build yet")
        }
        return "WARNING: Image format was not specified for '\(file)' and probing guessed raw.\n"
            + "         Automatically detecting the format is dangerous for raw images, write operations on block 0 will be restricted.\n"
            + "         Specify the 'raw' format explicitly to remove the restrictions."
    }
}

/// One `-device` option.
struct DeviceSpec: Sendable, Equatable {
    enum Driver: Sendable, Equatable {
        case virtioBlock(drive: String)
        case virtioRNG
        case virtioSerial
        case virtconsole(chardev: String)
    }

    /// `-device help`: (name, bus, description), as QEMU lists them.
    static let catalog: [(name: String, category: String, description: String)] = [
        ("virtio-blk-device", "Storage devices", "virtio block device (drive=ID of an if=none -drive)"),
        ("virtio-rng-device", "Misc devices", "virtio entropy source, fed from the host's getrandom(2)"),
        ("virtio-serial-device", "Input devices", "virtio serial bus for virtconsole"),
        ("virtconsole", "Display devices", "virtio console port on a chardev (chardev=ID)"),
    ]

    var driver: Driver

    init(parsing text: String) throws(SystemError) {
        let opts = try QemuOpts(parsing: text, impliedKey: "driver", option: "-device")
        let name = opts.string("driver") ?? ""
        switch name {
        case "virtio-blk-device":
            let v = try opts.validate(accepted: ["drive", "id", "serial"], context: "device '\(name)'")
            guard let drive = v.string("drive") else { throw .configuration("-device virtio-blk-device: drive=ID is required") }
            driver = .virtioBlock(drive: drive)
        case "virtio-rng-device":
            _ = try opts.validate(accepted: ["id"], context: "device '\(name)'")
            driver = .virtioRNG
        case "virtio-serial-device":
            _ = try opts.validate(accepted: ["id"], context: "device '\(name)'")
            driver = .virtioSerial
        case "virtconsole":
            let v = try opts.validate(accepted: ["chardev", "id", "name"], context: "device '\(name)'")
            guard let chardev = v.string("chardev") else { throw .configuration("-device virtconsole: chardev=ID is required") }
            driver = .virtconsole(chardev: chardev)
        default:
            let names = DeviceSpec.catalog.map(\.name).joined(separator: ", ")
            throw .configuration("-device: '\(name)' is not a device swemu provides; available: \(names) (see -device help)")
        }
    }
}
