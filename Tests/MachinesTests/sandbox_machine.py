"""Debian's kernel under -sandbox (MachinesTests/SandboxMachineTests), driven with QEMU's own
QMP client.

1. libvirt's sandbox line (obsolete, elevateprivileges, spawn and resourcecontrol all denied)
   with every device: a qcow2 disk the guest writes, virtio-rng, virtio-net on user
   networking with a host forward, the balloon, the keyboard and a virtconsole. The guest
   reboots once, so a second board is built under the filter (new RAM, threads, the disk
   opened again). The process has its filter (Seccomp: 2); `migrate exec:` is refused with a
   clear error and the machine keeps running; the balloon and a snapshot (savevm, files
   written under the filter) work; the guest ends with status 0.
2. -chroot into an empty directory and -runas nobody, with -sandbox
   on,elevateprivileges=deny,spawn=deny (the set*id calls -runas makes are let through until
   then): the process runs as nobody in that root, and the guest's reboot still finds its
   disk and its memory-backend-file (kept open from the first board, as QEMU keeps them) and
   writes the disk again.
3. -runas nobody with a QMP client that connects at once: a `migrate-incoming` sent while the
   first board is still being built (its -kernel a FIFO the test has not written yet) waits,
   and binds its socket only once the process is nobody (the socket's owner says so).

Usage: sandbox_machine.py BINARY KERNEL INITRD DISK_QCOW2 DISK_RAW WORKDIR PROGRAM_ELF. Prints "ok ..." /
"FAIL ..." lines; exits non-zero when a check fails.
"""
import asyncio
import os
import pwd
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "Python"))
from qemu.qmp import ExecuteError  # noqa: E402
from swemu_machine import Machine, check, failures, serial_line  # noqa: E402


def proc_status(pid):
    with open(f"/proc/{pid}/status") as f:
        return dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)


async def libvirt_line(binary, kernel, initrd, disk, work):
    command = [binary, "-M", "virt", "-kernel", kernel, "-initrd", initrd,
               "-append", "console=ttyS0 quiet swemu.test=/tests/reboot",
               "-drive", f"file={disk},format=qcow2,if=virtio",
               "-device", "virtio-rng-device",
               "-netdev", "user,id=n0,hostfwd=tcp:127.0.0.1:0-:22", "-device", "virtio-net-device,netdev=n0",
               "-device", "virtio-balloon-device,id=balloon0", "-device", "virtio-keyboard-device",
               "-chardev", f"file,id=vc0,path={work}/virtconsole.out", "-device", "virtio-serial-device",
               "-device", "virtconsole,chardev=vc0",
               "-sandbox", "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"]
    guest = Machine(work, "sandboxed", command, smp="2", memory="256M")
    try:
        await guest.connect()
        status = proc_status(guest.process.pid)
        check(status.get("Seccomp") == "2", f"the process runs under its seccomp filter: {status.get('Seccomp')}")
        try:
            await guest.execute("migrate", {"uri": f"exec:cat > {work}/never.bin"})
            check(False, "migrate exec: under spawn=deny was refused")
        except ExecuteError as error:
            check("spawn=deny forbids" in str(error), f"migrate exec: refused with a clear error: {error}")
        running = await guest.execute("query-status")
        check(running["status"] == "running", f"the machine still runs: {running}")
        await guest.execute("balloon", {"value": 200 << 20})
        saved = await guest.hmp("savevm under-sandbox")
        check(saved.strip() == "", f"savevm under the filter: {saved!r}")
        listed = await guest.hmp("info snapshots")
        check("under-sandbox" in listed, f"the snapshot is listed: {listed!r}")
        second = await serial_line(guest, "SECOND-BOOT", 300)
        check(second is not None, "the guest rebooted and found its disk again (a second board under the filter)")
        code = await asyncio.get_running_loop().run_in_executor(None, guest.wait_exit, 120)
        check(code == 0, f"swemu ended with status 0: {code} {guest.error_text()}")
        check("sandbox" not in guest.error_text(), f"nothing was refused by the filter: {guest.error_text()}")
    finally:
        await guest.close()


async def chroot_runas(binary, kernel, initrd, disk, work):
    root = os.path.join(work, "empty-root")
    os.mkdir(root)
    ram = os.path.join(work, "guest-ram.img")  # created by swemu, outside the new root
    command = [binary, "-M", "virt", "-kernel", kernel, "-initrd", initrd,
               "-append", "console=ttyS0 quiet swemu.test=/tests/reboot",
               "-drive", f"file={disk},format=raw,if=virtio",
               "-object", f"memory-backend-file,id=ram0,size=256M,mem-path={ram},share=on", "-machine", "memory-backend=ram0",
               "-chroot", root, "-runas", "nobody", "-sandbox", "on,elevateprivileges=deny,spawn=deny"]
    guest = Machine(work, "confined", command, smp="1", memory="256M")
    try:
        await guest.connect()
        first = await serial_line(guest, "FIRST-BOOT", 300)
        check(first is not None, f"the confined guest booted: {guest.error_text()}")
        status = proc_status(guest.process.pid)
        uid = status.get("Uid", "").split()
        check(len(uid) == 4 and all(u == "65534" for u in uid), f"the process runs as nobody: Uid {uid}")
        check(os.readlink(f"/proc/{guest.process.pid}/root") == root, "the process's root is the -chroot directory")
        second = await serial_line(guest, "SECOND-BOOT", 300)
        check(second is not None, f"after the reboot the disk and the RAM file opened again outside the new root: {guest.error_text()}")
        check(os.path.getsize(ram) == 256 << 20, f"the guest's RAM lives in the memory-backend-file: {os.path.getsize(ram)} bytes")
        code = await asyncio.get_running_loop().run_in_executor(None, guest.wait_exit, 120)
        check(code == 0, f"swemu ended with status 0: {code} {guest.error_text()}")
    finally:
        await guest.close()


async def monitor_waits_for_runas(binary, program, work):
    early = os.path.join(work, "early")
    os.mkdir(early)
    os.chmod(early, 0o777)  # nobody binds the incoming socket here
    fifo = os.path.join(early, "kernel.fifo")
    os.mkfifo(fifo)
    incoming = os.path.join(early, "incoming.sock")
    command = [binary, "-M", "virt", "-bios", "none", "-kernel", fifo, "-incoming", "defer", "-runas", "nobody"]
    guest = Machine(early, "early", command, smp="1", memory="64M")
    try:
        await guest.connect()  # served before the board exists: its kernel is not written yet
        pending = asyncio.ensure_future(guest.execute("migrate-incoming", {"uri": f"unix:{incoming}"}))
        await asyncio.sleep(0.5)
        check(not os.path.exists(incoming) and not pending.done(),
              "migrate-incoming waits while the first board is built (the process may still be root)")
        with open(program, "rb") as source, open(fifo, "wb") as sink:
            sink.write(source.read())
        await asyncio.wait_for(pending, 30)
        for _ in range(100):  # the listener binds on the migration thread
            if os.path.exists(incoming):
                break
            await asyncio.sleep(0.05)
        check(os.path.exists(incoming), f"migrate-incoming bound its socket once the board was built: {guest.error_text()}")
        if not os.path.exists(incoming):
            return
        nobody = pwd.getpwnam("nobody").pw_uid
        owner = os.stat(incoming).st_uid
        check(owner == nobody, f"the socket was bound by nobody (uid {nobody}), not root: owner {owner}")
        status = await guest.execute("query-status")
        check(status["status"] == "inmigrate", f"the machine waits for its stream: {status}")
        await guest.execute("quit")
        code = await asyncio.get_running_loop().run_in_executor(None, guest.wait_exit, 30)
        check(code == 0, f"swemu ended with status 0 after quit: {code} {guest.error_text()}")
    finally:
        await guest.close()


async def main(binary, kernel, initrd, qcow2, raw, work, program):
    await monitor_waits_for_runas(binary, program, work)
    await libvirt_line(binary, kernel, initrd, qcow2, work)
    await chroot_runas(binary, kernel, initrd, raw, work)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:8]))
    sys.exit(1 if failures else 0)
