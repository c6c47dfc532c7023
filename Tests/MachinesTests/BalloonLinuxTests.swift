import Foundation
import Testing
import TestSupport

/// virtio-balloon end to end in Linux: `-device virtio-balloon-device,id=balloon0` (what
/// libvirt adds to every domain), Debian's virtio_balloon driver (a module in the initramfs),
/// the host's `balloon` down by 64 MiB over QMP, a live migration with the balloon inflated,
/// and back up on the destination over HMP; BALLOON_CHANGE and `query-balloon` follow the
/// guest, and the guest's MemTotal follows the balloon (balloon_machine.py drives both
/// machines with QEMU's qemu.qmp client).
@Suite(.serialized, .oneLinuxBootAtATime) struct BalloonLinuxTests {
    /// The guest's side, run by the initramfs's /init as `swemu.test=/mnt/balloon`: BALLOON-READY
    /// once the driver is bound, BALLOON-DOWN once MemTotal fell by at least 60 MiB (the driver
    /// takes ballooned pages out of it), BALLOON-UP once it is back; two minutes per step.
    static let script = """
        kib() { awk -v k="$1" '$1 == k":" { print $2 }' /proc/meminfo; }
        n=0
        until ls /sys/bus/virtio/drivers/virtio_balloon 2>/dev/null | grep -q virtio; do
            n=$((n + 1)); [ $n -gt 100 ] && { echo "BALLOON-FAIL no virtio_balloon device"; exit 2; }
            usleep 100000
        done
        start=$(kib MemTotal)
        echo "BALLOON-READY total=$start free=$(kib MemFree)"
        wait_for() {
            i=0
            while [ $i -lt 1200 ]; do
                total=$(kib MemTotal)
                [ "$1" = down ] && [ $((start - total)) -ge 61440 ] && return 0
                [ "$1" = up ] && [ "$total" -ge "$start" ] && return 0
                usleep 100000
                i=$((i + 1))
            done
            echo "BALLOON-FAIL waiting for $1: total=$(kib MemTotal) start=$start"
            exit 3
        }
        wait_for down
        echo "BALLOON-DOWN total=$(kib MemTotal) free=$(kib MemFree)"
        wait_for up
        echo "BALLOON-UP total=$(kib MemTotal) free=$(kib MemFree)"
        """

    static var missing: String? {
        if let reason = LinuxBootTests.missing { return reason }
        let modules = (try? String(contentsOfFile: LinuxBootTests.guests + "/modules.txt", encoding: .utf8)) ?? ""
        if !modules.contains("virtio_balloon") {
            return "needs an initramfs with virtio_balloon in \(LinuxBootTests.guests) (rerun scripts/guests)"
        }
        return Python.missing("qemu.qmp")
    }

    @Test(.enabled(if: missing == nil, "\(missing ?? "")"))
    func balloonDownAndUpInLinux() throws {
        let disk = try LinuxBootTests.makeDisk(["balloon": Self.script])
        let dir = disk.deletingLastPathComponent()
        defer { try? FileManager.default.removeItem(at: dir) }
        let driver = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("balloon_machine.py").path
        let result = try GuestProgram.run(Python.executable, [driver, LinuxBootTests.binary, LinuxBootTests.kernel, LinuxBootTests.initrd,
                                                              disk.path, dir.path], timeout: 600)
        #expect(result.status == 0, "\(result.output)")
        #expect(!result.output.contains("FAIL"), "\(result.output)")
    }
}
