"""The official `hopx` CLI (hopx-cli 0.1.2), unmodified, with HOPX_BASE_URL pointing at sandboxd: the
commands that honour HOPX_BASE_URL (docs/clients/hopx.md §6; `run` and `system` always go to the cloud).
hopx-cli declares Python >= 3.12 but runs on 3.11, so it is installed with --ignore-requires-python into
its own virtualenv (tests/compat/hopx/cli-venv, gitignored) to keep its dependencies out of ours."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

VENV = Path(__file__).parent / "cli-venv"
HOPX = VENV / "bin" / "hopx"


def js(text: str):
    """The JSON document in the CLI's output (spinner lines such as "✓ Creating..." may precede it)."""
    starts = [i for i in (text.find("{"), text.find("[")) if i >= 0]
    assert starts, text
    return json.JSONDecoder().raw_decode(text[min(starts):])[0]


@pytest.fixture(scope="session")
def hopx_cli():
    if not HOPX.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True, timeout=300)
        r = subprocess.run([str(VENV / "bin" / "pip"), "install", "-q", "--ignore-requires-python",
                            "hopx-cli==0.1.2"], capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr[-2000:]
    return HOPX


@pytest.fixture
def hopx(hopx_cli, hopx_server):
    env = {**hopx_server.client_env, "COLUMNS": "200", "NO_COLOR": "1"}

    def run(*args: str, ok: bool = True) -> subprocess.CompletedProcess:
        r = subprocess.run([str(hopx_cli), "-o", "json", *args], env=env, capture_output=True, text=True,
                           timeout=180)
        if ok:
            assert r.returncode == 0 and "Error" not in r.stdout, r.stdout[-2000:] + r.stderr[-2000:]
        return r

    return run


def test_hopx_cli_sandbox_files_cmd_template(hopx, hopx_server):
    created = js(hopx("sandbox", "create", "--template", "base").stdout)
    sid = created["sandbox_id"]
    try:
        assert created["status"] == "running"
        assert sid in [s["sandbox_id"] for s in js(hopx("sandbox", "list").stdout)]
        assert js(hopx("sandbox", "info", sid).stdout)["template_name"] == "base"
        hopx("sandbox", "timeout", sid, "900")
        expiry = js(hopx("sandbox", "expiry", sid).stdout)
        assert expiry["has_timeout"] and 880 < expiry["time_to_expiry"] <= 900
        ran = js(hopx("cmd", "run", sid, "echo from-hopx-cli").stdout)
        assert ran["exit_code"] == 0 and ran["stdout"] == "from-hopx-cli\n"
        hopx("files", "write", sid, "/workspace/cli.txt", "--data", "written by hopx")
        assert "written by hopx" in hopx("files", "read", sid, "/workspace/cli.txt").stdout
        assert "cli.txt" in [f["name"] for f in js(hopx("files", "list", sid, "/workspace").stdout)]
        hopx("files", "delete", sid, "/workspace/cli.txt", "--force")
        missing = hopx("files", "read", sid, "/workspace/cli.txt", ok=False)
        assert "FILE_NOT_FOUND" in missing.stdout + missing.stderr
        hopx("sandbox", "pause", sid)
        # Checked through our client: `hopx sandbox info` connects first, and connect resumes.
        from sandboxd import Client

        with Client(hopx_server.api_key, hopx_server.url) as c:
            assert c.get_sandbox(sid).status == "paused"
        # `hopx sandbox resume` connects (which resumes) and then resumes again: that must succeed.
        hopx("sandbox", "resume", sid)
        with Client(hopx_server.api_key, hopx_server.url) as c:
            assert c.get_sandbox(sid).status == "running"
        names = [t["name"] for t in js(hopx("template", "list").stdout)]
        assert "base" in names and "code-interpreter" in names
    finally:
        hopx("sandbox", "kill", sid, "--force", ok=False)
    gone = hopx("sandbox", "info", sid, ok=False)
    assert "not found" in (gone.stdout + gone.stderr).lower()
