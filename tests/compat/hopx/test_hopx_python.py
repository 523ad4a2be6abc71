"""The official `hopx-ai` 0.5.0 Python SDK (sync and async), unmodified, only base_url changed."""
from __future__ import annotations

import asyncio
import base64
import time

import pytest

hopx_ai = pytest.importorskip("hopx_ai")
from hopx_ai import AsyncSandbox, Sandbox  # noqa: E402
from hopx_ai.errors import FileNotFoundError as HopxFileNotFoundError  # noqa: E402
from hopx_ai.errors import NotFoundError  # noqa: E402


@pytest.fixture(scope="module")
def hopx(hopx_server, monkeypatch_module):
    monkeypatch_module.setenv("HOPX_API_KEY", hopx_server.api_key)
    monkeypatch_module.setenv("NO_PROXY", "127.0.0.1,localhost")
    return hopx_server


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


@pytest.fixture(scope="module")
def sb(hopx):
    sandbox = Sandbox.create(template="code-interpreter", base_url=hopx.url, env_vars={"TEST_CREATED": "yes"})
    yield sandbox
    try:
        sandbox.kill()
    except Exception:
        pass


def test_health_and_templates(hopx):
    assert Sandbox.health_check(base_url=hopx.url)["status"] == "healthy"
    names = [t.name for t in Sandbox.list_templates(base_url=hopx.url)]
    assert "code-interpreter" in names and "base" in names
    t = Sandbox.get_template("code-interpreter", base_url=hopx.url)
    assert t.name == "code-interpreter" and t.is_active


def test_info_and_env_vars_from_create(sb):
    info = sb.get_info()
    assert info.sandbox_id == sb.sandbox_id and info.status == "running" and info.public_host
    assert sb.commands.run("echo $TEST_CREATED").stdout.strip() == "yes"


def test_run_code_stdout_error_and_png(sb):
    r = sb.run_code("print('hello from hopx')")
    assert r.success and r.stdout == "hello from hopx\n"
    bad = sb.run_code("raise ValueError('boom')")
    assert not bad.success and "ValueError" in (bad.stderr or "")
    png = sb.run_code("import matplotlib.pyplot as plt\nplt.plot([1, 4, 9])\nplt.show()", timeout=120)
    assert png.success, png.stderr
    pngs = [o for o in png.rich_outputs or [] if getattr(o.type, "value", o.type) == "image/png"]
    assert pngs and base64.b64decode(pngs[0].data["image/png"]).startswith(b"\x89PNG")


def test_commands_exit_codes_and_background(sb):
    r = sb.commands.run("echo out; exit 3")
    assert r.exit_code == 3 and r.stdout == "out\n"
    bg = sb.run_code_background("import time; time.sleep(300)")
    pid = bg["process_id"]
    assert pid in [p.get("process_id") for p in sb.list_processes()]
    sb.kill_process(pid)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        status = {p.get("process_id"): p.get("status") for p in sb.list_processes()}[pid]
        if status != "running":
            break
        time.sleep(0.2)
    assert status in ("killed", "failed", "completed")


def test_files(sb):
    sb.files.write("/workspace/hopx.txt", "text content here")
    assert sb.files.read("/workspace/hopx.txt") == "text content here"
    blob = bytes(range(256))
    sb.files.write_bytes("/workspace/hopx.bin", blob)
    assert sb.files.read_bytes("/workspace/hopx.bin") == blob
    names = [f.name for f in sb.files.list("/workspace")]
    assert "hopx.txt" in names and "hopx.bin" in names
    assert sb.files.exists("/workspace/hopx.txt")
    sb.files.remove("/workspace/hopx.txt")
    assert not sb.files.exists("/workspace/hopx.txt")
    with pytest.raises(HopxFileNotFoundError):
        sb.files.read("/workspace/hopx.txt")


def test_env_and_metrics(sb):
    sb.env.set("TEST_ENV", "42")
    assert sb.env.get("TEST_ENV") == "42"
    assert sb.commands.run("echo $TEST_ENV").stdout.strip() == "42"
    snap = sb.get_metrics_snapshot()
    assert snap["total_requests"] > 0 and "system" in snap


def test_stream_terminal_and_watch(sb):
    async def go():
        kinds, out = [], ""
        async for msg in sb.run_code_stream("import time\nfor i in range(3):\n    print(i, flush=True)\n"):
            kinds.append(msg["type"])
            out += msg.get("data", "") if msg["type"] == "stdout" else ""
        assert out == "0\n1\n2\n" and kinds[-1] == "complete"

        async with await sb.terminal.connect() as ws:
            await sb.terminal.send_input(ws, "echo TERM-$((40+2))\n")
            seen = ""
            async for msg in sb.terminal.iter_output(ws):
                seen += msg.get("data", "")
                if "TERM-42" in seen:
                    break
        sb.files.write("/workspace/watchme/.keep", "")

        async def first_change():
            async for ev in sb.files.watch("/workspace/watchme"):
                if ev.get("type") == "change" and ev["path"].endswith("new.txt"):
                    return ev

        task = asyncio.create_task(first_change())
        await asyncio.sleep(1.0)
        sb.files.write("/workspace/watchme/new.txt", "x")
        ev = await asyncio.wait_for(task, 15)
        assert ev["event"] in ("created", "modified")

    asyncio.run(go())


def test_timeout_pause_resume_connect_list_kill(hopx):
    sb = Sandbox.create(template="base", base_url=hopx.url)
    sb.set_timeout(900)
    expiry = sb.get_expiry_info()
    assert expiry.has_timeout and 880 < expiry.time_to_expiry <= 900 and not expiry.is_expired
    sb.pause()
    assert sb.get_info().status == "paused"
    sb.resume()
    assert sb.get_info().status == "running"
    assert sb.run_code("print('after resume')").stdout == "after resume\n"
    again = Sandbox.connect(sb.sandbox_id, base_url=hopx.url)
    assert again.commands.run("echo connected").stdout == "connected\n"
    assert sb.sandbox_id in [s.sandbox_id for s in Sandbox.list(base_url=hopx.url)]
    sb.kill()
    with pytest.raises(NotFoundError):
        Sandbox.connect(sb.sandbox_id, base_url=hopx.url)


def test_async_client(hopx):
    async def go():
        sb = await AsyncSandbox.create(template="code-interpreter", base_url=hopx.url)
        try:
            r = await sb.run_code("print(6 * 7)")
            assert r.stdout == "42\n"
            c = await sb.commands.run("exit 2")
            assert c.exit_code == 2
            await sb.files.write("/workspace/a.txt", "async hopx")
            assert await sb.files.read("/workspace/a.txt") == "async hopx"
            with pytest.raises(HopxFileNotFoundError):
                await sb.files.read("/workspace/missing.txt")
            await sb.env.set("TEST_A", "1")
            assert (await sb.env.get("TEST_A")) == "1"
            await sb.pause()
            assert (await sb.get_info()).status == "paused"
            await sb.resume()
            assert (await sb.run_code("print('back')")).stdout == "back\n"
        finally:
            await sb.kill()
        with pytest.raises(NotFoundError):
            await AsyncSandbox.connect(sb.sandbox_id, base_url=hopx.url)

    asyncio.run(go())
