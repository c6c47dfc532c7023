"""Networking end to end with Debian's kernel (issue: networking), driven by QEMU's qemu.qmp
client. Run by MachinesTests/NetworkTests as

    network_machine.py SWEMU KERNEL INITRD WORK SCENARIO

Each guest runs a script from its own ext4 disk (the initramfs's /init runs
`swemu.test=/mnt/net.sh`) and prints KEY=VALUE lines on its serial console; this script checks
them and prints "ok ..." or "FAIL ..." lines, exiting non-zero on a failure. Scenarios:

- user:   -netdev user. DHCP gives 10.0.2.15; the guest fetches a file from an HTTP server on the
          host's loopback through 10.0.2.2, and again by a name that the DNS server (10.0.2.3,
          forwarded by slirp to the resolver in /etc/resolv.conf) resolves; the host fetches a
          file from the guest's httpd through hostfwd= and through a rule added by hostfwd_add,
          removed again by hostfwd_remove; info network / info usernet; set_link off stops the
          traffic and on brings it back; filter-dump's pcap holds the DHCP exchange. Must run in
          a mount and network namespace of its own (the Swift test uses `unshare -mn`): this
          script binds a resolv.conf naming 127.0.0.1 and answers DNS there itself, so no
          query reaches a real resolver.
- stream, dgram, socket: two guests linked directly (-netdev stream / dgram / the older socket
          listen=/connect=) ping each other and fetch a file from each other, checksums equal.
- migrate: a guest on user networking moves to another process; the NIC's state goes with it
          and the guest fetches through the destination's network.
- tap:    -netdev tap in a network namespace of its own (`unshare -n`): the guest pings the
          host side of the tap and fetches a file from an HTTP server bound there.
"""
import asyncio
import functools
import hashlib
import http.server
import os
import re
import socket
import socketserver
import struct
import subprocess
import sys
import threading

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "Python"))
from swemu_machine import Machine, check, failures, free_port  # noqa: E402

SWEMU, KERNEL, INITRD, WORK, SCENARIO = sys.argv[1:6]

# The guests' side. $1.. come from /mnt/params (sourced); the script prints KEY=VALUE lines.
DHCP_SCRIPT = """#!/bin/sh
# udhcpc's event script: configure what the DHCP server offered.
case "$1" in
bound|renew)
    ip addr add "$ip/$mask" dev "$interface"
    [ -n "$router" ] && ip route add default via "$router"
    : > /etc/resolv.conf
    for d in $dns; do echo "nameserver $d" >> /etc/resolv.conf; done
    echo "$ip" > /tmp/dhcp-ip
    ;;
esac
"""

USER_SCRIPT = """
. /mnt/params
ip link set eth0 up || exit 10
udhcpc -i eth0 -n -q -t 10 -T 1 -s /mnt/dhcp.sh >/dev/null 2>&1 || exit 11
echo "DHCP-IP=$(cat /tmp/dhcp-ip)"
echo "RESOLV=$(grep nameserver /etc/resolv.conf | head -n 1)"
wget -q -O /tmp/by-address "http://10.0.2.2:$HTTP_PORT/payload" || exit 12
echo "BY-ADDRESS=$(sha256sum /tmp/by-address | cut -d ' ' -f 1)"
wget -q -O /tmp/by-name "http://web.swemu.test:$HTTP_PORT/payload" || exit 13
echo "BY-NAME=$(sha256sum /tmp/by-name | cut -d ' ' -f 1)"
httpd -p 8080 -h /mnt/www || exit 14
echo "GUEST-SERVING"
# The host says when it is done with the guest's server (and with set_link).
n=0
until wget -q -O /dev/null "http://10.0.2.2:$HTTP_PORT/done" 2>/dev/null; do
    n=$((n + 1)); [ $n -gt 300 ] && exit 15
    usleep 200000
done
echo "GUEST-DONE"
"""

# Two guests on one link: ME and PEER are 1 and 2.
PAIR_SCRIPT = """
. /mnt/params
ip addr add "192.168.100.$ME/24" dev eth0 || exit 10
ip link set eth0 up || exit 11
n=0
until ping -c 1 -W 1 "192.168.100.$PEER" >/dev/null 2>&1; do n=$((n + 1)); [ $n -gt 60 ] && exit 12; done
ping -c 3 -W 2 "192.168.100.$PEER" >/tmp/ping 2>&1 || exit 13
echo "PING=$(grep -o '[0-9]* packets received' /tmp/ping)"
httpd -p 8080 -h /mnt/www || exit 14
n=0
until wget -q -O /tmp/peer.bin "http://192.168.100.$PEER:8080/mine.bin" 2>/dev/null; do
    n=$((n + 1)); [ $n -gt 100 ] && exit 15
    usleep 200000
done
echo "FETCHED=$(sha256sum /tmp/peer.bin | cut -d ' ' -f 1)"
echo "PAIR-DONE"
# The peer may still be fetching this guest's file: the host ends both machines once both are done.
sleep 600
"""

# Moved to another process mid-way: what the guest set up (address, routes, the NIC's receive
# filter) goes on working at the destination.
MIGRATE_SCRIPT = """
. /mnt/params
ip link set eth0 up || exit 10
udhcpc -i eth0 -n -q -t 10 -T 1 -s /mnt/dhcp.sh >/dev/null 2>&1 || exit 11
wget -q -O /tmp/before "http://10.0.2.2:$HTTP_PORT/payload" || exit 12
echo "BEFORE=$(sha256sum /tmp/before | cut -d ' ' -f 1)"
echo "READY-TO-MOVE"
n=0
until wget -q -O /tmp/after "http://10.0.2.2:$HTTP_PORT/moved" 2>/dev/null; do
    n=$((n + 1)); [ $n -gt 600 ] && exit 13
    usleep 100000
done
echo "AFTER=$(sha256sum /tmp/after | cut -d ' ' -f 1)"
"""

TAP_SCRIPT = """
. /mnt/params
ip addr add 192.168.77.2/24 dev eth0 || exit 10
ip link set eth0 up || exit 11
n=0
until ping -c 1 -W 1 192.168.77.1 >/dev/null 2>&1; do n=$((n + 1)); [ $n -gt 60 ] && exit 12; done
echo "PING=ok"
start=$(cut -d ' ' -f 1 /proc/uptime)
wget -q -O /tmp/payload "http://192.168.77.1:$HTTP_PORT/payload" || exit 13
echo "TAP-SECONDS=$start $(cut -d ' ' -f 1 /proc/uptime)"
echo "TAP-FETCHED=$(sha256sum /tmp/payload | cut -d ' ' -f 1)"
"""


def make_disk(name, files):
    """An ext4 image holding `files` (path -> bytes; *.sh executable), as LinuxBootTests.makeDisk."""
    root = os.path.join(WORK, f"{name}-root")
    for path, data in files.items():
        full = os.path.join(root, path)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        with open(full, "wb") as f:
            f.write(data)
        if path.endswith(".sh"):
            os.chmod(full, 0o755)
    image = os.path.join(WORK, f"{name}.img")
    subprocess.run(["/sbin/mke2fs", "-q", "-t", "ext4", "-d", root, image, "16M"], check=True)
    return image


def guest(name, disk, extra, smp="2"):
    return Machine(WORK, name, [SWEMU, "-M", "virt", "-kernel", KERNEL, "-initrd", INITRD,
                                "-append", "console=ttyS0 quiet swemu.test=/mnt/net.sh",
                                "-drive", f"file={disk},format=raw,if=virtio", *extra], smp=smp, memory="256M")


def serial_text(machine):
    try:
        with open(machine.serial, "rb") as f:
            return f.read().decode(errors="replace")
    except FileNotFoundError:
        return ""


def value(machine, key):
    for line in serial_text(machine).splitlines():
        if line.startswith(key + "="):
            return line[len(key) + 1:].strip()
    return None


async def wait_for(machine, marker, timeout=240):
    for _ in range(int(timeout / 0.1)):
        text = serial_text(machine)
        if marker in text or "SWEMU-TEST-EXIT=" in text or machine.process.poll() is not None:
            break
        await asyncio.sleep(0.1)
    found = marker in serial_text(machine)
    check(found, f"{machine.name}: {marker}" + ("" if found else
          f" (serial tail: {serial_text(machine)[-600:]!r}; stderr: {machine.error_text()[-300:]!r}; {await where(machine)})"))
    return found


async def where(machine):
    """Where a guest that missed its marker is: run state and each hart's pc (a hang shows
    as the same pc, a slow guest as progress)."""
    if machine.process.poll() is not None:
        return f"exited with {machine.process.returncode}"
    try:
        if machine.qmp is None:
            await asyncio.wait_for(machine.connect(), 10)
        status = (await machine.execute("query-status")).get("status")
        pcs = []
        for _ in range(2):
            text = await machine.hmp("info registers -a")
            pcs.append(re.findall(r"^ pc\s+([0-9a-f]+)", text, re.M))
            await asyncio.sleep(1)
        return f"state {status}, pcs {pcs[0]} then {pcs[1]}"
    except Exception as error:  # the diagnosis must not hide the failure it explains
        return f"no monitor answer ({error!r})"


async def wait_exit_zero(machine, timeout=120):
    status = await asyncio.get_running_loop().run_in_executor(None, machine.wait_exit, timeout)
    ended = status == 0 and value(machine, "SWEMU-TEST-EXIT") == "0"
    check(ended, f"{machine.name}: the guest script ended well" + ("" if ended else
          f" (swemu status {status}, SWEMU-TEST-EXIT={value(machine, 'SWEMU-TEST-EXIT')}; serial tail: {serial_text(machine)[-400:]!r})"))


class HTTPServer(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class Files(http.server.BaseHTTPRequestHandler):
    """Serves `files` (path -> bytes); a path mapped to None answers 404."""

    def __init__(self, files, *args, **kwargs):
        self.files = files
        super().__init__(*args, **kwargs)

    def do_GET(self):
        data = self.files.get(self.path)
        if data is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def serve_http(host, files):
    server = HTTPServer((host, 0), functools.partial(Files, files))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def serve_dns(names):
    """A DNS responder on 127.0.0.1:53 (UDP) answering A queries for `names` (name -> IPv4);
    everything else gets NXDOMAIN. Returns the list of names asked."""
    asked = []
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 53))

    def answer():
        while True:
            query, peer = sock.recvfrom(512)
            if len(query) < 12:
                continue
            ident, = struct.unpack("!H", query[:2])
            labels, i = [], 12
            while i < len(query) and query[i] != 0:
                labels.append(query[i + 1:i + 1 + query[i]].decode(errors="replace"))
                i += 1 + query[i]
            question = query[12:i + 5]
            qtype, = struct.unpack("!H", query[i + 1:i + 3])
            name = ".".join(labels).lower()
            asked.append(name)
            address = names.get(name)
            if address and qtype == 1:
                header = struct.pack("!HHHHHH", ident, 0x8180, 1, 1, 0, 0)
                record = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 60, 4) + socket.inet_aton(address)
                sock.sendto(header + question + record, peer)
            else:
                rcode = 0x8183 if address is None else 0x8180  # NXDOMAIN, or no AAAA record
                sock.sendto(struct.pack("!HHHHHH", ident, rcode, 1, 0, 0, 0) + question, peer)

    threading.Thread(target=answer, daemon=True).start()
    return asked


def sha(data):
    return hashlib.sha256(data).hexdigest()


def fetch(port, path, timeout=10):
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(f"GET {path} HTTP/1.0\r\nHost: guest\r\n\r\n".encode())
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return head.split(b"\r\n")[0], body


def pcap_frames(path):
    """The frames of a classic pcap file (checks the header on the way)."""
    with open(path, "rb") as f:
        data = f.read()
    magic, major, minor, _, _, snaplen, linktype = struct.unpack("<IHHiIII", data[:24])
    check(magic == 0xA1B2C3D4 and (major, minor) == (2, 4) and linktype == 1, f"pcap header (magic {magic:#x}, link type {linktype})")
    frames, at = [], 24
    while at + 16 <= len(data):
        _, _, included, original = struct.unpack("<IIII", data[at:at + 16])
        frames.append(data[at + 16:at + 16 + included])
        at += 16 + included
    return frames


async def user():
    # The namespace's resolver: 127.0.0.1, answered here (see the module comment).
    resolv = os.path.join(WORK, "resolv.conf")
    with open(resolv, "w") as f:
        f.write("nameserver 127.0.0.1\n")
    subprocess.run(["mount", "--bind", resolv, "/etc/resolv.conf"], check=True)
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    asked = serve_dns({"web.swemu.test": "10.0.2.2"})
    payload = os.urandom(300_000)
    guest_file = os.urandom(200_000)
    files = {"/payload": payload, "/done": None}
    server = serve_http("127.0.0.1", files)
    port = server.server_address[1]
    forward, added = free_port(), free_port()
    disk = make_disk("user", {"net.sh": USER_SCRIPT.encode(), "dhcp.sh": DHCP_SCRIPT.encode(),
                              "params": f"HTTP_PORT={port}\n".encode(), "www/guest.bin": guest_file})
    dump = os.path.join(WORK, "user.pcap")
    machine = guest("user", disk, ["-netdev", f"user,id=n0,hostfwd=tcp:127.0.0.1:{forward}-:8080",
                                   "-device", "virtio-net-device,netdev=n0,id=nic0",
                                   "-object", f"filter-dump,id=f0,netdev=n0,file={dump}"])
    try:
        await machine.connect()
        if not await wait_for(machine, "GUEST-SERVING"):
            return
        check(value(machine, "DHCP-IP") == "10.0.2.15", f"DHCP gave the guest 10.0.2.15 ({value(machine, 'DHCP-IP')})")
        check(value(machine, "RESOLV") == "nameserver 10.0.2.3", f"DHCP named 10.0.2.3 the DNS server ({value(machine, 'RESOLV')})")
        check(value(machine, "BY-ADDRESS") == sha(payload), "the guest fetched the host's file through 10.0.2.2")
        check(value(machine, "BY-NAME") == sha(payload), "... and through a name resolved by 10.0.2.3")
        check("web.swemu.test" in asked, f"slirp forwarded the guest's query to the namespace's resolver ({asked})")

        status, body = fetch(forward, "/guest.bin")
        check(b"200" in status and sha(body) == sha(guest_file), f"the host fetched the guest's file through hostfwd ({status!r}, {len(body)} bytes)")
        reply = await machine.hmp(f"hostfwd_add n0 tcp:127.0.0.1:{added}-:8080")
        check(reply == "", f"hostfwd_add ({reply!r})")
        status, body = fetch(added, "/guest.bin")
        check(sha(body) == sha(guest_file), "... and through the rule hostfwd_add added")
        reply = await machine.hmp(f"hostfwd_remove n0 tcp:127.0.0.1:{added}")
        check("removed" in reply, f"hostfwd_remove ({reply!r})")
        try:
            fetch(added, "/guest.bin", timeout=3)
            check(False, "the removed rule no longer forwards")
        except OSError as error:
            check(True, f"the removed rule no longer forwards ({error})")
        reply = await machine.hmp("hostfwd_add tcp:127.0.0.1:{0}-:8080".format(forward))
        check("Could not set up host forwarding rule" in reply, f"a rule on a port in use is refused ({reply!r})")

        info = await machine.hmp("info network")
        check("nic0: index=0,type=nic,model=virtio-net-device,macaddr=52:54:00:12:34:56" in info
              and "\\ n0: index=0,type=user,net=10.0.2.0,restrict=off" in info, f"info network: {info!r}")
        usernet = await machine.hmp("info usernet")
        check("Hub" in usernet and "TCP" in usernet, f"info usernet: {usernet!r}")
        filters = await machine.execute("query-rx-filter", {"name": "nic0"})
        check(filters[0]["main-mac"] == "52:54:00:12:34:56", f"query-rx-filter: {filters}")

        # Link down: the host's requests through hostfwd get nothing from the guest.
        await machine.execute("set_link", {"name": "n0", "up": False})
        try:
            status, body = fetch(forward, "/guest.bin", timeout=3)
            check(len(body) == 0, f"no traffic while the link is down ({status!r}, {len(body)} bytes)")
        except OSError as error:
            check(True, f"no traffic while the link is down ({error})")
        await machine.execute("set_link", {"name": "nic0", "up": True})
        await asyncio.sleep(1)
        for _ in range(20):
            try:
                status, body = fetch(forward, "/guest.bin", timeout=5)
                if sha(body) == sha(guest_file):
                    break
            except OSError:
                pass
            await asyncio.sleep(0.5)
        check(sha(body) == sha(guest_file), "traffic again once the link is up")

        files["/done"] = b"done"
        await wait_exit_zero(machine)
        frames = pcap_frames(dump)
        dhcp = [f for f in frames if len(f) > 42 and f[12:14] == b"\x08\x00" and f[23] == 17
                and struct.unpack("!H", f[36:38])[0] in (67, 68)]
        check(len(frames) > 50 and len(dhcp) >= 2, f"filter-dump's pcap holds the traffic ({len(frames)} frames, {len(dhcp)} DHCP)")
    finally:
        await machine.close()


async def pair(kind):
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    files = {n: os.urandom(150_000 + n) for n in (1, 2)}
    one, two = free_port(), free_port()
    links = {
        "stream": (f"stream,id=n0,server=on,addr.type=inet,addr.host=127.0.0.1,addr.port={one}",
                   f"stream,id=n0,server=off,addr.type=inet,addr.host=127.0.0.1,addr.port={one}"),
        "dgram": (f"dgram,id=n0,local.type=inet,local.host=127.0.0.1,local.port={one},"
                  f"remote.type=inet,remote.host=127.0.0.1,remote.port={two}",
                  f"dgram,id=n0,local.type=inet,local.host=127.0.0.1,local.port={two},"
                  f"remote.type=inet,remote.host=127.0.0.1,remote.port={one}"),
        "socket": (f"socket,id=n0,listen=127.0.0.1:{one}", f"socket,id=n0,connect=127.0.0.1:{one}"),
    }[kind]
    machines = []
    try:
        for n in (1, 2):
            disk = make_disk(f"{kind}{n}", {"net.sh": PAIR_SCRIPT.encode(), "params": f"ME={n}\nPEER={3 - n}\n".encode(),
                                             "www/mine.bin": files[n]})
            # Two harts each, booting at once: with OpenSBI 1.1 this hit, about once in three CI
            # runs, its HSM start race (fixed in 1.3; -bios default now loads the guest cache's 1.6).
            machines.append(guest(f"{kind}{n}", disk, ["-netdev", links[n - 1], "-device", "virtio-net-device,netdev=n0",
                                                       "-device", "virtio-rng-device"]))
            if n == 1:
                await machines[0].connect()  # the server (stream, socket) listens before the client connects
        for n, machine in enumerate(machines, start=1):
            await wait_for(machine, "PAIR-DONE", timeout=300)
            check(value(machine, "PING") == "3 packets received", f"{machine.name}: ping ({value(machine, 'PING')})")
            check(value(machine, "FETCHED") == sha(files[3 - n]), f"{machine.name}: the peer's file arrived intact")
    finally:
        for machine in machines:
            await machine.close()


async def migrate():
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    payload, moved = os.urandom(100_000), os.urandom(120_000)
    files = {"/payload": payload, "/moved": None}
    port = serve_http("127.0.0.1", files).server_address[1]
    disk = make_disk("migrate", {"net.sh": MIGRATE_SCRIPT.encode(), "dhcp.sh": DHCP_SCRIPT.encode(),
                                 "params": f"HTTP_PORT={port}\n".encode()})
    nic = ["-netdev", "user,id=n0", "-device", "virtio-net-device,netdev=n0,id=nic0"]
    channel = os.path.join(WORK, "migrate.sock")
    source = guest("source", disk, nic)
    destination = None
    try:
        await source.connect()
        if not await wait_for(source, "READY-TO-MOVE"):
            return
        check(value(source, "BEFORE") == sha(payload), "the source fetched the host's file")
        # -S: the destination stays paused after the move, so neither side's guest can change
        # the filter between the two reads below.
        destination = guest("destination", disk, nic + ["-S", "-incoming", f"unix:{channel}"])
        await destination.connect()
        for _ in range(200):
            if (await destination.execute("query-migrate")).get("status") == "setup":
                break
            await asyncio.sleep(0.05)
        await source.execute("migrate", {"uri": f"unix:{channel}"})
        for _ in range(1200):
            status = (await source.execute("query-migrate")).get("status")
            if status in ("completed", "failed"):
                break
            await asyncio.sleep(0.05)
        check(status == "completed", f"the migration completed ({status})")
        for _ in range(200):
            if (await destination.execute("query-status")).get("status") != "inmigrate":
                break
            await asyncio.sleep(0.05)
        # The source's filter as it was sent: the guest may change it (IPv6 multicast joins)
        # until the source stops, so it is read after the move, not before.
        sent = await source.execute("query-rx-filter", {"name": "nic0"})
        received = await destination.execute("query-rx-filter", {"name": "nic0"})
        check(received == sent, "the destination's NIC kept the receive filter the guest set"
              + ("" if received == sent else f" (source {sent}, destination {received})"))
        await destination.execute("cont")
        files["/moved"] = moved
        await wait_exit_zero(destination)
        check(value(destination, "AFTER") == sha(moved), "after the move the guest fetched through the destination's user network")
    finally:
        for machine in (source, destination):
            if machine is not None:
                await machine.close()


async def tap():
    """TAP_VNET_HDR=on|off picks the tap's vnet_hdr (default: the backend's, on where the
    kernel has it) and TAP_PAYLOAD_MIB the file's size (to measure; the download's rate is
    printed)."""
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    size = int(float(os.environ.get("TAP_PAYLOAD_MIB", "0")) * (1 << 20)) or 250_000
    payload = os.urandom(size)
    vnet_hdr = f",vnet_hdr={os.environ['TAP_VNET_HDR']}" if "TAP_VNET_HDR" in os.environ else ""
    disk = make_disk("tap", {"net.sh": TAP_SCRIPT.encode(), "params": b"HTTP_PORT=8000\n"})
    machine = guest("tap", disk, ["-netdev", f"tap,id=n0,ifname=swtap0,script=no,downscript=no{vnet_hdr}",
                                  "-device", "virtio-net-device,netdev=n0"])
    try:
        await machine.connect()
        subprocess.run(["ip", "addr", "add", "192.168.77.1/24", "dev", "swtap0"], check=True)
        subprocess.run(["ip", "link", "set", "swtap0", "up"], check=True)
        server = http.server.HTTPServer(("192.168.77.1", 8000), functools.partial(Files, {"/payload": payload}))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        await wait_exit_zero(machine, timeout=300)
        check(value(machine, "PING") == "ok", "the guest pinged the host side of the tap")
        check(value(machine, "TAP-FETCHED") == sha(payload), "the guest fetched the host's file through the tap")
        seconds = value(machine, "TAP-SECONDS")
        start, end = (float(t) for t in seconds.split()) if seconds else (0.0, 0.0)
        print(f"tap{vnet_hdr or ' (default vnet_hdr)'}: {size / (1 << 20):.2f} MiB in {end - start:.2f} s of guest time, "
              f"{size / (1 << 20) / max(end - start, 0.01):.1f} MiB/s")
    finally:
        await machine.close()


async def main():
    if SCENARIO == "user":
        await user()
    elif SCENARIO == "tap":
        await tap()
    elif SCENARIO == "migrate":
        await migrate()
    else:
        await pair(SCENARIO)


asyncio.run(main())
sys.exit(1 if failures else 0)
