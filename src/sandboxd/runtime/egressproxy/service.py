"""The egress proxy's own process: the resolver and the TCP proxy over one table, driven through its stdin.

It runs apart from the control plane so that proxied traffic never competes with the API's event loop, and
it dies with the backend that started it (EOF on its stdin, which the kernel gives it whenever that process
ends; not PR_SET_PDEATHSIG, which fires when the *thread* that started it ends): a restarted backend
starts a new one and writes every running sandbox's rules into it again, as it does the nft rules. One that
crashed is started again on the ports it had (`--dns-port`, `--tcp-port`), where the nft rules send traffic.

Protocol: one JSON object per line each way. It first prints `{"dns": port, "tcp": port}`; then for each
request `{"op": "put", "ip", "rules"}`, `{"op": "drop", "ip"}` or `{"op": "stats", "ip"}` it answers one
line (`{"ok": true}` or `{"ok": true, "stats": {...}}`, `{"ok": false, "error"}` for a bad request).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

import uvloop

from sandboxd.runtime.egressproxy.proxy import Proxy
from sandboxd.runtime.egressproxy.resolver import Resolver, lookup
from sandboxd.runtime.egressproxy.rules import HostRules, Table

def _upstreams(text: str) -> list[tuple[str, int]]:
    out = []
    for item in filter(None, (w.strip() for w in text.split(","))):
        host, _, port = item.partition(":") if item.count(":") == 1 else (item, "", "")
        out.append((host, int(port or 53)))
    return out


def handle(table: Table, request: dict[str, Any]) -> dict[str, Any]:
    op, ip = request.get("op"), request.get("ip")
    if not isinstance(ip, str):
        return {"ok": False, "error": "ip missing"}
    if op == "put":
        table.put(ip, HostRules.from_dict(request.get("rules") or {}))
        return {"ok": True}
    if op == "drop":
        table.drop(ip)
        return {"ok": True}
    if op == "stats":
        return {"ok": True, "stats": table.stats(ip)}
    return {"ok": False, "error": f"unknown op {op!r}"}


async def main(mark: int, upstreams: list[tuple[str, int]], dns_port: int = 0, tcp_port: int = 0) -> None:
    table = Table()
    resolver = Resolver(table, upstreams)
    proxy = Proxy(table, lambda name: lookup(name, upstreams), mark)
    dns_port = await resolver.start(port=dns_port)
    tcp_port = await proxy.start(port=tcp_port)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 22)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    out = sys.stdout
    out.write(json.dumps({"dns": dns_port, "tcp": tcp_port}) + "\n")
    out.flush()
    try:
        while line := await reader.readline():
            try:
                answer = handle(table, json.loads(line))
            except (ValueError, TypeError, KeyError) as exc:
                answer = {"ok": False, "error": str(exc)}
            out.write(json.dumps(answer) + "\n")
            out.flush()
    finally:
        await proxy.close()
        await resolver.close()


def run(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m sandboxd.runtime.egressproxy")
    parser.add_argument("--mark", type=lambda s: int(s, 0), required=True)
    parser.add_argument("--upstreams", default="", help="resolvers to forward to: ip[:port],...")
    parser.add_argument("--dns-port", type=int, default=0)
    parser.add_argument("--tcp-port", type=int, default=0)
    args = parser.parse_args(argv)
    # uvloop: a proxied connection's setup costs the proxy about half the CPU it does on asyncio's own loop
    # (bench/egress.py).
    uvloop.run(main(args.mark, _upstreams(args.upstreams), args.dns_port, args.tcp_port))
