import FuzzSupport
import Glibc
import GuestMemory
import Machines
import Migration
import SystemSupport

// A libFuzzer target for the migration stream (the stream is untrusted input: DESIGN.md §5,
// §6; scripts/fuzz-migration builds and runs it, recipe in NOTES.md). Each input is a stream,
// loaded as `-incoming` loads one into a real `virt` board (2 harts, 16 MiB, every device
// with a saved state): header, pages into RAM, then every component restored. Any outcome
// but a clean error or success is a bug.
//
// Built normally the program replays inputs instead (files or directories of files), and
// `--make-seed FILE` writes a valid stream of the same board to start a corpus from.

/// The board's program: `j .` (a flat binary; it never runs here).
let program = (access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp") + "/swemu-fuzz-migration-\(getpid()).bin"
do {
    let fd = open(program, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
    var loop: UInt32 = 0x0000_006f
    guard fd >= 0, write(fd, &loop, 4) == 4 else { fatalError("cannot write \(program)") }
    close(fd)
}

let board: RISCVBoard
do throws(SystemError) {
    var configuration = RISCVBoard.Configuration(kind: .virt, ramSize: 16 << 20, kernel: program, serial: nil, harts: 2)
    configuration.virtio = [.rng, .console(nil)]
    board = try RISCVBoard(configuration)
} catch {
    fatalError("cannot build the board: \(error)")
}
let description = board.migrationDescription
/// SWEMU_FUZZ_VERBOSE=1: say why each replayed input was refused.
let verbose = getenv("SWEMU_FUZZ_VERBOSE") != nil

func runOne(_ data: UnsafeRawBufferPointer) {
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

/// A valid stream of the board, for the corpus.
func makeSeed(_ path: String) throws(SystemError) {
    let fd = try FileDescriptor.open(path, O_WRONLY | O_CREAT | O_TRUNC)
    let writer = MigrationStreamWriter { (bytes) throws(SystemError) in try fd.writeAll(bytes) }
    try writer.writeHeader(description)
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
}

let arguments = Array(CommandLine.arguments.dropFirst())
if arguments.count == 2, arguments[0] == "--make-seed" {
    do throws(SystemError) { try makeSeed(arguments[1]) } catch { fatalError("\(error)") }
    unlink(program)
    exit(0)
}

fuzzMain(name: "swemu-fuzz-migration", cleanup: { unlink(program) }) { runOne($0) }
