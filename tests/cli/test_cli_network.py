"""`sandboxd network show/set` (docs/network.md) against a real control plane on the fake backend, through a
recording relay: the body `set` sends, the server's refusal (a bad entry, the fake backend's 501) as one
clear error line with a non-zero exit, and, from answers a real backend gives, what `show` prints."""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from support.network import NETWORK_ANSWER
from support.server import running_server
from test_cli import one_error_line

ANSWER = {k: v for k, v in NETWORK_ANSWER.items() if k != "id"}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The fake backend whatever the suite's default: its refusal is what the CLI must report here."""
    yield from running_server(tmp_path_factory, "fake")


class Relay:
    """Sits between the CLI and the server: keeps (method, path, JSON body) of each request and passes it on,
    or gives the answer set in `canned` for that method and path."""

    def __init__(self, target: str):
        self.sent: list[tuple[str, str, object]] = []
        self.canned: dict[tuple[str, str], dict] = {}
        relay = self

        class Handler(BaseHTTPRequestHandler):
            def relay(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                relay.sent.append((self.command, self.path, json.loads(body) if body else None))
                canned = relay.canned.get((self.command, self.path))
                if canned is not None:
                    status, payload, ctype = 200, json.dumps(canned).encode(), "application/json"
                else:
                    headers = {k: v for k, v in self.headers.items() if k.lower() in ("x-api-key", "content-type")}
                    r = httpx.request(self.command, target + self.path, content=body, headers=headers,
                                      trust_env=False, timeout=60)
                    status, payload, ctype = r.status_code, r.content, r.headers.get("content-type", "")
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_PUT = do_POST = do_DELETE = relay

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def relay(server):
    r = Relay(server.url)
    yield r
    r.close()


def test_help_lists_both_commands(cli):
    r = cli("network", "--help", COLUMNS="120")
    assert r.returncode == 0 and "show " in r.stdout and "set " in r.stdout, r.stdout
    assert "network " in cli("--help", COLUMNS="120").stdout
    flags = cli("network", "set", "--help", COLUMNS="160").stdout
    assert all(f in flags for f in ("--allow", "--deny", "--header", "--dns", "--no-internet", "--proxy",
                                    "--proxy-tls", "--json")), flags


def test_set_sends_the_whole_policy_and_reports_the_backends_refusal(cli, relay, sandbox_id):
    r = cli("network", "set", sandbox_id, "--allow", "api.example.test", "--allow", "198.51.100.0/24",
            "--deny", "0.0.0.0/0", "--header", "api.example.test:Authorization=Bearer x",
            "--header", "api.example.test:X-Query=a=b:c", "--header", "other.example.test:X-Team=7",
            "--dns", "192.0.2.53", "--no-internet", SANDBOXD_URL=relay.url)
    line = one_error_line(r)
    assert "cannot enforce egress rules" in line and "status=501" in line and "code=egress_not_supported" in line
    assert relay.sent == [("PUT", f"/v1/sandboxes/{sandbox_id}/network", {
        "allow_out": ["api.example.test", "198.51.100.0/24"], "deny_out": ["0.0.0.0/0"],
        "rules": {"api.example.test": [{"transform": {"headers": {"Authorization": "Bearer x", "X-Query": "a=b:c"}}}],
                  "other.example.test": [{"transform": {"headers": {"X-Team": "7"}}}]},
        "dns_servers": ["192.0.2.53"], "allow_internet_access": False})]
    assert r.stdout == ""

    relay.sent.clear()  # the proxy's credentials come from the environment, never the command line
    r = cli("network", "set", sandbox_id, "--proxy", "socks.example.test:1080", "--proxy-tls",
            SANDBOXD_URL=relay.url, SANDBOXD_PROXY_USER="agent", SANDBOXD_PROXY_PASSWORD="s3cret")
    assert "egress_not_supported" in one_error_line(r)
    assert relay.sent == [("PUT", f"/v1/sandboxes/{sandbox_id}/network", {"egress_proxy": {
        "address": "socks.example.test:1080", "username": "agent", "password": "s3cret", "tls": True}})]

    relay.sent.clear()
    r = cli("network", "set", sandbox_id, SANDBOXD_URL=relay.url)  # nothing given: the policy is cleared
    assert "egress_not_supported" in one_error_line(r)
    assert relay.sent == [("PUT", f"/v1/sandboxes/{sandbox_id}/network", {})]


def test_a_bad_entry_or_header_is_one_error_line(cli, relay, sandbox_id):
    r = cli("network", "set", sandbox_id, "--allow", "bad host!", "--deny", "0.0.0.0/0")
    line = one_error_line(r)
    assert "'bad host!'" in line and "allow_out" in line and "status=400" in line, line
    r = cli("network", "set", sandbox_id, "--header", "api.example.test=Authorization", SANDBOXD_URL=relay.url)
    assert "HOST:NAME=VALUE" in one_error_line(r) and relay.sent == []  # refused before anything is sent
    assert "not found" in one_error_line(cli("network", "set", "sbnobody", "--deny", "0.0.0.0/0")).lower()


def test_show_on_a_backend_without_a_network_is_one_error_line(cli, sandbox_id):
    for args in ([], ["--json"]):
        r = cli("network", "show", sandbox_id, *args)
        assert "egress_not_supported" in one_error_line(r) and r.stdout == ""


def test_show_and_set_print_the_policy_refusals_and_traffic(cli, relay, sandbox_id):
    """A real backend's answer (the fake backend has none to give), as the server would send it."""
    path = f"/v1/sandboxes/{sandbox_id}/network"
    relay.canned[("GET", path)] = relay.canned[("PUT", path)] = {"id": sandbox_id, **ANSWER}
    r = cli("network", "show", sandbox_id, SANDBOXD_URL=relay.url, COLUMNS="120")
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "│ allow_out " in out and "│ www.example.test " in out and "│ dns_servers  │ (default)" in out
    assert "api.example.test: Authorization" in out and "s3cret" not in out  # header values only in --json
    assert "socks5://agent@socks.example.test:1080 over TLS" in out
    assert "3 packets, 180 bytes" in out and "203.0.113.81" in out
    [refusal] = [ln for ln in out.splitlines() if "name_not_resolved" in ln]
    assert "│ 443 " in refusal and "2026-11-30" in refusal
    [direct] = [ln for ln in out.splitlines() if "198.51.100.7" in ln]
    assert "│ 60 " in direct and "│ - " in direct  # bytes received are not counted for direct traffic

    shown = json.loads(cli("network", "show", sandbox_id, "--json", SANDBOXD_URL=relay.url).stdout)
    assert shown["rules"] == ANSWER["rules"] and shown["usage"][0]["bytes_received"] == 1380
    assert shown["denied"]["refusals"][0]["reason"] == "name_not_resolved"
    assert shown["denied"]["refusals"][0]["time"].startswith("2026-11-30T")

    r = cli("network", "set", sandbox_id, "--allow", "www.example.test", "--no-internet", SANDBOXD_URL=relay.url,
            COLUMNS="120")
    assert r.returncode == 0 and "name_not_resolved" in r.stdout and "│ deny_out " in r.stdout, r.stderr
    assert relay.sent[-1] == ("PUT", path, {"allow_out": ["www.example.test"], "allow_internet_access": False})
