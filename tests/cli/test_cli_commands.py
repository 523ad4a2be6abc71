"""The CLI as a newcomer meets it: tables at 80 columns, closed pipes, --version, completion, help without
`<bool>`, and the commands for pools, webhooks, template info/logs, stop/start, followed events and metrics."""
from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone

import pytest

from support.receiver import Receiver
from test_cli import one_error_line

SERVER_ENV = {"SANDBOXD_WEBHOOK_ALLOW_PRIVATE": "true"}
LONG_NAME = "a-webhook-name-longer-than-a-narrow-column-would-hold"


class Lines:
    """A running `sandboxd ...` whose stdout lines are read on a thread, so a test can wait for one."""

    def __init__(self, server, *args: str):
        self.proc = subprocess.Popen([sys.executable, "-m", "sandboxd.cli.main", *args], env=server.client_env,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.seen: list[str] = []
        self.q: queue.Queue[str] = queue.Queue()
        threading.Thread(target=lambda: [self.q.put(ln) for ln in self.proc.stdout], daemon=True).start()

    def wait_for(self, text: str, timeout: float = 60) -> list[str]:
        deadline = time.monotonic() + timeout
        while not any(text in ln for ln in self.seen):
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{text!r} never came; got {self.seen}")
            try:
                self.seen.append(self.q.get(timeout=left))
            except queue.Empty:
                pass
        return self.seen

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)


@pytest.fixture(scope="module")
def receiver():
    r = Receiver()
    yield r
    r.close()


@pytest.fixture(scope="module")
def webhook(server, receiver):
    with server.client() as c:
        r = c.post("/events/webhooks", json={"name": LONG_NAME, "url": receiver.url + "/with/a/long/path/for/tables",
                                             "events": ["sandbox.lifecycle.created"], "signatureSecret": "s" * 32,
                                             "enabled": True})
        assert r.status_code == 201, r.text
        return r.json()


def table_lines(out: str) -> list[str]:
    return [ln for ln in out.splitlines() if ln.startswith("│")]


def test_tables_never_break_ids_or_urls_at_80_columns(cli, webhook, receiver):
    r = cli("template", "list", COLUMNS="80")
    assert r.returncode == 0, r.stderr
    rows = table_lines(r.stdout)
    assert any("│ code-interpreter " in ln and "│ tpl_code_interpreter " in ln for ln in rows), r.stdout
    assert all(len(ln) <= 80 for ln in r.stdout.splitlines())
    assert "…" in r.stdout  # the description gave way

    r = cli("webhooks", "list", COLUMNS="80")
    [row] = [ln for ln in table_lines(r.stdout) if webhook["id"] in ln]
    assert f"│ {webhook['url']} " in row and f"│ {LONG_NAME} " in row and f"│ {webhook['id']} " in row
    wide = cli("webhooks", "list", "--wide", COLUMNS="80")
    [row] = [ln for ln in table_lines(wide.stdout) if webhook["id"] in ln]
    assert "…" not in row and "│ created " in row

    sid = cli("sandbox", "create", "-t", "base").stdout.strip()
    try:
        deadline = time.monotonic() + 60
        while not (rows := cli("webhooks", "deliveries", webhook["id"], "--json").stdout.strip("[]\n ")):
            assert time.monotonic() < deadline, "no delivery was logged"
            time.sleep(0.5)
        out = cli("webhooks", "deliveries", webhook["id"], COLUMNS="80").stdout
        assert any(f"│ {sid} " in ln for ln in table_lines(out)), out
        event_id = json.loads(cli("webhooks", "deliveries", webhook["id"], "--json").stdout)[0]["eventId"]
        assert f"│ {event_id} " in out
    finally:
        cli("sandbox", "kill", sid)


@pytest.mark.parametrize("args", [["template", "list"], ["template", "list", "--json"], ["--version"],
                                  ["sandbox", "metrics", "SID"], ["sandbox", "exec", "SID", "--", "seq", "100000"],
                                  ["sandbox", "events", "--follow"]])
def test_a_closed_pipe_ends_quietly_with_0(server, sandbox_id, args):
    """`sandboxd ... | head -0`: the reader is gone before the first write."""
    args = [sandbox_id if a == "SID" else a for a in args]
    p = subprocess.Popen([sys.executable, "-m", "sandboxd.cli.main", *args], env=server.client_env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.stdout.close()
    stderr = p.stderr.read().decode()
    assert p.wait(120) == 0 and stderr == "", stderr


def test_version_completion_and_flags_without_types(cli):
    from sandboxd import __version__

    assert cli("--version").stdout == f"sandboxd {__version__}\n"
    # Typer finds the shell from the parent processes; its switch for tests makes the shell an argument.
    script = cli("--show-completion", "bash", _TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION="1")
    assert script.returncode == 0 and "_SANDBOXD_COMPLETE=complete_bash" in script.stdout, script.stdout
    assert "--update " in cli("template", "build", "--help", COLUMNS="160").stdout


def command_paths(group, path=()):
    yield list(path)
    for name, sub in getattr(group, "commands", {}).items():
        yield from command_paths(sub, (*path, name))


def test_no_command_shows_a_type_beside_a_flag():
    import typer
    from typer.testing import CliRunner

    from sandboxd.cli.main import app

    paths = list(command_paths(typer.main.get_command(app)))
    assert ["sandbox", "exec"] in paths and ["pools", "set"] in paths and ["webhooks", "disable"] in paths
    for path in paths:
        out = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "200"}).output
        assert "--help" in out and "<bool>" not in out, (path, out)


def test_pools_set_list_delete(cli):
    r = cli("pools", "set", "base", "1")
    assert r.returncode == 0 and r.stdout.startswith("base target 1"), r.stderr
    [row] = [p for p in json.loads(cli("pools", "list", "--json").stdout) if p["template_name"] == "base"]
    assert row["target"] == 1
    assert any(ln.startswith("│ base ") for ln in table_lines(cli("pools", "list").stdout))
    assert cli("pools", "delete", "base").stdout == "base pool deleted\n"
    [row] = [p for p in json.loads(cli("pools", "list", "--json").stdout) if p["template_name"] == "base"]
    assert row["target"] == 0
    assert "not found" in one_error_line(cli("pools", "set", "no-such-template", "1"))


def test_webhooks_update_enable_disable(cli, webhook):
    wid = webhook["id"]
    assert cli("webhooks", "disable", wid).stdout.split()[:2] == [wid, "disabled"]
    assert [w["enabled"] for w in json.loads(cli("webhooks", "list", "--json").stdout) if w["id"] == wid] == [False]
    assert cli("webhooks", "enable", wid).stdout.split()[:2] == [wid, "enabled"]
    out = json.loads(cli("webhooks", "update", wid, "--event", "killed", "--event", "paused", "--json").stdout)
    assert sorted(out["events"]) == ["sandbox.lifecycle.killed", "sandbox.lifecycle.paused"]
    assert out["name"] == LONG_NAME and out["enabled"] is True
    assert "nothing to change" in one_error_line(cli("webhooks", "update", wid))
    one_error_line(cli("webhooks", "enable", "wh_missing"))


def test_template_info_and_logs(cli, server):
    r = cli("template", "info", "code-interpreter", COLUMNS="80")
    assert r.returncode == 0 and any("│ tpl_code_interpreter " in ln for ln in table_lines(r.stdout)), r.stdout
    assert json.loads(cli("template", "info", "base", "--json").stdout)["name"] == "base"
    assert "not found" in one_error_line(cli("template", "info", "no-such-template"))
    # A build that fails still has a log (on the fake backend every RUN step fails; on crun this one does).
    with server.client() as c:
        r = c.post("/v1/templates/build", json={"name": "cli-logs", "from_image": "base",
                                                "steps": [{"type": "RUN", "args": ["echo step-ran; exit 3"]}]})
        assert r.status_code == 202, r.text
        while c.get(f"/v1/templates/build/{r.json()['build_id']}/status").json()["status"] == "building":
            time.sleep(0.2)
    out = cli("template", "logs", "cli-logs", "--follow").stdout
    assert "building cli-logs from base" in out and "build failed" in out, out
    assert "step-ran" in out or server.backend == "fake", out


def test_stop_and_start(cli, sandbox_id):
    assert cli("sandbox", "stop", sandbox_id).stdout.split() == [sandbox_id, "stopped"]
    assert cli("sandbox", "start", sandbox_id).stdout.split() == [sandbox_id, "running"]
    assert cli("sandbox", "exec", sandbox_id, "--", "echo", "back").stdout == "back\n"


def test_events_follow_prints_history_then_new_events_once(server, cli, sandbox_id):
    follow = Lines(server, "sandbox", "events", sandbox_id, "--follow", "--limit", "3")
    try:
        follow.wait_for(sandbox_id)  # the history is out: the stream is live
        assert cli("sandbox", "pause", sandbox_id).returncode == 0
        assert cli("sandbox", "resume", sandbox_id).returncode == 0
        lines = follow.wait_for(" resumed ")
    finally:
        follow.stop()
    last = [ln for ln in lines if " paused " in ln or " resumed " in ln][-2:]
    assert [ln.split()[2] for ln in last] == ["paused", "resumed"] and all(sandbox_id in ln for ln in last)
    assert len(lines) == len(set(lines)), lines


def test_metrics_since_limit_and_follow_without_duplicates(server, cli, sandbox_id):
    deadline = time.monotonic() + 60
    while len(json.loads(cli("sandbox", "metrics", sandbox_id, "--json").stdout)) < 3:
        assert time.monotonic() < deadline, "no metrics were sampled"
        time.sleep(0.5)
    two = cli("sandbox", "metrics", sandbox_id, "--limit", "2").stdout.splitlines()
    assert two[0] == f"Metrics for sandbox {sandbox_id}" and len([ln for ln in two if ln.startswith("[")]) == 2
    tomorrow = (datetime.now(timezone.utc) + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%S")
    assert json.loads(cli("sandbox", "metrics", sandbox_id, "--since", tomorrow, "--json").stdout) == []
    assert len(json.loads(cli("sandbox", "metrics", sandbox_id, "--since", "1d", "--json").stdout)) >= 3
    assert "neither an age" in cli("sandbox", "metrics", sandbox_id, "--since", "soon").stderr
    follow = Lines(server, "sandbox", "metrics", sandbox_id, "--follow", "--limit", "1")
    try:
        follow.wait_for("[")
        history = [ln for ln in follow.seen if ln.startswith("[")][0]
        # Two samples past the last one of the history: the hand-off has happened.
        stamp = history[1:21]
        while len([ln for ln in follow.seen if ln.startswith("[") and ln[1:21] > stamp]) < 2:
            follow.seen.append(follow.q.get(timeout=60))
    finally:
        follow.stop()
    stamps = [ln[1:21] for ln in follow.seen if ln.startswith("[")]
    assert len(stamps) == len(set(stamps)), follow.seen
