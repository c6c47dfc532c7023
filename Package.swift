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
        .target(name: "SystemSupport", dependencies: ["CLinux"], swiftSettings: strict),
        .target(name: "GuestMemory", dependencies: ["SystemSupport"], swiftSettings: strict),
        .target(name: "DeviceModel", dependencies: ["GuestMemory", "SystemSupport"], swiftSettings: strict),
        .target(name: "Chardev", dependencies: ["DeviceModel", "SystemSupport", "CLinux"], swiftSettings: strict),
        .target(name: "Devices", dependencies: ["DeviceModel"], swiftSettings: strict),
        .target(name: "CLI", dependencies: ["Chardev", "Devices", "DeviceModel", "GuestMemory", "SystemSupport"],
                swiftSettings: strict),
        .executableTarget(name: "swemu-system-riscv64", dependencies: ["CLI"], swiftSettings: strict),
        .executableTarget(name: "swemu-system-x86_64", dependencies: ["CLI"], swiftSettings: strict),
        .executableTarget(name: "swemu-img", dependencies: ["CLI"], swiftSettings: strict),

        .testTarget(name: "SystemSupportTests", dependencies: ["SystemSupport"], swiftSettings: strict),
        .testTarget(name: "GuestMemoryTests", dependencies: ["GuestMemory"], swiftSettings: strict),
        .testTarget(name: "DeviceModelTests", dependencies: ["DeviceModel"], swiftSettings: strict),
        .testTarget(name: "DevicesTests", dependencies: ["Devices", "DeviceModel"], swiftSettings: strict),
        .testTarget(name: "ChardevTests", dependencies: ["Chardev", "DeviceModel", "SystemSupport"], swiftSettings: strict),
        .testTarget(name: "CLITests", dependencies: ["CLI"], swiftSettings: strict),
    ],
    swiftLanguageModes: [.v6]
)
