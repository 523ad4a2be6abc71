"""`sandboxd sandbox|keys|template` end to end, including `sandbox shell` in a real terminal (tmux)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import time

import pytest


def one_error_line(r) -> str:
    assert r.returncode != 0
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), r.stderr
    assert "Traceback" not in r.stderr
    return lines[0]


def test_lifecycle_commands_and_json_listings(cli, sandbox_id):
    listed = json.loads(cli("sandbox", "list", "--json").stdout)
    assert sandbox_id in [s["id"] for s in listed]
    table = cli("sandbox", "list")
    assert table.returncode == 0 and sandbox_id in table.stdout
    info = json.loads(cli("sandbox", "info", sandbox_id, "--json").stdout)
    assert info["id"] == sandbox_id and info["status"] == "running" and info["template_name"] == "base"
    assert cli("sandbox", "pause", sandbox_id).stdout.split() == [sandbox_id, "paused"]
    assert json.loads(cli("sandbox", "list", "--status", "paused", "--json").stdout)[0]["id"] == sandbox_id
    assert cli("sandbox", "resume", sandbox_id).stdout.split() == [sandbox_id, "running"]
    r = cli("sandbox", "timeout", sandbox_id, "900")
    assert r.returncode == 0 and "expires at" in r.stdout


def test_exec_streams_and_returns_exit_code(cli, sandbox_id):
    r = cli("sandbox", "exec", sandbox_id, "--", "sh", "-c", "echo out; echo err >&2; exit 3")
    assert (r.returncode, r.stdout, r.stderr) == (3, "out\n", "err\n"), r.stderr
    assert cli("sandbox", "exec", sandbox_id, "--", "echo $((1+1))").stdout == "2\n"


def test_run_code_file_and_error_exit(cli, sandbox_id, tmp_path):
    code = tmp_path / "code.py"
    code.write_text("v = 6 * 7\nprint('computing')\nv\n")
    r = cli("sandbox", "run", sandbox_id, str(code))
    assert r.returncode == 0 and r.stdout == "computing\n42\n"
    r = cli("sandbox", "run", sandbox_id, "-", input="raise ValueError('nope')\n")
    assert r.returncode == 1 and "ValueError" in r.stderr
    data = json.loads(cli("sandbox", "run", sandbox_id, "-", "--json", input="print(v)").stdout)
    assert data["stdout"] == "42\n" and data["success"] is True


def test_cp_in_and_out(cli, sandbox_id, tmp_path):
    src = tmp_path / "in.bin"
    src.write_bytes(os.urandom(300_000))
    assert cli("sandbox", "cp", str(src), f"{sandbox_id}:/workspace/in.bin").returncode == 0
    back = tmp_path / "out.bin"
    assert cli("sandbox", "cp", f"{sandbox_id}:/workspace/in.bin", str(back)).returncode == 0
    assert back.read_bytes() == src.read_bytes()
    missing = tmp_path / "missing.bin"
    line = one_error_line(cli("sandbox", "cp", f"{sandbox_id}:/workspace/nope.bin", str(missing)))
    assert "nope.bin" in line and not missing.exists() and not (tmp_path / "missing.bin.part").exists()


def test_errors_are_one_line(cli, server):
    assert "not found" in one_error_line(cli("sandbox", "info", "sb_does_not_exist"))
    one_error_line(cli("sandbox", "list", key="not-a-key"))
    env_less = cli("sandbox", "list", key="")
    one_error_line(env_less)


def test_keys_create_list_revoke(cli):
    created = json.loads(cli("keys", "create", "test-cli-key", "--json").stdout)
    secret, key_id = created["key"], created["id"]
    assert secret and key_id
    assert cli("sandbox", "list", key=secret).returncode == 0
    assert key_id in [k["id"] for k in json.loads(cli("keys", "list", "--json").stdout)]
    assert cli("keys", "revoke", key_id).returncode == 0
    one_error_line(cli("sandbox", "list", key=secret))
    # Key management needs an admin key.
    plain = json.loads(cli("keys", "create", "test-plain", "--json").stdout)["key"]
    one_error_line(cli("keys", "list", key=plain))


def test_template_list_json(cli):
    names = [t["name"] for t in json.loads(cli("template", "list", "--json").stdout)]
    assert "base" in names and "code-interpreter" in names


@pytest.mark.skipif(not shutil.which("tmux"), reason="tmux is not installed")
def test_shell_in_a_real_terminal(server, sandbox_id):
    session = f"test-shell-{os.getpid()}"
    env = server.client_env
    exports = " ".join(f"{k}={v}" for k, v in env.items() if k.startswith("SANDBOXD_"))
    import sys

    cmd = f"env {exports} {sys.executable} -m sandboxd.cli.main sandbox shell {sandbox_id}; echo SHELL-EXIT=$?; sleep 30"
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "120", "-y", "40", cmd], check=True)

    def screen() -> str:
        return subprocess.run(["tmux", "capture-pane", "-p", "-t", session], capture_output=True, text=True).stdout

    def wait_for(text: str, timeout: float = 45) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            s = screen()
            if text in s:
                return s
            time.sleep(0.2)
        raise AssertionError(f"{text!r} never appeared; screen:\n{screen()}")

    try:
        # Type only once the remote shell drew its prompt (under load the connect can take a while).
        deadline = time.monotonic() + 60
        while not screen().strip() and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(0.5)
        subprocess.run(["tmux", "send-keys", "-t", session, "echo TEST-$((6*7))", "Enter"], check=True)
        wait_for("TEST-42")
        # The shell runs as the unprivileged user where the sandbox has one (the fake backend's host has none).
        subprocess.run(["tmux", "send-keys", "-t", session, "echo AS-$(id -un)", "Enter"], check=True)
        wait_for("AS-root" if server.backend == "fake" else "AS-user")
        subprocess.run(["tmux", "send-keys", "-t", session, "stty size", "Enter"], check=True)
        wait_for("40 120")  # the sandbox's terminal got our window size
        subprocess.run(["tmux", "send-keys", "-t", session, "exit 5", "Enter"], check=True)
        wait_for("SHELL-EXIT=5")
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)


def test_template_build_drives_the_build_api(cli, server, tmp_path):
    """A build whose RUN step fails: the CLI must upload, follow the build to its end and report the
    failure in one line. The successful build: tests/compat/hopx/test_hopx_template.py."""
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "main.py").write_text("print('hello from the template')\n")
    (tmp_path / "Dockerfile").write_text("FROM base\nCOPY app/ /app/\nENV GREETING=hi\n"
                                         "RUN python3 /app/main.py && exit 3\n")
    r = cli("template", "build", str(tmp_path), "--name", "test-cli-tpl", timeout=300)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert any("building test-cli-tpl from base" in ln for ln in lines), r.stderr  # the streamed build log
    assert lines[-1].startswith("error:") and "(code=build_failed)" in lines[-1], r.stderr
    # The fake backend runs no RUN step at all; crun runs this one, which fails.
    assert "Dockerfile line 4 (RUN)" in lines[-1] and "exit code 3" in lines[-1] or server.backend == "fake"
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "Dockerfile").write_text("FROM base\nVOLUME /data\n")
    assert "VOLUME" in cli("template", "build", str(bad)).stderr  # refused, naming the instruction
