"""Egress proxy benchmark (docs/network.md): what admitting connections by name costs, against the same
connections let through by address, in the same run.

    .venv/bin/python bench/egress.py [--conns 300] [--mib 1024] [--template base]

Two real sandboxes reach one server over a network this script makes (a network namespace behind a veth
pair, 203.0.113.95 for the server and 203.0.113.53 for its DNS, routed by the host only into it, checked
before anything is sent; the namespace has no default route). One is allowed `bench.test` by name under
deny-all, so its connections go through the egress proxy; the floor is the other, allowed the server's
address, so its connections go straight out through nft.

Rows:
  connection setup  connect + one HTTP request/response + close, timed inside the sandbox (p50/p95/p99 ms);
                    the target is at most 1 ms added at p50
  bulk transfer     --mib MiB from the server through one connection: throughput, and the egress proxy
                    process's CPU per Gbit/s (its utime+stime over the transfer); the floor's row is the
                    sandbox client's own CPU for the same transfer, direct
Needs root, crun and a built template. Asserts nothing; JSON goes to bench/results/egress-<time>.json.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from runtime import dist  # noqa: E402  (bench/runtime.py)

from sandboxd.config import Settings  # noqa: E402
from sandboxd.runtime import get_backend  # noqa: E402
from sandboxd.runtime.base import Egress, Resources, SandboxSpec  # noqa: E402
from sandboxd.runtime.hostsetup import prepare_host  # noqa: E402
from sandboxd.templates.store import TemplateStore  # noqa: E402

SERVER, DNS, NS, VETH = "203.0.113.95", "203.0.113.53", "sbxbench-egress", "vbench0"

SERVE = r"""
import socket, socketserver, sys, threading
import dns.message, dns.rrset
class H(socketserver.StreamRequestHandler):
    def handle(self):
        while True:
            line = self.rfile.readline()
            if not line:
                return
            while self.rfile.readline() not in (b"\r\n", b""):
                pass
            size = int(line.split()[1].strip(b"/") or 0)
            self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size)
            chunk = b"x" * 65536
            while size:
                n = min(size, len(chunk)); self.wfile.write(chunk[:n]); size -= n
class S(socketserver.ThreadingTCPServer):
    allow_reuse_address = True; daemon_threads = True
threading.Thread(target=S(("0.0.0.0", 8000), H).serve_forever, daemon=True).start()
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); udp.bind((sys.argv[1], 53))
print("ready", flush=True)
while True:
    wire, peer = udp.recvfrom(4096)
    q = dns.message.from_wire(wire); r = dns.message.make_response(q)
    if q.question[0].name.to_text() == "bench.test." and q.question[0].rdtype == 1:
        r.answer.append(dns.rrset.from_text("bench.test.", 30, "IN", "A", sys.argv[2]))
    udp.sendto(r.to_wire(), peer)
"""

# Inside the sandbox: N connections, each connect + GET /1 + the answer + close; then one GET of the bulk.
CLIENT = r"""
import json, resource, socket, sys, time
n, bulk = int(sys.argv[1]), int(sys.argv[2])
addr = sys.argv[3] or socket.gethostbyname("bench.test")  # the direct floor has no resolver to ask
def get(size):
    s = socket.create_connection((addr, 8000), timeout=30)
    s.sendall(b"GET /%d HTTP/1.1\r\nHost: bench.test\r\n\r\n" % size)
    head, want = b"", None
    while want is None or want > 0:
        chunk = s.recv(1 << 20)
        if not chunk:
            break
        if want is None:
            head += chunk
            if b"\r\n\r\n" in head:
                want = size - len(head.partition(b"\r\n\r\n")[2])
        else:
            want -= len(chunk)
    s.close()
times = []
for _ in range(n):
    t = time.perf_counter(); get(1); times.append((time.perf_counter() - t) * 1000)
r0 = resource.getrusage(resource.RUSAGE_SELF); t = time.perf_counter()
get(bulk)
wall = time.perf_counter() - t; r1 = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"setup_ms": times, "bulk_s": wall, "client_cpu_s": r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime}))
"""


def sh(*argv: str, stdin: str | None = None) -> str:
    return subprocess.run(argv, input=stdin, capture_output=True, text=True, check=True).stdout


def make_net() -> subprocess.Popen:
    for addr in (SERVER, DNS):
        routes = json.loads(sh("ip", "-j", "-4", "route", "show", "match", addr))
        if any(r["dst"] != "default" for r in routes):
            sys.exit(f"{addr} is already routed on this host: not ours to use")
    sh("ip", "netns", "add", NS)
    sh("ip", "link", "add", VETH, "type", "veth", "peer", "name", "peer0", "netns", NS)
    sh("ip", "-b", "-", stdin=f"addr add 198.51.100.249/30 dev {VETH}\nlink set {VETH} up\n"
       f"route add {SERVER}/32 via 198.51.100.250\nroute add {DNS}/32 via 198.51.100.250\n")
    sh("ip", "-n", NS, "-b", "-", stdin=f"link set lo up\naddr add 198.51.100.250/30 dev peer0\n"
       f"addr add {SERVER}/32 dev peer0\naddr add {DNS}/32 dev peer0\nlink set peer0 up\n")
    for addr in (SERVER, DNS):
        assert f"dev {VETH}" in sh("ip", "route", "get", addr)
    assert "default" not in sh("ip", "-n", NS, "route", "show")
    proc = subprocess.Popen(["ip", "netns", "exec", NS, sys.executable, "-c", SERVE, DNS, SERVER],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc


def drop_net(proc: subprocess.Popen | None) -> None:
    if proc:
        proc.kill()
        proc.wait()
    subprocess.run(["ip", "link", "del", VETH], capture_output=True)
    subprocess.run(["ip", "netns", "del", NS], capture_output=True)


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def measure(backend, image, egress: Egress, conns: int, mib: int) -> dict:
    sid = f"egbench-{uuid.uuid4().hex[:8]}"
    spec = SandboxSpec(id=sid, image=image, resources=Resources(vcpu=1, memory_mb=512, disk_mb=512, pids=256),
                       internet_access=True, egress=egress)
    await backend.create(spec)
    try:
        proc = backend.egress_proxy._proc
        before = cpu_s(proc.pid) if egress.by_name and proc else 0.0
        addr = "" if egress.by_name else SERVER
        r = await backend.exec(sid, ["python3", "-c", CLIENT, str(conns), str(mib << 20), addr], timeout=600)
        if r.exit_code != 0:
            sys.exit(f"client failed ({egress}): {r.stderr.decode(errors='replace')[-2000:]}")
        got = json.loads(r.stdout)
        proxy_cpu = cpu_s(proc.pid) - before if egress.by_name and proc else None
        return {**got, "proxy_cpu_s": proxy_cpu}
    finally:
        await backend.destroy(sid)


def row(name: str, ours: dict, floor: dict, mib: int) -> list[dict]:
    s, f = dist(ours["setup_ms"]), dist(floor["setup_ms"])
    assert s and f
    gbit = mib * 8 * (1 << 20) / 1e9
    return [
        {"figure": "connection setup (ms)", "target": "≤ 1 ms added at p50", "ours": s, "floor": f,
         "added_p50_ms": s["p50"] - f["p50"], "ratio_p50": s["p50"] / f["p50"], "floor_is": "direct, by address"},
        {"figure": f"bulk {mib} MiB", "ours_gbit_s": gbit / ours["bulk_s"], "floor_gbit_s": gbit / floor["bulk_s"],
         "proxy_cpu_s_per_gbit": ours["proxy_cpu_s"] / gbit, "floor_client_cpu_s_per_gbit": floor["client_cpu_s"] / gbit,
         "floor_is": "the sandbox client's own CPU for the same transfer, direct"},
    ]


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--conns", type=int, default=300)
    ap.add_argument("--mib", type=int, default=1024)
    ap.add_argument("--template", default="base")
    args = ap.parse_args()
    data = Path(tempfile.mkdtemp(prefix="egbench-", dir="/tmp"))
    templates = os.environ.get("SANDBOXD_TEMPLATES_PATH") or "/var/lib/sandboxd/templates"
    settings = Settings(data_dir=data, backend="crun", templates_path=Path(templates),
                        egress_allow_cidrs=f"{SERVER}/32", egress_resolvers=DNS)
    image = TemplateStore(settings).get(args.template)
    proc = None
    backend = None
    try:
        proc = make_net()
        prepare_host(settings, backend="crun")
        backend = get_backend(settings)
        direct = await measure(backend, image, Egress(allow=(f"{SERVER}/32",), deny=("0.0.0.0/0",)), args.conns, args.mib)
        named = await measure(backend, image, Egress(deny=("0.0.0.0/0",), allow_names=("bench.test",)), args.conns, args.mib)
    finally:
        if backend is not None:
            await backend.close()
        drop_net(proc)
    rows = row("egress", named, direct, args.mib)
    for r in rows:
        print(json.dumps(r))
    out = Path(__file__).resolve().parent / "results" / f"egress-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.write_text(json.dumps({"args": vars(args), "rows": rows}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    asyncio.run(main())
