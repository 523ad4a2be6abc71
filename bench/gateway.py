"""Gateway overhead: GET /health straight to an agent's unix socket vs through the gateway (TCP + JWT check).

Runs `sandboxd serve` on the fake backend in a temp dir, creates one sandbox, then times N keep-alive
requests each way (interleaved, same client code) and prints p50/p90/p99 and the added latency.
Usage: .venv/bin/python bench/gateway.py [N]
"""
from __future__ import annotations

import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from support.server import CPServer  # noqa: E402  (the test suites' `sandboxd serve` harness)


def read_response(sock: socket.socket, buf: bytearray) -> None:
    while b"\r\n\r\n" not in buf:
        buf += sock.recv(65536)
    head, _, rest = bytes(buf).partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    while len(rest) < length:
        rest += sock.recv(65536)
    buf[:] = rest[length:]


def timer(sock: socket.socket, request: bytes):
    buf = bytearray()

    def one() -> float:
        t = time.perf_counter()
        sock.sendall(request)
        read_response(sock, buf)
        return time.perf_counter() - t

    return one


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p))] * 1000


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    with tempfile.TemporaryDirectory(prefix="bench-gw-") as d:
        srv = CPServer(Path(d)).start()
        try:
            with srv.client() as c:
                sb = c.post("/v1/sandboxes", json={"template_name": "base"}).json()
            direct = socket.socket(socket.AF_UNIX)
            direct.connect(str(Path(d) / "sandboxes" / sb["id"] / "agent.sock"))
            gw = socket.create_connection(("127.0.0.1", srv.port + 1))
            gw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            base = b"GET /health HTTP/1.1\r\nHost: agent\r\n"
            d_one = timer(direct, base + b"\r\n")
            g_one = timer(gw, base + f"Authorization: Bearer {sb['auth_token']}\r\n\r\n".encode())
            for _ in range(200):  # warm up both paths
                d_one(), g_one()
            ds, gs = [], []
            for _ in range(n):
                ds.append(d_one())
                gs.append(g_one())
            print(f"requests each way: {n}")
            print(f"direct unix socket  p50 {pct(ds, .5):.3f} ms  p90 {pct(ds, .9):.3f} ms  p99 {pct(ds, .99):.3f} ms")
            print(f"through the gateway p50 {pct(gs, .5):.3f} ms  p90 {pct(gs, .9):.3f} ms  p99 {pct(gs, .99):.3f} ms")
            added = [g - x for g, x in zip(gs, ds)]
            print(f"added by the gateway: p50 {statistics.median(added) * 1000:.3f} ms "
                  f"(p50 difference {pct(gs, .5) - pct(ds, .5):.3f} ms; goal < 1 ms)")
            direct.close()
            gw.close()
        finally:
            srv.close()


if __name__ == "__main__":
    main()
