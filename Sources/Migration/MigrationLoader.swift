import Glibc
import GuestMemory
import SystemSupport

/// Loads a stream into a machine (`-incoming`, `loadvm`, the fuzz target): the header is
/// checked against the machine, pages go straight into its RAM, and the components are
/// returned for the caller to restore with the vCPUs parked. Nothing of the machine runs
/// meanwhile, so a stream refused part-way leaves a machine that must not run (the VMM ends).
public enum MigrationLoader {
    public static func load(from reader: MigrationStreamReader, into here: MachineDescription, memory: GuestMemory,
                            passLoaded: () -> Void = {}) throws(SystemError) -> [SavedComponent] {
        let description = try reader.readHeader()
        let differences = description.differences(from: here)
        guard differences.isEmpty else {
            throw .badInput("the saved machine is not this one: " + differences.joined(separator: "; "))
        }
        var components: [SavedComponent] = []
        while true {
            switch try reader.next() {
            case let .page(address, zero, bytes):
                guard memory.isRAM(address, count: UInt64(MigrationStream.pageSize)) else {
                    throw .badInput("migration stream: a page at \(address), which is not RAM of this machine, at byte \(reader.offset)")
                }
                do {
                    // A zero page is written only when it is not zero already: a fresh
                    // destination's RAM is untouched, and reading it commits nothing.
                    var unchanged = false
                    if zero {
                        unchanged = try memory.withHostBytes(at: address, count: MigrationStream.pageSize, writing: false) {
                            MigrationStreamWriter.isZero(UnsafeRawBufferPointer($0))
                        }
                    }
                    if !unchanged {
                        try memory.withHostBytes(at: address, count: MigrationStream.pageSize) { page in
                            // memset/memcpy: this loop must not depend on the optimiser (debug builds run it too).
                            if zero { memset(page.baseAddress!, 0, page.count) } else { memcpy(page.baseAddress!, bytes.baseAddress!, page.count) }
                        }
                    }
                } catch {
                    throw .badInput("migration stream: page \(address) could not be written: \(error)")
                }
            case .passEnd:
                passLoaded()
            case .component(let component):
                guard components.count < here.components.count else {
                    throw .badInput("migration stream: more components than this machine has, at byte \(reader.offset)")
                }
                components.append(component)
            case .end:
                return components
            }
        }
    }
}
