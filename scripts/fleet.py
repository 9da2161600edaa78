#!/usr/bin/env python3
"""Peers for scripts/fleet.sh: everything through one HAProxy, stdlib only.

Reads its setting from the environment (fleet.sh sets it): LB_HTTP, LB_TCP1..3
(the balancer's ports), RELAYn_HTTP (each relay's own REST port, reached with
a PROXY header of our own for its /metrics), RELAYn_PID, RELAYn_LOG. Peer
sockets bind distinct loopback sources (127.0.0.2 and up) so the relays' logs
can show whether they see the peer or HAProxy (127.0.0.1).

Exit status 0 when every step passed; each failure is printed with FAIL.
"""

import base64
import itertools
import json
import os
import re
import signal
import socket
import struct
import sys
import threading
import time
import traceback
import uuid

ENV = os.environ
LB_HTTP = int(ENV["LB_HTTP"])
LB_TCP = {n: int(ENV[f"LB_TCP{n}"]) for n in (1, 2, 3)}
RELAY_HTTP = {n: int(ENV[f"RELAY{n}_HTTP"]) for n in (1, 2, 3)}
RELAY_PID = {n: int(ENV[f"RELAY{n}_PID"]) for n in (1, 2, 3)}
RELAY_LOG = {n: ENV[f"RELAY{n}_LOG"] for n in (1, 2, 3)}
DRAIN = ENV.get("FLEET_DRAIN") == "1"
INSTANCE_OF_PORT = {port: n for n, port in LB_TCP.items()}
# HAProxy checks every second and needs two failures in a row: an instance
# lost is out of the balance within three seconds (two checks, and up to one
# interval before the first); two more for a loaded host.
FAILOVER_LIMIT = 5.0
TIMEOUT = 10.0
failures = []
# 127.0.0.1 is HAProxy's; fleet.sh's readiness probe uses 127.0.0.254.
sources = itertools.cycle([f"127.0.0.{i}" for i in range(2, 254)])
sources_used = []
step1_sources = []


def fail(what):
    failures.append(what)
    print(f"fleet: FAIL {what}", flush=True)


def dial(port, src=None):
    """A connection to 127.0.0.1:port from `src`, else from a fresh loopback
    source address (recorded, for step 4)."""
    sock = socket.create_connection(("127.0.0.1", port), TIMEOUT, (src or next(sources), 0))
    if src is None:
        sources_used.append(sock.getsockname())
    return sock


def read_exact(sock, n):
    out = b""
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        if not chunk:
            raise EOFError(f"closed after {len(out)} of {n} bytes")
        out += chunk
    return out


def read_head(sock):
    """An HTTP head, byte by byte, so nothing after it is taken."""
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        byte = sock.recv(1)
        if not byte:
            raise EOFError("closed inside an HTTP head")
        head += byte
        if len(head) > 16384:
            raise ValueError("HTTP head too long")
    return head.decode("latin-1")


def http(port, method, path, proxy_header=b"", src=None):
    """One HTTP/1.1 request; returns (status, body)."""
    with dial(port, src) as sock:
        sock.sendall(proxy_header + f"{method} {path} HTTP/1.1\r\nHost: fleet\r\n"
                     "Content-Length: 0\r\nConnection: close\r\n\r\n".encode())
        head = read_head(sock)
        status = int(head.split(" ", 2)[1])
        length = re.search(r"(?i)content-length: *(\d+)", head)
        body = read_exact(sock, int(length.group(1))) if length else b""
        return status, body


def proxy_v2_local():
    """A v2 LOCAL header, as HAProxy's own checks send."""
    return b"\r\n\r\n\0\r\nQUIT\n" + bytes([0x20, 0x00, 0, 0])


def proxy_v2(src, dst):
    block = socket.inet_aton(src[0]) + socket.inet_aton(dst[0]) + struct.pack("!HH", src[1], dst[1])
    return b"\r\n\r\n\0\r\nQUIT\n" + bytes([0x21, 0x11]) + struct.pack("!H", len(block)) + block


def relay_metrics(n):
    """Relay n's /metrics, asked directly as a trusted proxy would (from
    127.0.0.1, with a header of our own)."""
    header = proxy_v2(("127.0.0.1", 1), ("127.0.0.1", RELAY_HTTP[n]))
    status, body = http(RELAY_HTTP[n], "GET", "/metrics", header, src="127.0.0.1")
    if status != 200:
        raise RuntimeError(f"relay{n} /metrics answered {status}")
    values = {}
    for line in body.decode().splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    return values


# --- JET over TCP ----------------------------------------------------------

def jet_packet(head):
    payload = head.encode()
    return b"JET\0" + struct.pack("!H", 8 + len(payload)) + b"\0\0" + payload


def jet_response(sock):
    header = read_exact(sock, 8)
    if header[:4] != b"JET\0":
        raise ValueError(f"not a JET answer: {header!r}")
    size = struct.unpack("!H", header[4:6])[0]
    payload = bytes(b ^ header[7] for b in read_exact(sock, size - 8)).decode("latin-1")
    status = int(payload.split(" ", 2)[1])
    headers = dict(re.findall(r"(?m)^([A-Za-z-]+): *(.*?)\r$", payload))
    return status, headers


def jet_open(port, verb, a, c):
    sock = dial(port)
    sock.sendall(jet_packet(f"GET /jet/{verb}/{a}/{c} HTTP/1.1\r\nHost: fleet\r\nJet-Version: 2\r\n\r\n"))
    status, _ = jet_response(sock)
    if status != 200:
        sock.close()
        raise RuntimeError(f"JET {verb} {a} answered {status}")
    return TcpPeer(sock)


class TcpPeer:
    def __init__(self, sock):
        self.sock = sock

    def send(self, data):
        self.sock.sendall(data)

    def recv_exact(self, n):
        return read_exact(self.sock, n)

    def close(self):
        self.sock.close()


# --- WebSocket --------------------------------------------------------------

def ws_open(port, verb, a, c):
    sock = dial(port)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(f"GET /jet/{verb}/{a}/{c} HTTP/1.1\r\nHost: fleet\r\nUpgrade: websocket\r\n"
                 f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                 "Sec-WebSocket-Version: 13\r\n\r\n".encode())
    head = read_head(sock)
    status = int(head.split(" ", 2)[1])
    if status != 101:
        sock.close()
        raise RuntimeError(f"WebSocket {verb} {a} answered {status}")
    return WsPeer(sock)


class WsPeer:
    def __init__(self, sock):
        self.sock = sock
        self.pending = b""

    def send(self, data):
        mask = os.urandom(4)
        n = len(data)
        if n < 126:
            head = bytes([0x82, 0x80 | n])
        elif n < 65536:
            head = bytes([0x82, 0x80 | 126]) + struct.pack("!H", n)
        else:
            head = bytes([0x82, 0x80 | 127]) + struct.pack("!Q", n)
        body = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
        self.sock.sendall(head + mask + body)

    def recv_exact(self, n):
        while len(self.pending) < n:
            b0, b1 = read_exact(self.sock, 2)
            length = b1 & 0x7F
            if length == 126:
                length = struct.unpack("!H", read_exact(self.sock, 2))[0]
            elif length == 127:
                length = struct.unpack("!Q", read_exact(self.sock, 8))[0]
            payload = read_exact(self.sock, length)
            if b0 & 0x0F == 0x8:
                raise EOFError("WebSocket closed")
            if b0 & 0x0F in (0x1, 0x2, 0x0):
                self.pending += payload
        out, self.pending = self.pending[:n], self.pending[n:]
        return out

    def close(self):
        self.sock.close()


# --- associations -----------------------------------------------------------

class Association:
    """One association gathered through the balancer and paired: one side
    over ws:// through the shared HTTP port (routed by the id in the path),
    the other over its gathered tcp:// candidate (the instance's own port)."""

    def __init__(self, index):
        self.id = uuid.uuid4()
        first = len(sources_used)
        status, body = http(LB_HTTP, "POST", f"/jet/gather/{self.id}")
        if status != 200:
            raise RuntimeError(f"gather answered {status}")
        urls = {c["url"]: c["id"] for c in json.loads(body)["candidates"]}
        tcp = [u for u in urls if u.startswith("tcp://")]
        ws = [u for u in urls if u == f"ws://127.0.0.1:{LB_HTTP}"]
        if len(tcp) != 1 or len(ws) != 1:
            raise RuntimeError(f"gather gave {sorted(urls)}")
        port = int(tcp[0].rsplit(":", 1)[1])
        self.instance = INSTANCE_OF_PORT.get(port)
        if self.instance is None:
            raise RuntimeError(f"tcp candidate {tcp[0]} names no instance")
        c = urls[tcp[0]]
        # Half the pairs accept over WebSocket, half over TCP.
        if index % 2 == 0:
            self.accept = ws_open(LB_HTTP, "accept", self.id, c)
            self.connect = jet_open(port, "connect", self.id, c)
        else:
            self.accept = jet_open(port, "accept", self.id, c)
            self.connect = ws_open(LB_HTTP, "connect", self.id, c)
        # The gather's, the accept's and the connect's own addresses.
        self.sources = sources_used[first:]

    def exchange(self, size, seed):
        """Sends `size` bytes each way at once and checks them byte for byte."""
        down = os.urandom(16) * (size // 16) + os.urandom(size % 16)
        up = bytes(reversed(down))
        errors = []

        def pump(src, dst, data, name):
            try:
                src.send(data)
            except OSError as e:
                errors.append(f"{name} send: {e}")

        senders = [threading.Thread(target=pump, args=(self.accept, None, down, "accept")),
                   threading.Thread(target=pump, args=(self.connect, None, up, "connect"))]
        for t in senders:
            t.start()
        got_down = self.connect.recv_exact(size)
        got_up = self.accept.recv_exact(size)
        for t in senders:
            t.join(TIMEOUT)
        if errors:
            raise RuntimeError("; ".join(errors))
        if got_down != down or got_up != up:
            raise RuntimeError("bytes differ")

    def close(self):
        self.accept.close()
        self.connect.close()


def open_many(count, exclude=()):
    """`count` new associations, paired and checked; returns them."""
    out = []
    for i in range(count):
        a = Association(i)
        if a.instance in exclude:
            fail(f"association {a.id} went to instance {a.instance}, which is out")
        a.exchange(4096, i)
        out.append(a)
    return out


def per_instance(assocs):
    return {n: sum(1 for a in assocs if a.instance == n) for n in (1, 2, 3)}


def wait_failover(lost, started):
    """Gathers fresh ids until one hashed to `lost` is placed elsewhere, i.e.
    HAProxy took `lost` out. Returns the seconds since `started`."""
    deadline = started + FAILOVER_LIMIT + 6
    placed_elsewhere = 0
    while time.monotonic() < deadline:
        a_id = uuid.uuid4()
        try:
            status, body = http(LB_HTTP, "POST", f"/jet/gather/{a_id}")
        except OSError:
            continue
        if status == 200:
            urls = [c["url"] for c in json.loads(body)["candidates"]]
            ports = {int(u.rsplit(":", 1)[1]) for u in urls if u.startswith("tcp://")}
            if LB_TCP[lost] not in ports:
                placed_elsewhere += 1
            # Enough fresh ids placed elsewhere in a row that one of them
            # would have hashed to the lost instance (1/3 of ids do).
            if placed_elsewhere >= 20:
                return time.monotonic() - started
        else:
            placed_elsewhere = 0
    return None


def version1(n):
    """A version 1 accept through instance n's port names that port in
    Jet-Instance, and a connect there pairs with it."""
    accept = dial(LB_TCP[n])
    accept.sendall(jet_packet("GET / HTTP/1.1\r\nHost: fleet\r\nJet-Method: Accept\r\nJet-Version: 1\r\n\r\n"))
    status, headers = jet_response(accept)
    instance = headers.get("Jet-Instance")
    if status != 200 or instance != f"127.0.0.1:{LB_TCP[n]}":
        fail(f"step 1: version 1 accept on relay{n}: {status}, Jet-Instance {instance}")
        return
    connect = dial(int(instance.rsplit(":", 1)[1]))
    connect.sendall(jet_packet("GET / HTTP/1.1\r\nHost: fleet\r\nJet-Method: Connect\r\n"
                               f"Jet-Association: {headers.get('Jet-Association')}\r\nJet-Version: 1\r\n\r\n"))
    status, _ = jet_response(connect)
    connect.sendall(b"ping")
    if status != 200 or read_exact(accept, 4) != b"ping":
        fail(f"step 1: version 1 connect on relay{n}: {status}")
    accept.close()
    connect.close()


def step1():
    for n in (1, 2, 3):
        version1(n)
    t = time.monotonic()
    assocs = open_many(200)
    took = time.monotonic() - t
    counts = per_instance(assocs)
    step1_sources.extend(s for a in assocs for s in a.sources)
    print(f"fleet: step 1: 200 associations gathered and paired in {took:.1f} s, "
          f"per instance {counts}", flush=True)
    if min(counts.values()) == 0:
        fail(f"step 1: not spread over three instances: {counts}")
    for a in assocs:
        a.close()
    for n in (1, 2, 3):
        m = relay_metrics(n)
        pairs = m.get("jet_relay_pairs_started_total", 0)
        print(f"fleet: step 1: relay{n} /metrics pairs_started_total {pairs:.0f}", flush=True)
        # Each association pairs exactly once, on the instance its gather
        # named (plus the version 1 pair).
        if pairs != counts[n] + 1:
            fail(f"step 1: relay{n} counted {pairs:.0f} pairs, the peers {counts[n]}")


def step2():
    running = open_many(30)
    victim = 1
    on_victim = [a for a in running if a.instance == victim]
    others = [a for a in running if a.instance != victim]
    os.kill(RELAY_PID[victim], signal.SIGKILL)
    killed = time.monotonic()
    ended = 0
    for a in on_victim:
        try:
            a.exchange(1024, 0)
        except (OSError, EOFError, RuntimeError):
            ended += 1
    if ended != len(on_victim):
        fail(f"step 2: {len(on_victim) - ended} pair(s) on the killed relay still relayed")
    for a in others:
        try:
            a.exchange(65536, 1)
        except (OSError, EOFError, RuntimeError) as e:
            fail(f"step 2: a pair on relay{a.instance} was disturbed: {e}")
    failover = wait_failover(victim, killed)
    if failover is None or failover > FAILOVER_LIMIT:
        fail(f"step 2: relay{victim} still in the balance after {failover} s")
    fresh = open_many(60, exclude=(victim,))
    print(f"fleet: step 2: relay{victim} killed: {ended}/{len(on_victim)} of its pairs ended, "
          f"{len(others)} elsewhere undisturbed; out of the balance after "
          f"{failover if failover is None else round(failover, 2)} s; 60 new associations "
          f"paired, per instance {per_instance(fresh)}", flush=True)
    for a in running + fresh:
        a.close()


def step3():
    victim = 2
    running = [a for a in open_many(24, exclude=(1,))]
    on_victim = [a for a in running if a.instance == victim]
    if not on_victim:
        fail("step 3: no pair landed on the relay to drain")
    # Each transfer is under way when the drain starts and ends after it.
    halves = [os.urandom(256 * 1024) for _ in on_victim]
    for a, data in zip(on_victim, halves):
        a.accept.send(data)
    os.kill(RELAY_PID[victim], signal.SIGTERM)
    drained = time.monotonic()
    finished = 0
    for a, data in zip(on_victim, halves):
        try:
            if a.connect.recv_exact(len(data)) != data:
                raise RuntimeError("bytes differ")
            a.exchange(256 * 1024, 2)
            finished += 1
        except (OSError, EOFError, RuntimeError) as e:
            print(f"fleet: step 3: pair on relay{victim} cut: {e}", flush=True)
    for a in running:
        a.close()
    failover = wait_failover(victim, drained)
    fresh = open_many(30, exclude=(1, victim))
    print(f"fleet: step 3: relay{victim} drained: {finished}/{len(on_victim)} running "
          f"transfers finished; out of the balance after "
          f"{failover if failover is None else round(failover, 2)} s; 30 new associations "
          f"on relay3: {per_instance(fresh)[3]}", flush=True)
    if finished != len(on_victim):
        if DRAIN:
            fail(f"step 3: the drain cut {len(on_victim) - finished} running pair(s)")
        else:
            fail("step 3: DRAIN MISSING: this relay has no drain on SIGTERM "
                 f"(drain_timeout unknown); SIGTERM cut {len(on_victim) - finished} running pair(s)")
    if failover is None or failover > FAILOVER_LIMIT:
        fail(f"step 3: relay{victim} still in the balance after {failover} s")
    for a in fresh:
        a.close()


def step4():
    """The relays log the peers' sources (127.0.0.2 and up), not HAProxy's."""
    logs = {n: open(RELAY_LOG[n], encoding="utf-8", errors="replace").read() for n in (1, 2, 3)}
    peers = set()
    for text in logs.values():
        peers.update(re.findall(r"peer=(127\.0\.0\.\d+:\d+) accepted via PROXY v2 from 127\.0\.0\.1:", text))
    via_balancer = [s for s in step1_sources if f"{s[0]}:{s[1]}" in peers]
    # A relay that ignored the header would log HAProxy's own socket (the
    # address the header came from) as the peer.
    haproxy_as_peer = sum(1 for t in logs.values()
                          for peer, via in re.findall(r"peer=(\S+) accepted via PROXY v2 from (\S+)", t)
                          if peer == via)
    print(f"fleet: step 4: {len(via_balancer)} of step 1's {len(step1_sources)} peer sockets' own "
          f"addresses (127.0.0.2 and up) are in the relays' logs, carried by PROXY v2 from "
          f"HAProxy (127.0.0.1); {haproxy_as_peer} lines name HAProxy's socket as the peer", flush=True)
    # The metrics requests of this script come with our own header naming 127.0.0.1.
    # Every socket of step 1 went through HAProxy to a relay that logged it.
    if not step1_sources or len(via_balancer) != len(step1_sources):
        fail(f"step 4: {len(step1_sources) - len(via_balancer)} of step 1's peer addresses "
             "are missing from the relays' logs")
    if haproxy_as_peer:
        fail(f"step 4: {haproxy_as_peer} accept lines name HAProxy's address as the peer")


def main():
    started = time.monotonic()
    for step in (step1, step2, step3, step4):
        try:
            step()
        except Exception as e:  # a step that breaks is a failure, not a crash
            fail(f"{step.__name__}: {type(e).__name__}: {e}")
            traceback.print_exc()
    print(f"fleet: {len(failures)} failure(s) in {time.monotonic() - started:.1f} s", flush=True)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
