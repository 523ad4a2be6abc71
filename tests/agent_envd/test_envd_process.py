"""envd process.Process over Connect-JSON, against the real agent app."""
from __future__ import annotations

import asyncio
import base64

import pytest

from envd_wire import STREAM, envelope, parse_envelopes

P = "/e2b/49983/process.Process"


def _out(events, key="stdout") -> bytes:
    return b"".join(base64.b64decode(m["event"]["data"][key]) for f, m in events
                    if f == 0 and "data" in m["event"] and key in m["event"]["data"])


async def test_start_streams_start_data_end(agent):
    client, _, _ = agent
    body = envelope({"process": {"cmd": "/bin/bash", "args": ["-c", "echo out; echo err >&2; exit 3"]},
                     "stdin": False})
    r = await client.post(f"{P}/Start", content=body, headers=STREAM)
    assert r.status_code == 200 and r.headers["content-type"] == "application/connect+json"
    events = parse_envelopes(r.content)
    assert "start" in events[0][1]["event"] and events[0][1]["event"]["start"]["pid"] > 0
    assert _out(events) == b"out\n" and _out(events, "stderr") == b"err\n"
    end = [m["event"]["end"] for f, m in events if f == 0 and "end" in m["event"]][0]
    assert end == {"exitCode": 3, "exited": True, "status": "exit status 3"}
    assert events[-1] == (2, {})  # end-of-stream, no error


async def test_chunked_request_body_and_zero_exit_omits_code(agent):
    client, _, _ = agent

    async def chunks():  # the SDK sends stream requests with Transfer-Encoding: chunked
        raw = envelope({"process": {"cmd": "/bin/echo", "args": ["chunked"]}})
        yield raw[:3]
        yield raw[3:]

    r = await client.post(f"{P}/Start", content=chunks(), headers=STREAM)
    events = parse_envelopes(r.content)
    assert _out(events) == b"chunked\n"
    end = [m["event"]["end"] for f, m in events if f == 0 and "end" in m["event"]][0]
    assert "exitCode" not in end and end["exited"] is True


async def test_deadline_kills_process(agent):
    client, tmp, _ = agent
    marker = tmp / "survived"
    body = envelope({"process": {"cmd": "/bin/bash", "args": ["-c", f"sleep 2; touch {marker}"]}})
    r = await client.post(f"{P}/Start", content=body, headers={**STREAM, "connect-timeout-ms": "300"})
    events = parse_envelopes(r.content)
    assert events[-1][0] == 2 and events[-1][1]["error"]["code"] == "deadline_exceeded"
    await asyncio.sleep(2.5)
    assert not marker.exists()
    listed = (await client.post(f"{P}/List", json={})).json()
    assert listed.get("processes", []) == []


async def test_background_list_connect_signal(agent):
    client, _, _ = agent
    body = envelope({"process": {"cmd": "/bin/bash", "args": ["-c", "while true; do echo tick; sleep 0.1; done"]},
                     "tag": "ticker"})
    async with client.stream("POST", f"{P}/Start", content=body, headers=STREAM) as first:
        head = await first.aiter_raw().__anext__()
        pid = parse_envelopes(head[: 5 + int.from_bytes(head[1:5], "big")])[0][1]["event"]["start"]["pid"]
    listed = (await client.post(f"{P}/List", json={})).json()["processes"]
    assert [(p["pid"], p["tag"], p["config"]["cmd"]) for p in listed] == [(pid, "ticker", "/bin/bash")]

    async def kill_soon():
        await asyncio.sleep(0.4)
        r = await client.post(f"{P}/SendSignal", json={"process": {"tag": "ticker"}, "signal": "SIGNAL_SIGKILL"})
        assert r.status_code == 200 and r.json() == {}

    killer = asyncio.create_task(kill_soon())
    r = await client.post(f"{P}/Connect", content=envelope({"process": {"pid": pid}}), headers=STREAM)
    await killer
    events = parse_envelopes(r.content)
    assert events[0][1]["event"]["start"]["pid"] == pid
    assert b"tick" in _out(events)
    end = [m["event"]["end"] for f, m in events if f == 0 and "end" in m["event"]][0]
    assert end["exited"] is False and end["status"] == "signal: killed"
    r = await client.post(f"{P}/SendSignal", json={"process": {"pid": pid}, "signal": "SIGNAL_SIGKILL"})
    assert r.status_code == 404 and r.json()["code"] == "not_found"


async def test_stdin_send_and_close(agent):
    client, _, _ = agent
    body = envelope({"process": {"cmd": "/bin/cat"}, "stdin": True})

    async def feed(pid_box):
        while not pid_box:
            await asyncio.sleep(0.01)
        pid = pid_box[0]
        r = await client.post(f"{P}/SendInput", json={"process": {"pid": pid},
                                                      "input": {"stdin": base64.b64encode(b"abc\n").decode()}})
        assert r.status_code == 200
        assert (await client.post(f"{P}/CloseStdin", json={"process": {"pid": pid}})).status_code == 200

    pid_box: list[int] = []
    task = None
    buf = b""
    async with client.stream("POST", f"{P}/Start", content=body, headers=STREAM) as r:
        async for chunk in r.aiter_raw():
            buf += chunk
            if not pid_box and len(buf) >= 5:
                first = parse_envelopes(buf[: 5 + int.from_bytes(buf[1:5], "big")])
                pid_box.append(first[0][1]["event"]["start"]["pid"])
                task = asyncio.create_task(feed(pid_box))
    await task
    assert _out(parse_envelopes(buf)) == b"abc\n"


async def test_pty_process(agent):
    client, _, _ = agent
    body = envelope({"process": {"cmd": "/bin/bash", "args": ["-c", "tty; stty size"]},
                     "pty": {"size": {"cols": 100, "rows": 30}}})
    r = await client.post(f"{P}/Start", content=body, headers=STREAM)
    out = _out(parse_envelopes(r.content), "pty")
    assert b"/dev/pts/" in out and b"30 100" in out


async def test_unary_errors_are_connect_json(agent):
    client, _, _ = agent
    r = await client.post(f"{P}/SendSignal", json={"process": {"pid": 999999}, "signal": "SIGNAL_SIGKILL"})
    assert r.status_code == 404 and r.json() == {"code": "not_found", "message": "process with pid 999999 not found"}
    r = await client.post(f"{P}/Start", content=envelope({"process": {"cmd": "/no/such/binary"}}), headers=STREAM)
    err = parse_envelopes(r.content)[-1]
    assert err[0] == 2 and err[1]["error"]["code"] == "invalid_argument"
    r = await client.post(f"{P}/List", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["code"] == "invalid_argument"
    r = await client.post(f"{P}/Start", content=envelope({"process": {"cmd": "/bin/true"}}),
                          headers={**STREAM, "authorization": "Basic " + base64.b64encode(b"nosuchuser:").decode()})
    assert parse_envelopes(r.content)[-1][1]["error"]["code"] == "unauthenticated"


async def test_client_stream_answers_only_after_the_whole_input(agent):
    # The response head must not go out while the client is still streaming its input: an HTTP client may
    # end its request body when the answer arrives, and the rest of the input is then lost.
    client, _, _ = agent
    body = envelope({"process": {"cmd": "/bin/cat"}, "tag": "sink"})
    async with client.stream("POST", f"{P}/Start", content=body, headers=STREAM) as started:
        head = await started.aiter_raw().__anext__()
        pid = parse_envelopes(head[: 5 + int.from_bytes(head[1:5], "big")])[0][1]["event"]["start"]["pid"]
    port = int(str(client.base_url).rsplit(":", 1)[1].rstrip("/"))
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"POST {P}/StreamInput HTTP/1.1\r\nHost: x\r\nContent-Type: application/connect+json\r\n"
                     "Connect-Protocol-Version: 1\r\nTransfer-Encoding: chunked\r\n\r\n".encode())
        first = envelope({"start": {"process": {"pid": pid}}})
        writer.write(b"%x\r\n%s\r\n" % (len(first), first))
        await writer.drain()
        with pytest.raises(asyncio.TimeoutError):  # nothing yet: the input stream is still open
            await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 0.5)
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert head.startswith(b"HTTP/1.1 200")
    finally:
        writer.close()
        await client.post(f"{P}/SendSignal", json={"process": {"tag": "sink"}, "signal": "SIGNAL_SIGKILL"})


async def _first_pid(chunks) -> tuple[int, bytes]:
    """Reads a Start/Connect stream's chunks up to its start event: (pid, what was read)."""
    buf = b""
    async for chunk in chunks:
        buf += chunk
        if len(buf) >= 5 and len(buf) >= 5 + int.from_bytes(buf[1:5], "big"):
            first = parse_envelopes(buf[: 5 + int.from_bytes(buf[1:5], "big")])
            return first[0][1]["event"]["start"]["pid"], buf
    raise AssertionError("the stream ended before its start event")


def _pty_input(pid: int, data: bytes) -> dict:
    return {"process": {"pid": pid}, "input": {"pty": base64.b64encode(data).decode()}}


async def test_terminal_takes_input_as_soon_as_it_starts(agent):
    # A shell on a PTY that is typed to at once, before it printed anything: the agent keeps answering
    # (reading the terminal never waits on it) and the shell sees the input.
    client, _, _ = agent
    for _ in range(3):
        body = envelope({"process": {"cmd": "/bin/bash", "args": ["-i", "-l"]}, "pty": {"size": {"cols": 80, "rows": 24}}})
        async with client.stream("POST", f"{P}/Start", content=body, headers=STREAM) as r:
            chunks = r.aiter_raw()
            pid, buf = await _first_pid(chunks)
            sent = await client.post(f"{P}/SendInput", json=_pty_input(pid, b"exit 7\n"))
            assert sent.status_code == 200
            async for chunk in chunks:
                buf += chunk
        end = [m["event"]["end"] for f, m in parse_envelopes(buf) if f == 0 and "end" in m["event"]]
        assert end == [{"exitCode": 7, "exited": True, "status": "exit status 7"}]


async def test_terminal_outlives_its_stream_and_can_be_reconnected(agent):
    client, _, _ = agent
    body = envelope({"process": {"cmd": "/bin/bash", "args": ["-i"], "envs": {"FOO": "bar"}},
                     "pty": {"size": {"cols": 80, "rows": 24}}})
    async with client.stream("POST", f"{P}/Start", content=body, headers=STREAM) as r:
        pid, _ = await _first_pid(r.aiter_raw())
        await client.post(f"{P}/SendInput", json=_pty_input(pid, b"echo first $FOO\n"))
    # The starter went away; the shell did not.
    connect = envelope({"process": {"pid": pid}})
    async with client.stream("POST", f"{P}/Connect", content=connect, headers=STREAM) as r:
        chunks = r.aiter_raw()
        again, buf = await _first_pid(chunks)
        assert again == pid
        sent = await client.post(f"{P}/SendInput", json=_pty_input(pid, b"echo again $FOO\nexit\n"))
        assert sent.status_code == 200
        async for chunk in chunks:
            buf += chunk
    events = parse_envelopes(buf)
    assert b"again bar" in _out(events, "pty")
    assert [m["event"]["end"]["exited"] for f, m in events if f == 0 and "end" in m["event"]] == [True]
