import CLinux
import Foundation
import TestSupport
import KVM
import Testing

/// The ioctl request numbers CLinux exports, checked two independent ways: against the kernel
/// headers' own macros (a C program built with the host gcc prints them) and against the
/// `_IOC` arithmetic of include/uapi/asm-generic/ioctl.h with Swift's view of each argument type.
@Suite struct IoctlNumberTests {
    static let exported: [(name: String, value: UInt)] = [
        ("KVM_GET_API_VERSION", clx_KVM_GET_API_VERSION), ("KVM_CREATE_VM", clx_KVM_CREATE_VM),
        ("KVM_CHECK_EXTENSION", clx_KVM_CHECK_EXTENSION), ("KVM_GET_VCPU_MMAP_SIZE", clx_KVM_GET_VCPU_MMAP_SIZE),
        ("KVM_GET_SUPPORTED_CPUID", clx_KVM_GET_SUPPORTED_CPUID), ("KVM_SET_USER_MEMORY_REGION", clx_KVM_SET_USER_MEMORY_REGION),
        ("KVM_SET_TSS_ADDR", clx_KVM_SET_TSS_ADDR), ("KVM_SET_IDENTITY_MAP_ADDR", clx_KVM_SET_IDENTITY_MAP_ADDR),
        ("KVM_CREATE_IRQCHIP", clx_KVM_CREATE_IRQCHIP), ("KVM_CREATE_PIT2", clx_KVM_CREATE_PIT2),
        ("KVM_IRQFD", clx_KVM_IRQFD), ("KVM_IOEVENTFD", clx_KVM_IOEVENTFD),
        ("KVM_CREATE_VCPU", clx_KVM_CREATE_VCPU), ("KVM_RUN", clx_KVM_RUN),
        ("KVM_GET_REGS", clx_KVM_GET_REGS), ("KVM_SET_REGS", clx_KVM_SET_REGS),
        ("KVM_GET_SREGS", clx_KVM_GET_SREGS), ("KVM_SET_SREGS", clx_KVM_SET_SREGS),
        ("KVM_SET_FPU", clx_KVM_SET_FPU), ("KVM_SET_MSRS", clx_KVM_SET_MSRS), ("KVM_SET_CPUID2", clx_KVM_SET_CPUID2),
        ("KVM_GET_LAPIC", clx_KVM_GET_LAPIC), ("KVM_SET_LAPIC", clx_KVM_SET_LAPIC),
        // Guest debugging (KVMVcpu+Debug.swift).
        ("KVM_GET_FPU", clx_KVM_GET_FPU), ("KVM_SET_GUEST_DEBUG", clx_KVM_SET_GUEST_DEBUG), ("KVM_TRANSLATE", clx_KVM_TRANSLATE),
        ("KVM_GET_XSAVE", clx_KVM_GET_XSAVE), ("KVM_SET_XSAVE", clx_KVM_SET_XSAVE),
    ]

    @Test(.enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/gcc"),
                   "needs /usr/bin/gcc (Debian's gcc; scripts/setup installs it)"))
    func matchesTheKernelHeaders() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("swemu-ioctl-\(getpid())")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let source = directory.appendingPathComponent("numbers.c")
        let lines = Self.exported.map { "    printf(\"\($0.name) %lu\\n\", (unsigned long)\($0.name));" }
        try ("#include <stdio.h>\n#include <linux/kvm.h>\nint main(void) {\n" + lines.joined(separator: "\n") + "\n    return 0;\n}\n")
            .write(to: source, atomically: true, encoding: .utf8)
        let binary = directory.appendingPathComponent("numbers").path
        #expect(try Subprocess.run("/usr/bin/gcc", ["-o", binary, source.path]).status == 0)
        let output = try Subprocess.run(binary, []).output
        var fromHeaders: [String: UInt] = [:]
        for line in output.split(separator: "\n") {
            let parts = line.split(separator: " ")
            if parts.count == 2, let value = UInt(parts[1]) { fromHeaders[String(parts[0])] = value }
        }
        #expect(fromHeaders.count == Self.exported.count)
        for (name, value) in Self.exported {
            #expect(fromHeaders[name] == value, "\(name)")
        }
    }

    /// _IOC(dir, type, nr, size) = dir << 30 | size << 16 | type << 8 | nr; KVMIO is 0xAE.
    static func ioc(_ direction: UInt, _ nr: UInt, _ size: Int) -> UInt { direction << 30 | UInt(size) << 16 | 0xAE << 8 | nr }
    static let none: UInt = 0, write: UInt = 1, read: UInt = 2

    @Test func matchesTheIOCArithmetic() {
        #expect(clx_KVM_GET_API_VERSION == Self.ioc(Self.none, 0x00, 0))
        #expect(clx_KVM_CREATE_VM == Self.ioc(Self.none, 0x01, 0))
        #expect(clx_KVM_RUN == Self.ioc(Self.none, 0x80, 0))
        #expect(clx_KVM_SET_USER_MEMORY_REGION == Self.ioc(Self.write, 0x46, MemoryLayout<kvm_userspace_memory_region>.size))
        #expect(clx_KVM_GET_REGS == Self.ioc(Self.read, 0x81, MemoryLayout<kvm_regs>.size))
        #expect(clx_KVM_SET_REGS == Self.ioc(Self.write, 0x82, MemoryLayout<kvm_regs>.size))
        #expect(clx_KVM_GET_SREGS == Self.ioc(Self.read, 0x83, MemoryLayout<kvm_sregs>.size))
        #expect(clx_KVM_SET_SREGS == Self.ioc(Self.write, 0x84, MemoryLayout<kvm_sregs>.size))
        #expect(clx_KVM_IRQFD == Self.ioc(Self.write, 0x76, MemoryLayout<kvm_irqfd>.size))
        #expect(clx_KVM_IOEVENTFD == Self.ioc(Self.write, 0x79, MemoryLayout<kvm_ioeventfd>.size))
        #expect(clx_KVM_SET_CPUID2 == Self.ioc(Self.write, 0x90, 8))  // struct kvm_cpuid2 without its entries
        #expect(clx_KVM_GET_SUPPORTED_CPUID == Self.ioc(Self.read | Self.write, 0x05, 8))
    }

    @Test func flavourDetection() throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("swemu-sysmodule-\(getpid())")
        defer { try? FileManager.default.removeItem(at: root) }
        try FileManager.default.createDirectory(at: root.appendingPathComponent("kvm_pvm"), withIntermediateDirectories: true)
        #expect(KVMFlavour.detect(sysModule: root.path) == .pvm)
        try FileManager.default.createDirectory(at: root.appendingPathComponent("kvm_intel"), withIntermediateDirectories: true)
        #expect(KVMFlavour.detect(sysModule: root.path) == .intel)
        #expect(KVMFlavour.detect(sysModule: root.path + "/absent") == .unknown)
    }

    @Test func missingDeviceSaysSoAndSuggestsTCG() {
        #expect {
            _ = try KVMSystem(path: "/nonexistent/kvm")
        } throws: { error in
            let text = "\(error)"
            return text.contains("/nonexistent/kvm does not exist") && text.contains("-accel tcg")
        }
    }
}

/// Runs a program to completion (killed after `timeout` seconds) and returns its exit status
/// and combined output.
enum Subprocess {
    static func run(_ path: String, _ arguments: [String], timeout: Double = 120) throws -> (status: Int32, output: String) {
        try runProgram(path: path, arguments, timeout: timeout)
    }

    /// Runs a program until its output has `occurrences` whole lines containing `marker` (then
    /// kills it), it ends, or `timeout` seconds pass; returns the output so far.
    static func output(of path: String, _ arguments: [String], until marker: String, occurrences: Int = 1,
                       timeout: Double) throws -> String {
        let (process, pipe, killer) = try startProgram(path: path, arguments, timeout: timeout)
        var output = Data()
        while true {
            let chunk = pipe.fileHandleForReading.availableData
            if chunk.isEmpty { break }
            output += chunk
            // A UART prints a character at a time: wait for the end of the marker's line.
            let text = String(decoding: output, as: UTF8.self)
            let pieces = text.components(separatedBy: marker)
            if pieces.count > occurrences, pieces[occurrences].contains("\n") { break }
        }
        killer.cancel()
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }  // an ended one's pid may be reused
        process.waitUntilExit()
        return String(decoding: output, as: UTF8.self)
    }
}
