"""Request smuggling through the gateway: a client must not get a request to an agent that the gateway
did not authorise, nor read an answer meant for another client.

The gateway runs in-process in front of an agent stand-in on a unix socket that parses with h11 exactly as
the agent does (lenient: a bare LF ends a line, Transfer-Encoding beats Content-Length) and records every
request it sees; its answer names the request it answers.
"""
from __future__ import annotations

import asyncio
import json
from pathlib import Path

import h11
import pytest

from sandboxd.gateway.proxy import Gateway, Target

TOKEN = "valid-signed-url"


class Agent:
    """Records what an agent would see: every request its h11 parses, per connection."""

    def __init__(self, path: Path):
        self.path = path
        self.seen: list[tuple[str, str, bytes]] = []
        self.server = None

    async def start(self) -> "Agent":
        self.server = await asyncio.start_unix_server(self._conn, str(self.path))
        return self

    async def _conn(self, reader, writer):
        conn = h11.Connection(h11.SERVER)
        request, body = None, b""
        try:
            while True:
                ev = conn.next_event()
                if ev is h11.NEED_DATA:
                    data = await reader.read(65536)
                    conn.receive_data(data)
                    if not data and conn.their_state is not h11.DONE:
                        return
                    continue
                if isinstance(ev, h11.Request):
                    request, body = ev, b""
                elif isinstance(ev, h11.Data):
                    body += ev.data
                elif isinstance(ev, h11.EndOfMessage):
                    self.seen.append((request.method.decode(), request.target.decode(), body))
                    out = json.dumps({"answer_to": request.target.decode(), "body": body.decode("latin-1")}).encode()
                    writer.write(conn.send(h11.Response(status_code=200, headers=[("content-length", str(len(out)))])))
                    writer.write(conn.send(h11.Data(data=out)) + conn.send(h11.EndOfMessage()))
                    await writer.drain()
                    conn.start_next_cycle()
                else:
                    return
        except (h11.ProtocolError, ConnectionError):
            return
        finally:
            writer.close()


async def authorise(head):
    """The one request a signed URL authorises: GET /files (any other target is refused with 401)."""
    if head.target.startswith("/files") and TOKEN in head.target:
        return Target(authorise.socket, "sb1")
    return None


@pytest.fixture
async def gw(tmp_path):
    agent = await Agent(tmp_path / "agent.sock").start()
    authorise.socket = agent.path
    gateway = Gateway([authorise])
    await gateway.start("127.0.0.1", 0)
    yield gateway, agent
    await gateway.close()
    agent.server.close()


async def exchange(port: int, data: bytes, read_until_close: bool = True) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    out = b""
    try:
        async with asyncio.timeout(20):  # a guard against a hang, not a measurement
            while chunk := await reader.read(65536):
                out += chunk
                if not read_until_close and out.count(b"HTTP/1.1 ") and b"answer_to" in out:
                    break
    except ConnectionError:
        pass
    writer.close()
    return out


SMUGGLED = b"POST /commands/run HTTP/1.1\r\nHost: agent\r\nContent-Length: 23\r\n\r\n{\"command\": \"id > /x\"}\n"


def attack(header_block: bytes, body: bytes) -> bytes:
    return (b"GET /files?path=/etc/hostname&signature=" + TOKEN.encode() + b" HTTP/1.1\r\nHost: gw\r\n"
            + header_block + b"\r\n" + body)


async def test_bare_lf_transfer_encoding_smuggle_is_refused(gw):
    """The red team's request: a bare LF hides Transfer-Encoding inside X-A for a CRLF-only reader, the
    agent's h11 sees it and takes the body `0` + a second request."""
    gateway, agent = gw
    body = b"0\r\n\r\n" + SMUGGLED
    data = attack(b"X-A: b\nTransfer-Encoding: chunked\r\nContent-Length: " + str(len(body)).encode() + b"\r\n", body)
    out = await exchange(gateway.port, data)
    assert out.startswith(b"HTTP/1.1 400 "), out[:200]
    assert out.count(b"HTTP/1.1 ") == 1  # then the connection closed: nothing of the body was read as a request
    assert agent.seen == []


AMBIGUOUS = {
    "bare LF": (b"X-A: b\nX-B: c\r\n", b""),
    "bare CR": (b"X-A: b\rX-B: c\r\n", b""),
    "obs-fold": (b"X-A: b\r\n Transfer-Encoding: chunked\r\n", b""),
    "TE and CL": (b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n", b"0\r\n\r\n"),
    "CL twice": (b"Content-Length: 0\r\nContent-Length: 0\r\n", b""),
    "CL list": (b"Content-Length: 0, 0\r\n", b""),
    "CL conflicting": (b"Content-Length: 0\r\nContent-Length: 5\r\n", b"hello"),
    "CL negative": (b"Content-Length: -1\r\n", b""),
    "CL not a number": (b"Content-Length: 1e3\r\n", b""),
    "CL with a sign": (b"Content-Length: +5\r\n", b"hello"),
    "TE gzip": (b"Transfer-Encoding: gzip, chunked\r\n", b"0\r\n\r\n"),
    "TE identity": (b"Transfer-Encoding: identity\r\n", b""),
    "TE twice": (b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n", b"0\r\n\r\n"),
    "space before colon": (b"Transfer-Encoding : chunked\r\n", b"0\r\n\r\n"),
    "Host twice": (b"Host: other\r\n", b""),
    "Authorization twice": (b"Authorization: Bearer a\r\nAuthorization: Bearer b\r\n", b""),
    "NUL in a value": (b"X-A: a\x00b\r\n", b""),
    "bad chunk size": (b"Transfer-Encoding: chunked\r\n", b"zz\r\nhello\r\n0\r\n\r\n"),
    "chunk without its CRLF": (b"Transfer-Encoding: chunked\r\n", b"5\r\nhelloXX0\r\n\r\n"),
}


@pytest.mark.parametrize("case", sorted(AMBIGUOUS))
async def test_ambiguous_framing_is_a_400_that_closes(gw, case):
    gateway, agent = gw
    headers, body = AMBIGUOUS[case]
    out = await exchange(gateway.port, attack(headers, body + SMUGGLED))
    assert out.startswith(b"HTTP/1.1 400 "), out[:300]
    assert b'"code": "INVALID_REQUEST"' in out
    assert out.count(b"HTTP/1.1 ") == 1
    # Nothing smuggled reached the agent (a chunked body refused midway may leave the authorised GET only).
    assert all(target.startswith("/files") for _, target, _ in agent.seen)


async def test_another_clients_answer_is_never_delivered(gw):
    """Client A smuggles a second request; client B, next, must read the answer to its own request."""
    gateway, agent = gw
    body = b"0\r\n\r\n" + SMUGGLED
    await exchange(gateway.port, attack(b"X-A: b\nTransfer-Encoding: chunked\r\nContent-Length: "
                                        + str(len(body)).encode() + b"\r\n", body))
    mine = b"GET /files?path=/mine&signature=" + TOKEN.encode() + b" HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n"
    out = await exchange(gateway.port, mine)
    assert out.startswith(b"HTTP/1.1 200 ")
    answer = json.loads(out.partition(b"\r\n\r\n")[2])
    assert answer["answer_to"].startswith("/files?path=/mine")
    assert [t for _, t, _ in agent.seen if t.startswith("/commands")] == []


async def test_pipelined_requests_get_their_own_answers_in_order(gw):
    gateway, agent = gw
    reqs = b"".join(b"GET /files?path=/p%d&signature=%s HTTP/1.1\r\nHost: gw\r\n\r\n" % (i, TOKEN.encode())
                    for i in range(3))
    out = await exchange(gateway.port, reqs + b"GET /files?path=/last&signature=" + TOKEN.encode()
                         + b" HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n")
    client = h11.Connection(h11.CLIENT)
    client.receive_data(out)
    answers = []
    for i in range(4):
        client.send(h11.Request(method="GET", target="/", headers=[("host", "gw")]))
        client.send(h11.EndOfMessage())
        body = b""
        while not isinstance(ev := client.next_event(), h11.EndOfMessage):
            if isinstance(ev, h11.Data):
                body += ev.data
        answers.append(json.loads(body)["answer_to"])
        if i < 3:
            client.start_next_cycle()
    assert [a.split("&")[0] for a in answers] == [f"/files?path=/p{i}" for i in range(3)] + ["/files?path=/last"]
    assert len(agent.seen) == 4


async def test_the_agent_receives_the_body_the_gateway_framed(gw):
    """A chunked upload reaches the agent as one request with exactly the decoded body."""
    gateway, agent = gw
    data = (b"POST /files?path=/up&signature=" + TOKEN.encode() + b" HTTP/1.1\r\nHost: gw\r\n"
            b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
    out = await exchange(gateway.port, data)
    assert out.startswith(b"HTTP/1.1 200 ")
    assert agent.seen == [("POST", "/files?path=/up&signature=" + TOKEN, b"hello world")]
