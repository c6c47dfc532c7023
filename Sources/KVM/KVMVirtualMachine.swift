import CLinux
import Glibc
import Synchronization
import SystemSupport

/// A VM fd (api.rst §4, "vm ioctl"): memory slots, the in-kernel interrupt controllers and
/// PIT, interrupt and notification eventfds, and the vCPUs.
public final class KVMVirtualMachine: Sendable {
    private let fd: FileDescriptor
    public let system: KVMSystem
    /// Whether `createIRQChip()` and `createPIT()` made the in-kernel devices, whose state then
    /// travels in `State` (KVMVirtualMachine+State.swift).
    let hasIRQChip = Atomic<Bool>(false)
    let hasPIT = Atomic<Bool>(false)

    init(fd: consuming FileDescriptor, system: KVMSystem) {
        self.fd = fd
        self.system = system
    }

    /// KVM_SET_USER_MEMORY_REGION: guest-physical `[guestAddress, +size)` is backed by host
    /// memory at `host`, which must stay mapped as long as the VM lives. Called again for the
    /// same slot with the same range, it changes only the flags: `logDirtyPages` turns
    /// KVM_MEM_LOG_DIRTY_PAGES on or off (api.rst 4.35; KVMVirtualMachine+DirtyLog.swift).
    public func setMemoryRegion(slot: UInt32, guestAddress: UInt64, size: UInt64, host: UnsafeMutableRawPointer,
                                logDirtyPages: Bool = false) throws(SystemError) {
        var region = kvm_userspace_memory_region(slot: slot, flags: logDirtyPages ? clx_KVM_MEM_LOG_DIRTY_PAGES : 0,
                                                 guest_phys_addr: guestAddress, memory_size: size,
                                                 userspace_addr: UInt64(UInt(bitPattern: host)))
        _ = try syscall("KVM_SET_USER_MEMORY_REGION slot \(slot) at 0x\(String(guestAddress, radix: 16))\(logDirtyPages ? " (dirty log on)" : "")") {
            clx_ioctl_ptr(fd.rawValue, clx_KVM_SET_USER_MEMORY_REGION, &region)
        }
    }

    /// KVM_SET_TSS_ADDR and KVM_SET_IDENTITY_MAP_ADDR: three plus one pages of guest-physical
    /// space, outside RAM and devices, that Intel VT-x needs for real mode (api.rst 4.40, 4.58).
    public func setTSSAndIdentityMap(tss: UInt64, identityMap: UInt64) throws(SystemError) {
        _ = try syscall("KVM_SET_TSS_ADDR") { clx_ioctl_int(fd.rawValue, clx_KVM_SET_TSS_ADDR, UInt(tss)) }
        if system.check(KVM_CAP_SET_IDENTITY_MAP_ADDR) > 0 {
            var address = identityMap
            _ = try syscall("KVM_SET_IDENTITY_MAP_ADDR") { clx_ioctl_ptr(fd.rawValue, clx_KVM_SET_IDENTITY_MAP_ADDR, &address) }
        }
    }

    /// KVM_CREATE_IRQCHIP: the in-kernel 8259 PICs, IOAPIC (24 pins, GSI = pin) and local APICs.
    public func createIRQChip() throws(SystemError) {
        _ = try syscall("KVM_CREATE_IRQCHIP") { clx_ioctl_int(fd.rawValue, clx_KVM_CREATE_IRQCHIP, 0) }
        hasIRQChip.store(true, ordering: .sequentiallyConsistent)
    }

    /// KVM_CREATE_PIT2: the in-kernel 8254 timer on ports 0x40-0x43, its speaker port a dummy
    /// (port 0x61 reads as the kernel's, so Linux calibrates against it).
    public func createPIT() throws(SystemError) {
        var config = kvm_pit_config()
        config.flags = UInt32(KVM_PIT_SPEAKER_DUMMY)
        _ = try syscall("KVM_CREATE_PIT2") { clx_ioctl_ptr(fd.rawValue, clx_KVM_CREATE_PIT2, &config) }
        hasPIT.store(true, ordering: .sequentiallyConsistent)
    }

    /// KVM_IRQFD: a write to eventfd `eventFD` raises GSI `gsi` in the kernel, with no exit to
    /// this process (api.rst 4.75).
    public func attachIRQFD(_ eventFD: Int32, gsi: UInt32) throws(SystemError) {
        var request = kvm_irqfd()
        request.fd = UInt32(bitPattern: eventFD)
        request.gsi = gsi
        _ = try syscall("KVM_IRQFD gsi \(gsi)") { clx_ioctl_ptr(fd.rawValue, clx_KVM_IRQFD, &request) }
    }

    /// KVM_IOEVENTFD: a guest write of `value` (`length` bytes) to MMIO `address` signals
    /// `eventFD` instead of exiting (api.rst 4.59). `KVM_IOEVENTFD_FLAG_DATAMATCH` is
    /// `1 << kvm_ioeventfd_flag_nr_datamatch` (bit 0), a macro over an enum Swift cannot import.
    public func attachIOEventFD(_ eventFD: Int32, mmioAddress address: UInt64, length: UInt32, value: UInt64) throws(SystemError) {
        var request = kvm_ioeventfd()
        request.datamatch = value
        request.addr = address
        request.len = length
        request.fd = eventFD
        request.flags = 1 << 0
        _ = try syscall("KVM_IOEVENTFD at 0x\(String(address, radix: 16))") { clx_ioctl_ptr(fd.rawValue, clx_KVM_IOEVENTFD, &request) }
    }

    /// One VM ioctl with a pointer argument.
    func ioctl(_ request: UInt, _ what: @autoclosure () -> String, _ arg: UnsafeMutableRawPointer) throws(SystemError) {
        _ = try syscall(what()) { clx_ioctl_ptr(fd.rawValue, request, arg) }
    }

    /// KVM_CREATE_VCPU with APIC id `id`, and its `kvm_run` mapping.
    public func createVCPU(id: Int) throws(SystemError) -> KVMVcpu {
        let vcpufd = try syscall("KVM_CREATE_VCPU \(id)") { clx_ioctl_int(fd.rawValue, clx_KVM_CREATE_VCPU, UInt(id)) }
        return try KVMVcpu(fd: FileDescriptor(owning: vcpufd), id: id, mapSize: system.vcpuMapSize,
                           capabilities: KVMVcpu.StateCapabilities(system, localAPIC: hasIRQChip.load(ordering: .sequentiallyConsistent)))
    }
}
