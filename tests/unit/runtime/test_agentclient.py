"""The agent client against small unix-socket servers that answer in each HTTP/1.1 framing."""
from __future__ import annotations

import asyncio
import json

import pytest

from sandboxd.runtime import agentclient


def _serve(tmp_path, answer: bytes, seen: list | None = None):
    """Run a coroutine against a server at tmp_path/a.sock that records each request and sends `answer`."""
    sock = tmp_path / "a.sock"

    async def handle(reader, writer):
        head = await reader.readuntil(b"\r\n\r\n")
        length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                       if line.lower().startswith(b"content-length:")), 0)
        body = await reader.readexactly(length)
        if seen is not None:
            seen.append((head, body))
        writer.write(answer)
        await writer.drain()
        writer.close()

    def run(coro_fn):
        async def main():
            server = await asyncio.start_unix_server(handle, str(sock))
            async with server:
                return await coro_fn(sock)
        return asyncio.run(main())

    return run


def _http(status: int, body: bytes, framing: str) -> bytes:
    if framing == "length":
        return b"HTTP/1.1 %d X\r\nContent-Length: %d\r\n\r\n" % (status, len(body)) + body
    if framing == "chunked":
        chunks = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in (body[:3], body[3:]) if p)
        return b"HTTP/1.1 %d X\r\nTransfer-Encoding: chunked\r\n\r\n" % status + chunks + b"0\r\n\r\n"
    return b"HTTP/1.1 %d X\r\nConnection: close\r\n\r\n" % status + body


@pytest.mark.parametrize("framing", ["length", "chunked", "close"])
def test_call_json_decodes_every_framing(tmp_path, framing):
    seen: list = []
    run = _serve(tmp_path, _http(200, b'{"ok": [1, 2]}', framing), seen)
    got = run(lambda s: agentclient.call_json(s, "POST", "/commands/run", {"command": "true"}))
    assert got == {"ok": [1, 2]}
    head, body = seen[0]
    assert head.startswith(b"POST /commands/run HTTP/1.1\r\n")
    assert b"content-type: application/json" in head.lower()
    assert json.loads(body) == {"command": "true"}


def test_empty_answer_is_an_empty_object_and_get_sends_no_body(tmp_path):
    seen: list = []
    run = _serve(tmp_path, _http(204, b"", "length"), seen)
    assert run(lambda s: agentclient.call_json(s, "GET", "/e2b/49983/health")) == {}
    assert b"content-length" not in seen[0][0].lower()


def test_error_status_raises_with_the_status(tmp_path):
    run = _serve(tmp_path, _http(409, b'{"error": "busy"}', "chunked"))
    with pytest.raises(agentclient.AgentError) as info:
        run(lambda s: agentclient.call_json(s, "PUT", "/env", {"env_vars": {}}))
    assert info.value.status == 409 and isinstance(info.value, OSError)


def test_only_200_refuses_other_success_codes(tmp_path):
    run = _serve(tmp_path, _http(201, b"{}", "length"))
    with pytest.raises(agentclient.AgentError):
        run(lambda s: agentclient.call_json(s, "GET", "/metrics/snapshot", only_200=True))


def test_garbage_is_an_agent_error(tmp_path):
    run = _serve(tmp_path, b"SSH-2.0-nope\r\n\r\n")
    with pytest.raises(agentclient.AgentError):
        run(lambda s: agentclient.call_json(s, "GET", "/x"))


def test_health(tmp_path):
    assert _serve(tmp_path, _http(200, b'{"status": "healthy"}', "chunked"))(agentclient.health) == {"status": "healthy"}
    assert _serve(tmp_path, _http(503, b'{"status": "healthy"}', "length"))(agentclient.health) is None
    assert _serve(tmp_path, _http(200, b'[1]', "length"))(agentclient.health) is None
    assert asyncio.run(agentclient.health(tmp_path / "nobody.sock")) is None


def test_health_gives_up_at_its_timeout(tmp_path):
    sock = tmp_path / "slow.sock"

    async def main():
        async def handle(reader, writer):
            await asyncio.sleep(5)
        server = await asyncio.start_unix_server(handle, str(sock))
        async with server:
            t = asyncio.get_running_loop().time()
            assert await agentclient.health(sock, timeout=0.2) is None
            return asyncio.get_running_loop().time() - t
    assert asyncio.run(main()) < 2


def test_an_answer_over_the_cap_is_refused_not_held_in_memory(tmp_path, monkeypatch):
    monkeypatch.setattr(agentclient, "MAX_ANSWER", 1000)
    run = _serve(tmp_path, _http(200, b"x" * 5000, "close"))
    with pytest.raises(agentclient.AgentError, match="over 1000 bytes"):
        run(lambda s: agentclient.request(s, "GET", "/metrics"))
    run = _serve(tmp_path, _http(200, b"x" * 900, "chunked"))
    assert run(lambda s: agentclient.request(s, "GET", "/metrics")) == (200, b"x" * 900)
