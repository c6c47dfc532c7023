"""A misbehaving GDB client for the stub's robustness test (GDBTests.swift).

usage: gdb_raw_client.py SOCKET BREAK_ADDR_HEX

Sends garbage, bad checksums, malformed and oversized packets, interrupts a running guest with
Ctrl-C, hits a breakpoint, then starts a single step and disconnects without waiting. Prints
FAIL lines for anything unexpected; the test then checks that the guest ran on to its end.
"""
import socket
import sys


def checksum(payload: bytes) -> bytes:
    return b"%02x" % (sum(payload) % 256)


def frame(payload: bytes) -> bytes:
    return b"$" + payload + b"#" + checksum(payload)


class Client:
    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(20)
        self.sock.connect(path)
        self.buffer = b""

    def send(self, data: bytes):
        self.sock.sendall(data)

    def read_until(self, predicate):
        while not predicate(self.buffer):
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("connection closed")
            self.buffer += chunk

    def packet(self) -> bytes:
        """The next reply packet's payload (acks before it are skipped); checks its checksum."""
        self.read_until(lambda b: b"$" in b and b"#" in b[b.index(b"$"):] and len(b) >= b.index(b"#", b.index(b"$")) + 3)
        start = self.buffer.index(b"$")
        end = self.buffer.index(b"#", start)
        payload = self.buffer[start + 1:end]
        if self.buffer[end + 1:end + 3] != checksum(payload):
            print("FAIL: bad checksum from the stub for", payload)
        self.buffer = self.buffer[end + 3:]
        return payload

    def ack(self) -> bytes:
        self.read_until(lambda b: len(b) >= 1)
        byte, self.buffer = self.buffer[:1], self.buffer[1:]
        return byte

    def request(self, payload: bytes) -> bytes:
        self.send(frame(payload))
        if self.ack() != b"+":
            print("FAIL: no ack for", payload)
        return self.packet()


def expect(what, got, wanted):
    if got != wanted:
        print(f"FAIL: {what}: got {got!r}, wanted {wanted!r}")
    else:
        print(f"ok: {what}")


def main():
    path, breakpoint = sys.argv[1], sys.argv[2]
    c = Client(path)
    c.send(b"junk between packets\x00\xff")
    c.send(b"$g#00")
    expect("bad checksum is answered '-'", c.ack(), b"-")
    expect("still answers after noise", c.request(b"qC"), b"QC01")
    for bad in [b"m", b"mzz,4", b"m80000000", b"M80000000,4:zz", b"X1,2:", b"p", b"pfffffffff", b"P20=12",
                b"Z0,,", b"z9,0,0", b"H", b"vCont;q", b"qXfer:features:read:target.xml", b"qRcmd,4"]:
        reply = c.request(bad)
        if reply not in (b"", b"E22", b"E14", b"E00"):
            print(f"FAIL: {bad!r} got {reply!r}")
    expect("unmapped memory", c.request(b"m0,4"), b"E14")
    c.send(b"$" + b"a" * 70000 + b"#00")
    expect("oversized packet is refused", c.ack(), b"-")
    expect("registers still readable", len(c.request(b"g")), 33 * 16)

    # Ctrl-C while the guest runs (the ticker runs for 2 s after the attach stop).
    c.send(frame(b"c"))
    expect("continue acked", c.ack(), b"+")
    c.send(b"\x03")
    reply = c.packet()
    # The guest may have finished already on a fast machine: W00 is also a valid end.
    if reply not in (b"T02thread:01;", b"W00"):
        print("FAIL: interrupt reply", reply)
    else:
        print("ok: interrupted:", reply.decode())
    if reply == b"W00":
        return
    # A breakpoint: the guest was interrupted somewhere; remove nothing, just go on.
    expect("breakpoint set", c.request(b"Z0,%s,4" % breakpoint.encode()), b"OK")
    c.send(frame(b"c"))
    c.ack()
    reply = c.packet()
    if reply.startswith(b"T05") or reply == b"W00":
        print("ok: stopped:", reply.decode())
    else:
        print("FAIL: breakpoint reply", reply)
    # Step and vanish: the stub must detach for us (breakpoints gone, guest running).
    c.send(frame(b"vCont;s:1"))
    c.sock.close()


if __name__ == "__main__":
    main()
