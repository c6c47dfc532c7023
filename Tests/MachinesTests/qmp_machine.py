"""Drives a running swemu (the ticker guest program) with QEMU's own Python QMP client.

Usage: qmp_machine.py SOCKET SERIAL_LOG [signal PID | no-shutdown LINE | probe]. Prints one line per check ("ok ..." or
"FAIL ...") and exits non-zero when a check fails. Run by MachinesTests/MonitorTests. With
`signal PID` it only sends SIGTERM to swemu (PID) once the guest prints and checks that the
machine ends as QEMU's does: a SHUTDOWN event with reason host-signal.
"""
import asyncio
import re
import os
import signal
import sys

from qemu.qmp import QMPClient

failures = []


def check(condition, what):
    print(("ok " if condition else "FAIL ") + what, flush=True)
    if not condition:
        failures.append(what)


def ticks(path):
    with open(path, "rb") as f:
        return f.read().count(b"tick ")


async def next_event(qmp, name, timeout=10):
    async def wait():
        async for event in qmp.events:
            if event["event"] == name:
                return event
    return await asyncio.wait_for(wait(), timeout)


async def connect(socket):
    """A QMP client connected to swemu's socket (it may not be listening yet)."""
    qmp = QMPClient("swemu-test")
    for _ in range(100):
        try:
            await qmp.connect(socket)
            break
        except (OSError, ConnectionError):
            await asyncio.sleep(0.1)
    return qmp


async def disconnect(qmp):
    try:
        await qmp.disconnect()
    except EOFError:
        pass  # the machine quit and hung up first, as QEMU does after 'quit'


async def main(socket, serial):
    qmp = await connect(socket)
    check(qmp.greeting is not None, "greeting and negotiation")
    status = await qmp.execute("query-status")
    check(status["status"] == "running" and status["running"], f"query-status running: {status}")
    check((await qmp.execute("query-name")) == {"name": "ticker"}, "query-name")
    cpus = await qmp.execute("query-cpus-fast")
    # -smp 2: one entry per hart, each with its own host thread.
    check(len(cpus) == 2 and all(c["target"] == "riscv64" for c in cpus) and [c["cpu-index"] for c in cpus] == [0, 1]
          and cpus[0]["thread-id"] != cpus[1]["thread-id"], f"query-cpus-fast: {cpus}")
    machines = await qmp.execute("query-machines")
    check(any(m["name"] == "virt" for m in machines), "query-machines lists virt")
    commands = {c["name"] for c in await qmp.execute("query-commands")}
    check({"stop", "cont", "quit", "system_reset", "human-monitor-command"} <= commands, "query-commands")
    check("qemu" in (await qmp.execute("query-version")), "query-version")
    check(isinstance(await qmp.execute("query-chardev"), list), "query-chardev")
    check(isinstance(await qmp.execute("query-block"), list), "query-block")

    # The guest prints; stop freezes it, cont resumes it.
    for _ in range(100):
        if ticks(serial) >= 5:
            break
        await asyncio.sleep(0.05)
    check(ticks(serial) >= 5, "the guest is printing")
    await qmp.execute("stop")
    await next_event(qmp, "STOP")
    check((await qmp.execute("query-status"))["status"] == "paused", "query-status paused")
    frozen = ticks(serial)
    await asyncio.sleep(0.8)
    check(ticks(serial) == frozen, f"no output while stopped ({frozen} -> {ticks(serial)})")
    registers = await qmp.execute("human-monitor-command", {"command-line": "info registers"})
    check(" pc " in registers and "mhartid  0000000000000000" in registers, "human-monitor-command info registers")
    second = await qmp.execute("human-monitor-command", {"command-line": "info registers", "cpu-index": 1})
    check("mhartid  0000000000000001" in second, "info registers of cpu-index 1")
    dump = await qmp.execute("human-monitor-command", {"command-line": "xp /2xw 0x80000000"})
    check(dump.startswith("0000000080000000:"), f"xp: {dump!r}")
    # The JIT (the default accelerator) reports per hart what it translated and how fast.
    jit = await qmp.execute("human-monitor-command", {"command-line": "info jit"})
    blocks = re.search(r"Translation buffer state, hart 0:\s.*?TB count +(\d+)", jit, re.S)
    check(blocks is not None and int(blocks.group(1)) > 0 and "Translation buffer state, hart 1:" in jit, f"info jit: {jit!r}")
    rate = re.search(r"translation time +([0-9.]+) ms, ([0-9.]+) M guest instructions/s", jit)
    check(rate is not None and float(rate.group(2)) > 0, f"info jit translation time: {jit!r}")
    await qmp.execute("cont")
    await next_event(qmp, "RESUME")
    for _ in range(100):
        if ticks(serial) > frozen + 3:
            break
        await asyncio.sleep(0.05)
    check(ticks(serial) > frozen + 3, "output resumes after cont")
    with open(serial, "rb") as f:
        check(b"clock jumped" not in f.read(), "guest time did not jump over the stop")

    # Bad input keeps the monitor serving.
    try:
        await qmp.execute("no-such-command")
        check(False, "unknown command refused")
    except Exception as error:  # qemu.qmp raises ExecuteError
        check("CommandNotFound" in str(getattr(error, "error_class", "")) or "not been found" in str(error),
              f"unknown command refused: {error}")
    check((await qmp.execute("query-status"))["running"], "still serving after an error")

    await qmp.execute("system_reset")
    event = await next_event(qmp, "RESET")
    check(event["data"]["guest"] is False, f"RESET event: {event}")
    # virt has no power button the guest sees (QEMU's neither): the event has no data and the
    # guest runs on, still printing.
    await qmp.execute("system_powerdown")
    event = await next_event(qmp, "POWERDOWN")
    check(event["event"] == "POWERDOWN" and "data" not in event and set(event["timestamp"]) == {"seconds", "microseconds"},
          f"POWERDOWN event: {event}")
    status = await qmp.execute("query-status")
    check(status["status"] == "running" and status["running"], f"still running after system_powerdown: {status}")
    await qmp.execute("quit")
    event = await next_event(qmp, "SHUTDOWN")
    check(event["data"] == {"guest": False, "reason": "host-qmp-quit"}, f"SHUTDOWN event: {event}")
    await disconnect(qmp)


async def terminate(socket, serial, pid):
    qmp = await connect(socket)
    for _ in range(100):
        if ticks(serial) >= 3:
            break
        await asyncio.sleep(0.05)
    check(ticks(serial) >= 3, "the guest is printing")
    print(f"ok sender pid {os.getpid()}", flush=True)
    os.kill(pid, signal.SIGTERM)
    event = await next_event(qmp, "SHUTDOWN")
    check(event["data"] == {"guest": False, "reason": "host-signal"}, f"SHUTDOWN event: {event}")
    await disconnect(qmp)


async def no_shutdown(socket, serial, line):
    """-S -no-shutdown with a program that prints `line` and powers off: the machine
    stops in "shutdown" (SHUTDOWN, then STOP) instead of ending; cont is refused until
    system_reset, after which it starts over (prelaunch, cont) and powers off again."""
    qmp = await connect(socket)
    for run in (1, 2):
        status = await qmp.execute("query-status")
        check(status["status"] == "prelaunch", f"run {run}: stopped before it starts: {status}")
        await qmp.execute("cont")
        event = await next_event(qmp, "SHUTDOWN")
        check(event["data"] == {"guest": True, "reason": "guest-shutdown"}, f"run {run}: SHUTDOWN event: {event}")
        await next_event(qmp, "STOP")
        status = await qmp.execute("query-status")
        check(status == {"status": "shutdown", "singlestep": False, "running": False}, f"run {run}: stopped in shutdown: {status}")
        # The line may still be on its way to the file (the chardev writes it on its own thread).
        for _ in range(500):
            with open(serial, "rb") as f:
                printed = f.read().count(line)
            if printed >= run:
                break
            await asyncio.sleep(0.02)
        check(printed == run, f"run {run}: the guest ran {run} time(s)")
        try:
            await qmp.execute("cont")
            check(False, "cont after a guest power-off is refused")
        except Exception as error:
            check("Resetting the Virtual Machine is required" in str(error), f"cont is refused as QEMU's: {error}")
        answer = await qmp.execute("human-monitor-command", {"command-line": "cont"})
        check(answer == "Error: Resetting the Virtual Machine is required\r\n", f"HMP cont too: {answer!r}")
        await qmp.execute("system_reset")
        await next_event(qmp, "RESET")
    await qmp.execute("quit")
    await disconnect(qmp)


async def probe(socket):
    """The machine libvirt starts to learn what the emulator can do (-S -no-user-config
    -nodefaults -nographic -machine none,accel=kvm:tcg -qmp ... -pidfile ... -daemonize):
    its monitor answers as QEMU's does for a machine with no CPU, and quit ends it."""
    qmp = await connect(socket)
    status = await qmp.execute("query-status")
    check(status == {"status": "prelaunch", "singlestep": False, "running": False}, f"query-status: {status}")
    check(await qmp.execute("query-target") == {"arch": "riscv64"}, "query-target names the binary's target")
    check(await qmp.execute("query-kvm") == {"enabled": False, "present": False}, "query-kvm: no KVM for riscv64 here")
    check(await qmp.execute("query-uuid") == {"UUID": "00000000-0000-0000-0000-000000000000"}, "query-uuid: QEMU's null UUID")
    check(await qmp.execute("query-cpus-fast") == [], "no CPUs")
    machines = {m["name"]: m for m in await qmp.execute("query-machines")}
    check(machines.get("virt", {}).get("is-default") is True and machines["virt"].get("cpu-max") == 64, f"query-machines: {machines}")
    await qmp.execute("cont")
    await next_event(qmp, "RESUME")
    check((await qmp.execute("query-status"))["status"] == "running", "cont runs it")
    await qmp.execute("quit")
    event = await next_event(qmp, "SHUTDOWN")
    check(event["data"] == {"guest": False, "reason": "host-qmp-quit"}, f"SHUTDOWN: {event}")
    await disconnect(qmp)


if len(sys.argv) > 3 and sys.argv[3] == "probe":
    asyncio.run(probe(sys.argv[1]))
elif len(sys.argv) > 3 and sys.argv[3] == "no-shutdown":
    asyncio.run(no_shutdown(sys.argv[1], sys.argv[2], sys.argv[4].encode()))
elif len(sys.argv) > 4 and sys.argv[3] == "signal":
    asyncio.run(terminate(sys.argv[1], sys.argv[2], int(sys.argv[4])))
else:
    asyncio.run(main(sys.argv[1], sys.argv[2]))
sys.exit(1 if failures else 0)
