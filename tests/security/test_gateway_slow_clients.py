"""The gateway's client connections are bounded: a head must arrive in time, an idle keep-alive
connection closes, connections are capped per address and in all, request bodies are capped, and its
own error answers keep the connection in step (no body after HEAD, a 400 for a bad Content-Length).

Deadlines are configured tiny so that behaviour, not timing, is asserted: a connection left with half
a head is closed by the gateway (the test only guards against hanging forever)."""
from __future__ import annotations

import asyncio
import json
import logging

import h11
import pytest

from sandboxd.gateway.limits import Limits
from sandboxd.gateway.proxy import Gateway, Target

from test_gateway_smuggling import TOKEN, Agent, authorise

GUARD = 30  # seconds before a test gives up waiting (never reached when the gateway behaves)


async def start(tmp_path, **limits):
    agent = await Agent(tmp_path / "agent.sock").start()
    authorise.socket = agent.path
    gateway = Gateway([authorise], limits=Limits(**limits))
    await gateway.start("127.0.0.1", 0)
    return gateway, agent


async def read_all(reader) -> bytes:
    out = b""
    async with asyncio.timeout(GUARD):
        try:
            while chunk := await reader.read(65536):
                out += chunk
        except ConnectionError:
            pass
    return out


async def test_half_sent_head_is_closed(tmp_path):
    gateway, _ = await start(tmp_path, head_timeout=0.3)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
        writer.write(b"GET /files HTTP/1.1\r\nHost: gw\r\nX-Slow: ")
        out = await read_all(reader)  # returns because the gateway closed the connection
        assert out.startswith(b"HTTP/1.1 408 ")
        writer.close()
    finally:
        await gateway.close()


async def test_silent_and_idle_connections_are_closed(tmp_path):
    gateway, _ = await start(tmp_path, head_timeout=0.3, keep_alive=0.3)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
        assert await read_all(reader) == b""  # never sent a byte
        writer.close()
        reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
        writer.write(b"GET /files?path=/a&signature=" + TOKEN.encode() + b" HTTP/1.1\r\nHost: gw\r\n\r\n")
        out = await read_all(reader)  # one answer, then the idle keep-alive connection closes
        assert out.startswith(b"HTTP/1.1 200 ") and out.count(b"HTTP/1.1 ") == 1
        writer.close()
    finally:
        await gateway.close()


async def _hold(port: int):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET / HTTP/1.1\r\n")  # a head begun and never finished
    await writer.drain()
    return reader, writer


@pytest.mark.parametrize("cap", ["max_per_ip", "max_connections"])
async def test_connections_over_the_cap_get_a_503(tmp_path, cap):
    gateway, _ = await start(tmp_path, head_timeout=GUARD, **{cap: 2})
    try:
        held = [await _hold(gateway.port) for _ in range(2)]
        reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
        out = await read_all(reader)
        assert out.startswith(b"HTTP/1.1 503 ")
        assert json.loads(out.partition(b"\r\n\r\n")[2])["code"] == "TOO_MANY_CONNECTIONS"
        writer.close()
        # A connection that ends gives its place back.
        held[0][1].close()
        await held[0][1].wait_closed()
        async with asyncio.timeout(GUARD):
            while True:
                reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
                writer.write(b"GET /files?path=/a&signature=" + TOKEN.encode()
                             + b" HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n")
                out = await read_all(reader)
                writer.close()
                if not out.startswith(b"HTTP/1.1 503 "):  # until the gateway has seen the close
                    break
        assert out.startswith(b"HTTP/1.1 200 ")
        for _, w in held[1:]:
            w.close()
    finally:
        await gateway.close()


async def test_body_over_the_cap_is_a_413(tmp_path):
    gateway, agent = await start(tmp_path, max_body=1024)
    target = b"POST /files?path=/big&signature=" + TOKEN.encode() + b" HTTP/1.1\r\nHost: gw\r\n"
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
        writer.write(target + b"Content-Length: 4096\r\n\r\n" + b"x" * 4096)
        out = await read_all(reader)
        assert out.startswith(b"HTTP/1.1 413 ")
        assert agent.seen == []
        writer.close()
        reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
        writer.write(target + b"Transfer-Encoding: chunked\r\n\r\n" + b"400\r\n" + b"y" * 1024 + b"\r\n"
                     + b"400\r\n" + b"y" * 1024 + b"\r\n0\r\n\r\n")
        out = await read_all(reader)
        assert out.startswith(b"HTTP/1.1 413 ")
        assert agent.seen == []  # the agent never saw the request complete
        writer.close()
    finally:
        await gateway.close()


async def test_negative_content_length_is_a_400_without_a_traceback(tmp_path, caplog):
    gateway, agent = await start(tmp_path)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
        with caplog.at_level(logging.ERROR):
            writer.write(b"POST /files?path=/a&signature=" + TOKEN.encode()
                         + b" HTTP/1.1\r\nHost: gw\r\nContent-Length: -1\r\n\r\n")
            out = await read_all(reader)
        assert out.startswith(b"HTTP/1.1 400 ")
        assert not [r for r in caplog.records if r.name.startswith("sandboxd.gateway")]
        assert agent.seen == []
        writer.close()
    finally:
        await gateway.close()


async def test_an_error_answer_to_head_has_no_body(tmp_path):
    """A refused HEAD (no token), then a GET on the same connection: the GET's answer must start right
    after the HEAD's headers, or the client would read the stray body as the next answer."""
    gateway, _ = await start(tmp_path)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
        writer.write(b"HEAD /anything HTTP/1.1\r\nHost: gw\r\n\r\n"
                     b"GET /files?path=/a&signature=" + TOKEN.encode() + b" HTTP/1.1\r\nHost: gw\r\n"
                     b"Connection: close\r\n\r\n")
        out = await read_all(reader)
        client = h11.Connection(h11.CLIENT)
        client.receive_data(out)
        statuses = []
        for method in (b"HEAD", b"GET"):
            client.send(h11.Request(method=method, target="/", headers=[("host", "gw")]))
            client.send(h11.EndOfMessage())
            while not isinstance(ev := client.next_event(), h11.EndOfMessage):
                if isinstance(ev, h11.Response):
                    statuses.append(ev.status_code)
            if method == b"HEAD":
                client.start_next_cycle()
        assert statuses == [401, 200]
        writer.close()
    finally:
        await gateway.close()


async def test_expect_100_continue(tmp_path):
    gateway, agent = await start(tmp_path)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
        writer.write(b"POST /files?path=/c&signature=" + TOKEN.encode() + b" HTTP/1.1\r\nHost: gw\r\n"
                     b"Expect: 100-continue\r\nContent-Length: 5\r\nConnection: close\r\n\r\n")
        async with asyncio.timeout(GUARD):
            interim = await reader.readuntil(b"\r\n\r\n")
        assert interim.startswith(b"HTTP/1.1 100 ")
        writer.write(b"hello")
        out = await read_all(reader)
        assert out.startswith(b"HTTP/1.1 200 ")
        assert agent.seen == [("POST", "/files?path=/c&signature=" + TOKEN, b"hello")]
        writer.close()
    finally:
        await gateway.close()


async def test_agent_answer_with_ambiguous_framing_is_a_502(tmp_path):
    """A hostile agent: its answer carries Transfer-Encoding and Content-Length. The client gets a 502
    and its connection (with the agent connection pinned to it) closes."""
    path = tmp_path / "evil.sock"

    async def evil(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
        await writer.drain()

    server = await asyncio.start_unix_server(evil, str(path))

    async def resolve(head):
        return Target(path, "sb")

    gateway = Gateway([resolve])
    await gateway.start("127.0.0.1", 0)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
        writer.write(b"GET /a HTTP/1.1\r\nHost: gw\r\n\r\n")
        out = await read_all(reader)
        assert out.startswith(b"HTTP/1.1 502 ") and out.count(b"HTTP/1.1 ") == 1
        writer.close()
    finally:
        await gateway.close()
        server.close()
