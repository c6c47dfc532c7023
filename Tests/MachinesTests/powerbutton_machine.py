"""The power button in a Linux guest (MachinesTests/PowerButtonTests), driven with QEMU's own
QMP client: with `-device virtio-keyboard-device`, system_powerdown presses KEY_POWER, the
guest's acpid (started by the initramfs's /init) powers it off, and swemu ends as QEMU does
after a guest power-off: POWERDOWN, then SHUTDOWN (guest-shutdown), exit status 0.

Usage: powerbutton_machine.py BINARY KERNEL INITRD WORKDIR. Prints "ok ..." / "FAIL ..." lines;
exits non-zero when a check fails.
"""
import asyncio
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "Python"))
from swemu_machine import Machine, check, failures, serial_line  # noqa: E402


async def next_event(machine, name, timeout):
    async def wait():
        async for event in machine.qmp.events:
            if event["event"] == name:
                return event
    try:
        return await asyncio.wait_for(wait(), timeout)
    except asyncio.TimeoutError:
        return None


async def main(binary, kernel, initrd, work):
    command = [binary, "-M", "virt", "-kernel", kernel, "-initrd", initrd,
               "-append", "console=ttyS0 quiet swemu.test=/tests/powerbutton", "-device", "virtio-keyboard-device,id=input0"]
    guest = Machine(work, "guest", command, smp="2", memory="256M")
    try:
        await guest.connect()
        ready = await serial_line(guest, "BUTTON-READY", 300)
        check(ready is not None, f"the guest waits for its power button: {await serial_line(guest, 'BUTTON-FAIL', 0)}")
        if ready is None:
            return
        events = asyncio.ensure_future(asyncio.gather(next_event(guest, "POWERDOWN", 60), next_event(guest, "SHUTDOWN", 60)))
        await asyncio.sleep(0)  # both listeners are in place before the button is pressed
        await guest.execute("system_powerdown")
        powerdown, shutdown = await events
        check(powerdown is not None, "POWERDOWN event")
        check(shutdown is not None and shutdown["data"] == {"guest": True, "reason": "guest-shutdown"},
              f"SHUTDOWN event as after a guest power-off: {shutdown}")
        status = await asyncio.get_running_loop().run_in_executor(None, guest.wait_exit, 60)
        check(status == 0, f"swemu ended with status 0: {status}")
        pressed = await serial_line(guest, "power button: powering off", 1)
        check(pressed is not None, "the guest's handler ran (not a host-side power-off)")
        check(await serial_line(guest, "SWEMU-TEST-EXIT=", 0) is None, "the guest's script was still waiting")
    finally:
        await guest.close()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:5]))
    sys.exit(1 if failures else 0)
