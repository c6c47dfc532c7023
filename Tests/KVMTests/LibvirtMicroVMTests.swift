import Foundation
import Testing
import TestSupport

/// libvirt drives `swemu-system-x86_64 -M microvm -accel kvm` (issue: libvirt): its x86 line
/// (`-cpu host`, `-device isa-serial,chardev=`, memory backend, `-add-fd`) starts a guest
/// program whose serial output lands in libvirt's log file, and the domain is destroyed.
@Suite(.serialized) struct LibvirtMicroVMTests {
    static var missing: String? { X86GuestProgram.missing ?? LibvirtEmbedded.missing }

    @Test(.enabled(if: missing == nil, "\(missing ?? "")"))
    func microvmDomainRunsAGuestProgram() throws {
        let libvirt = try LibvirtEmbedded()
        let name = "swemu-microvm"
        defer { libvirt.cleanUp(name) }
        let serial = libvirt.root.appendingPathComponent("serial.log").path
        // <acpi/>: without it libvirt writes -no-acpi, which the microvm refuses (it has ACPI
        // only). No USB controller or balloon: libvirt puts those on PCI for x86, which the
        // microvm has none of.
        let xml = """
            <domain type='kvm'>
              <name>\(name)</name>
              <memory unit='MiB'>128</memory>
              <vcpu>1</vcpu>
              <os><type arch='x86_64' machine='microvm'>hvm</type><kernel>\(try X86GuestProgram.build("hello"))</kernel></os>
              <features><acpi/></features>
              <cpu mode='host-passthrough'/>
              <devices>
                <emulator>\(X86GuestProgram.binary)</emulator>
                <serial type='file'><source path='\(serial)'/></serial>
                <controller type='usb' model='none'/>
                <memballoon model='none'/>
              </devices>
            </domain>
            """
        let file = libvirt.root.appendingPathComponent("domain.xml")
        try xml.write(to: file, atomically: true, encoding: .utf8)
        let started = try libvirt.virsh("define \(file.path); start \(name)")
        try #require(started.status == 0, "\(started.output)\n\(libvirt.emulatorLog(name))")
        let output = LibvirtEmbedded.waitForText("hello from an x86-64 guest", in: serial, seconds: 30)
        #expect(output.contains("hello from an x86-64 guest"), "\(output)\n\(libvirt.emulatorLog(name))")
        #expect(libvirt.emulatorLog(name).contains("-device isa-serial,chardev=charserial0"), "\(libvirt.emulatorLog(name))")
        #expect(try libvirt.virsh("destroy \(name); undefine \(name)").status == 0)
    }
}
