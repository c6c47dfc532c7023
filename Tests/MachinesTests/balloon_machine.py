"""virtio-balloon in a Linux guest, driven over QMP with QEMU's own client (MachinesTests/
BalloonLinuxTests): the host balloons the guest down by 64 MiB, migrates it with the balloon
inflated, and balloons it back up on the destination; the guest script (on the virtio disk,
`swemu.test=/mnt/balloon`) reports its MemTotal at each step.

Usage: balloon_machine.py BINARY KERNEL INITRD DISK WORKDIR. Prints "ok ..." / "FAIL ..." lines;
exits non-zero when a check fails.
"""
import asyncio
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "Python"))
from swemu_machine import Machine, check, failures, serial_line, wait_listening  # noqa: E402

RAM = 512 << 20
TARGET = RAM - (64 << 20)


async def wait_for_actual(machine, target, timeout=180):
    """Waits for the BALLOON_CHANGE that reports the guest reached `target`; returns the
    actual sizes the events gave on the way."""
    seen = []

    async def wait():
        async for event in machine.qmp.events:
            if event["event"] == "BALLOON_CHANGE":
                seen.append(event["data"]["actual"])
                if seen[-1] == target:
                    return
    try:
        await asyncio.wait_for(wait(), timeout)
    except asyncio.TimeoutError:
        pass
    return seen


async def main(binary, kernel, initrd, disk, work):
    command = [binary, "-M", "virt", "-kernel", kernel, "-initrd", initrd,
               "-append", "console=ttyS0 quiet swemu.test=/mnt/balloon", "-drive", f"file={disk},format=raw,if=virtio",
               "-device", "virtio-balloon-device,id=balloon0"]
    source = Machine(work, "source", command, smp="1", memory="512M")
    destination = None
    try:
        await source.connect()
        check(await source.execute("query-balloon") == {"actual": RAM}, "query-balloon before the driver: all the RAM")
        ready = await serial_line(source, "BALLOON-READY", 300)
        check(ready is not None, f"the guest's driver bound the device: {ready}")
        if ready is None:
            return
        check(await source.hmp("info balloon") == "balloon: actual=512\r\n", "info balloon: 512 MiB")

        # The guest's statistics, as QEMU gives them: asked for every second, read by qom-get.
        path = "/machine/peripheral/balloon0"
        await source.execute("qom-set", {"path": path, "property": "guest-stats-polling-interval", "value": 1})
        check(await source.execute("qom-get", {"path": path, "property": "guest-stats-polling-interval"}) == 1,
              "guest-stats-polling-interval reads back 1")
        stats = {}
        for _ in range(100):
            stats = await source.execute("qom-get", {"path": path, "property": "guest-stats"})
            if stats["last-update"] > 0 and stats["stats"]["stat-total-memory"] < (1 << 63):
                break
            await asyncio.sleep(0.1)
        total = stats.get("stats", {}).get("stat-total-memory", 0)
        check(400 << 20 < total <= RAM, f"guest-stats: the guest's total memory ({total}) and its time ({stats.get('last-update')})")

        await source.execute("balloon", {"value": TARGET})
        seen = await wait_for_actual(source, TARGET)
        check(seen and seen[-1] == TARGET and all(TARGET <= a < RAM for a in seen),
              f"BALLOON_CHANGE events down to {TARGET}: {seen[:3]}...{seen[-3:]}")
        check(await source.execute("query-balloon") == {"actual": TARGET}, "query-balloon: 448 MiB")
        down = await serial_line(source, "BALLOON-DOWN", 120)
        check(down is not None, f"the guest's MemTotal fell by 64 MiB: {ready} -> {down}")

        # The inflated balloon migrates: the destination knows the target and the guest's count.
        socket = os.path.join(work, "migrate.sock")
        destination = Machine(work, "destination", command + ["-incoming", f"unix:{socket}"], smp="1", memory="512M")
        await destination.connect()
        await wait_listening(destination)
        await source.execute("migrate", {"uri": f"unix:{socket}"})
        info = await source.wait_status(("completed", "failed", "cancelled"))
        check(info.get("status") == "completed", f"migration: {info}")
        if info.get("status") != "completed":
            return
        check(await destination.execute("query-balloon") == {"actual": TARGET}, "the destination's query-balloon: 448 MiB")

        # Back up on the destination, through the human monitor (MiB).
        check(await destination.hmp("balloon 512") == "", "HMP balloon 512")
        seen = await wait_for_actual(destination, RAM)
        check(seen and seen[-1] == RAM, f"BALLOON_CHANGE events back up to {RAM}: {seen[-3:]}")
        up = await serial_line(destination, "BALLOON-UP", 120)
        check(up is not None, f"the guest's MemTotal came back: {up}")
        exit_line = await serial_line(destination, "SWEMU-TEST-EXIT=", 60)
        check(exit_line is not None and exit_line.strip().endswith("=0"), f"guest script: {exit_line}")
        status = destination.wait_exit(60)
        check(status == 0, f"swemu ended with status {status} after the guest powered off")
    finally:
        for machine in (source, destination):
            if machine is None:
                continue
            with open(machine.serial, "rb") as f:
                print(f"{machine.name} serial tail: " + f.read().decode(errors="replace")[-300:].replace("\n", " | "), flush=True)
            await machine.close()


asyncio.run(main(*sys.argv[1:6]))
sys.exit(1 if failures else 0)
