"""Working inside a sandbox from the CLI: exec's options and timeout, the user commands run as, cp of
directories (ownership, both directions, a progress bar on a terminal) and `run`'s rich outputs."""
from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from test_cli import one_error_line

PIXEL = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="


def expected_user(server) -> str:
    """Real templates have the unprivileged `user`; the fake backend's agents run on this host, which has none."""
    return "root" if server.backend == "fake" else "user"


def test_exec_options_before_or_after_the_id(cli, sandbox_id):
    r = cli("sandbox", "exec", sandbox_id, "--timeout", "2", "--", "sleep", "10")
    assert r.returncode == 124, (r.stdout, r.stderr)
    assert r.stderr.strip().splitlines()[-1] == "error: the command timed out after 2 s and was killed"
    assert cli("sandbox", "exec", sandbox_id, "--cwd", "/tmp", "--", "pwd").stdout == "/tmp\n"
    assert cli("sandbox", "exec", "--cwd", "/tmp", sandbox_id, "--", "pwd").stdout == "/tmp\n"
    r = cli("sandbox", "exec", sandbox_id, "-e", "A=1", "--", "sh", "-c", "echo $A --timeout")
    assert (r.returncode, r.stdout) == (0, "1 --timeout\n"), r.stderr
    assert cli("sandbox", "exec", sandbox_id, "--", "echo", "--timeout", "5").stdout == "--timeout 5\n"
    assert "no command given" in one_error_line(cli("sandbox", "exec", sandbox_id, "--"))


def test_exec_runs_as_the_unprivileged_user_unless_told(cli, server, sandbox_id):
    assert cli("sandbox", "exec", sandbox_id, "--", "id", "-un").stdout == expected_user(server) + "\n"
    assert cli("sandbox", "exec", sandbox_id, "--user", "root", "--", "id", "-un").stdout == "root\n"
    assert "unknown user" in cli("sandbox", "exec", sandbox_id, "-u", "nobody-here", "--", "true").stderr


def test_cp_directories_both_ways_owned_by_the_user(cli, server, sandbox_id, tmp_path):
    src = tmp_path / "project"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_text("alpha\n")
    (src / "sub" / "b.bin").write_bytes(os.urandom(200_000))
    (src / "run.sh").write_text("#!/bin/sh\necho ran\n")
    (src / "run.sh").chmod(0o755)
    r = cli("sandbox", "cp", str(src), f"{sandbox_id}:/workspace/")
    assert r.returncode == 0 and r.stdout == f"{src}/ -> /workspace/project/ (3 files)\n", r.stderr
    owners = cli("sandbox", "exec", sandbox_id, "--user", "root", "--",
                 "stat -c %U /workspace/project /workspace/project/sub/b.bin /workspace/project/a.txt").stdout
    assert set(owners.split()) == {expected_user(server)}, owners
    assert cli("sandbox", "exec", sandbox_id, "--", "/workspace/project/run.sh").stdout == "ran\n"
    # Into a directory that is not there yet: it becomes the copy.
    assert cli("sandbox", "cp", str(src), f"{sandbox_id}:/workspace/copy2").returncode == 0
    assert cli("sandbox", "exec", sandbox_id, "--", "cat", "/workspace/copy2/a.txt").stdout == "alpha\n"

    back = tmp_path / "back"
    back.mkdir()
    r = cli("sandbox", "cp", f"{sandbox_id}:/workspace/project", str(back))
    assert r.returncode == 0, r.stderr
    got = back / "project"
    assert sorted(p.relative_to(got).as_posix() for p in got.rglob("*")) == ["a.txt", "run.sh", "sub", "sub/b.bin"]
    assert (got / "sub" / "b.bin").read_bytes() == (src / "sub" / "b.bin").read_bytes()
    assert os.access(got / "run.sh", os.X_OK)

    single = tmp_path / "one.txt"
    single.write_text("one\n")
    assert cli("sandbox", "cp", str(single), f"{sandbox_id}:/workspace/").stdout.endswith("/workspace/one.txt (4 bytes)\n")
    assert cli("sandbox", "exec", sandbox_id, "--", "stat", "-c", "%U", "/workspace/one.txt").stdout \
        == expected_user(server) + "\n"
    assert "no such file" in one_error_line(cli("sandbox", "cp", str(tmp_path / "nope"), f"{sandbox_id}:/workspace/"))


@pytest.mark.skipif(not shutil.which("script"), reason="script (util-linux) is not installed")
def test_cp_shows_progress_for_big_files_only_on_a_terminal(cli, server, sandbox_id, tmp_path):
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(8 << 20))
    plain = cli("sandbox", "cp", str(big), f"{sandbox_id}:/workspace/big.bin")
    assert plain.returncode == 0 and plain.stderr == "", plain.stderr
    env = server.client_env
    cmd = shlex.join([sys.executable, "-m", "sandboxd.cli.main", "sandbox", "cp", f"{sandbox_id}:/workspace/big.bin",
                      str(tmp_path / "again.bin")])
    r = subprocess.run(["script", "-qfec", cmd, "/dev/null"], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout
    assert "8.4/8.4 MB" in r.stdout, r.stdout  # the bar's last state, drawn on the terminal
    assert (tmp_path / "again.bin").read_bytes() == big.read_bytes()


def test_run_saves_rich_outputs_and_says_where(cli, sandbox_id, tmp_path):
    code = ("import base64\nfrom IPython.display import Image, display\n"
            f"display(Image(data=base64.b64decode({PIXEL!r})))\n6 * 7\n")
    r = cli("sandbox", "run", sandbox_id, "-", "--out-dir", str(tmp_path / "plots"), input=code)
    assert r.returncode == 0 and r.stdout == "42\n", r.stderr
    saved = tmp_path / "plots" / "output-1.png"
    assert r.stderr == f"image/png saved to {saved}\n"
    assert saved.read_bytes().startswith(b"\x89PNG")
    again = cli("sandbox", "run", sandbox_id, "-", "--out-dir", str(tmp_path / "plots"), input=code)
    assert "output-2.png" in again.stderr and saved.exists()  # never overwrites


def test_template_build_conflict_names_the_flag(monkeypatch, tmp_path):
    """The API's 409 advises its body field (update=true); the CLI user needs the flag."""
    from sandboxd.cli.main import app
    from sandboxd.sdk import Client, ConflictError

    def exists(self, *a, **kw):
        raise ConflictError("template mine exists; send update=true to rebuild it", status_code=409)

    monkeypatch.setattr(Client, "build_template", exists)
    (tmp_path / "Dockerfile").write_text("FROM base\n")
    r = CliRunner().invoke(app, ["template", "build", str(tmp_path), "--name", "mine"],
                           env={"SANDBOXD_URL": "http://127.0.0.1:9", "SANDBOXD_API_KEY": "k"})
    assert r.exit_code == 1
    assert "template mine exists; use --update to rebuild it" in r.output and "update=true" not in r.output
