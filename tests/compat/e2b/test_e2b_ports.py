"""A sandbox's own ports through the gateway, as E2B users reach them: `sandbox.get_host(port)` (routed by
host, `{port}-{sandboxID}.{domain}`) or the shared URL with E2b-Sandbox-Id / E2b-Sandbox-Port."""
from __future__ import annotations

import random
import time

import httpx
import pytest
from e2b import Sandbox

# Python's http.server inside the sandbox; -u so the background command's output is not buffered.
SERVE = "mkdir -p {d} && echo hello-from-{port} > {d}/index.html && cd {d} && exec python3 -u -m http.server {port} --bind 127.0.0.1"


def _serve(sbx: Sandbox) -> int:
    port = random.randint(20000, 40000)  # the fake backend's sandboxes share the host's loopback
    sbx.commands.run(SERVE.format(d=f"/tmp/site-{port}", port=port), background=True)
    return port


def _get(url: str, **headers) -> httpx.Response:
    deadline = time.monotonic() + 20
    while True:
        r = httpx.get(url, headers=headers, timeout=10)
        if r.status_code != 502 or time.monotonic() > deadline:  # 502 until the server listens
            return r
        time.sleep(0.1)


def test_get_host_reaches_a_server_in_the_sandbox(e2b_env):
    sbx = Sandbox.create(timeout=120)
    try:
        port = _serve(sbx)
        host = sbx.get_host(port)
        assert host == f"{port}-{sbx.sandbox_id}.e2b.app"  # E2B_DOMAIN unset: any domain routes by host
        gateway = e2b_env["sandbox"]
        r = _get(f"{gateway}/index.html", Host=host)
        assert r.status_code == 200 and r.text == f"hello-from-{port}\n"
        # Keep-alive across requests, a HEAD, a 404 of the app itself: the app answers, not the gateway.
        with httpx.Client(base_url=gateway, headers={"Host": host}, timeout=10) as c:
            assert [c.get("/index.html").status_code, c.head("/index.html").status_code,
                    c.get("/nope").status_code] == [200, 200, 404]
        # The shared URL, naming the sandbox and the port in headers.
        r = _get(f"{gateway}/index.html", **{"E2b-Sandbox-Id": sbx.sandbox_id, "E2b-Sandbox-Port": str(port)})
        assert r.status_code == 200 and r.text == f"hello-from-{port}\n"
        closed = httpx.get(f"{gateway}/", headers={"Host": f"{port + 1}-{sbx.sandbox_id}.e2b.app"}, timeout=10)
        assert closed.status_code == 502 and "port is not open" in closed.json()["message"]
        # Another sandbox's token does not open this one's ports.
        other = Sandbox.create(timeout=60)
        try:
            r = httpx.get(f"{gateway}/index.html", timeout=10,
                          headers={"Host": host, "E2B-Traffic-Access-Token": other.traffic_access_token})
            assert r.status_code == 401
        finally:
            other.kill()
    finally:
        sbx.kill()
    gone = httpx.get(f"{e2b_env['sandbox']}/index.html", headers={"Host": host}, timeout=10)
    assert gone.status_code in (401, 502)  # killed: nothing answers for it any more


def test_private_ports_need_the_traffic_token(e2b_env):
    sbx = Sandbox.create(timeout=120, network={"allow_public_traffic": False})
    try:
        port = _serve(sbx)
        host, gateway = sbx.get_host(port), e2b_env["sandbox"]
        denied = httpx.get(f"{gateway}/index.html", headers={"Host": host}, timeout=10)
        assert denied.status_code == 401
        assert sbx.traffic_access_token
        r = _get(f"{gateway}/index.html", Host=host, **{"E2B-Traffic-Access-Token": sbx.traffic_access_token})
        assert r.status_code == 200 and r.text == f"hello-from-{port}\n"
    finally:
        sbx.kill()


@pytest.mark.parametrize("port", ["0", "70000", "x"])
def test_bad_ports_are_refused(e2b_env, port):
    r = httpx.get(f"{e2b_env['sandbox']}/", headers={"E2b-Sandbox-Id": "sbnope", "E2b-Sandbox-Port": port},
                  timeout=10)
    assert r.status_code == 400


# A WebSocket echo server with the standard library only (the template has no websockets package).
WS_ECHO = r'''
import base64, hashlib, socket, sys
def exact(c, n):
    b = b""
    while len(b) < n:
        chunk = c.recv(n - len(b))
        if not chunk:
            raise EOFError
        b += chunk
    return b
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1])))
s.listen()
while True:
    c, _ = s.accept()
    head = b""
    while b"\r\n\r\n" not in head:
        head += c.recv(4096)
    key = [l.split(b":", 1)[1].strip() for l in head.split(b"\r\n") if l.lower().startswith(b"sec-websocket-key")][0]
    accept = base64.b64encode(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
    c.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
              b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n")
    try:
        while True:
            b0, b1 = exact(c, 2)
            n = b1 & 0x7F
            if n == 126:
                n = int.from_bytes(exact(c, 2), "big")
            mask = exact(c, 4)
            data = bytes(x ^ mask[i % 4] for i, x in enumerate(exact(c, n)))
            if b0 & 0x0F == 8:
                break
            reply = b"echo:" + data
            size = bytes([len(reply)]) if len(reply) < 126 else bytes([126]) + len(reply).to_bytes(2, "big")
            c.sendall(b"\x81" + size + reply)
    except EOFError:
        pass
    c.close()
'''


def test_websocket_to_a_server_in_the_sandbox(e2b_env):
    """An upgrade through the gateway reaches the sandbox's own port and frames flow both ways."""
    from websockets.sync.client import connect

    sbx = Sandbox.create(timeout=120)
    try:
        port = random.randint(20000, 40000)
        sbx.files.write(f"/tmp/ws-{port}.py", WS_ECHO)
        sbx.commands.run(f"exec python3 -u /tmp/ws-{port}.py {port}", background=True)
        headers = {"E2b-Sandbox-Id": sbx.sandbox_id, "E2b-Sandbox-Port": str(port)}
        url = e2b_env["sandbox"].replace("http://", "ws://") + "/chat"
        deadline = time.monotonic() + 20
        while True:
            try:
                ws = connect(url, additional_headers=headers, open_timeout=5)
                break
            except Exception:  # 502 until the server listens
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        with ws:
            for text in ("one", "two" * 50):
                ws.send(text)
                assert ws.recv(timeout=10) == f"echo:{text}"
    finally:
        sbx.kill()
