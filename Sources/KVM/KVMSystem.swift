import CLinux
import Glibc
import SystemSupport

/// Which kernel module serves `/dev/kvm`. The API is the same; what guests can do is not:
/// `kvm_pvm` (PVM, shadow paging without VT-x) emulates guest kernel mode one instruction at a
/// time and fails on SSE, `cmpxchg16b` and `xrstors` there, so unmodified Linux cannot boot on it.
public enum KVMFlavour: String, Sendable, CaseIterable {
    case intel = "kvm_intel"
    case amd = "kvm_amd"
    case pvm = "kvm_pvm"
    case unknown = "unknown"

    /// The flavour whose module is loaded, from `/sys/module` (hardware virtualization first:
    /// a host can have kvm_pvm loaded beside kvm_intel, and then VT-x serves /dev/kvm).
    public static func detect(sysModule: String = "/sys/module") -> KVMFlavour {
        for flavour in [KVMFlavour.intel, .amd, .pvm] where access("\(sysModule)/\(flavour.rawValue)", F_OK) == 0 {
            return flavour
        }
        return .unknown
    }

    /// This host's flavour, read once, at first use (the first board, before -chroot takes
    /// /sys away): every board of the process sees the same.
    public static let host = detect()

    /// True for VT-x or AMD-V: unmodified kernels run at native speed.
    public var isHardwareVirtualization: Bool { self == .intel || self == .amd }
}

/// `/dev/kvm` (Documentation/virt/kvm/api.rst §4): the system fd, from which VMs are made.
public final class KVMSystem: Sendable {
    /// The only API version there has ever been (api.rst 4.1: "should return 12").
    public static let apiVersion: Int32 = 12

    /// Every capability swemu's x86-64 VMs use, with the name the error gives when one is missing.
    public static let requiredCapabilities: [(capability: Int32, name: String)] = [
        (KVM_CAP_USER_MEMORY, "KVM_CAP_USER_MEMORY"),
        (KVM_CAP_SET_TSS_ADDR, "KVM_CAP_SET_TSS_ADDR"),
        (KVM_CAP_EXT_CPUID, "KVM_CAP_EXT_CPUID"),
        (KVM_CAP_IRQCHIP, "KVM_CAP_IRQCHIP"),
        (KVM_CAP_HLT, "KVM_CAP_HLT"),
        (KVM_CAP_IRQFD, "KVM_CAP_IRQFD"),
        (KVM_CAP_IOEVENTFD, "KVM_CAP_IOEVENTFD"),
        (KVM_CAP_PIT2, "KVM_CAP_PIT2"),
        (KVM_CAP_IMMEDIATE_EXIT, "KVM_CAP_IMMEDIATE_EXIT"),
    ]

    private let fd: Int32
    public let flavour: KVMFlavour
    /// Size of each vCPU's shared `kvm_run` area.
    let vcpuMapSize: Int

    /// Opens `path` and checks the API version and every capability in `requiredCapabilities`.
    public init(path: String = "/dev/kvm", sysModule: String = "/sys/module") throws(SystemError) {
        flavour = sysModule == "/sys/module" ? KVMFlavour.host : KVMFlavour.detect(sysModule: sysModule)
        // Reopenable: a reset's new board opens it again, maybe under -chroot or -runas.
        let fd: Int32
        do throws(SystemError) {
            fd = try FileDescriptor.open(path, O_RDWR, reopenable: true).release()
        } catch {
            let err = error.errno ?? .noEntry
            let why = err == .noEntry ? "does not exist (is the kvm module loaded?)"
                : err == .permissionDenied ? "is not accessible to this user (join the 'kvm' group)" : "cannot be opened"
            throw SystemError(.unsupported, "\(path) \(why); use -accel tcg where the target has it", errno: err)
        }
        self.fd = fd
        let version = clx_ioctl_int(fd, clx_KVM_GET_API_VERSION, 0)
        guard version == KVMSystem.apiVersion else {
            Glibc.close(fd)
            throw .unsupported("\(path): KVM API version \(version), swemu needs \(KVMSystem.apiVersion)")
        }
        for (capability, name) in KVMSystem.requiredCapabilities where clx_ioctl_int(fd, clx_KVM_CHECK_EXTENSION, UInt(capability)) <= 0 {
            Glibc.close(fd)
            throw .unsupported("\(path) (\(flavour.rawValue)) lacks \(name), which swemu's x86-64 machine needs")
        }
        let size = clx_ioctl_int(fd, clx_KVM_GET_VCPU_MMAP_SIZE, 0)
        guard size >= MemoryLayout<kvm_run>.size else {
            Glibc.close(fd)
            throw .unsupported("\(path): KVM_GET_VCPU_MMAP_SIZE returned \(size)")
        }
        vcpuMapSize = Int(size)
    }

    deinit { Glibc.close(fd) }

    /// KVM_CHECK_EXTENSION: 0 when absent, else a capability-specific positive value.
    public func check(_ capability: Int32) -> Int {
        Int(max(0, clx_ioctl_int(fd, clx_KVM_CHECK_EXTENSION, UInt(capability))))
    }

    /// The most vCPUs one VM may have (KVM_CAP_MAX_VCPUS, else KVM_CAP_NR_VCPUS, else 4 as api.rst says).
    public var maxVCPUs: Int {
        let max = check(KVM_CAP_MAX_VCPUS)
        if max > 0 { return max }
        let recommended = check(KVM_CAP_NR_VCPUS)
        return recommended > 0 ? recommended : 4
    }

    /// KVM_GET_SUPPORTED_CPUID: the leaves this host can offer a guest. The array grows until
    /// the kernel stops answering E2BIG (api.rst 4.46).
    public func supportedCPUID() throws(SystemError) -> [kvm_cpuid_entry2] {
        var capacity = 128
        while true {
            var buffer = CPUIDBuffer(capacity: capacity)
            let rc = buffer.withHeader { clx_ioctl_ptr(fd, clx_KVM_GET_SUPPORTED_CPUID, $0) }
            if rc >= 0 { return buffer.entries }
            let err = Errno.current
            guard err == Errno(rawValue: E2BIG), capacity < 4096 else {
                throw SystemError(.syscall, "KVM_GET_SUPPORTED_CPUID", errno: err)
            }
            capacity *= 2
        }
    }

    /// KVM_GET_MSR_INDEX_LIST: the MSRs this KVM saves and restores for a vCPU (api.rst 4.3).
    /// The list grows until the kernel stops answering E2BIG.
    package func msrIndexList() throws(SystemError) -> [UInt32] {
        var capacity = 256
        while true {
            // struct kvm_msr_list { __u32 nmsrs; __u32 indices[]; }
            var words = [UInt32](repeating: 0, count: 1 + capacity)
            words[0] = UInt32(capacity)
            let rc = words.withUnsafeMutableBytes { clx_ioctl_ptr(fd, clx_KVM_GET_MSR_INDEX_LIST, $0.baseAddress!) }
            if rc >= 0 { return Array(words[1..<(1 + min(capacity, Int(words[0])))]) }
            let err = Errno.current
            guard err == Errno(rawValue: E2BIG), capacity < 1 << 16 else {
                throw SystemError(.syscall, "KVM_GET_MSR_INDEX_LIST", errno: err)
            }
            capacity = max(capacity * 2, Int(words[0]))
        }
    }

    /// KVM_CREATE_VM with the default machine type.
    public func createVM() throws(SystemError) -> KVMVirtualMachine {
        let vmfd = try syscall("KVM_CREATE_VM") { clx_ioctl_int(fd, clx_KVM_CREATE_VM, 0) }
        return KVMVirtualMachine(fd: FileDescriptor(owning: vmfd), system: self)
    }
}

/// A `struct kvm_cpuid2` with room for `capacity` entries (a C flexible array member, so it is
/// built in a byte buffer).
struct CPUIDBuffer {
    private var bytes: [UInt64]
    private static let headerSize = 8  // __u32 nent; __u32 padding;
    private static let entrySize = MemoryLayout<kvm_cpuid_entry2>.stride

    init(capacity: Int) {
        bytes = [UInt64](repeating: 0, count: (CPUIDBuffer.headerSize + capacity * CPUIDBuffer.entrySize + 7) / 8)
        bytes[0] = UInt64(capacity)  // nent (low half, little-endian)
    }

    init(_ entries: [kvm_cpuid_entry2]) {
        self.init(capacity: entries.count)
        bytes.withUnsafeMutableBytes { raw in
            // SAFETY: the buffer holds headerSize + count * entrySize bytes; entries are POD.
            for (i, entry) in entries.enumerated() {
                raw.storeBytes(of: entry, toByteOffset: CPUIDBuffer.headerSize + i * CPUIDBuffer.entrySize, as: kvm_cpuid_entry2.self)
            }
        }
    }

    mutating func withHeader<R>(_ body: (UnsafeMutableRawPointer) -> R) -> R {
        bytes.withUnsafeMutableBytes { body($0.baseAddress!) }  // never empty: the header is there
    }

    var entries: [kvm_cpuid_entry2] {
        bytes.withUnsafeBytes { raw in
            let count = Int(raw.load(as: UInt32.self))
            return (0..<count).map { raw.loadUnaligned(fromByteOffset: CPUIDBuffer.headerSize + $0 * CPUIDBuffer.entrySize, as: kvm_cpuid_entry2.self) }
        }
    }
}
