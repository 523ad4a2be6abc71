"""The official `e2b` SDK, unmodified, against `sandboxd serve`: lifecycle, commands, files, watch."""
from __future__ import annotations

import asyncio
import time
import uuid
from datetime import timedelta

import httpx
import pytest

from e2b import AsyncSandbox, CommandExitException, Sandbox, SandboxQuery
from e2b.exceptions import NotFoundException, SandboxException, TimeoutException


def _fresh(name: str) -> str:
    # The fake backend's sandboxes share the host's /tmp: every test gets its own directory.
    return f"/tmp/{name}-{uuid.uuid4().hex[:8]}"


def test_create_info_list_kill(e2b_env):
    sbx = Sandbox.create(timeout=120, metadata={"suite": "e2b-compat"}, envs={"GREETING": "hola"})
    try:
        info = sbx.get_info()
        assert info.sandbox_id == sbx.sandbox_id
        assert info.state.value == "running"
        assert info.metadata == {"suite": "e2b-compat"}
        assert 100 <= (info.end_at - info.started_at).total_seconds() <= 121
        assert sbx.is_running()
        listed = Sandbox.list(query=SandboxQuery(metadata={"suite": "e2b-compat"})).next_items()
        assert [s.sandbox_id for s in listed] == [sbx.sandbox_id]
        since = Sandbox.list(query=SandboxQuery(metadata={"suite": "e2b-compat"}, started_after=info.started_at))
        assert [s.sandbox_id for s in since.next_items()] == [sbx.sandbox_id]
        later = SandboxQuery(metadata={"suite": "e2b-compat"}, started_after=info.started_at + timedelta(seconds=1))
        assert Sandbox.list(query=later).next_items() == []
        assert sbx.commands.run("echo $GREETING").stdout == "hola\n"
    finally:
        assert sbx.kill() is True
    assert Sandbox.kill(sbx.sandbox_id) is False  # already gone: the SDK maps 404 to False
    with pytest.raises(SandboxException):
        Sandbox.get_info(sbx.sandbox_id)
    assert not sbx.is_running()


def test_list_pages_hold_matches_only(e2b_env):
    """A page is cut after the filters: with other sandboxes between the matching ones, each page of one still
    holds a match, and the last page says there is no next."""
    tag = {"page-test": uuid.uuid4().hex[:8]}
    made = []
    try:
        for i in range(4):  # newest first: other, match, other, match
            made.append(Sandbox.create(timeout=60, metadata=tag if i % 2 == 0 else {"page-test": "other"}))
        pages = Sandbox.list(query=SandboxQuery(metadata=tag), limit=1)
        seen = []
        while pages.has_next:
            page = pages.next_items()
            assert len(page) == 1, page
            seen += [s.sandbox_id for s in page]
        assert seen == [made[2].sandbox_id, made[0].sandbox_id]
    finally:
        for sbx in made:
            sbx.kill()


def test_commands_streaming_and_exit_codes(sandbox):
    out, err = [], []
    res = sandbox.commands.run("echo one; echo two >&2; echo three", on_stdout=out.append, on_stderr=err.append)
    assert res.exit_code == 0
    assert res.stdout == "one\nthree\n" and res.stderr == "two\n"
    assert "".join(out) == "one\nthree\n" and "".join(err) == "two\n"
    with pytest.raises(CommandExitException) as exc:
        sandbox.commands.run("echo bad >&2; exit 7")
    assert exc.value.exit_code == 7 and exc.value.stderr == "bad\n"
    assert sandbox.commands.run("pwd", cwd="/tmp").stdout == "/tmp\n"
    assert sandbox.commands.run("echo $X", envs={"X": "from-envs"}).stdout == "from-envs\n"


def test_background_command_list_and_kill(sandbox):
    handle = sandbox.commands.run("sleep 60", background=True)
    assert handle.pid in [p.pid for p in sandbox.commands.list()]
    assert handle.kill() is True
    with pytest.raises(CommandExitException):
        handle.wait()
    deadline = time.monotonic() + 5
    while handle.pid in [p.pid for p in sandbox.commands.list()] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert handle.pid not in [p.pid for p in sandbox.commands.list()]
    assert sandbox.commands.kill(handle.pid) is False  # NOT_FOUND -> False


def test_command_stdin_and_timeout(sandbox):
    handle = sandbox.commands.run("read line; echo got:$line", background=True, stdin=True)
    sandbox.commands.send_stdin(handle.pid, "hello\n")
    assert handle.wait().stdout == "got:hello\n"
    with pytest.raises(TimeoutException):
        sandbox.commands.run("sleep 30", timeout=1)


def test_command_stream_input_then_close(sandbox):
    # Regression: the input was lost about 1 run in 6 under load, when the response head went out before the
    # client had streamed its input (the tee'd file was empty too). Client-streaming calls now answer at the end.
    cat = sandbox.commands.run("tee /tmp/stream-input-tee", background=True, stdin=True)
    sandbox.commands.stream_input(cat.pid, iter([b"one\n", b"two\n"]))  # client-streaming RPC
    sandbox.commands.close_stdin(cat.pid)
    out = cat.wait().stdout
    assert out == "one\ntwo\n", (out, sandbox.commands.run("cat /tmp/stream-input-tee").stdout)


def test_files_roundtrip(sandbox):
    base = _fresh("e2b-compat")
    info = sandbox.files.write(f"{base}/dir/hello.txt", "hello world")
    assert info.path == f"{base}/dir/hello.txt"
    assert sandbox.files.read(f"{base}/dir/hello.txt") == "hello world"
    blob = bytes(range(256))
    sandbox.files.write(f"{base}/dir/blob.bin", blob)
    assert bytes(sandbox.files.read(f"{base}/dir/blob.bin", format="bytes")) == blob
    names = sorted(e.name for e in sandbox.files.list(f"{base}/dir"))
    assert names == ["blob.bin", "hello.txt"]
    assert sandbox.files.exists(f"{base}/dir/hello.txt")
    assert not sandbox.files.exists(f"{base}/none.txt")
    with pytest.raises(NotFoundException):
        sandbox.files.read(f"{base}/none.txt")
    assert sandbox.files.get_info(f"{base}/dir/blob.bin").size == 256
    sandbox.files.rename(f"{base}/dir/hello.txt", f"{base}/moved.txt")
    assert sandbox.files.read(f"{base}/moved.txt") == "hello world"
    assert sandbox.files.make_dir(f"{base}/newdir") is True
    assert sandbox.files.make_dir(f"{base}/newdir") is False
    sandbox.files.remove(base)
    assert not sandbox.files.exists(f"{base}/moved.txt")
    # A file written through the API is visible to commands, and the other way round.
    sandbox.commands.run(f"mkdir -p {base} && echo from-shell > {base}/shell.txt")
    assert sandbox.files.read(f"{base}/shell.txt") == "from-shell\n"
    sandbox.files.remove(base)


def test_watch_dir_sync(sandbox):
    d = _fresh("e2b-watch")
    sandbox.files.make_dir(d)
    handle = sandbox.files.watch_dir(d)
    sandbox.files.write(f"{d}/a.txt", "x")
    sandbox.commands.run(f"rm {d}/a.txt")
    time.sleep(0.5)
    events = [(e.name, e.type.value) for e in handle.get_new_events()]
    handle.stop()
    sandbox.files.remove(d)
    assert ("a.txt", "create") in events and ("a.txt", "remove") in events


def test_watch_dir_async_recursive(e2b_env):
    d = _fresh("e2b-awatch")

    async def run():
        sbx = await AsyncSandbox.create(timeout=60)
        try:
            await sbx.files.make_dir(d)
            seen = []
            handle = await sbx.files.watch_dir(d, on_event=seen.append, recursive=True)
            await sbx.files.write(f"{d}/sub/f.txt", "x")
            for _ in range(50):
                if any(e.name == "sub/f.txt" for e in seen):
                    break
                await asyncio.sleep(0.05)
            await handle.stop()
            await sbx.files.remove(d)
            return [(e.name, e.type.value) for e in seen]
        finally:
            await sbx.kill()

    events = asyncio.run(run())
    assert ("sub", "create") in events and ("sub/f.txt", "create") in events


def test_set_timeout_pause_connect(e2b_env):
    sbx = Sandbox.create(timeout=60)
    try:
        marker = _fresh("e2b-pause")
        sbx.commands.run(f"echo kept > {marker}")
        sbx.set_timeout(600)
        info = sbx.get_info()
        assert (info.end_at - info.started_at).total_seconds() > 500
        assert sbx.pause() is True
        assert Sandbox.get_info(sbx.sandbox_id).state.value == "paused"
        assert Sandbox.pause(sbx.sandbox_id) is False  # already paused: 409 -> False
        with pytest.raises(SandboxException):
            sbx.commands.run("true")  # traffic to a paused sandbox is refused
        again = Sandbox.connect(sbx.sandbox_id)
        assert Sandbox.get_info(sbx.sandbox_id).state.value == "running"
        assert again.files.read(marker) == "kept\n"
        again.files.remove(marker)
    finally:
        sbx.kill()


def test_get_metrics_shape(sandbox):
    # The metrics route is the monitoring room's; the SDK must at least parse what it returns.
    metrics = sandbox.get_metrics()
    assert isinstance(metrics, list)
    for m in metrics:
        assert m.cpu_count >= 1 and m.mem_total > 0


def test_idempotency_key_returns_the_same_sandbox(e2b_env):
    key = "e2b-compat-idem-0001"
    a = Sandbox.create(timeout=60, idempotency_key=key)
    try:
        b = Sandbox.create(timeout=60, idempotency_key=key)
        assert a.sandbox_id == b.sandbox_id
        with pytest.raises(SandboxException) as exc:
            Sandbox.create(timeout=61, idempotency_key=key)  # same key, other body
        assert "409" in str(exc.value)
    finally:
        a.kill()


def test_gateway_refuses_foreign_and_missing_tokens(e2b_env):
    a = Sandbox.create(timeout=60)
    b = Sandbox.create(timeout=60)
    try:
        url = e2b_env["sandbox"] + "/files"
        params = {"path": "/etc/hostname"}
        ok = httpx.get(url, params=params, headers={"E2b-Sandbox-Id": a.sandbox_id, "E2b-Sandbox-Port": "49983",
                                                     "X-Access-Token": a._envd_access_token})
        assert ok.status_code == 200
        foreign = httpx.get(url, params=params, headers={"E2b-Sandbox-Id": a.sandbox_id,
                                                          "X-Access-Token": b._envd_access_token})
        assert foreign.status_code == 401
        missing = httpx.get(url, params=params, headers={"E2b-Sandbox-Id": a.sandbox_id})
        assert missing.status_code == 401
        internal = httpx.post(e2b_env["sandbox"] + "/init", headers={
            "E2b-Sandbox-Id": a.sandbox_id, "X-Access-Token": a._envd_access_token})
        assert internal.status_code == 404
    finally:
        a.kill()
        b.kill()
    gone = httpx.get(url, params=params, headers={"E2b-Sandbox-Id": a.sandbox_id,
                                                   "X-Access-Token": a._envd_access_token})
    assert gone.status_code in (401, 502)


def test_signed_file_urls(e2b_env):
    """download_url / upload_url: plain URLs anyone holding them can use, with no header; the signature (made
    with the sandbox's envd token) picks the sandbox on the shared URL and covers path, operation and user."""
    from urllib.parse import parse_qs, urlencode, urlsplit

    a = Sandbox.create(timeout=60)
    b = Sandbox.create(timeout=60)
    try:
        fa, fin = "signed.txt", _fresh("signed-in")  # relative: in the user's home, each sandbox's own
        a.files.write(fa, "from a")
        b.files.write(fa, "from b")
        assert httpx.get(a.download_url(fa)).text == "from a"  # the signature picks the sandbox
        assert httpx.get(b.download_url(fa, use_signature_expiration=60)).text == "from b"
        up = httpx.post(a.upload_url(fin), files={"file": ("in.txt", b"uploaded")})
        assert up.status_code == 200 and a.files.read(fin) == "uploaded"
        # Connect hands out the same token, so URLs made before it still work.
        assert Sandbox.connect(a.sandbox_id)._envd_access_token == a._envd_access_token

        url = urlsplit(a.download_url(fa))
        q = {k: v[0] for k, v in parse_qs(url.query).items()}

        def get(**change):
            return httpx.get(url._replace(query=urlencode({**q, **change})).geturl())

        refused = get(path="/etc/shadow")
        assert refused.status_code == 401  # the signature covers the path
        assert refused.json() == {"code": 401, "message": "invalid signature"}  # envd's body, as the SDK reads it
        assert get(username="root").status_code == 401  # ... and the user
        assert httpx.post(url.geturl(), files={"file": ("x", b"x")}).status_code == 401  # ... and the operation
        expired = httpx.get(a.download_url(fa, use_signature_expiration=-5))
        assert (expired.status_code, expired.json()) == (401, {"code": 401, "message": "signature is already expired"})
    finally:
        a.kill()
        b.kill()
    assert httpx.get(url.geturl()).status_code == 401  # a killed sandbox's URLs are dead


def test_control_plane_errors_use_e2b_shape(e2b_env):
    r = httpx.get(e2b_env["api"] + "/sandboxes/nope", headers={"X-API-KEY": e2b_env["key"]})
    assert r.status_code == 404
    assert r.json()["code"] == 404 and "nope" in r.json()["message"]
    r = httpx.get(e2b_env["api"] + "/v2/sandboxes", headers={"X-API-KEY": "wrong"})
    assert r.status_code == 401 and r.json()["code"] == 401
    r = httpx.post(e2b_env["api"] + "/v2/sandboxes", json={"templateID": "no-such-template"},
                   headers={"X-API-KEY": e2b_env["key"]})
    assert r.status_code == 404 and r.json()["code"] == 404
