import Glibc
import GuestMemory
import Machines
import Migration
import SystemSupport

/// The migration stream (untrusted input: DESIGN.md §5, §6; formerly swemu-fuzz-migration).
/// Each input is a stream, loaded as `-incoming` loads one into a real `virt` board (2 harts,
/// 16 MiB, every device with a saved state): header, pages into RAM, then every component
/// restored. The seed is a valid stream of the same board.
enum MigrationFuzz {
    /// The board's program: `j .` (a flat binary; it never runs here).
    static let program = (access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp") + "/swemu-fuzz-migration-\(getpid()).bin"

    /// Built on first use (the other targets never pay for it).
    static let board: RISCVBoard = {
        let fd = open(program, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        var loop: UInt32 = 0x0000_006f
        guard fd >= 0, write(fd, &loop, 4) == 4 else { fatalError("cannot write \(program)") }
        close(fd)
        defer { unlink(program) }
        do throws(SystemError) {
            var configuration = RISCVBoard.Configuration(kind: .virt, ramSize: 16 << 20, kernel: program, serial: nil, harts: 2)
            configuration.virtio = [.rng, .console(nil)]
            return try RISCVBoard(configuration)
        } catch {
            fatalError("cannot build the board: \(error)")
        }
    }()
    /// SWEMU_FUZZ_VERBOSE=1: say why each replayed input was refused.
    static let verbose = getenv("SWEMU_FUZZ_VERBOSE") != nil

    static let target = FuzzTarget(name: "migration", summary: "migration streams loaded into a real virt board", maxLength: 131072,
                                   run: { run($0) }, seeds: { [("seed.stream", seed())] })

    static func run(_ data: UnsafeRawBufferPointer) {
        let description = board.migrationDescription
        var position = 0
        let reader = MigrationStreamReader { buffer in
            let n = min(buffer.count, data.count - position)
            if n > 0 { buffer.copyMemory(from: UnsafeRawBufferPointer(rebasing: data[position..<(position + n)])) }
            position += n
            return n
        }
        do throws(SystemError) {
            let components = try MigrationLoader.load(from: reader, into: description, memory: board.memory)
            try board.restoreComponents(components)
        } catch {
            // A clean refusal is the expected outcome for most inputs.
            if verbose { print("refused: \(error)") }
        }
    }

    /// A valid stream of the board.
    static func seed() -> [UInt8] {
        var stream: [UInt8] = []
        do throws(SystemError) {
            let writer = MigrationStreamWriter { (bytes) throws(SystemError) in stream += bytes }
            try writer.writeHeader(board.migrationDescription)
            for region in board.memory.regions {
                var address = region.range.base.rawValue
                while address < region.range.base.rawValue + region.size {
                    let page = GuestAddress(address)
                    do {
                        try board.memory.withHostBytes(at: page, count: MigrationStream.pageSize, writing: false) { bytes in
                            try writer.writePage(at: page, bytes: UnsafeRawBufferPointer(bytes))
                        }
                    } catch {
                        throw .badInput("\(error)")
                    }
                    address += UInt64(MigrationStream.pageSize)
                }
            }
            try writer.writePassEnd(1)
            for component in try board.saveComponents() { try writer.writeComponent(component) }
            try writer.writeEnd()
            try writer.flush()
        } catch {
            fatalError("cannot write the seed stream: \(error)")
        }
        return stream
    }
}
