"""An agent answer that breaks after it began (the sandbox was killed mid-stream): the client gets what was
relayed, then a reset, never a clean end that would read as the gateway's own framing error."""
from __future__ import annotations

import asyncio

from sandboxd.gateway.proxy import Gateway, Target


async def _dying_agent(reader, writer):
    """Answers the first request with a chunked head and one chunk, then the sandbox is gone."""
    await reader.readuntil(b"\r\n\r\n")
    writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-type: text/plain\r\n\r\n5\r\nhello\r\n")
    await writer.drain()
    writer.close()


async def _whole_agent(reader, writer):
    await reader.readuntil(b"\r\n\r\n")
    writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello")
    await writer.drain()
    writer.close()


async def _read_all(port: int, request: bytes) -> tuple[bytes, bool]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    got, reset = b"", False
    try:
        while chunk := await asyncio.wait_for(reader.read(65536), 10):
            got += chunk
    except ConnectionResetError:
        reset = True
    writer.close()
    return got, reset


async def _through_gateway(tmp_path, agent, request: bytes) -> tuple[bytes, bool]:
    sock = tmp_path / "agent.sock"
    server = await asyncio.start_unix_server(agent, str(sock))

    async def resolve(head):
        return Target(sock, "sb1")

    gateway = Gateway([resolve])
    await gateway.start("127.0.0.1", 0)
    try:
        return await _read_all(gateway.port, request)
    finally:
        await gateway.close()
        server.close()


async def test_an_answer_broken_midway_is_relayed_then_reset(tmp_path):
    got, reset = await _through_gateway(tmp_path, _dying_agent, b"GET /stream HTTP/1.1\r\nhost: x\r\n\r\n")
    assert got.startswith(b"HTTP/1.1 200 ") and got.endswith(b"5\r\nhello\r\n"), got
    assert reset  # not a clean close after a chunk: that reads as a framing error, not as the sandbox gone


async def test_a_whole_answer_ends_cleanly(tmp_path):
    got, reset = await _through_gateway(tmp_path, _whole_agent,
                                        b"GET /once HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
    assert got.startswith(b"HTTP/1.1 200 ") and got.endswith(b"hello") and not reset
