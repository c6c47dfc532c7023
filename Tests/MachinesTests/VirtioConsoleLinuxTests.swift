import Foundation
import Synchronization
import Testing
import TestSupport

/// virtio-console end to end in Linux (README: "virtio-blk ..., virtio-rng, virtio-console"):
/// `-device virtio-serial-device -device virtconsole,chardev=vc` with the chardev on swemu's
/// stdio (`-chardev stdio,id=vc`; the serial console goes to a file). The guest's /dev/hvc0 is
/// that port: a script on a virtio disk puts it in raw mode, writes a line with a token and a
/// few KiB, then reads one line from the host and prints it on the serial console.
/// The test reads swemu's stdout (exactly what the guest wrote, byte for byte) and answers on
/// its stdin once the guest has written everything.
@Suite(.serialized, .oneLinuxBootAtATime) struct VirtioConsoleLinuxTests {
    /// The guest's side, run by the initramfs's /init as `swemu.test=/mnt/virtconsole`.
    static let script = """
        # virtio-console test (MachinesTests/VirtioConsoleLinuxTests): the port is /dev/hvc0.
        n=0
        while [ ! -c /dev/hvc0 ] && [ $n -lt 100 ]; do usleep 100000; n=$((n + 1)); done
        [ -c /dev/hvc0 ] || { echo "no /dev/hvc0"; ls /dev; exit 2; }
        # One descriptor for the whole exchange: the tty stays open, so nothing the host sends
        # between the writes and the read is dropped. Raw: no echo, no \\n -> \\r\\n.
        exec 3<>/dev/hvc0
        stty raw -echo <&3 || exit 3
        echo "GUEST-TO-HOST $(cat /mnt/token)" >&3 || exit 4
        seq 1 1000 >&3 || exit 5
        echo "GUEST-DONE" >&3 || exit 6
        read -r -t 120 line <&3 || { echo "no line from the host"; exit 7; }
        echo "FROM-HOST=$line"
        exec 3<&-
        """

    /// What the test process reads from swemu's stdout, gathered on Foundation's reader thread.
    final class Received: Sendable {
        private let bytes = Mutex<[UInt8]>([])
        func append(_ data: Data) { bytes.withLock { $0 += data } }
        var text: String { String(decoding: bytes.withLock { $0 }, as: UTF8.self) }
    }

    @Test(.enabled(if: LinuxBootTests.missing == nil, "\(LinuxBootTests.missing ?? "")"))
    func guestAndHostTalkThroughHvc0() throws {
        let token = UUID().uuidString
        let disk = try LinuxBootTests.makeDisk(["virtconsole": Self.script, "token": token + "\n"])
        let dir = disk.deletingLastPathComponent()
        defer { try? FileManager.default.removeItem(at: dir) }
        let serial = dir.appendingPathComponent("serial.log")

        let swemu = Process()
        swemu.executableURL = URL(fileURLWithPath: LinuxBootTests.binary)
        swemu.arguments = ["-M", "virt", "-m", "512M", "-kernel", LinuxBootTests.kernel, "-initrd", LinuxBootTests.initrd,
                           "-append", "console=ttyS0 quiet swemu.test=/mnt/virtconsole",
                           "-drive", "file=\(disk.path),format=raw,if=virtio",
                           "-display", "none", "-monitor", "none", "-serial", "file:\(serial.path)",
                           "-chardev", "stdio,id=vc,signal=off", "-device", "virtio-serial-device", "-device", "virtconsole,chardev=vc"]
        let input = Pipe()
        let output = Pipe()
        let errors = Pipe()
        swemu.standardInput = input
        swemu.standardOutput = output
        swemu.standardError = errors
        let received = Received()
        let diagnostics = Received()
        for (pipe, sink) in [(output, received), (errors, diagnostics)] {
            pipe.fileHandleForReading.readabilityHandler = { handle in
                let data = handle.availableData
                if data.isEmpty { handle.readabilityHandler = nil }  // end of file: stop polling
                sink.append(data)
            }
        }
        try swemu.run()
        defer {
            if swemu.isRunning { swemu.terminate() }
            output.fileHandleForReading.readabilityHandler = nil
            errors.fileHandleForReading.readabilityHandler = nil
        }
        func log() -> String {
            "stdout:\n\(received.text.suffix(1000))\nstderr:\n\(diagnostics.text)\nserial:\n"
                + ((try? String(contentsOf: serial, encoding: .utf8))?.suffix(3000) ?? "")
        }

        // A deadline only for a hang: the boot takes what it takes on a loaded machine.
        var deadline = Date().addingTimeInterval(300)
        while !received.text.contains("GUEST-DONE\n") && swemu.isRunning && Date() < deadline { usleep(50_000) }
        try #require(received.text.contains("GUEST-DONE\n"), "the guest's output never arrived:\n\(log())")
        let expected = "GUEST-TO-HOST \(token)\n" + (1...1000).map { "\($0)\n" }.joined() + "GUEST-DONE\n"
        #expect(received.text == expected, "\(log())")

        let reply = "HOST-TO-GUEST \(String(token.reversed())) " + String(repeating: "0123456789", count: 20)
        input.fileHandleForWriting.write(Data((reply + "\n").utf8))
        deadline = Date().addingTimeInterval(120)
        while swemu.isRunning && Date() < deadline { usleep(50_000) }
        #expect(!swemu.isRunning, "swemu did not end:\n\(log())")
        if !swemu.isRunning { #expect(swemu.terminationStatus == 0, "\(log())") }
        let console = (try? String(contentsOf: serial, encoding: .utf8)) ?? ""
        #expect(LinuxBootTests.value("SWEMU-TEST-EXIT", in: console) == "0", "\(log())")
        #expect(LinuxBootTests.value("FROM-HOST", in: console) == reply, "\(log())")
        // Nothing more came out of the port after the guest's writes.
        #expect(received.text == expected, "\(log())")
    }
}
