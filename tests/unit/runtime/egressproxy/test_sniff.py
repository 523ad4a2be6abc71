"""sniff: the name a connection carries, read from its first bytes (TLS SNI by OpenSSL, HTTP Host by h11), and
nothing the client sends makes it raise."""
from __future__ import annotations

import asyncio
import random
import ssl
import sys
import time

from sandboxd.runtime.egressproxy.sniff import HEAD_LIMIT, host_name, sniff


def client_hello(name: str | None) -> bytes:
    """The first flight of a real TLS client (Python's own, as any client library would send it)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    obj = ctx.wrap_bio(ssl.MemoryBIO(), out := ssl.MemoryBIO(), server_hostname=name)
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return out.read()


def split_records(hello: bytes, at: int) -> bytes:
    """The same ClientHello in two TLS records (clients may fragment it)."""
    body = hello[5:]
    return b"".join(b"\x16\x03\x01" + len(p).to_bytes(2, "big") + p for p in (body[:at], body[at:]))


async def sniffed(*pieces: bytes, eof: bool = True, wait: float = 0.2, rest: float = 0.3, gap: float = 0.0):
    reader = asyncio.StreamReader()

    async def feed() -> None:
        for p in pieces:
            reader.feed_data(p)
            await asyncio.sleep(gap)
        if eof:
            reader.feed_eof()

    feeder = asyncio.create_task(feed())
    try:
        return await sniff(reader, wait, rest)
    finally:
        await feeder


async def test_tls_sni():
    hello = client_hello("WWW.Test.Example")
    got = await sniffed(hello, eof=False)
    assert (got.kind, got.name, got.data) == ("tls", "www.test.example", hello)


async def test_tls_hello_in_two_records_arriving_in_pieces():
    data = split_records(client_hello("api.test.example"), 40)
    got = await sniffed(data[:3], data[3:50], data[50:], eof=False, gap=0.01)
    assert (got.kind, got.name, got.data) == ("tls", "api.test.example", data)


async def test_tls_without_sni():
    got = await sniffed(client_hello(None), eof=False)
    assert (got.kind, got.name) == ("tls", None)


async def test_non_ascii_sni_is_no_name_and_logs_nothing(monkeypatch):
    reported: list[object] = []
    monkeypatch.setattr(sys, "unraisablehook", reported.append)
    hello = bytearray(client_hello("xww.test.example"))
    hello[hello.index(b"xww")] = 0xE9
    got = await sniffed(bytes(hello), eof=False)
    assert (got.kind, got.name, reported) == ("tls", None, [])
    assert sys.unraisablehook == reported.append


async def test_truncated_hello():
    hello = client_hello("www.test.example")
    assert (await sniffed(hello[:100])).name is None  # EOF
    t = time.monotonic()
    got = await sniffed(hello[:100], eof=False, rest=0.1)  # stalls
    assert (got.kind, got.name, got.data) == ("tls", None, hello[:100])
    assert time.monotonic() - t < 1


async def test_http_host():
    got = await sniffed(b"GET /x HTTP/1.1\r\nHost: WWW.Test.Example:8080\r\nAccept: */*\r\n\r\n", eof=False)
    assert (got.kind, got.name) == ("http", "www.test.example")
    got = await sniffed(b"P", b"OST / HTTP/1.1\r\nHo", b"st: a.example\r\ncontent-length: 2\r\n\r\nhi", gap=0.01)
    assert (got.kind, got.name) == ("http", "a.example")
    assert got.data.endswith(b"\r\n\r\nhi")


async def test_http_absolute_target_must_name_the_host():
    ok = b"GET http://a.example/p HTTP/1.1\r\nHost: a.example\r\n\r\n"
    other = b"GET http://user@b.example/p HTTP/1.1\r\nHost: a.example\r\n\r\n"
    assert (await sniffed(ok, eof=False)).name == "a.example"
    assert (await sniffed(other, eof=False)).name is None


async def test_http_without_a_usable_host():
    for head in (b"GET / HTTP/1.0\r\n\r\n", b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
                 b"GET / HTTP/1.1\r\nHost: a.example\r\nbad header\r\n\r\n"):
        got = await sniffed(head, eof=False)
        assert (got.kind, got.name) == ("http", None), head


async def test_huge_head_stops_at_the_limit():
    head = b"GET / HTTP/1.1\r\nHost: a.example\r\nX: " + b"a" * (2 * HEAD_LIMIT)
    got = await sniffed(head, eof=False)
    assert (got.kind, got.name) == ("http", None)
    assert len(got.data) <= len(head)


async def test_silent_closed_or_other_protocols():
    assert (await sniffed(eof=False, wait=0.05)) .data == b""  # a server-first protocol: nothing comes
    assert (await sniffed()).kind is None  # EOF at once
    for first in (b"SSH-2.0-OpenSSH_9.6\r\n", b"\x00\x01garbage", b"GETX / HTTP/1.1\r\n\r\n", b"G"):
        got = await sniffed(first)
        assert (got.kind, got.name, got.data) == (None, None, first)


async def test_hostile_bytes_never_raise():
    rng = random.Random(7)
    hello = client_hello("www.test.example")
    for _ in range(300):
        mutated = bytearray(hello)
        for _ in range(rng.randint(1, 8)):
            mutated[rng.randrange(5, len(mutated))] = rng.randrange(256)
        await sniffed(bytes(mutated))
        await sniffed(bytes([0x16, 3, rng.randrange(4)]) + rng.randbytes(rng.randrange(600)))
        await sniffed(rng.choice([b"GET ", b"POST "]) + rng.randbytes(rng.randrange(300)))


def test_host_name():
    assert host_name(b"Example.COM:443") == "example.com"
    assert host_name(b"[::1]:80") == "::1"
    assert host_name(b"a.example:x") is None
    assert host_name(b"\xff.example") is None
    assert host_name(b"") is None
