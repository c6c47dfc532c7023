"""What the migration test scripts share (Tests/MachinesTests/migration_machine.py for the
RISC-V machines, Tests/KVMTests/kvm_migration.py for the KVM microvm): a swemu process with
its QMP socket (driven by QEMU's own qemu.qmp client) and serial log, the migrate_counter
guest's output ("count N" every 10 ms of guest time), and the checks, printed as "ok ..." or
"FAIL ..." lines.
"""
import asyncio
import os
import re
import socket
import subprocess

from qemu.qmp import QMPClient

failures = []


def check(condition, what):
    print(("ok " if condition else "FAIL ") + what, flush=True)
    if not condition:
        failures.append(what)


COUNT_LINE = re.compile(r"^count (\d+)\r?\n", re.M)


def counts(path):
    """The counts in a serial log (whole lines only: the last may be cut by a switch-over),
    and the log's text."""
    try:
        with open(path, "rb") as f:
            text = f.read().decode(errors="replace")
    except FileNotFoundError:
        return [], ""
    return [int(n) for n in COUNT_LINE.findall(text)], text


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Machine:
    """A swemu process: `command` (the binary, machine and program) plus the common options,
    with its QMP socket and serial log in `work`."""

    def __init__(self, work, name, command, extra=(), smp="2", memory="128M"):
        self.name = name
        self.qmp_path = os.path.join(work, f"{name}.qmp")
        self.serial = os.path.join(work, f"{name}.serial")
        self.stderr_path = os.path.join(work, f"{name}.stderr")
        args = [*command, "-smp", smp, "-m", memory, "-display", "none",
                "-serial", f"file:{self.serial}", "-qmp", f"unix:{self.qmp_path},server=on,wait=off", *extra]
        self.stderr = open(self.stderr_path, "wb")
        self.process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self.stderr)
        self.qmp = None

    async def connect(self):
        for _ in range(400):
            self.qmp = QMPClient(self.name)
            try:
                await self.qmp.connect(self.qmp_path)
                return
            except Exception:
                if self.process.poll() is not None:
                    raise RuntimeError(f"{self.name} ended: {self.error_text()}")
                await asyncio.sleep(0.05)
        raise RuntimeError(f"cannot connect to {self.name}'s QMP")

    async def execute(self, command, arguments=None):
        return await self.qmp.execute(command, arguments)

    async def hmp(self, line):
        return await self.execute("human-monitor-command", {"command-line": line})

    async def wait_counts(self, at_least, timeout=60):
        for _ in range(int(timeout / 0.02)):
            found, _ = counts(self.serial)
            if found and found[-1] >= at_least:
                return found
            await asyncio.sleep(0.02)
        return counts(self.serial)[0]

    async def wait_status(self, wanted, timeout=120, passes=0):
        """query-migrate once its status is one of `wanted` after at least `passes` passes."""
        status = None
        for _ in range(int(timeout / 0.02)):
            status = await self.execute("query-migrate")
            if status.get("status") in wanted and status.get("ram", {}).get("dirty-sync-count", 0) >= passes:
                return status
            await asyncio.sleep(0.02)
        return status

    def ended(self):
        """True (and a FAIL with its log) when the process has ended."""
        if self.process.poll() is None:
            return False
        check(False, f"{self.name} ended with status {self.process.returncode}: {self.error_text().strip()[-400:]!r}; "
                     f"serial: {counts(self.serial)[1][-300:]!r}")
        return True

    def error_text(self):
        with open(self.stderr_path, "rb") as f:
            return f.read().decode(errors="replace")

    def wait_exit(self, timeout=60):
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    async def close(self):
        if self.qmp is not None:
            try:
                await self.qmp.disconnect()
            except Exception:
                pass
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.stderr.close()


async def serial_line(machine, marker, timeout):
    """The first serial line holding `marker`, once the guest printed it (None on timeout;
    timeout 0 looks once)."""
    for _ in range(max(1, int(timeout / 0.1))):
        with open(machine.serial, "rb") as f:
            for line in f.read().decode(errors="replace").splitlines():
                if marker in line:
                    return line
        if machine.process.poll() is not None:
            return None
        await asyncio.sleep(0.1)
    return None


async def wait_listening(destination, timeout=30):
    """Waits until an -incoming destination listens (its query-migrate says "setup")."""
    for _ in range(int(timeout / 0.02)):
        if (await destination.execute("query-migrate")).get("status") in ("setup", "active"):
            return
        await asyncio.sleep(0.02)


def check_continuity(source, destination, at_least=40, clock_may_jump=False):
    """One output, as if nothing had happened: the destination's counts start right after the
    source's last and go on one by one. A line the switch-over cut ("count " printed by the
    source, the number by the destination) is finished by the destination, so the two logs are
    read as one."""
    before, source_text = counts(source.serial)
    _, destination_text = counts(destination.serial)
    whole = [int(n) for n in COUNT_LINE.findall(source_text + destination_text)]
    after = whole[len(before):]
    check(bool(before) and bool(after), f"both sides printed counts (source up to {before[-1:]}, destination {after[:1]}..{after[-1:]})")
    if before and after:
        check(after[0] == before[-1] + 1, f"no gap, no repeat: source ended at {before[-1]}, destination began at {after[0]}")
        check(whole == list(range(whole[0], whole[0] + len(whole))), "the counts go up one by one, source then destination")
        check(len(after) >= at_least, f"the destination's timers keep firing ({len(after)} counts)")
    check("migrate_counter start" not in destination_text, "the destination did not start the program again")
    for text, side in ((source_text, "source"), (destination_text, "destination")):
        if clock_may_jump:
            text = text.replace("clock jumped", "")
        check("BAD" not in text and "clock jumped" not in text and "stalled" not in text,
              f"{side}: the guest's checks hold (buffer checksums, state, clock, other harts): "
              + repr([line for line in text.splitlines() if "BAD" in line or "clock" in line or "stalled" in line][:4]))


def timing(what, info):
    ram = info.get("ram", {})
    print(f"timing {what}: total {info.get('total-time')} ms, downtime {info.get('downtime')} ms, "
          f"setup {info.get('setup-time')} ms, {ram.get('dirty-sync-count')} passes, "
          f"{ram.get('transferred', 0) / 2**20:.1f} MiB sent, {ram.get('normal')} normal + {ram.get('duplicate')} zero pages",
          flush=True)
