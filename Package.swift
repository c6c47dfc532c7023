// swift-tools-version:6.0
// swemu: a machine emulator and virtualizer. Module layout: ../shared/DESIGN.md §2 (also docs/DESIGN.md).
import PackageDescription

// Warnings are errors everywhere: a warning today is a bug report tomorrow.
let strict: [SwiftSetting] = [
    .unsafeFlags(["-warnings-as-errors"]),
]

let package = Package(
    name: "swemu",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "swemu-system-riscv64", targets: ["swemu-system-riscv64"]),
        .executable(name: "swemu-system-x86_64", targets: ["swemu-system-x86_64"]),
        .executable(name: "swemu-img", targets: ["swemu-img"]),
    ],
    targets: [
        // The only hand-written C: kernel headers, ioctl numbers, termios and pty helpers.
        .target(name: "CLinux"),
        // zlib (Debian's zlib1g-dev): gzip-compressed kernels, later qcow2's compressed clusters.
        .systemLibrary(name: "CZlib", pkgConfig: "zlib", providers: [.apt(["zlib1g-dev"])]),
        // Capstone (Debian's libcapstone-dev): disassembles the JIT's host code for -d out_asm.
        .systemLibrary(name: "CCapstone", pkgConfig: "capstone", providers: [.apt(["libcapstone-dev"])]),
        // libslirp (Debian's libslirp-dev): user-mode networking (-netdev user), as QEMU's.
        .systemLibrary(name: "CSlirp", providers: [.apt(["libslirp-dev"])]),
        // libseccomp (Debian's libseccomp-dev): the system-call filter of -sandbox, as QEMU's.
        .systemLibrary(name: "CSeccomp", pkgConfig: "libseccomp", providers: [.apt(["libseccomp-dev"])]),
        .target(name: "SystemSupport", dependencies: ["CLinux"], swiftSettings: strict),
        .target(name: "GuestMemory", dependencies: ["CLinux", "SystemSupport"], swiftSettings: strict),
        .target(name: "DeviceModel", dependencies: ["GuestMemory", "SystemSupport"], swiftSettings: strict),
        .target(name: "Chardev", dependencies: ["DeviceModel", "SystemSupport", "CLinux"], swiftSettings: strict),
        .target(name: "VirtIO", dependencies: ["DeviceModel", "GuestMemory", "SystemSupport"], swiftSettings: strict),
        .target(name: "Block", dependencies: ["CZlib", "DeviceModel", "SystemSupport"], swiftSettings: strict),
        .target(name: "Devices", dependencies: ["DeviceModel", "GuestMemory", "SystemSupport", "VirtIO"], swiftSettings: strict),
        // Network backends (-netdev user|tap|stream|dgram|socket, filter-dump): the host side of a NIC.
        .target(name: "Net", dependencies: ["CLinux", "CSlirp", "DeviceModel", "SystemSupport"], swiftSettings: strict),
        // IEEE 754-2008 binary32/binary64 arithmetic in software, with RISC-V's NaN rules:
        // exact rounding in all five modes and exact exception flags, which the host FPU cannot
        // give for every operation (DESIGN.md §2: the FPU of the RISCV module).
        .target(name: "SoftFloat", swiftSettings: strict),
        .target(name: "RISCV", dependencies: ["CLinux", "DeviceModel", "GuestMemory", "SoftFloat", "SystemSupport"],
                swiftSettings: strict),
        // The RISC-V → x86-64 dynamic binary translator, an ExecutionEngine beside the interpreter.
        .target(name: "RISCVJIT", dependencies: ["CCapstone", "CLinux", "GuestMemory", "RISCV", "SystemSupport"], swiftSettings: strict),
        // Linux KVM: /dev/kvm, VMs, vCPUs and their exits (DESIGN.md §2).
        .target(name: "KVM", dependencies: ["CLinux", "SystemSupport"], swiftSettings: strict),
        .target(name: "Loader", dependencies: ["CZlib", "SystemSupport"], swiftSettings: strict),
        // The snapshot and migration stream (DESIGN.md §5): format, machine description, saved components.
        .target(name: "Migration", dependencies: ["CZlib", "GuestMemory", "SystemSupport"], swiftSettings: strict),
        .target(name: "Machines", dependencies: ["Block", "CLinux", "DeviceModel", "Devices", "GuestMemory", "KVM", "Loader", "Migration", "RISCV", "RISCVJIT",
                                                 "SystemSupport", "VirtIO"],
                swiftSettings: strict),
        // QMP and the human monitor: protocol codecs with no I/O, and the servers on chardevs.
        .target(name: "QMP", dependencies: ["DeviceModel", "SystemSupport"], swiftSettings: strict),
        // The GDB remote serial protocol: a codec with no I/O, and the server on a chardev.
        .target(name: "GDBStub", dependencies: ["DeviceModel"], swiftSettings: strict),
        // Runs a board's vCPUs and serves the command channel the monitors and debuggers use.
        .target(name: "VMM", dependencies: ["Block", "CLinux", "Chardev", "DeviceModel", "Devices", "GDBStub", "GuestMemory", "KVM", "Machines", "Migration", "QMP", "RISCV", "RISCVJIT", "SystemSupport"],
                swiftSettings: strict),
        .target(name: "CLI", dependencies: ["Block", "CLinux", "CSeccomp", "Chardev", "Devices", "DeviceModel", "GDBStub", "GuestMemory", "Machines", "Net", "QMP", "RISCVJIT",
                                            "SystemSupport", "VMM"],
                swiftSettings: strict),
        .executableTarget(name: "swemu-system-riscv64", dependencies: ["CLI"], swiftSettings: strict),
        .executableTarget(name: "swemu-system-x86_64", dependencies: ["CLI"], swiftSettings: strict),
        .executableTarget(name: "swemu-img", dependencies: ["CLI"], swiftSettings: strict),
        // What the libFuzzer targets share: the driver hookup and the replay mode.
        .target(name: "FuzzSupport", dependencies: ["SystemSupport"], swiftSettings: strict),
        // The fuzz targets (virtio devices, QMP/HMP, GDB, loaders, qcow2, migration): a library,
        // so FuzzTests replays crash inputs through the same code.
        .target(name: "FuzzTargets", dependencies: ["Block", "CZlib", "DeviceModel", "Devices", "GDBStub", "GuestMemory", "Loader", "Machines",
                                                    "Migration", "QMP", "SystemSupport", "VirtIO"],
                swiftSettings: strict),
        // One libFuzzer program for them all, the target picked by --target= (scripts/fuzz);
        // replays inputs when built normally.
        .executableTarget(name: "swemu-fuzz", dependencies: ["FuzzSupport", "FuzzTargets"], swiftSettings: strict),

        // What several test targets share (Tests/TestSupport): the one Python the tests run, and the
        // trait that lets at most one Linux guest boot at a time across all the test modules.
        .target(name: "TestSupport", path: "Tests/TestSupport", swiftSettings: strict),
        .testTarget(name: "SystemSupportTests", dependencies: ["SystemSupport"], swiftSettings: strict),
        .testTarget(name: "GuestMemoryTests", dependencies: ["GuestMemory", "SystemSupport"], swiftSettings: strict),
        .testTarget(name: "DeviceModelTests", dependencies: ["DeviceModel"], swiftSettings: strict),
        .testTarget(name: "DevicesTests", dependencies: ["Devices", "DeviceModel", "SystemSupport"], swiftSettings: strict),
        .testTarget(name: "VirtIOTests", dependencies: ["VirtIO", "Devices", "Block", "DeviceModel", "GuestMemory", "SystemSupport"],
                    swiftSettings: strict),
        .testTarget(name: "BlockTests", dependencies: ["Block", "DeviceModel", "SystemSupport", "TestSupport"], swiftSettings: strict),
        .testTarget(name: "ChardevTests", dependencies: ["Chardev", "DeviceModel", "SystemSupport"], swiftSettings: strict),
        .testTarget(name: "SoftFloatTests", dependencies: ["SoftFloat", "TestSupport"], swiftSettings: strict),
        .testTarget(name: "RISCVTests", dependencies: ["RISCV", "DeviceModel", "GuestMemory", "SystemSupport"],
                    swiftSettings: strict),
        .testTarget(name: "RISCVJITTests", dependencies: ["RISCVJIT", "RISCV", "DeviceModel", "GuestMemory", "SystemSupport"],
                    swiftSettings: strict),
        .testTarget(name: "MachinesTests", dependencies: ["Machines", "DeviceModel", "Loader", "TestSupport"], exclude: ["qmp_machine.py", "gdb_raw_client.py", "monitor_interop.py", "migration_machine.py", "network_machine.py", "balloon_machine.py", "powerbutton_machine.py", "sandbox_machine.py"],
                    swiftSettings: strict),
        .testTarget(name: "QMPTests", dependencies: ["QMP", "Chardev", "DeviceModel", "SystemSupport", "TestSupport"], exclude: ["qmp_client.py"],
                    swiftSettings: strict),
        .testTarget(name: "GDBStubTests", dependencies: ["GDBStub", "DeviceModel"], swiftSettings: strict),
        .testTarget(name: "CLITests", dependencies: ["Block", "CLI", "Chardev", "DeviceModel", "GuestMemory", "RISCVJIT", "SystemSupport", "TestSupport", "VMM"], swiftSettings: strict),
        .testTarget(name: "KVMTests", dependencies: ["KVM", "CLinux", "Loader", "Machines", "TestSupport"], exclude: ["kvm_migration.py"],
                    swiftSettings: strict),
        .testTarget(name: "LoaderTests", dependencies: ["Loader", "SystemSupport"], swiftSettings: strict),
        .testTarget(name: "NetTests", dependencies: ["Net", "DeviceModel", "SystemSupport", "TestSupport"], swiftSettings: strict),
        .testTarget(name: "VMMTests", dependencies: ["VMM", "Machines", "Migration", "GuestMemory", "QMP", "GDBStub", "Block", "DeviceModel", "Devices", "SystemSupport"],
                    swiftSettings: strict),
        .testTarget(name: "MigrationTests", dependencies: ["Migration", "GuestMemory", "SystemSupport"], swiftSettings: strict),
        .testTarget(name: "FuzzTests", dependencies: ["FuzzTargets"], exclude: ["Regressions"], swiftSettings: strict),
    ],
    swiftLanguageModes: [.v6]
)
