"""SANDBOXD_PUBLIC_DOMAIN: the E2B routes return it as `domain`, so the official SDK's `get_host(port)` names
a host the gateway routes to that sandbox's port (with a wildcard DNS name pointing at the gateway)."""
from __future__ import annotations

import random
import time

import httpx

from support.server import CPServer

DOMAIN = "sandboxes.example.test"


def test_get_host_uses_the_public_domain(tmp_path, monkeypatch):
    srv = CPServer(tmp_path, None, SANDBOXD_PUBLIC_DOMAIN=DOMAIN).start()
    try:
        for name, value in {"E2B_API_URL": srv.base, "E2B_SANDBOX_URL": srv.gateway, "E2B_API_KEY": srv.key}.items():
            monkeypatch.setenv(name, value)
        monkeypatch.delenv("E2B_DOMAIN", raising=False)
        from e2b import Sandbox

        sbx = Sandbox.create(timeout=60)
        try:
            port = random.randint(20000, 40000)  # the fake backend's sandboxes share the host's loopback
            host = sbx.get_host(port)
            assert host == f"{port}-{sbx.sandbox_id}.{DOMAIN}"
            assert Sandbox.get_info(sbx.sandbox_id).sandbox_domain == DOMAIN
            assert Sandbox.connect(sbx.sandbox_id).get_host(port) == host
            sbx.commands.run(f"mkdir -p /tmp/d-{port} && cd /tmp/d-{port} && echo hi > i.txt && "
                             f"exec python3 -m http.server {port} --bind 127.0.0.1", background=True)
            deadline = time.monotonic() + 20
            while (r := httpx.get(f"{srv.gateway}/i.txt", headers={"Host": host})).status_code == 502:
                assert time.monotonic() < deadline, r.text
                time.sleep(0.1)
            assert r.status_code == 200 and r.text == "hi\n"
        finally:
            sbx.kill()
    finally:
        srv.close()
