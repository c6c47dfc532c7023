import GuestMemory

extension X86MicroVM {
    /// Guest RAM for the GDB stub's memory packets (VMM's KVMMachine+GDB.swift), which reads and
    /// writes it while the vCPUs are parked.
    package var debugMemory: GuestMemory { memory }
}
