import Block
import SystemSupport

/// One `-blockdev` node (QEMU's BlockdevOptions), the part of the block graph swemu's block
/// layer has: a `file` protocol node holding an image, and a `raw` or `qcow2` format node on
/// it; what libvirt writes for every disk (`{"driver":"file","filename":...,"node-name":
/// "libvirt-1-storage"}` then `{"driver":"raw","file":"libvirt-1-storage","node-name":
/// "libvirt-1-format"}`). A device names the top node with `drive=`; `resolve` turns that chain
/// into the drive swemu opens.
struct BlockdevNode: Sendable, Equatable {
    enum Driver: String, Sendable {
        case file, raw, qcow2
    }
    /// A format node's backing: the image's own (absent), none (`null`), or a node.
    enum Backing: Sendable, Equatable {
        case image
        case none
        case node(String)
    }

    var nodeName: String
    var driver: Driver
    /// `file`: the image's path.
    var filename: String?
    /// Format nodes: the node-name of the node they read.
    var child: String?
    var backing = Backing.image
    var readOnly: Bool
    /// `cache.direct` (O_DIRECT) and `cache.no-flush` (flushes ignored); nil when not given.
    var cacheDirect: Bool?
    var cacheNoFlush: Bool?
    /// `file` nodes: `locking=on|off|auto`.
    var locking: LockingMode?
    var forceShare: Bool

    static let fileKeys = ["filename", "locking", "aio", "aio-max-batch", "x-check-cache-dropped", "drop-cache"]
    static let commonKeys = ["driver", "node-name", "read-only", "auto-read-only", "force-share", "discard", "detect-zeroes",
                             "cache.direct", "cache.no-flush"]

    /// The nodes one `-blockdev` defines: itself, and the `file` node given inline
    /// (`"file":{"driver":"file",...}`), named `#blockN` as QEMU names anonymous nodes.
    static func parse(_ text: String, anonymousCount: inout Int) throws(SystemError) -> [BlockdevNode] {
        let opts = try QemuOpts.parse(jsonOrKeyval: text, impliedKey: nil, option: "-blockdev")
        return try nodes(opts, prefix: "", anonymousCount: &anonymousCount)
    }

    private static func nodes(_ opts: QemuOpts, prefix: String, anonymousCount: inout Int) throws(SystemError) -> [BlockdevNode] {
        func key(_ name: String) -> String { prefix + name }
        guard let driverName = opts.string(key("driver")) else { throw .configuration("-blockdev: Parameter 'driver' is missing") }
        guard let driver = Driver(rawValue: driverName) else {
            throw .configuration("-blockdev: driver '\(driverName)' is not available; accepted: file (an image file), raw, qcow2")
        }
        let nodeName: String
        if let name = opts.string(key("node-name")) {
            try NetdevSpec.checkIdentifier(name, option: "-blockdev")
            nodeName = name
        } else if prefix.isEmpty {
            throw .configuration("-blockdev: node-name is required for a node a device can use")
        } else {
            anonymousCount += 1
            nodeName = "#block\(anonymousCount)"
        }
        let own = commonKeys + (driver == .file ? fileKeys : ["file", "backing"])
        // This node's keys, and (for a format node) the inline child's under "file.".
        for k in opts.keys where k.hasPrefix(prefix) {
            let name = String(k.dropFirst(prefix.count))
            guard own.contains(name) || (driver != .file && name.hasPrefix("file.")) else {
                throw .configuration("-blockdev: unknown option '\(name)' for driver '\(driverName)'; accepted: \(own.joined(separator: ", "))")
            }
        }
        func bool(_ name: String) throws(SystemError) -> Bool? { try opts.bool(key(name)) }
        if let zeroes = opts.string(key("detect-zeroes")), zeroes != "off" {
            throw .configuration("node '\(nodeName)': detect-zeroes=\(zeroes) is not supported (accepted: off)")
        }
        if let discard = opts.string(key("discard")), !["ignore", "off", "unmap", "on"].contains(discard) {
            throw .configuration("node '\(nodeName)': discard=\(discard) is not a discard mode (accepted: ignore, unmap)")
        }
        var node = BlockdevNode(nodeName: nodeName, driver: driver, readOnly: try bool("read-only") ?? false,
                                cacheDirect: try bool("cache.direct"), cacheNoFlush: try bool("cache.no-flush"),
                                forceShare: try bool("force-share") ?? false)
        if node.forceShare && !node.readOnly {
            throw .configuration("node '\(nodeName)': force-share=on can only be used with read-only images")
        }
        var result: [BlockdevNode] = []
        switch driver {
        case .file:
            guard let filename = opts.string(key("filename")), !filename.isEmpty else {
                throw .configuration("node '\(nodeName)': Parameter 'filename' is missing")
            }
            node.filename = filename
            if let locking = opts.string(key("locking")) {
                guard let mode = LockingMode(rawValue: locking) else {
                    throw .configuration("node '\(nodeName)': locking=\(locking) is not a locking mode (accepted: on, off, auto)")
                }
                node.locking = mode
            }
            // aio= picks how QEMU submits I/O (threads, native, io_uring): swemu's block layer
            // has one way, so each is taken as it is.
            if let aio = opts.string(key("aio")), !["threads", "native", "io_uring"].contains(aio) {
                throw .configuration("node '\(nodeName)': aio=\(aio) is not an I/O mode (accepted: threads, native, io_uring)")
            }
        case .raw, .qcow2:
            if opts.string(key("file.driver")) != nil {
                let inline = try nodes(opts, prefix: key("file."), anonymousCount: &anonymousCount)
                node.child = inline.first?.nodeName
                result += inline
            } else {
                guard let child = opts.string(key("file")) else { throw .configuration("node '\(nodeName)': Parameter 'file' is missing") }
                node.child = child
            }
            if opts.contains(key("backing")) {
                guard driver == .qcow2 else { throw .configuration("node '\(nodeName)': driver 'raw' has no backing file") }
                // libvirt writes "backing":null for an image without one (JSON null is "").
                let value = opts.string(key("backing")) ?? ""
                node.backing = value.isEmpty ? .none : .node(value)
            }
        }
        return [node] + result
    }

    /// The `-drive`-equivalent of the chain from `top` (a format node on a file node, or a file
    /// node read as raw), with a device's `write-cache` setting; `nodes` is every -blockdev.
    static func drive(top: String, nodes: [BlockdevNode], writeCache: Bool?) throws(SystemError) -> DriveSpec {
        func node(_ name: String) throws(SystemError) -> BlockdevNode {
            guard let found = nodes.first(where: { $0.nodeName == name }) else {
                throw .configuration("-blockdev: Cannot find device='' nor node-name='\(name)'")  // QEMU's words
            }
            return found
        }
        let format = try node(top)
        let file = format.driver == .file ? format : try node(format.child ?? "")
        guard file.driver == .file, let path = file.filename else {
            throw .configuration("node '\(format.nodeName)': its file '\(file.nodeName)' must be a 'file' node (swemu stacks one format on one file)")
        }
        if case .node(let backing) = format.backing {
            let base = try drive(top: backing, nodes: nodes, writeCache: nil)
            guard try DiskImage.backingFile(ofImageAt: path) == base.file else {
                throw .configuration("node '\(format.nodeName)': backing '\(backing)' is not the image's own backing file; swemu follows the chain the image names")
            }
        } else if format.backing == .none, format.driver == .qcow2, let own = try DiskImage.backingFile(ofImageAt: path) {
            throw .configuration("node '\(format.nodeName)': the image has a backing file ('\(own)') but backing is null; swemu reads images with their backing chain")
        }
        let direct = format.cacheDirect ?? file.cacheDirect ?? false
        let noFlush = format.cacheNoFlush ?? file.cacheNoFlush ?? false
        let writeback = writeCache ?? true
        let cache: BlockCacheMode
        switch (direct, noFlush, writeback) {
        case (false, false, true): cache = .writeback
        case (true, false, true): cache = .none
        case (false, false, false): cache = .writethrough
        case (true, false, false): cache = .directsync
        case (false, true, _): cache = .unsafe
        case (true, true, _):
            throw .configuration("node '\(format.nodeName)': cache.direct=on with cache.no-flush=on is not a cache mode swemu has (use one of them)")
        }
        let readOnly = format.readOnly || file.readOnly
        return DriveSpec(file: path, id: top, interface: .none, readOnly: readOnly, snapshot: false,
                         format: format.driver == .file ? "raw" : format.driver.rawValue, cache: cache,
                         locking: ImageLocking(mode: file.locking ?? .auto, forceShare: format.forceShare || file.forceShare,
                                               shared: ImageLocking.device.shared),
                         option: "-blockdev node-name=\(top)", formatNode: top, fileNode: file.nodeName)
    }
}
