#!/usr/bin/env python3
"""Writes the hand-made seed inputs of each target into corpus/<target>/
(seed-*); the fuzzer's own finds are merged in beside them."""
import base64, json, os, struct

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "..", "..", "..")
A = "3f2504e0-4f89-41d3-9a0c-0305e82c3301"
C = "6fa459ea-ee8a-4ca4-894e-db77e160355e"
ZA = "0c9e56e1-0000-4000-8000-000000000001"  # fuzzing::JWT_ASSOCIATION


def write(target, items):
    d = os.path.join(HERE, "..", "corpus", target)
    os.makedirs(d, exist_ok=True)
    for i, data in enumerate(items):
        if isinstance(data, str):
            data = data.encode()
        with open(os.path.join(d, "seed-%02d" % i), "wb") as f:
            f.write(data)


def packet(payload, mask=0):
    if isinstance(payload, str):
        payload = payload.encode()
    return b"JET\0" + struct.pack(">H", len(payload) + 8) + bytes([0, mask]) + bytes(b ^ mask for b in payload)


heads = [
    "GET / HTTP/1.1\r\nHost: relay\r\nJet-Version: 1\r\nJet-Method: Accept\r\n\r\n",
    "GET / HTTP/1.1\r\nHost: relay\r\nJet-Method: Connect\r\nJet-Association: %s\r\n\r\n" % A,
    "GET /jet/accept/%s/%s HTTP/1.1\r\nHost: relay\r\nJet-Version: 2\r\n\r\n" % (A, C),
    "GET /jet/connect/%s/%s HTTP/1.1\r\nHost: relay\r\nJet-Version: 3\r\nAuthorization: Bearer x.y.z\r\n\r\n" % (A, C),
    "GET /jet/test/%s/%s?x=1 HTTP/1.1\r\n\r\n" % (A, C),
    "HTTP/1.1 200 OK\r\nVersion: 2\r\nJet-Version: 2\r\nJet-Association: %s\r\n\r\n" % A,
    "HTTP/1.1 400 Bad Request\r\nJet-Version: 1\r\n\r\n",
]
write("jet_packet", [packet(h, m) for h, m in zip(heads, [0, 0x73, 0, 0x73, 0, 0, 0x11])]
      + [packet(heads[2]) + packet(heads[5]), b"JET\0\x00\x07\x00\x00", b"JET\0\xff\xff\x00\x00" + b"A" * 64])

upgrade = ("GET /jet/accept/%s/%s HTTP/1.1\r\nHost: relay\r\nUpgrade: websocket\r\n"
           "Connection: keep-alive, Upgrade\r\nSec-WebSocket-Version: 13\r\n"
           "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: , jet, x\r\n\r\n") % (A, C)
write("http_head", [
    b"\0GET /health HTTP/1.1\r\nHost: relay\r\n\r\n",
    b"\x07GET /metrics HTTP/1.1\r\nAuthorization: Bearer k\r\n\r\nGET /health HTTP/1.0\r\n\r\n",
    ("\0POST /jet/association/%s HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}" % A).encode(),
    ("\x01POST /jet/gather/%s HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello" % A).encode(),
    b"\0POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"\0PUT / HTTP/1.1\r\nContent-Length: +3\r\n\r\nabc",
    b"\0OPTIONS /jet/association HTTP/1.1\r\nOrigin: http://x\r\nConnection: close\r\n\r\n",
    b"\0" + upgrade.encode() + b"\x82\x80\x01\x02\x03\x04",
    # The top bit of the first byte: the relay has API key fuzz-api-key-0000.
    ("\x80POST /jet/association/%s HTTP/1.1\r\nAuthorization: Bearer fuzz-api-key-0000\r\n"
     "Content-Length: 0\r\n\r\nPOST /jet/gather/%s HTTP/1.1\r\nAuthorization: bearer fuzz-api-key-0000\r\n"
     "\r\nGET /jet/association/%s HTTP/1.1\r\nAuthorization: Bearer fuzz-api-key-0000\r\n\r\n"
     "GET /jet/association HTTP/1.1\r\nAuthorization: Bearer fuzz-api-key-0000\r\n\r\n"
     "DELETE /jet/association/%s HTTP/1.1\r\nAuthorization: Bearer fuzz-api-key-0000\r\n\r\n") % (A, A, A, A),
    b"\x81OPTIONS /jet/association HTTP/1.1\r\nOrigin: https://app\r\n\r\nGET /metrics HTTP/1.1\r\nAuthorization: Bearer wrong\r\n\r\n",
    ("\0POST /jet/association/%s/candidates HTTP/1.1\r\nHost: relay.example\r\n\r\nGET /metrics HTTP/1.1\r\n\r\nHEAD /health HTTP/1.1\r\n\r\n" % A).encode(),
])
write("ws_upgrade", [
    upgrade,
    upgrade.replace("13", "8"),
    upgrade.replace("accept", "connect").replace("dGhlIHNhbXBsZSBub25jZQ==", "x3JJHMbDL1EzLkh9GBhXDw=="),
    "GET /jet/test/%s/%s HTTP/1.1\r\nUpgrade: WebSocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: AQIDBAUGBwgJCgsMDQ4PEC==\r\n\r\n" % (A, C),
    "GET /jet/accept/x/y HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
    "POST / HTTP/1.0\r\n\r\n",
])


def frame(op, payload, mask=None, fin=True, rsv=0):
    b0 = (0x80 if fin else 0) | (rsv << 4) | op
    n = len(payload)
    m = 0x80 if mask else 0
    if n < 126:
        h = bytes([b0, m | n])
    elif n < 65536:
        h = bytes([b0, m | 126]) + struct.pack(">H", n)
    else:
        h = bytes([b0, m | 127]) + struct.pack(">Q", n)
    if mask:
        h += bytes(mask)
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return h + payload


K = [1, 2, 3, 4]
client = frame(2, b"hello") + frame(9, b"ping") + frame(0, b" world")
write("ws_frames", [
    # chunk, out_len, flags (bit 0: client role, bits 1..: leftover/8), stream
    bytes([0, 255, 0]) + frame(2, b"hello", K) + frame(9, b"p", K) + frame(8, b"\x03\xe8", K),
    bytes([3, 7, 2]) + frame(1, b"x" * 200, K, fin=False) + frame(0, b"y" * 10, K),
    bytes([0, 0, 1]) + client + frame(8, b""),
    bytes([1, 16, 0]) + frame(2, b"z" * 70000, K)[:300],
    bytes([0, 255, 0]) + frame(9, b"a" * 126, K),
    bytes([0, 255, 0]) + frame(2, b"r", K, rsv=4) + frame(3, b"", K),
    bytes([0, 255, 1]) + frame(10, b"pong") + frame(2, b"", K),
])

v2sig = b"\r\n\r\n\0\r\nQUIT\n"
write("proxy_header", [
    "PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\nGET /",
    "PROXY TCP6 2001:db8::1 2001:db8::2 4242 8080\r\n",
    "PROXY TCP6 ::ffff:192.0.2.1 2001:db8::2 1 2\r\n",
    "PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n",
    "PROXY UNKNOWN\r\n",
    "PROXY TCP4 1.2.3.4",
    v2sig + bytes([0x21, 0x11]) + struct.pack(">H", 12) + bytes([192, 0, 2, 1, 198, 51, 100, 2]) + struct.pack(">HH", 1, 443),
    v2sig + bytes([0x21, 0x21]) + struct.pack(">H", 36 + 7) + bytes(range(32)) + struct.pack(">HH", 9, 10) + b"\x01\x00\x04abcd",
    v2sig + bytes([0x20, 0x00, 0, 0]),
    v2sig + bytes([0x21, 0x31, 0, 216]) + b"/tmp/a".ljust(216, b"\0"),
    v2sig[:7],
])


def b64(x):
    if isinstance(x, (dict, list)):
        x = json.dumps(x, separators=(",", ":"))
    if isinstance(x, str):
        x = x.encode()
    return base64.urlsafe_b64encode(x).rstrip(b"=").decode()


claims = {"type": "association", "jet_aid": ZA, "jet_cm": "rdv", "jti": "j1",
          "exp": 1767229200, "nbf": 1767225000, "iat": 1767225000.5, "jet_ap": "rdp", "jet_rec": False}
write("jwt", [
    b64({"alg": "none"}) + "." + b64(claims) + ".",
    b64({"alg": "none", "typ": "JWT"}) + "." + b64(dict(claims, exp=1)) + ".",
    b64({"alg": "RS256", "kid": "rsa"}) + "." + b64(claims) + "." + b64(b"\0" * 256),
    b64({"alg": "ES256"}) + "." + b64(claims) + "." + b64(b"\1" * 64),
    b64({"alg": "EdDSA", "crit": ["b64"]}) + "." + b64(claims) + "." + b64(b"\2" * 64),
    b64({"alg": "HS256"}) + "." + b64({}) + ".",
    b64({"alg": "none"}) + "." + b64(dict(claims, jet_cm="fwd", jet_aid="nope")) + ".",
    "a.b",
    b64({"alg": "none", "alg ": 1}) + "." + b64("[1e400]") + ".",
])

tomls = []
for path in ["relay.toml", "dist/docker/relay.toml"]:
    with open(os.path.join(ROOT, path)) as f:
        tomls.append(f.read())
tomls += [
    'handshake_timeout = 0.25\nidle_timeout = 3\n[[listeners]]\nurl = "tcp://[::1]:0"\n',
    '[[listeners]]\nurl = "udp://1.2.3.4:5"',
    '[[listeners]]\nurl = "tls://h:1"\ncert = "c.pem"\nkey = "k.pem"\nexternal_url = "wss://x/"',
    'api_key = "0123456789abcdef"\naccept_requires_api = true\ncors_origin = "*"\nmax_threads = 4\n[[listeners]]\nurl = "ws://0.0.0.0:80"\n[[listeners]]\nurl = "wss://[::]:443"\n',
    'instance = ""\nlog_level = "trace"\nassociation_ttl = 1e300\n',
]
write("relay_toml", tomls)
