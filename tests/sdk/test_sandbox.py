"""Our SDK against a real server (fake backend): every feature the SDK promises, end to end."""
from __future__ import annotations

import hashlib
import os
import threading
import time

import pytest

from sandboxd import (AuthenticationError, CommandExitError, NotFoundError, PathNotFoundError, Sandbox,
                      SandboxError)


def test_create_from_env_info_list_and_context_manager_kills(sdk_env):
    with Sandbox.create("base", metadata={"suite": "sdk-test"}) as sb:
        info = sb.get_info()
        assert info.id == sb.id and info.status == "running" and info.template_name == "base"
        assert info.public_host
        assert sb.id in [s.id for s in Sandbox.list()]
    with pytest.raises(NotFoundError):
        Sandbox.connect(sb.id)


def test_bad_key_is_authentication_error(server):
    with pytest.raises(AuthenticationError):
        Sandbox.list(api_key="wrong-key", api_url=server.url)


def test_run_code_keeps_state_and_reports_errors(sandbox):
    assert sandbox.run_code("x = 20\nprint('hi')").stdout == "hi\n"
    ex = sandbox.run_code("x * 2 + 2")
    assert ex.success and ex.error is None and ex.text == "42"
    bad = sandbox.run_code("1 / 0")
    assert not bad.success and bad.error.name == "ZeroDivisionError" and "division" in bad.error.value


def test_run_code_rich_png(sandbox):
    ex = sandbox.run_code("import matplotlib.pyplot as plt\n"
                          "plt.plot([1, 2, 3])\nplt.show()", timeout=120)
    assert ex.success, ex.stderr
    assert ex.pngs and ex.pngs[0].startswith(b"\x89PNG")


def test_run_code_streams_output_as_it_comes(sandbox):
    seen: list[tuple[float, str]] = []
    t0 = time.monotonic()
    ex = sandbox.run_code("import time, sys\nprint('a', flush=True)\ntime.sleep(1)\nprint('b')\n"
                          "print('e', file=sys.stderr)", on_stdout=lambda s: seen.append((time.monotonic() - t0, s)),
                          on_stderr=lambda s: seen.append((-1, s)))
    assert ex.success and "a\n" in ex.stdout and "b\n" in ex.stdout and "e" in ex.stderr
    outs = [(t, s) for t, s in seen if t >= 0]
    assert "".join(s for _, s in outs) == ex.stdout
    assert outs[0][0] < outs[-1][0] - 0.5  # 'a' arrived before the sleep ended, not batched at the end
    assert any(t == -1 for t, _ in seen)
    # A streamed run still returns the cell's value and its error like a plain one.
    assert sandbox.run_code("6 * 7", on_stdout=lambda s: None).text == "42"
    failed = sandbox.run_code("int('x')", on_stderr=lambda s: None)
    assert not failed.success and failed.error.name == "ValueError"


def test_commands_exit_codes_check_and_streaming(sandbox):
    r = sandbox.commands.run("echo out; echo err >&2; exit 3")
    assert (r.stdout, r.stderr, r.exit_code, r.ok) == ("out\n", "err\n", 3, False)
    with pytest.raises(CommandExitError) as ei:
        sandbox.commands.run("exit 7", check=True)
    assert ei.value.exit_code == 7 and isinstance(ei.value, SandboxError)
    chunks: list[str] = []
    r = sandbox.commands.run("for i in 1 2 3; do echo line$i; done", on_stdout=chunks.append)
    assert r.exit_code == 0 and "".join(chunks) == "line1\nline2\nline3\n" == r.stdout


def test_background_command_list_wait_and_kill(sandbox):
    h = sandbox.commands.run("sleep 0.5; echo done", background=True)
    assert h.process_id in [p.process_id for p in sandbox.commands.list()]
    res = h.wait(timeout=30)
    assert res.exit_code == 0 and "done" in res.stdout
    long = sandbox.commands.run("sleep 300", background=True)
    assert long.info().running
    long.kill()
    deadline = time.monotonic() + 10
    while long.info().running and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not long.info().running


def test_files_text_binary_list_exists_remove(sandbox):
    sandbox.files.write("/workspace/sdk-test/a.txt", "héllo\n")
    blob = bytes(range(256)) * 4
    sandbox.files.write("/workspace/sdk-test/b.bin", blob)
    assert sandbox.files.read("/workspace/sdk-test/a.txt") == "héllo\n"
    assert sandbox.files.read_bytes("/workspace/sdk-test/b.bin") == blob
    entries = {e.name: e for e in sandbox.files.list("/workspace/sdk-test")}
    assert entries["b.bin"].size == len(blob) and not entries["b.bin"].is_dir and entries["a.txt"].modified
    assert sandbox.files.exists("/workspace/sdk-test/a.txt")
    sandbox.files.remove("/workspace/sdk-test/a.txt")
    assert not sandbox.files.exists("/workspace/sdk-test/a.txt")
    with pytest.raises(PathNotFoundError):
        sandbox.files.read("/workspace/sdk-test/a.txt")


def test_large_file_upload_download_streams(sandbox, tmp_path):
    src = tmp_path / "big.bin"
    with open(src, "wb") as f:
        for _ in range(24):
            f.write(os.urandom(1024 * 1024))
    sandbox.files.upload(src, "/workspace/big.bin")
    dest = tmp_path / "back.bin"
    n = sandbox.files.download("/workspace/big.bin", dest)
    assert n == src.stat().st_size
    assert hashlib.sha256(dest.read_bytes()).digest() == hashlib.sha256(src.read_bytes()).digest()
    sandbox.files.remove("/workspace/big.bin")


def test_files_watch_sees_a_new_file(sandbox):
    sandbox.files.mkdir("/workspace/watched")
    events = []

    def watch():
        for ev in sandbox.files.watch("/workspace/watched", timeout=10):
            events.append(ev)
            if ev.path.endswith("new.txt"):
                return

    t = threading.Thread(target=watch)
    t.start()
    time.sleep(1.0)  # let the watch register before the change
    sandbox.files.write("/workspace/watched/new.txt", "x")
    t.join(15)
    assert any(ev.path.endswith("new.txt") for ev in events), events


def test_env_set_get_delete_seen_by_commands(sandbox):
    sandbox.env.set("TEST_VAR", "v1")
    assert sandbox.env.get("TEST_VAR") == "v1"
    assert sandbox.commands.run("echo $TEST_VAR").stdout == "v1\n"
    sandbox.env.delete("TEST_VAR")
    assert "TEST_VAR" not in sandbox.env.get_all()


def test_terminal_runs_a_command(sandbox):
    with sandbox.terminal.connect(cols=100, rows=30) as term:
        term.send("echo $((6*7))\n")
        assert "42" in term.read_until("42", timeout=15)


def test_pause_resume_timeout_connect(server, sandbox):
    sandbox.pause()
    assert sandbox.get_info().status == "paused"
    sandbox.resume()
    assert sandbox.get_info().status == "running"
    assert sandbox.run_code("x").text == "20"  # the kernel survived the pause
    before = time.time()
    expires = sandbox.set_timeout(600)
    assert before + 590 < expires.timestamp() < time.time() + 610
    again = Sandbox.connect(sandbox.id, api_key=server.api_key, api_url=server.url)
    assert again.commands.run("echo hi").stdout == "hi\n"
    again.close()


def test_events_and_metrics(sandbox):
    types = [e.type for e in sandbox.events(limit=50)]
    assert "sandbox.lifecycle.created" in types
    # The monitor samples every second; give it a moment to record one.
    deadline = time.monotonic() + 10
    while not (metrics := sandbox.get_metrics()) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert metrics and metrics[-1].mem_total > 0


async def test_async_sandbox_end_to_end(server):
    from sandboxd import AsyncSandbox

    async with await AsyncSandbox.create("base", api_key=server.api_key, api_url=server.url) as sb:
        ex = await sb.run_code("print(1 + 1)")
        assert ex.stdout == "2\n"
        got: list[str] = []

        async def collect(s: str) -> None:
            got.append(s)

        r = await sb.commands.run("echo a; exit 4", on_stdout=collect)
        assert r.exit_code == 4 and "".join(got) == "a\n"
        await sb.files.write("/workspace/x.txt", "async")
        assert await sb.files.read("/workspace/x.txt") == "async"
        h = await sb.commands.run("echo bg", background=True)
        assert (await h.wait(timeout=30)).stdout == "bg\n"
        sid = sb.id
    with pytest.raises(NotFoundError):
        await AsyncSandbox.connect(sid, api_key=server.api_key, api_url=server.url)
