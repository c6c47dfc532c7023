import Foundation
import Testing
import TestSupport

/// libvirt drives `swemu-system-x86_64 -M microvm -accel kvm` (issue: libvirt): its x86 line
/// (`-cpu host`, `-device isa-serial,chardev=`, memory backend, `-add-fd`) starts a guest
/// program whose serial output lands in libvirt's log file, and the domain is destroyed.
@Suite(.serialized) struct LibvirtMicroVMTests {
    static var missing: String? { X86GuestProgram.missing ?? LibvirtEmbedded.missing }

    /// An x86-64 microvm domain running the guest program `program` with `devices`. `<acpi/>`:
    /// without it libvirt writes -no-acpi, which the microvm refuses (it has ACPI only);
    /// host-passthrough: libvirt's default CPU is qemu64, which swemu refuses.
    static func domain(_ name: String, program: String, devices: String) throws -> String {
        """
        <domain type='kvm'>
          <name>\(name)</name>
          <memory unit='MiB'>128</memory>
          <vcpu>1</vcpu>
          <os><type arch='x86_64' machine='microvm'>hvm</type><kernel>\(try X86GuestProgram.build(program))</kernel></os>
          <features><acpi/></features>
          <cpu mode='host-passthrough'/>
          <devices>
            <emulator>\(X86GuestProgram.binary)</emulator>
            \(devices)
          </devices>
        </domain>
        """
    }

    @Test(.enabled(if: missing == nil, "\(missing ?? "")"))
    func microvmDomainRunsAGuestProgram() throws {
        let libvirt = try LibvirtEmbedded()
        let name = "swemu-microvm"
        defer { libvirt.cleanUp(name) }
        let serial = libvirt.root.appendingPathComponent("serial.log").path
        // No USB controller or balloon: libvirt puts those on PCI for x86, which the microvm
        // has none of.
        let xml = try Self.domain(name, program: "hello", devices: """
            <serial type='file'><source path='\(serial)'/></serial>
            <controller type='usb' model='none'/>
            <memballoon model='none'/>
            """)
        let file = libvirt.root.appendingPathComponent("domain.xml")
        try xml.write(to: file, atomically: true, encoding: .utf8)
        let started = try libvirt.virsh("define \(file.path); start \(name)")
        try #require(started.status == 0, "\(started.output)\n\(libvirt.emulatorLog(name))")
        let output = LibvirtEmbedded.waitForText("hello from an x86-64 guest", in: serial, seconds: 30)
        #expect(output.contains("hello from an x86-64 guest"), "\(output)\n\(libvirt.emulatorLog(name))")
        #expect(libvirt.emulatorLog(name).contains("-device isa-serial,chardev=charserial0"), "\(libvirt.emulatorLog(name))")
        #expect(try libvirt.virsh("destroy \(name); undefine \(name)").status == 0)
    }

    /// x86 virtio devices under libvirt: libvirt puts them on PCI unless the domain gives each
    /// a virtio-mmio address (without one, `define` fails: "No PCI buses available"). With
    /// them, the guest program reads the raw disk's sector 0 and writes sector 1 through
    /// virtio-blk on the microvm's first virtio-mmio slot; a balloon and a keyboard come too.
    @Test(.enabled(if: missing == nil, "\(missing ?? "")"))
    func microvmDomainUsesVirtioMMIODevices() throws {
        let libvirt = try LibvirtEmbedded()
        let name = "swemu-microvm-virtio"
        defer { libvirt.cleanUp(name) }
        let serial = libvirt.root.appendingPathComponent("serial.log").path
        let disk = libvirt.root.appendingPathComponent("disk.raw")
        var image = [UInt8](repeating: 0, count: 1 << 20)
        let text = Array("sector zero, written by the host".utf8)
        image.replaceSubrange(0..<text.count, with: text)
        try Data(image).write(to: disk)
        let mmio = "<address type='virtio-mmio'/>"
        let xml = try Self.domain(name, program: "virtio_blk", devices: """
            <disk type='file' device='disk'>
              <driver name='qemu' type='raw'/><source file='\(disk.path)'/><target dev='vda' bus='virtio'/>\(mmio)
            </disk>
            <serial type='file'><source path='\(serial)'/></serial>
            <controller type='usb' model='none'/>
            <memballoon model='virtio'>\(mmio)</memballoon>
            <input type='keyboard' bus='virtio'>\(mmio)</input>
            """)
        let file = libvirt.root.appendingPathComponent("domain.xml")
        try xml.write(to: file, atomically: true, encoding: .utf8)
        let started = try libvirt.virsh("define \(file.path); start \(name)")
        try #require(started.status == 0, "\(started.output)\n\(libvirt.emulatorLog(name))")
        let output = LibvirtEmbedded.waitForText("sector 1 written", in: serial, seconds: 30)
        #expect(output.contains("sector 0: sector zero, written by the host"), "\(output)\n\(libvirt.emulatorLog(name))")
        for device in ["-device virtio-blk-device,drive=libvirt-1-format", "-device virtio-balloon-device", "-device virtio-keyboard-device"] {
            #expect(libvirt.emulatorLog(name).contains(device), "libvirt's line lacks \(device)")
        }
        let after = try [UInt8](Data(contentsOf: disk))
        #expect(Array(after[512..<533]) == Array("written by the guest\0".utf8))
        _ = try libvirt.virsh("destroy \(name); undefine \(name)")
    }
}
