"""One scripted QMP/HMP session, run against swemu and against QEMU, replies compared.

Usage: monitor_interop.py SWEMU QEMU KERNEL WORKDIR

Both emulators start with the same options (-M virt -bios none -kernel KERNEL -smp 2 -S
-serial none ...: a bare-metal guest that waits in a wfi loop) and a QMP socket; QEMU's own
`qemu.qmp` client drives the same session through each, and every step's reply and events
are compared. By default a step must be identical after `normalize` (thread ids and the
socket path, which differ by nature). Steps where swemu is allowed to differ are listed in
ALLOWED, each with the reason and the weaker check that still applies. Prints one line per
step ("ok", "allowed", or "FAIL" with both replies) and exits non-zero on any FAIL. Run by
MachinesTests/MonitorInteropTests.swift.
"""
import asyncio
import json
import os
import re
import subprocess
import sys

from qemu.qmp import QMPClient
from qemu.qmp.protocol import ConnectError
from qemu.qmp.qmp_client import ExecuteError

# -- the session ---------------------------------------------------------------------------

# (label, command, arguments, events the step must raise). "hmp:LINE" is
# human-monitor-command with that command line.
SESSION = [
    ("query-status at -S", "query-status", None, []),
    ("hmp info status at -S", "hmp:info status", None, []),
    ("query-version", "query-version", None, []),
    ("query-target", "query-target", None, []),
    ("query-kvm", "query-kvm", None, []),
    ("query-name", "query-name", None, []),
    ("query-cpus-fast", "query-cpus-fast", None, []),
    ("query-commands", "query-commands", None, []),
    ("query-machines", "query-machines", None, []),
    ("query-chardev", "query-chardev", None, []),
    ("query-block", "query-block", None, []),
    ("stop at -S (no event)", "stop", None, []),
    ("query-status after stop at -S", "query-status", None, []),
    ("cont", "cont", None, ["RESUME"]),
    ("query-status running", "query-status", None, []),
    ("hmp info status running", "hmp:info status", None, []),
    ("stop", "stop", None, ["STOP"]),
    ("query-status paused", "query-status", None, []),
    ("hmp info status paused", "hmp:info status", None, []),
    ("hmp info registers", "hmp:info registers", None, []),
    ("hmp info registers cpu-index 1", "human-monitor-command", {"command-line": "info registers", "cpu-index": 1}, []),
    ("hmp info registers -a", "hmp:info registers -a", None, []),
    ("hmp info cpus", "hmp:info cpus", None, []),
    ("hmp info name", "hmp:info name", None, []),
    ("hmp info chardev", "hmp:info chardev", None, []),
    ("hmp info block", "hmp:info block", None, []),
    ("hmp info version", "hmp:info version", None, []),
    ("hmp info mtree", "hmp:info mtree", None, []),
    ("hmp info qtree", "hmp:info qtree", None, []),
    ("hmp xp /2xw", "hmp:xp /2xw 0x80000000", None, []),
    ("hmp x /2i", "hmp:x /2i 0x80000000", None, []),
    ("hmp cpu 7", "hmp:cpu 7", None, []),
    ("hmp unknown command", "hmp:nosuch", None, []),
    ("hmp unknown info", "hmp:info nosuch", None, []),
    ("hmp extraneous characters", "hmp:stop now", None, []),
    ("hmp info extraneous characters", "hmp:info status now", None, []),
    ("unknown command", "no-such-command", None, []),
    ("unexpected argument", "query-status", {"verbose": True}, []),
    ("missing argument", "human-monitor-command", {}, []),
    ("argument of the wrong type", "human-monitor-command", {"command-line": 1}, []),
    ("cpu-index out of range", "human-monitor-command", {"command-line": "info registers", "cpu-index": 7}, []),
    ("qmp_capabilities again", "qmp_capabilities", None, []),
    ("system_reset while paused", "system_reset", None, ["RESET"]),
    ("query-status after reset while paused", "query-status", None, []),
    ("cont after reset", "cont", None, ["RESUME"]),
    ("system_reset running", "system_reset", None, ["RESET"]),
    ("query-status after reset", "query-status", None, []),
    ("system_powerdown", "system_powerdown", None, ["POWERDOWN"]),
    ("query-status after powerdown", "query-status", None, []),
    ("quit", "quit", None, ["SHUTDOWN"]),
]

# -- what may differ, and why ---------------------------------------------------------------


def same_shape(a, b):
    """Same JSON types and object keys, recursively (lists: element by element)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_shape(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same_shape(x, y) for x, y in zip(a, b))
    return type(a) is type(b)


def version_shape(qemu, swemu):
    return same_shape(qemu, swemu) and swemu["reply"]["return"]["qemu"]["major"] == 7 \
        and swemu["reply"]["return"]["qemu"]["minor"] == 2


def commands_subset(qemu, swemu):
    names = lambda step: {c["name"] for c in step["reply"]["return"]}
    return names(swemu) <= names(qemu) and qemu["events"] == swemu["events"]


def machines_subset(qemu, swemu):
    theirs = {m["name"]: m for m in qemu["reply"]["return"]}
    for machine in swemu["reply"]["return"]:
        other = theirs.get(machine["name"])
        # is-default: swemu's default machine is virt, QEMU's spike.
        if other is None or not machine.keys() - {"is-default"} <= other.keys():
            return False
        if any(machine.get(k) != other.get(k) for k in ("hotpluggable-cpus", "deprecated")):
            return False
    # The default machine of swemu-system-riscv64 is virt, QEMU's spike: compare where both say.
    return any(m["name"] == "virt" for m in swemu["reply"]["return"])


REGISTER = re.compile(r" ([a-z0-9/]+) +([0-9a-f]{16})")
# QEMU 7.2's default rv64 CPU has the H extension; swemu's hart has none, so these lines
# (riscv_cpu_dump_state prints only CSRs the hart has) are QEMU's alone.
H_EXTENSION = {"V", "hstatus", "vsstatus", "hideleg", "hedeleg", "vstvec", "vsepc", "vscause", "htval", "mtval2"}


def register_layout(text):
    """The dump with every value blanked and the H-extension lines dropped."""
    lines = []
    for line in text.split("\r\n"):
        words = line.split()
        if words and words[0] in H_EXTENSION:
            continue
        lines.append(REGISTER.sub(lambda m: " " + m.group(1).ljust(len(m.group(0)) - 18) + " " + "h" * 16, line))
    return lines


def registers_layout(qemu, swemu):
    return register_layout(qemu["reply"]["return"]) == register_layout(swemu["reply"]["return"])


MTREE_REGION = re.compile(r"^ +([0-9a-f]{16})-([0-9a-f]{16}) \(prio -?\d+, [a-z/]+\): \S.*$")


def mtree_sections(text):
    sections, current = {}, None
    for line in text.split("\r\n"):
        if line.startswith("address-space: ") or line.startswith("memory-region: "):
            current = sections.setdefault(line, [])
        elif line.strip() and current is not None:
            current.append(line)
    return sections


def mtree_subset(qemu, swemu):
    """Every swemu heading is one of QEMU's; every region line has QEMU's layout and starts
    where one of QEMU's regions in the same address space starts."""
    ours, theirs = mtree_sections(swemu["reply"]["return"]), mtree_sections(qemu["reply"]["return"])
    if "address-space: memory" not in ours:
        return False
    for heading, lines in ours.items():
        if heading not in theirs:
            return False
        bases = {m.group(1) for m in map(MTREE_REGION.match, theirs[heading]) if m}
        for line in lines:
            m = MTREE_REGION.match(line)
            if m is None or m.group(1) not in bases:
                return False
    return True


QTREE_LINE = re.compile(r"^( *)(bus: \S+|type \S+|dev: \S+, id \"[^\"]*\"|mmio [0-9a-f]{16}/[0-9a-f]{16}"
                        r"|gpio-(in|out) .*|\S+ = .*)$")


def qtree_layout(qemu, swemu):
    """Both start with the main system bus and every swemu line is one of QEMU's kinds of
    line (bus, type, dev, mmio, gpio, property) at an even indent."""
    ours, theirs = swemu["reply"]["return"].split("\r\n"), qemu["reply"]["return"].split("\r\n")
    if ours[:2] != theirs[:2]:
        return False
    for line in ours:
        if line and (not QTREE_LINE.match(line) or len(QTREE_LINE.match(line).group(1)) % 2):
            return False
    return True


def list_subset(qemu, swemu):
    """swemu's entries are some of QEMU's."""
    return all(entry in qemu["reply"]["return"] for entry in swemu["reply"]["return"])


def paragraphs_subset(qemu, swemu):
    """swemu's lines (info chardev) or blank-line-separated paragraphs (info block) are some
    of QEMU's."""
    split = lambda text: [p for p in re.split(r"\r\n(?:\r\n)?(?=\S)", text.rstrip("\r\n")) if p]
    theirs = split(qemu["reply"]["return"])
    return all(p in theirs for p in split(swemu["reply"]["return"]))


def hmp_text_kind(pattern):
    def check(qemu, swemu):
        return all(re.fullmatch(pattern, step["reply"]["return"], re.S) for step in (qemu, swemu))
    return check


def greeting_shape(qemu, swemu):
    return same_shape(qemu, swemu) and qemu["reply"]["QMP"]["capabilities"] == swemu["reply"]["QMP"]["capabilities"]


# label -> (reason, the check that still applies)
ALLOWED = {
    "greeting": ("the version numbers and package string are each build's own (swemu follows 7.2.0 and names "
                 "itself in 'package'); keys, types and capabilities must match", greeting_shape),
    "query-version": ("version numbers and package differ by build; the shape must match and swemu say 7.2",
                      version_shape),
    "query-commands": ("swemu implements a subset of QEMU's commands; every one it lists must be QEMU's", commands_subset),
    "query-machines": ("swemu has fewer machines (virt, spike, none), omits default-cpu-type/default-ram-id (it takes "
                       "no -cpu or memory-backend, so libvirt must not be told to pass them), reports its own cpu-max "
                       "and numa-mem-supported=false (no -numa), and its default machine is virt (QEMU's is spike); "
                       "names must be QEMU's and keys a subset", machines_subset),
    "hmp info registers": ("QEMU's default CPU has the H extension and prints its CSRs; swemu has none. The rest of "
                           "the layout (CPU#n header, pc, CSRs, x0/zero.., f0/ft0..) must match, values aside",
                           registers_layout),
    "hmp info registers cpu-index 1": ("as 'hmp info registers'", registers_layout),
    "hmp info registers -a": ("as 'hmp info registers'", registers_layout),
    "query-chardev": ("QEMU adds a default parallel port chardev (parallel0, 'vc') that virt has no device for, "
                      "so it is never open; swemu has none. swemu's chardevs must be QEMU's", list_subset),
    "hmp info chardev": ("as query-chardev", paragraphs_subset),
    "query-block": ("QEMU creates its default empty drives (none2, floppy0, sd0) although virt has no controller "
                    "for them; swemu does not. swemu's drives must be QEMU's", list_subset),
    "hmp info block": ("as query-block", paragraphs_subset),
    "hmp info version": ("Debian's QEMU prints its package string glued to the version ('7.2.22Debian 1:7.2+dfsg-7...'); "
                         "swemu prints '7.2.0 (swemu 0.1.0)'", hmp_text_kind(r"7\.2\.\d+.*\r\n")),
    "hmp info mtree": ("swemu models fewer devices (no PCIe host, fw_cfg, flash, virtio-mmio slots without a device, "
                       "platform bus, I/O space, per-CPU address spaces) and names and sizes its regions its own way; "
                       "every swemu region must start where one of QEMU's starts, in a section QEMU has",
                       mtree_subset),
    "hmp info qtree": ("swemu models fewer devices and properties (as info mtree); the layout must be QEMU's",
                       qtree_layout),
    "hmp x /2i": ("swemu disassembles in GNU objdump's syntax, as its -d in_asm does; QEMU's monitor prints the "
                  "encoding and its own disassembler's text; both must list two lines at the address",
                  hmp_text_kind(r"0x0000000080000000: .*\r\n0x0000000080000004: .*\r\n")),
}

# -- running one emulator ---------------------------------------------------------------------


def normalize(value, socket):
    """Thread ids and the socket path differ by nature."""
    if isinstance(value, dict):
        return {k: ("<thread-id>" if k == "thread-id" else normalize(v, socket)) for k, v in value.items()}
    if isinstance(value, list):
        return [normalize(v, socket) for v in value]
    if isinstance(value, str):
        return re.sub(r"thread_id=\d+", "thread_id=<n>", value.replace(socket, "<socket>"))
    return value


def event_record(event):
    """Name and data; the timestamp only as its shape."""
    stamp = event.get("timestamp", {})
    shape_ok = set(stamp) == {"seconds", "microseconds"} and all(isinstance(v, int) for v in stamp.values())
    record = {"event": event["event"], "timestamp-shape-ok": shape_ok}
    if "data" in event:
        record["data"] = event["data"]
    return record


async def next_events(qmp, names, timeout=30):
    """Waits for the events `names` (in any order) and takes any others that came with them."""
    got = []

    async def wait():
        while not all(any(e["event"] == n for e in got) for n in names):
            got.append(dict(await qmp.events.get()))
    await asyncio.wait_for(wait(), timeout)
    await asyncio.sleep(0.2)
    while not qmp.events.empty():
        got.append(dict(await qmp.events.get()))
    return got


async def session(binary, kernel, directory):
    os.makedirs(directory, exist_ok=True)
    socket = os.path.join(directory, "qmp.sock")
    if os.path.exists(socket):
        os.unlink(socket)
    process = subprocess.Popen([binary, "-M", "virt", "-bios", "none", "-kernel", kernel, "-m", "128M", "-smp", "2",
                                "-serial", "none", "-display", "none", "-S", "-name", "interop",
                                "-qmp", f"unix:{socket},server=on,wait=off"],
                               stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    steps = {}
    try:
        qmp = QMPClient("interop")
        for _ in range(300):
            try:
                await qmp.connect(socket)
                break
            except (OSError, ConnectionError, ConnectError):
                if process.poll() is not None:
                    raise RuntimeError(f"{binary} exited: {process.stdout.read().decode(errors='replace')}")
                await asyncio.sleep(0.1)
        steps["greeting"] = {"reply": qmp.greeting._asdict(), "events": []}
        for label, command, arguments, expected in SESSION:
            if command.startswith("hmp:"):
                command, arguments = "human-monitor-command", {"command-line": command[4:]}
            try:
                reply = {"return": await qmp.execute(command, arguments)}
            except ExecuteError as error:
                reply = {"error": dict(error.received["error"])}
            events = await next_events(qmp, expected) if expected else []
            if not expected:
                await asyncio.sleep(0.05)
                while not qmp.events.empty():
                    events.append(dict(await qmp.events.get()))
            steps[label] = {"reply": normalize(reply, socket), "events": [event_record(e) for e in events]}
        try:
            await qmp.disconnect()
        except EOFError:
            pass  # it quit and hung up first, as after 'quit'
        steps["exit status"] = {"reply": process.wait(timeout=60), "events": []}
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return steps


def main(swemu_binary, qemu_binary, kernel, workdir):
    qemu = asyncio.run(session(qemu_binary, kernel, os.path.join(workdir, "qemu")))
    swemu = asyncio.run(session(swemu_binary, kernel, os.path.join(workdir, "swemu")))
    failures = 0
    for label in qemu:
        theirs, ours = qemu[label], swemu.get(label)
        if label in ALLOWED:
            reason, check = ALLOWED[label]
            good = ours is not None and check(theirs, ours)
            # Events are never among the allowed differences.
            good = good and theirs["events"] == ours["events"]
            verdict = "allowed" if good else "FAIL"
        else:
            good = theirs == ours
            verdict, reason = ("ok" if good else "FAIL"), ""
        if good:
            print(f"{verdict} {label}" + (f" ({reason})" if reason else ""), flush=True)
        else:
            failures += 1
            print(f"FAIL {label}" + (f" [allowed only if: {reason}]" if reason else ""), flush=True)
            print(f"  qemu:  {json.dumps(theirs)}", flush=True)
            print(f"  swemu: {json.dumps(ours)}", flush=True)
    print(f"{len(qemu)} steps compared, {failures} failed", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:5]))
