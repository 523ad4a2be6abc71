"""CORS at the gateway (gateway/cors.py): a preflight is answered by the gateway itself, before any token is
read, and never reaches a sandbox; answers to a request that names its Origin let that origin read them; no
answer ever allows credentials."""
from __future__ import annotations

import test_gateway_smuggling as smuggling
from test_gateway_smuggling import TOKEN, exchange

gw = smuggling.gw  # the in-process gateway before an agent stand-in that records what it is asked

ORIGIN = b"Origin: http://127.0.0.1:8080\r\n"


def headers_of(answer: bytes) -> dict[str, str]:
    head = answer.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")[1:]
    return {n.lower(): v.strip() for n, _, v in (line.partition(":") for line in head)}


def preflight(target: bytes = b"/files/list", extra: bytes = b"") -> bytes:
    return (b"OPTIONS " + target + b" HTTP/1.1\r\nHost: gw\r\n" + ORIGIN
            + b"Access-Control-Request-Method: DELETE\r\nAccess-Control-Request-Headers: authorization\r\n"
            + extra + b"\r\n")


async def test_a_preflight_is_answered_without_the_sandbox(gw):
    gateway, agent = gw
    signed = b"/files?signature=" + TOKEN.encode()  # a target the resolver would forward
    out = await exchange(gateway.port, preflight(signed) + preflight(b"/files/list", b"Connection: close\r\n"))
    assert out.count(b"HTTP/1.1 204 ") == 2, out  # the connection stays usable after one
    h = headers_of(out)
    assert h["access-control-allow-origin"] == "*"
    assert "DELETE" in h["access-control-allow-methods"]
    assert {"authorization", "content-type"} <= {x.strip().lower() for x in h["access-control-allow-headers"].split(",")}
    assert int(h["access-control-max-age"]) > 0
    assert b"access-control-allow-credentials" not in out.lower()
    assert agent.seen == []


async def test_a_preflight_with_a_body_is_refused(gw):
    gateway, agent = gw
    out = await exchange(gateway.port, preflight(extra=b"Content-Length: 2\r\nConnection: close\r\n") + b"{}")
    assert out.startswith(b"HTTP/1.1 400 ") and agent.seen == []


async def test_cross_origin_answers_allow_the_origin_never_credentials(gw):
    gateway, agent = gw
    forwarded = b"GET /files?signature=" + TOKEN.encode() + b" HTTP/1.1\r\nHost: gw\r\n" + ORIGIN
    refused = b"GET /commands HTTP/1.1\r\nHost: gw\r\n" + ORIGIN + b"Connection: close\r\n\r\n"
    out = await exchange(gateway.port, forwarded + b"\r\n" + refused)
    ok, denied = out.split(b"HTTP/1.1 ")[1:]
    assert ok.startswith(b"200 ") and denied.startswith(b"401 ")
    for answer in (ok, denied):
        h = headers_of(b"HTTP/1.1 " + answer)
        assert h["access-control-allow-origin"] == "*" and "content-disposition" in h["access-control-expose-headers"].lower()
        assert "access-control-allow-credentials" not in h
    # An OPTIONS without Access-Control-Request-Method is no preflight: it is the sandbox's to answer.
    out = await exchange(gateway.port, b"OPTIONS /files?signature=" + TOKEN.encode()
                         + b" HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 200 ") and b"access-control-" not in out.lower()
    assert [m for m, _, _ in agent.seen] == ["GET", "OPTIONS"]


async def test_same_origin_answers_carry_no_cors_headers(gw):
    gateway, _ = gw
    out = await exchange(gateway.port, b"GET /files?signature=" + TOKEN.encode()
                         + b" HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 200 ") and b"access-control-" not in out.lower()
