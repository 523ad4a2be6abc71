"""The backend's handle on its egress proxy process (service.py): started on the first sandbox whose policy
names hosts, told each such sandbox's rules by its address, asked for its counters.

Calls are blocking (a line written, a line read, well under a millisecond) and made from the backend's
worker threads, as its nft calls are; one lock keeps requests and answers paired. A proxy process that died
is started again at once by a thread that waits on it, on the ports the nft rules name, and given every rule
it held: a crash costs the connections it was carrying, and its sandboxes' DNS answers remembered (a
connection by name then waits for the proxy's own lookup of the name).
"""
from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
from typing import Any

from sandboxd.errors import RuntimeFailure
from sandboxd.runtime.egressproxy.rules import HostRules

log = logging.getLogger(__name__)
MARK = 0x5BD0  # on the proxy's own connections: the floor's output chain (runtime/network.py) applies to them


class EgressProxy:
    def __init__(self, upstreams: list[str]):
        self.upstreams = upstreams
        self._proc: subprocess.Popen | None = None
        self._ports: tuple[int, int] | None = None
        self._rules: dict[str, HostRules] = {}
        self._lock = threading.Lock()
        self._closed = False

    def ports(self) -> tuple[int, int]:
        """(dns, tcp): where the sandbox's redirected traffic goes; the process is started if need be."""
        with self._lock:
            return self._ensure()

    def put(self, sandbox_ip: str, rules: HostRules) -> tuple[int, int]:
        with self._lock:
            ports = self._ensure()
            self._rules[sandbox_ip] = rules
            self._call({"op": "put", "ip": sandbox_ip, "rules": rules.to_dict()})
            return ports

    def drop(self, sandbox_ip: str) -> None:
        with self._lock:
            if self._rules.pop(sandbox_ip, None) is not None and self._alive():
                self._call({"op": "drop", "ip": sandbox_ip})

    def stats(self, sandbox_ip: str) -> dict[str, Any]:
        with self._lock:
            if sandbox_ip not in self._rules or not self._alive():
                return {"destinations": {}, "refused": []}
            return self._call({"op": "stats", "ip": sandbox_ip})["stats"]

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._proc is not None:
                self._proc.kill()
                self._proc.wait()
                self._proc = None

    # -- under the lock ------------------------------------------------------------------------------
    def _alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _ensure(self) -> tuple[int, int]:
        if self._alive() and self._ports is not None:
            return self._ports
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
        dns, tcp = self._ports or (0, 0)  # a restart takes the ports the nft rules name
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "sandboxd.runtime.egressproxy", "--mark", hex(MARK),
             "--upstreams", ",".join(self.upstreams), "--dns-port", str(dns), "--tcp-port", str(tcp)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        first = self._read()
        self._ports = (int(first["dns"]), int(first["tcp"]))
        for ip, rules in self._rules.items():  # a restarted proxy holds what the dead one held
            self._call({"op": "put", "ip": ip, "rules": rules.to_dict()})
        self._closed = False
        threading.Thread(target=self._watch, args=(self._proc,), daemon=True, name="egress-proxy-watch").start()
        return self._ports

    def _watch(self, proc: subprocess.Popen) -> None:
        """Start the proxy again when it dies on its own (not by close() or a restart already made)."""
        proc.wait()
        with self._lock:
            if self._closed or self._proc is not proc:
                return
            try:
                self._ensure()
            except (RuntimeFailure, OSError, ValueError) as exc:  # the next call tries again, and says why
                log.error("the egress proxy died and did not start again: %s", exc)

    def _read(self) -> dict[str, Any]:
        assert self._proc is not None and self._proc.stdout is not None
        line = self._proc.stdout.readline()
        if not line:
            raise RuntimeFailure("the egress proxy exited", details={"rc": self._proc.poll()})
        return json.loads(line)

    def _call(self, request: dict[str, Any]) -> dict[str, Any]:
        assert self._proc is not None and self._proc.stdin is not None
        try:
            self._proc.stdin.write(json.dumps(request) + "\n")
            answer = self._read()
        except (OSError, ValueError) as exc:
            raise RuntimeFailure(f"the egress proxy failed: {exc}") from exc
        if not answer.get("ok"):
            raise RuntimeFailure(f"the egress proxy refused a request: {answer.get('error')}")
        return answer
