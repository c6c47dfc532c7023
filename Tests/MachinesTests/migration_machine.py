"""Migrates running swemu machines between processes and checks that nothing is lost.

Usage: migration_machine.py SWEMU ELF WORKDIR SCENARIO. Runs the migrate_counter guest program
(it prints "count N" every 10 ms of guest time, sleeping on its timer between counts, and checks
a RAM buffer it rewrites every count) in a source swemu, moves it the way SCENARIO says, and
checks the output goes on in the destination with no gap and no repeat, the timers keep firing,
and the guest's own checks hold. Prints "ok ..."/"FAIL ..." per check; exits non-zero on a
failure. Run by MachinesTests/MigrationTests.
"""
import asyncio
import os
import re
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "Python"))
from swemu_machine import Machine as Process, check, check_continuity, counts, failures, free_port, wait_listening  # noqa: E402

SWEMU, ELF, WORK, SCENARIO = sys.argv[1:5]
# "unix-jit": the same as "unix" with both machines on the JIT.
ENGINE = ["-accel", "tcg,jit=on"] if SCENARIO.endswith("-jit") else ["-accel", "tcg,jit=off"]
SCENARIO = SCENARIO.removesuffix("-jit")


def Machine(name, extra=(), smp="2", memory="64M", program=None):
    """migrate_counter (or `program`) on -M virt, on the engine the scenario names."""
    return Process(WORK, name, [SWEMU, "-M", "virt", *(program or ["-bios", "none", "-kernel", ELF]), *ENGINE],
                   extra=extra, smp=smp, memory=memory)


async def migrate_live(uri_for_destination, uri_for_source, smp="2"):
    destination = Machine("destination", ["-incoming", uri_for_destination], smp=smp)
    source = Machine("source", smp=smp)
    try:
        await source.connect()
        await destination.connect()
        status = await destination.execute("query-status")
        check(status["status"] == "inmigrate", f"the destination waits in inmigrate: {status}")
        await wait_listening(destination)
        await source.execute("migrate-set-capabilities", {"capabilities": [{"capability": "events", "state": True}]})
        await source.wait_counts(20)
        await source.execute("migrate", {"uri": uri_for_source})
        info = await source.wait_status(("completed", "failed", "cancelled"))
        check(info.get("status") == "completed", f"the migration completed: {info}")
        check(info.get("ram", {}).get("total", 0) >= 64 << 20, "query-migrate reports the RAM size (64 MiB and the boot ROM)")
        check("downtime" in info and "total-time" in info, "query-migrate reports downtime and total time")
        status = await source.execute("query-status")
        check(status["status"] == "postmigrate", f"the source ends in postmigrate: {status}")
        stopped_at = counts(source.serial)[0][-1:]
        await destination.wait_counts((stopped_at[0] if stopped_at else 0) + 60)
        status = await destination.execute("query-status")
        check(status["status"] == "running", f"the destination runs: {status}")
        await asyncio.sleep(0.2)
        check(counts(source.serial)[0][-1:] == stopped_at, "the source prints nothing after the switch-over")
        check_continuity(source, destination)
    finally:
        await source.close()
        await destination.close()


async def migrate_through(uri):
    """Saves a running machine to a file or command, then loads it in a new process."""
    source = Machine("source")
    try:
        await source.connect()
        await source.wait_counts(20)
        await source.execute("migrate", {"uri": uri[0]})
        info = await source.wait_status(("completed", "failed"))
        check(info.get("status") == "completed", f"saved through {uri[0]}: {info}")
    finally:
        await source.close()
    destination = Machine("destination", ["-incoming", uri[1]])
    try:
        await destination.connect()
        await destination.wait_counts(counts(source.serial)[0][-1] + 60)
        check_continuity(source, destination)
    finally:
        await destination.close()


async def refused(stream_bytes, extra, expected, name):
    path = os.path.join(WORK, f"{name}.stream")
    with open(path, "wb") as f:
        f.write(stream_bytes)
    destination = Machine(f"refuse-{name}", ["-incoming", f"file:{path}", *extra])
    status = destination.wait_exit(60)
    text = destination.error_text()
    check(status == 1, f"{name}: the destination ends with status 1 (got {status})")
    check(expected in text, f"{name}: it says what is wrong ({text.strip()!r}, expected {expected!r})")
    check(counts(destination.serial)[0] == [], f"{name}: the refused machine never ran")
    await destination.close()


async def faults():
    # A good stream to corrupt.
    source = Machine("source")
    path = os.path.join(WORK, "good.stream")
    try:
        await source.connect()
        await source.wait_counts(10)
        await source.execute("stop")
        await source.execute("migrate", {"uri": f"file:{path}"})
        info = await source.wait_status(("completed", "failed"))
        check(info.get("status") == "completed", f"a stopped machine saves to a file: {info}")
    finally:
        await source.close()
    with open(path, "rb") as f:
        good = f.read()
    await refused(good[: len(good) // 2], [], "ends early", "truncated")
    flipped = bytearray(good)
    flipped[len(good) // 3] ^= 0x10
    await refused(bytes(flipped), [], "migration stream", "bit-flipped")
    await refused(b"QEVM\x00\x00\x00\x03" + bytes(100), [], "QEMU migration stream", "qemu-stream")
    await refused(os.urandom(4096), [], "not a swemu migration stream", "random-bytes")
    await refused(good, ["-m", "128M"], "RAM at 0x80000000: the stream has 64 MiB, this machine 128 MiB", "ram-mismatch")
    await refused(good, ["-smp", "1"], "CPUs: the stream has 2, this machine 1", "smp-mismatch")

    # The destination dies mid-transfer: the source runs on, with MIGRATION failed.
    sock = os.path.join(WORK, "kill.sock")
    destination = Machine("victim", ["-incoming", f"unix:{sock}"])
    source = Machine("survivor")
    try:
        await source.connect()
        await destination.connect()
        await wait_listening(destination)
        await source.execute("migrate-set-capabilities", {"capabilities": [{"capability": "events", "state": True}]})
        # Slow enough to be killed mid-way: 1 MiB/s for 64 MiB of RAM (mostly zero pages,
        # which are small, but the buffer pages are 4 KiB each).
        await source.execute("migrate-set-parameters", {"max-bandwidth": 1 << 20})
        await source.wait_counts(10)
        await source.execute("migrate", {"uri": f"unix:{sock}"})
        await asyncio.sleep(0.3)
        destination.process.kill()
        info = await source.wait_status(("failed", "completed"))
        check(info.get("status") == "failed" and info.get("error-desc"), f"killing the destination fails the migration: {info}")
        status = await source.execute("query-status")
        check(status["status"] == "running", f"the source runs on: {status}")
        n = counts(source.serial)[0][-1]
        await source.wait_counts(n + 20)
        check(counts(source.serial)[0][-1] >= n + 20, "the source keeps counting after the failure")

        # migrate_cancel mid-transfer, to a destination that stays.
        sock2 = os.path.join(WORK, "cancel.sock")
        patient = Machine("patient", ["-incoming", f"unix:{sock2}"])
        await patient.connect()
        await wait_listening(patient)
        await source.execute("migrate", {"uri": f"unix:{sock2}"})
        await asyncio.sleep(0.3)
        await source.execute("migrate_cancel")
        info = await source.wait_status(("cancelled", "failed", "completed"))
        check(info.get("status") == "cancelled", f"migrate_cancel cancels: {info}")
        status = await source.execute("query-status")
        check(status["status"] == "running", f"the source runs on after the cancel: {status}")
        check(patient.wait_exit(30) == 1, "the abandoned destination ends with status 1")
        await patient.close()
        # Auto-converge: a downtime limit no pass can meet makes it throttle the vCPUs, more
        # each pass; cancelling lets them run free again.
        sock3 = os.path.join(WORK, "throttle.sock")
        slow = Machine("slow", ["-incoming", f"unix:{sock3}"])
        await slow.connect()
        await wait_listening(slow)
        await source.execute("migrate-set-capabilities", {"capabilities": [{"capability": "auto-converge", "state": True}]})
        # 2 MiB/s: a pass over the 4 MiB buffer takes seconds, during which the guest rewrites
        # it all again, so no pass can leave little enough behind.
        await source.execute("migrate-set-parameters", {"max-bandwidth": 2 << 20, "downtime-limit": 0})
        await source.execute("migrate", {"uri": f"unix:{sock3}"})
        throttles = []
        for _ in range(1500):
            info = await source.execute("query-migrate")
            if "cpu-throttle-percentage" in info:
                throttles.append(info["cpu-throttle-percentage"])
                if throttles[-1] >= 40:
                    break
            await asyncio.sleep(0.02)
        # Polled, so a step may pass unseen: each value seen is 20 % plus a multiple of 10 %,
        # and they only grow.
        check(bool(throttles) and all(t in range(20, 100, 10) for t in throttles) and throttles == sorted(throttles)
              and throttles[-1] >= 40, f"auto-converge throttles from 20 % up by 10 % a pass: {sorted(set(throttles))}")
        await source.execute("migrate_cancel")
        info = await source.wait_status(("cancelled", "failed", "completed"))
        check(info.get("status") == "cancelled", f"cancelled while throttled: {info.get('status')}")
        n = counts(source.serial)[0][-1]
        await asyncio.sleep(1)
        check(counts(source.serial)[0][-1] >= n + 70, "the vCPUs run at full speed again after the cancel (~100 counts a second)")
        slow.wait_exit(30)
        await slow.close()
        _, text = counts(source.serial)
        check("BAD" not in text, "the source's checks hold after the failures")
    finally:
        await source.close()
        await destination.close()


async def migrate_linux():
    """Debian's kernel with -smp 2 and a disk: the guest script (on the disk) writes a file,
    counts with sleeps while checking a RAM buffer's checksum, writes another file; the machine
    moves mid-count and the script finishes on the destination."""
    kernel, initrd, disk = os.environ["MIGRATE_KERNEL"], os.environ["MIGRATE_INITRD"], os.environ["MIGRATE_DISK"]
    disk_format = os.environ.get("MIGRATE_DISK_FORMAT", "raw")
    program = ["-kernel", kernel, "-initrd", initrd, "-append", "console=ttyS0 quiet swemu.test=/mnt/migrate.sh",
               "-drive", f"file={disk},format={disk_format},if=virtio"]
    sock = os.path.join(WORK, "linux.sock")
    destination = Machine("destination", ["-incoming", f"unix:{sock}"], memory="512M", program=program)
    source = Machine("source", memory="512M", program=program)
    try:
        await source.connect()
        await destination.connect()
        await wait_listening(destination)
        found = await source.wait_counts(30, timeout=240)
        check(bool(found) and found[-1] >= 30, f"the source booted and counts ({found[-1:]})")
        await source.execute("migrate", {"uri": f"unix:{sock}"})
        info = await source.wait_status(("completed", "failed"), timeout=120)
        check(info.get("status") == "completed", f"Linux migrated: {info}")
        print(f"linux migration: total {info.get('total-time')} ms, downtime {info.get('downtime')} ms, "
              f"{info.get('ram', {}).get('transferred', 0) >> 20} MiB sent", flush=True)
        # The source gives the disk up: quitting it now must not write to the image the
        # destination owns (with qcow2, not even the header's dirty bit).
        await source.execute("quit")
        check(source.wait_exit(30) == 0, "the source quits after the switch-over")
        status = destination.wait_exit(240)
        check(status == 0, f"the guest's script finished on the destination and powered off (status {status})")
        _, text = counts(destination.serial)
        check("SWEMU-TEST-EXIT=0" in text, "the guest script's checks hold (SWEMU-TEST-EXIT=0)")
        check_continuity(source, destination, at_least=100)
    finally:
        await source.close()
        await destination.close()


def qemu_img(*args):
    return subprocess.run(["qemu-img", *args], capture_output=True, text=True)


async def hmp(machine, line):
    return await machine.execute("human-monitor-command", {"command-line": line})


async def snapshots():
    """savevm/loadvm/delvm and the QMP snapshot jobs on a qcow2 disk; -loadvm at start."""
    disk = os.path.join(WORK, "disk.qcow2")
    check(qemu_img("create", "-q", "-f", "qcow2", disk, "64M").returncode == 0, "qemu-img creates the disk")
    drive = ["-drive", f"file={disk},if=virtio,format=qcow2"]
    first = Machine("first", drive)
    try:
        await first.connect()
        await first.execute("migrate-set-capabilities", {"capabilities": [{"capability": "events", "state": True}]})
        await first.wait_counts(20)
        await first.execute("stop")
        # The stopped guest prints nothing more; wait until its output has all reached the file.
        # It may have stopped mid-line ("count 2" of "count 22"): the rest of that line comes
        # out after each rewind to this point, so the first whole count after it is one more.
        text = None
        while text != (text := counts(first.serial)[1]):
            await asyncio.sleep(0.1)
        saved_at = counts(first.serial)[0][-1]
        first_after = saved_at + (1 if text.endswith("\n") else 2)
        check(await hmp(first, "savevm one") == "", "savevm one")
        await first.execute("cont")
        await first.wait_counts(saved_at + 50)
        listing = await hmp(first, "info snapshots")
        check("List of snapshots present on all disks:" in listing and "one" in listing and "MiB" in listing,
              f"info snapshots lists it with its VM size: {listing!r}")
        # loadvm in the running machine goes back to the saved point.
        before = len(counts(first.serial)[0])
        check(await hmp(first, "loadvm one") == "", "loadvm one")
        await first.wait_counts(0)
        for _ in range(200):
            after = counts(first.serial)[0]
            if len(after) > before + 5:
                break
            await asyncio.sleep(0.02)
        # Counts printed between the look above and the load come first; then the rewind.
        resumed = counts(first.serial)[0][before:]
        while resumed and resumed[0] > first_after:
            resumed = resumed[1:]
        check(bool(resumed) and resumed[:3] == [first_after, first_after + 1, first_after + 2],
              f"after loadvm the counts go on from the snapshot ({saved_at} then {counts(first.serial)[0][before:before + 4]})")
        check(await hmp(first, "loadvm nope") == "Error: Snapshot 'nope' does not exist in device 'virtio0'\r\n",
              "loadvm of an unknown snapshot says so")

        # The QMP jobs, with QEMU's JOB_STATUS_CHANGE sequence.
        statuses = []

        async def watch():
            async for event in first.qmp.events:
                if event["event"] == "JOB_STATUS_CHANGE":
                    statuses.append(event["data"]["status"])
                    if event["data"]["status"] == "concluded":
                        return
        watcher = asyncio.create_task(watch())
        await first.execute("snapshot-save", {"job-id": "s2", "tag": "two", "vmstate": "virtio0", "devices": ["virtio0"]})
        await asyncio.wait_for(watcher, 60)
        check(statuses == ["created", "running", "waiting", "pending", "concluded"], f"snapshot-save job events: {statuses}")
        jobs = await first.execute("query-jobs")
        check(jobs == [{"id": "s2", "type": "snapshot-save", "status": "concluded", "current-progress": 1, "total-progress": 1}],
              f"query-jobs: {jobs}")
        await first.execute("job-dismiss", {"id": "s2"})
        check(await first.execute("query-jobs") == [], "job-dismiss removes it")
        statuses.clear()
        watcher = asyncio.create_task(watch())
        await first.execute("snapshot-load", {"job-id": "l1", "tag": "nope", "vmstate": "virtio0", "devices": ["virtio0"]})
        await asyncio.wait_for(watcher, 60)
        jobs = await first.execute("query-jobs")
        check(statuses[-2:] == ["aborting", "concluded"] and "does not exist" in jobs[0].get("error", ""),
              f"a failing job aborts with its error: {statuses} {jobs}")
    finally:
        await first.close()
    listing = qemu_img("snapshot", "-l", disk).stdout
    check(re.search(r"\bone\s+\d+(\.\d+)? MiB", listing) is not None and "two" in listing,
          f"qemu-img snapshot -l shows both with their VM size: {listing}")
    checked = qemu_img("check", disk)
    check(checked.returncode == 0, f"qemu-img check is clean: {checked.stdout}{checked.stderr}")

    # -loadvm at start: the counts go on from the snapshot.
    second = Machine("second", [*drive, "-loadvm", "one"])
    try:
        await second.connect()
        found = await second.wait_counts(saved_at + 40)
        check(bool(found) and found[0] == first_after, f"-loadvm one starts at count {first_after} ({found[:2]})")
        check(found == list(range(found[0], found[0] + len(found))), "and counts on one by one")
        _, text = counts(second.serial)
        check("BAD" not in text and "clock jumped" not in text, "the guest's checks hold after -loadvm")
        check(await hmp(second, "delvm two") == "", "delvm two")
        check("two" not in qemu_img("snapshot", "-l", "-U", disk).stdout, "delvm removed it from the image")
    finally:
        await second.close()
    bad = Machine("bad", [*drive, "-loadvm", "missing"])
    status = bad.wait_exit(60)
    check(status == 1 and "does not exist" in bad.error_text(), f"-loadvm of a missing snapshot ends with 1 and says why: {status} {bad.error_text()!r}")
    await bad.close()
    # A disk-only snapshot (qemu-img's) has no machine to load.
    qemu_img("snapshot", "-c", "diskonly", disk)
    bad = Machine("diskonly", [*drive, "-loadvm", "diskonly"])
    status = bad.wait_exit(60)
    check(status == 1 and "no VM state" in bad.error_text(), f"a disk-only snapshot is refused: {bad.error_text()!r}")
    await bad.close()
    # A writable raw disk cannot follow the machine back: savevm refuses, as QEMU does.
    raw = os.path.join(WORK, "disk.raw")
    with open(raw, "wb") as f:
        f.truncate(1 << 20)
    third = Machine("third", [*drive, "-drive", f"file={raw},if=virtio,format=raw"])
    try:
        await third.connect()
        answer = await hmp(third, "savevm x")
        check("Device 'virtio1' is writable but does not support snapshots" in answer, f"savevm with a raw disk: {answer!r}")
    finally:
        await third.close()


async def main():
    if SCENARIO == "unix":
        sock = os.path.join(WORK, "migrate.sock")
        await migrate_live(f"unix:{sock}", f"unix:{sock}")
    elif SCENARIO == "tcp":
        port = free_port()
        await migrate_live(f"tcp:127.0.0.1:{port}", f"tcp:127.0.0.1:{port}", smp="1")
    elif SCENARIO == "file":
        path = os.path.join(WORK, "machine.state")
        await migrate_through((f"file:{path}", f"file:{path}"))
    elif SCENARIO == "exec":
        path = os.path.join(WORK, "machine.state.gz")
        await migrate_through((f"exec:gzip -c > {path}", f"exec:gzip -dc {path}"))
    elif SCENARIO == "defer":
        sock = os.path.join(WORK, "defer.sock")
        destination = Machine("destination", ["-incoming", "defer"])
        source = Machine("source")
        try:
            await destination.connect()
            await source.connect()
            await destination.execute("migrate-incoming", {"uri": f"unix:{sock}"})
            await source.wait_counts(20)
            await wait_listening(destination)
            await source.execute("migrate", {"uri": f"unix:{sock}"})
            info = await source.wait_status(("completed", "failed"))
            check(info.get("status") == "completed", f"-incoming defer + migrate-incoming: {info}")
            await destination.wait_counts(counts(source.serial)[0][-1] + 60)
            check_continuity(source, destination)
        finally:
            await source.close()
            await destination.close()
    elif SCENARIO == "faults":
        await faults()
    elif SCENARIO == "snapshots":
        await snapshots()
    elif SCENARIO == "linux":
        await migrate_linux()
    else:
        check(False, f"unknown scenario {SCENARIO}")
    sys.exit(1 if failures else 0)


asyncio.run(main())
