"""The WebSocket protocols, with a real WebSocket client: /execute/stream, /terminal, /files/watch."""
from __future__ import annotations

import json
import os
import time

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect


def frames(ws, until: str, timeout: float = 30):
    out = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            msg = json.loads(ws.recv(timeout=deadline - time.monotonic()))
        except (TimeoutError, ConnectionClosed):
            break
        out.append(msg)
        if msg.get("type") == until:
            break
    return out


@pytest.mark.parametrize("language,code", [
    ("python", "import time\nprint('first', flush=True)\ntime.sleep(1.5)\nprint('second')"),
    ("bash", "echo first; sleep 1.5; echo second >&2"),
])
def test_execute_stream_first_frame_before_code_finishes(ws_base, client, language, code):
    client.post("/jupyter/warm")  # kernel start-up must not blur the ordering being checked
    with connect(f"{ws_base}/execute/stream", additional_headers={"Authorization": "Bearer x"}) as ws:
        t0 = time.monotonic()
        ws.send(json.dumps({"type": "execute", "code": code, "language": language, "timeout": 30}))
        first = json.loads(ws.recv(timeout=30))
        first_at = time.monotonic() - t0
        rest = frames(ws, "complete")
        done_at = time.monotonic() - t0
    assert first["type"] == "stdout" and first["data"] == "first\n" and first["timestamp"]
    # the first frame arrived while the code was still sleeping its 1.5 s
    assert done_at >= 1.5 and done_at - first_at >= 1.0
    kinds = [f["type"] for f in rest]
    assert kinds[-2:] == ["result", "complete"]
    assert any(f["type"] in ("stdout", "stderr") and "second" in f["data"] for f in rest)
    result = rest[-2]
    assert result["exit_code"] == 0 and isinstance(result["execution_time"], float)
    assert rest[-1]["success"] is True


def test_execute_stream_error_result(ws_base):
    with connect(f"{ws_base}/execute/stream") as ws:
        ws.send(json.dumps({"type": "execute", "code": "exit 5", "language": "bash"}))
        got = frames(ws, "complete")
    assert got[-2]["type"] == "result" and got[-2]["exit_code"] == 5 and got[-1] == {"type": "complete",
                                                                                     "success": False}


def test_terminal_runs_bash_on_a_pty(ws_base):
    with connect(f"{ws_base}/terminal") as ws:
        ws.send(json.dumps({"type": "resize", "cols": 132, "rows": 40}))
        ws.send(json.dumps({"type": "input", "data": "tty; stty size; echo MARK-$((6*7))\n"}))
        out = ""
        deadline = time.monotonic() + 15
        while "MARK-42" not in out and time.monotonic() < deadline:
            msg = json.loads(ws.recv(timeout=15))
            if msg["type"] == "output":
                out += msg["data"]
        assert "MARK-42" in out and "/dev/pts/" in out and "40 132" in out
        ws.send(json.dumps({"type": "input", "data": "exit 3\n"}))
        got = frames(ws, "exit", 15)
    assert got[-1] == {"type": "exit", "code": 3}


def test_closing_terminal_socket_ends_the_shell(ws_base, client):
    with connect(f"{ws_base}/terminal") as ws:
        ws.send(json.dumps({"type": "input", "data": "echo PID=$$\n"}))
        out = ""
        while "PID=" not in out or not out.split("PID=")[-1].split("\n")[0].strip().isdigit():
            msg = json.loads(ws.recv(timeout=15))
            out += msg.get("data", "")
        pid = int(out.split("PID=")[-1].split()[0])
        assert os.path.exists(f"/proc/{pid}")
    for _ in range(100):
        if not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split()[2] == "Z":
            break
        time.sleep(0.05)
    assert not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split()[2] == "Z"


def test_files_watch_reports_changes(ws_base, workspace):
    d = workspace / "watched"
    d.mkdir(exist_ok=True)
    with connect(f"{ws_base}/files/watch") as ws:
        ws.send(json.dumps({"action": "watch", "path": str(d)}))
        # the server sends nothing until a change: poke a probe file until its event shows the watch is live
        probe, live = d / "probe", False
        for _ in range(50):
            probe.write_text("p")
            try:
                live = json.loads(ws.recv(timeout=0.2))["path"] == str(probe)
            except TimeoutError:
                continue
            if live:
                break
        assert live
        (d / "a.txt").write_text("1")
        (d / "sub").mkdir()
        time.sleep(0.1)  # let the new directory's watch be added before writing inside it
        (d / "sub" / "b.txt").write_text("2")
        os.rename(d / "a.txt", d / "c.txt")
        os.unlink(d / "c.txt")
        seen = set()
        deadline = time.monotonic() + 10
        want = {("created", str(d / "a.txt")), ("modified", str(d / "a.txt")), ("created", str(d / "sub")),
                ("created", str(d / "sub" / "b.txt")), ("renamed", str(d / "a.txt")), ("renamed", str(d / "c.txt")),
                ("deleted", str(d / "c.txt"))}
        while not want <= seen and time.monotonic() < deadline:
            msg = json.loads(ws.recv(timeout=10))
            assert msg["type"] == "change" and msg["timestamp"].endswith("Z")
            if msg["path"] != str(probe):
                seen.add((msg["event"], msg["path"]))
    assert want <= seen, want - seen


def test_files_watch_missing_dir_is_an_error_frame(ws_base, workspace):
    with connect(f"{ws_base}/files/watch") as ws:
        ws.send(json.dumps({"action": "watch", "path": str(workspace / "nope")}))
        msg = json.loads(ws.recv(timeout=10))
    assert msg["type"] == "error" and msg["code"] == "DIRECTORY_NOT_FOUND"
