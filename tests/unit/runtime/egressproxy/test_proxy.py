"""The egress proxy end to end over loopback: admission by TLS SNI and HTTP Host, refusals (403 for HTTP, a
reset otherwise), header rules on keep-alive requests and bodies, counters, the lookup retry, server-first
protocols decided by address, and hostile clients. Everything runs on 127.0.0.1: the original destination of
each accepted connection is injected (no nft redirect here) and points at a test server the test started."""
from __future__ import annotations

import asyncio
import json
import socket
import ssl
import subprocess

import h11
import pytest

from sandboxd.runtime.egressproxy.proxy import Proxy
from sandboxd.runtime.egressproxy.rules import HostRules, Table

SANDBOX = "127.0.0.1"  # the proxy sees the test client as the sandbox
NAME = "www.test.example"
ELSEWHERE = "192.0.2.1"  # a documentation address: only ever written into the table, never connected to


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    """A throwaway CA and a leaf for NAME, made with the openssl CLI."""
    d = tmp_path_factory.mktemp("certs")

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    run("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=test ca")
    run("req", *ec, "-keyout", "leaf.key", "-out", "leaf.csr", "-subj", f"/CN={NAME}")
    (d / "ext").write_text(f"subjectAltName=DNS:{NAME}\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n")
    run("x509", "-req", "-in", "leaf.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out",
        "leaf.pem", "-days", "2", "-extfile", "ext")
    return d


async def _echo_http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Answers every request with what it received: method, target, headers (as sent) and body."""
    conn = h11.Connection(h11.SERVER)
    req: h11.Request | None = None
    body = b""
    try:
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await reader.read(65536))
            elif isinstance(event, h11.Request):
                req, body = event, b""
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                assert req is not None
                answer = json.dumps({"method": req.method.decode(), "target": req.target.decode(),
                                     "headers": [[k.decode(), v.decode()] for k, v in req.headers.raw_items()],
                                     "body": body.decode()}).encode()
                writer.write(conn.send(h11.Response(status_code=200, headers=[("content-length",
                                                                                 str(len(answer)))])))
                writer.write(conn.send(h11.Data(data=answer)) + conn.send(h11.EndOfMessage()))
                await writer.drain()
                if conn.our_state is not h11.DONE:
                    break
                conn.start_next_cycle()
            else:
                break
    except (ConnectionError, h11.ProtocolError):
        pass
    writer.close()


async def _speaks_first(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A server-first protocol (SMTP-like): greets, then echoes until EOF, then closes."""
    writer.write(b"220 hello\r\n")
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.close()


class Env:
    def __init__(self, certs) -> None:
        self.certs = certs
        self.table = Table()
        self.lookups: list[str] = []
        self.answers: dict[str, list[str]] = {}
        self.target = ("127.0.0.1", 1)
        self.servers: list[asyncio.Server] = []

    async def lookup(self, name: str) -> tuple[list[str], float]:
        self.lookups.append(name)
        return self.answers.get(name, []), 30.0

    async def serve(self, handler, tls: bool = False) -> tuple[str, int]:
        ctx = None
        if tls:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(self.certs / "leaf.pem", self.certs / "leaf.key")
        server = await asyncio.start_server(handler, "127.0.0.1", 0, ssl=ctx)
        self.servers.append(server)
        self.target = ("127.0.0.1", server.sockets[0].getsockname()[1])
        return self.target

    async def start(self, **kw) -> None:
        self.proxy = Proxy(self.table, self.lookup, 0, original_dst=lambda sock: self.target, sniff_wait=0.1, **kw)
        self.port = await self.proxy.start("127.0.0.1", 0)

    async def connect(self, tls: bool = False) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        ctx = ssl.create_default_context(cafile=str(self.certs / "ca.pem")) if tls else None
        return await asyncio.open_connection("127.0.0.1", self.port, ssl=ctx, server_hostname=NAME if tls else None)

    def refused(self) -> list[tuple[str, str]]:
        return [(r["destination"], r["reason"]) for r in self.table.stats(SANDBOX)["refused"]]

    async def close(self) -> None:
        await self.proxy.close()
        for s in self.servers:
            s.close()


@pytest.fixture
async def env(certs):
    e = Env(certs)
    e.table.put(SANDBOX, HostRules(allow_names=(NAME, "*.allowed.example"), deny_names=("denied.example",),
                                   deny_cidrs=("0.0.0.0/0",)))
    await e.start()
    yield e
    await e.close()


async def response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    status = int(head.split(b" ", 2)[1])
    length = next(int(line.split(b":")[1]) for line in head.lower().split(b"\r\n") if line.startswith(b"content-length"))
    return status, await asyncio.wait_for(reader.readexactly(length), 5)


async def closed(reader: asyncio.StreamReader) -> bool:
    """Whether the proxy ended the connection (EOF or reset) without sending anything."""
    try:
        return await asyncio.wait_for(reader.read(100), 5) == b""
    except (ConnectionError, ssl.SSLError):
        return True


def get(host: str, target: str = "/", extra: str = "") -> bytes:
    return f"GET {target} HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n".encode()


def sent_headers(body: bytes) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for k, v in json.loads(body)["headers"]:
        out.setdefault(k.lower(), []).append(v)
    return out


async def test_tls_admitted_by_sni_end_to_end(env):
    await env.serve(_echo_http, tls=True)
    env.table.record(SANDBOX, NAME, ["127.0.0.1"], 60)
    reader, writer = await env.connect(tls=True)
    writer.write(get(NAME, "/tls"))
    status, body = await response(reader)
    assert status == 200 and json.loads(body)["target"] == "/tls"
    writer.close()
    await asyncio.sleep(0.05)
    usage = env.table.stats(SANDBOX)["destinations"][NAME]
    assert usage["connections"] == 1 and usage["bytes_sent"] > 300 and usage["bytes_received"] > 500
    assert env.lookups == []


async def test_forged_sni_is_refused(env):
    """An allowed name towards an address that name does not have (not even after the proxy looks it up)."""
    await env.serve(_echo_http, tls=True)
    env.table.record(SANDBOX, NAME, [ELSEWHERE], 60)
    env.answers[NAME] = [ELSEWHERE]
    with pytest.raises((ConnectionError, ssl.SSLError)):
        await env.connect(tls=True)
    assert env.refused() == [(NAME, "name_not_resolved")]
    assert env.lookups == [NAME]


async def test_http_admitted_by_host(env):
    await env.serve(_echo_http)
    env.table.record(SANDBOX, "a.allowed.example", ["127.0.0.1"], 60)
    reader, writer = await env.connect()
    writer.write(get("A.Allowed.Example:8080", "/plain"))
    status, body = await response(reader)
    assert status == 200 and json.loads(body)["target"] == "/plain"
    writer.close()


async def test_http_to_a_denied_name_gets_403(env):
    await env.serve(_echo_http)
    reader, writer = await env.connect()
    writer.write(get("denied.example"))
    status, body = await response(reader)
    assert status == 403 and b"denied.example" in body and b"name_denied" in body
    assert await reader.read() == b""
    assert env.refused() == [("denied.example", "name_denied")]
    assert env.table.stats(SANDBOX)["destinations"]["denied.example"]["denied"] == 1
    writer.close()


async def test_lookup_retry(env):
    await env.serve(_echo_http)
    env.answers["b.allowed.example"] = ["127.0.0.1"]
    reader, writer = await env.connect()
    writer.write(get("b.allowed.example"))
    assert (await response(reader))[0] == 200
    assert env.lookups == ["b.allowed.example"] and env.table.resolved(SANDBOX, "b.allowed.example") == {"127.0.0.1"}
    writer.close()
    reader, writer = await env.connect()  # unresolvable: refused, with the reason
    writer.write(get("c.allowed.example"))
    status, body = await response(reader)
    assert status == 403 and b"name_not_resolved" in body
    assert env.refused() == [("c.allowed.example", "name_not_resolved")]
    writer.close()


async def test_header_rules_on_keep_alive_requests_and_bodies(env):
    env.table.put(SANDBOX, HostRules(allow_names=(NAME,), deny_names=("denied.example",), deny_cidrs=("0.0.0.0/0",),
                                     headers=((NAME, (("Authorization", "Bearer real"), ("X-Team", "7"))),)))
    env.table.record(SANDBOX, NAME, ["127.0.0.1"], 60)
    await env.serve(_echo_http)
    reader, writer = await env.connect()
    for i in range(2):
        writer.write(get(NAME, f"/{i}", "authorization: Bearer forged\r\n"))
        status, body = await response(reader)
        assert status == 200 and json.loads(body)["target"] == f"/{i}"
        assert sent_headers(body)["authorization"] == ["Bearer real"] and sent_headers(body)["x-team"] == ["7"]
    writer.write(get(NAME, "/p1") + get(NAME, "/p2"))  # pipelined
    assert [json.loads((await response(reader))[1])["target"] for _ in range(2)] == ["/p1", "/p2"]
    writer.write(f"POST /post HTTP/1.1\r\nHost: {NAME}\r\nContent-Length: 11\r\n\r\nhello world".encode())
    status, body = await response(reader)
    assert json.loads(body)["body"] == "hello world" and sent_headers(body)["authorization"] == ["Bearer real"]
    writer.write(f"POST /chunked HTTP/1.1\r\nHost: {NAME}\r\nTransfer-Encoding: chunked\r\n\r\n".encode())
    await writer.drain()
    writer.write(b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
    status, body = await response(reader)
    echoed = json.loads(body)
    assert echoed["body"] == "hello world" and sent_headers(body)["transfer-encoding"] == ["chunked"]
    assert sent_headers(body)["authorization"] == ["Bearer real"]
    # a request for another name on the same connection is decided again: refused, 403, closed
    writer.write(get("denied.example"))
    status, body = await response(reader)
    assert status == 403 and b"name_denied" in body
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()
    assert env.refused() == [("denied.example", "name_denied")]
    assert env.table.stats(SANDBOX)["destinations"][NAME]["connections"] == 1


async def test_tls_to_a_name_with_header_rules_is_refused(env):
    env.table.put(SANDBOX, HostRules(allow_names=(NAME,), deny_cidrs=("0.0.0.0/0",),
                                     headers=((NAME, (("Authorization", "x"),)),)))
    env.table.record(SANDBOX, NAME, ["127.0.0.1"], 60)
    await env.serve(_echo_http, tls=True)
    with pytest.raises((ConnectionError, ssl.SSLError)):
        await env.connect(tls=True)
    assert env.refused() == [(NAME, "tls_interception_off")]


async def test_server_first_protocol_is_decided_by_address(env):
    await env.serve(_speaks_first)
    reader, writer = await env.connect()  # deny-all, no name: reset after the sniff wait
    assert await closed(reader)
    assert env.refused() == [("127.0.0.1", "ip_denied")]
    writer.close()
    env.table.put(SANDBOX, HostRules(allow_cidrs=("127.0.0.1/32",), deny_cidrs=("0.0.0.0/0",)))
    reader, writer = await env.connect()
    assert await asyncio.wait_for(reader.readline(), 5) == b"220 hello\r\n"
    writer.write(b"ping\r\n")
    writer.write_eof()  # half-close: the echo still comes back, then the server's EOF
    assert await asyncio.wait_for(reader.read(), 5) == b"ping\r\n"
    writer.close()
    await asyncio.sleep(0.05)
    usage = env.table.stats(SANDBOX)["destinations"]["127.0.0.1"]
    assert (usage["connections"], usage["bytes_sent"], usage["bytes_received"]) == (1, 6, 17)


async def test_upstream_connect_failure_is_a_refusal(env):
    env.table.record(SANDBOX, NAME, ["127.0.0.1"], 60)
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    env.target = probe.getsockname()  # bound, never listening: connection refused
    reader, writer = await env.connect()
    writer.write(get(NAME))
    assert await closed(reader)
    probe.close()
    writer.close()
    assert env.refused() == [(NAME, "connect_failed")]


async def test_hostile_clients_do_not_stop_the_proxy(env):
    await env.serve(_echo_http)
    env.table.record(SANDBOX, NAME, ["127.0.0.1"], 60)
    hello = bytes.fromhex("160301020001") + b"\x00" * 40  # a ClientHello cut short, then EOF
    huge = get(NAME, "/", "X-Big: " + "a" * 40000 + "\r\n")
    payloads = [(b"\x00garbage\xff" * 100, False), (hello, False), (huge, True),
                (b"\x16\x03\x01\x40\x00" + b"\x01" * 100, False)]  # a record longer than what comes
    for payload, http in payloads:
        reader, writer = await env.connect()
        writer.write(payload)
        writer.write_eof()
        if http:  # the head is past the limit: no name, decided by address
            status, body = await response(reader)
            assert status == 403 and b"ip_denied" in body
        else:
            assert await closed(reader)
        writer.close()
    # a direct connection to the proxy (nothing redirected it) is closed at once
    env.target = ("127.0.0.1", env.port)
    reader, writer = await env.connect()
    assert await closed(reader)
    writer.close()
    await env.serve(_echo_http)
    reader, writer = await env.connect()
    writer.write(get(NAME))
    assert (await response(reader))[0] == 200
    writer.close()
    assert {r for _, r in env.refused()} == {"ip_denied"}


async def test_unknown_sandbox_is_closed(env):
    env.table.drop(SANDBOX)
    await env.serve(_echo_http)
    reader, writer = await env.connect()
    writer.write(get(NAME))
    assert await closed(reader)
    writer.close()


async def _upgrading(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Switches protocols on the first request (its head echoed after the 101), then echoes raw bytes."""
    head = await reader.readuntil(b"\r\n\r\n")
    writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: Upgrade\r\n\r\n" + head)
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.close()


def _with_headers(env: Env) -> None:
    env.table.put(SANDBOX, HostRules(allow_names=(NAME, "*.allowed.example"), deny_cidrs=("0.0.0.0/0",),
                                     headers=((NAME, (("Authorization", "Bearer real"),)),)))
    env.table.record(SANDBOX, NAME, ["127.0.0.1"], 60)


async def test_header_rules_follow_the_host_of_each_request(env):
    _with_headers(env)
    env.table.record(SANDBOX, "a.allowed.example", ["127.0.0.1"], 60)
    await env.serve(_echo_http)
    reader, writer = await env.connect()
    writer.write(get(NAME) + get("a.allowed.example") + get(NAME))
    got = [sent_headers((await response(reader))[1]).get("authorization") for _ in range(3)]
    assert got == [["Bearer real"], None, ["Bearer real"]]
    writer.close()
    await asyncio.sleep(0.05)
    destinations = env.table.stats(SANDBOX)["destinations"]
    assert destinations[NAME]["connections"] == 1 and destinations["a.allowed.example"]["connections"] == 1
    assert destinations["a.allowed.example"]["bytes_sent"] > 0


async def test_absolute_target_for_another_host_gets_no_credential(env):
    """A server routes by an absolute-form target: a Host naming the rule's host must not carry its header
    to another (the request has no name then, and is decided by address)."""
    _with_headers(env)
    await env.serve(_echo_http)
    reader, writer = await env.connect()
    writer.write(get(NAME, "http://elsewhere.example/"))
    status, body = await response(reader)
    assert status == 403 and b"ip_denied" in body
    writer.close()


async def test_upgrade_ends_the_parsing(env):
    _with_headers(env)
    await env.serve(_upgrading)
    reader, writer = await env.connect()
    writer.write(get(NAME, "/ws", "Connection: Upgrade\r\nUpgrade: x\r\n"))
    answer = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert answer.startswith(b"HTTP/1.1 101")
    echoed = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)).decode()
    assert "Authorization: Bearer real" in echoed
    writer.write(b"GET raw \x00\xff")
    writer.write_eof()
    assert await asyncio.wait_for(reader.read(), 5) == b"GET raw \x00\xff"
    writer.close()


async def test_a_reset_from_the_server_reaches_the_client(env):
    async def resets(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(100)
        writer.write(b"partial")
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
        writer.transport.abort()

    env.table.put(SANDBOX, HostRules(allow_cidrs=("127.0.0.1/32",)))
    await env.serve(resets)
    reader, writer = await env.connect()
    writer.write(b"hello")
    assert await asyncio.wait_for(reader.readexactly(7), 5) == b"partial"
    with pytest.raises(ConnectionResetError):
        await asyncio.wait_for(reader.read(), 5)
    writer.close()
