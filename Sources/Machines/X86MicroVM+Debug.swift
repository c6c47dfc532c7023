import CLinux
import GuestMemory
import KVM

extension X86MicroVM {
    /// Guest RAM for the GDB stub's memory packets (VMM's X86MicroVM+VMM.swift, KVMDebugger), which reads and
    /// writes it while the vCPUs are parked.
    package var debugMemory: GuestMemory { memory }

    /// The KVM_GUESTDBG_* flags this host's KVM takes (KVM_CAP_SET_GUEST_DEBUG2, api.rst 8.x);
    /// 0 when it does not say.
    package var supportedGuestDebugFlags: UInt32 {
        UInt32(truncatingIfNeeded: max(0, vm.system.check(KVM_CAP_SET_GUEST_DEBUG2)))
    }
}
