#!/usr/bin/env python3
"""Drives a swemu QMP server with QEMU's own Python client library (qemu.qmp).

Usage: qmp_client.py SOCKET_PATH

Connects (qemu.qmp reads the greeting and negotiates capabilities itself), runs a fixed
session and prints one JSON object with everything it saw, for QMPTests/EndToEndTests to
check. Exits 3 when qemu.qmp cannot be imported, 1 on any other failure (with the reason on
stderr), 0 otherwise.
"""
import asyncio
import json
import sys

try:
    from qemu.qmp import ExecuteError, QMPClient
except ImportError as exc:  # the Swift test skips with this reason
    print(f"qemu.qmp is not importable: {exc}", file=sys.stderr)
    sys.exit(3)


async def next_event(qmp, name):
    """The next event called `name` from the client's all-events listener."""
    while True:
        event = await asyncio.wait_for(qmp.events.get(), 10)
        if event["event"] == name:
            return dict(event)


async def session(path):
    report = {}
    qmp = QMPClient("swemu-interop")
    await qmp.connect(path)
    report["greeting"] = qmp.greeting._asdict()
    report["status"] = await qmp.execute("query-status")
    report["version"] = await qmp.execute("query-version")
    report["name"] = await qmp.execute("query-name")
    report["cpus"] = await qmp.execute("query-cpus-fast")
    report["block"] = await qmp.execute("query-block")
    report["commands"] = sorted(c["name"] for c in await qmp.execute("query-commands"))
    report["hmp"] = await qmp.execute("human-monitor-command", {"command-line": "info status"})
    try:
        await qmp.execute("no-such-command")
    except ExecuteError as err:
        report["unknown"] = {"class": err.error_class, "desc": str(err)}
    try:
        await qmp.execute("human-monitor-command", {"command-line": 1})
    except ExecuteError as err:
        report["badarg"] = {"class": err.error_class, "desc": str(err)}

    await qmp.execute("stop")
    report["stop_event"] = await next_event(qmp, "STOP")
    report["paused"] = await qmp.execute("query-status")
    await qmp.execute("cont")
    report["resume_event"] = await next_event(qmp, "RESUME")
    await qmp.execute("quit")
    report["shutdown_event"] = await next_event(qmp, "SHUTDOWN")
    await qmp.disconnect()
    print(json.dumps(report))


def main():
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        asyncio.run(session(sys.argv[1]))
    except Exception as exc:  # report, don't dump a traceback into the test log
        print(f"qmp_client: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
