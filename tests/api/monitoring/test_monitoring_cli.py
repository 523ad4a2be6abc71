"""The monitoring CLI against the real control plane (fake backend): webhooks, events, metrics, --follow."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
import typer
from typer.testing import CliRunner

from monitoring_server import API_KEY
from sandboxd.cli import monitoring, webhooks
from sandboxd.monitor.series import Sample
from test_monitoring_events import add_sandbox


@pytest.fixture
def cli(server, monkeypatch):
    monkeypatch.setenv("SANDBOXD_URL", server.url)
    monkeypatch.setenv("SANDBOXD_API_KEY", API_KEY)
    app = typer.Typer()
    sandbox_app = typer.Typer()
    monitoring.register(sandbox_app)
    app.add_typer(sandbox_app, name="sandbox")
    app.add_typer(webhooks.app, name="webhooks")
    runner = CliRunner()

    def run(*args: str) -> str:
        r = runner.invoke(app, list(args))
        assert r.exit_code == 0, (args, r.output, r.exception)
        return r.output

    return run


def test_webhooks_commands(cli, server):
    out = cli("webhooks", "add", "clihook", "http://127.0.0.1:9/x", "-e", "created", "-e", "killed")
    wid = out.strip().splitlines()[0]
    assert server.client.get(f"/events/webhooks/{wid}").json()["events"] == ["sandbox.lifecycle.created", "sandbox.lifecycle.killed"]
    assert "clihook" in cli("webhooks", "list")
    assert "EVENT" in cli("webhooks", "deliveries", wid)
    cli("webhooks", "rm", wid)
    assert server.client.get(f"/events/webhooks/{wid}").status_code == 404


def test_metrics_lines_match_the_e2b_cli(cli, server):
    add_sandbox(server, "sbclimetrics")
    server.monitor.series.write([Sample("sbclimetrics", 1753452355.0, 2.0, 8.27, 31 << 20, 484 << 20, 0, 1445 << 20, 2453 << 20)])
    out = cli("sandbox", "metrics", "sbclimetrics")
    assert "[2025-07-25 14:05:55Z]  CPU:  8.27% /  2 Cores | Memory:    31 / 484   MiB | Disk:  1445 / 2453  MiB" in out


def test_events_command(cli, server):
    from sandboxd.core import events as ev

    add_sandbox(server, "sbclievents")
    server.services.events.record(ev.Event(ev.KILLED, "sbclievents", {"kill_reason": "timeout"}))
    out = cli("sandbox", "events", "sbclievents")
    assert "killed" in out and "reason=timeout" in out


def test_follow_streams_until_the_sandbox_ends(server):
    sid = server.client.post("/v1/sandboxes", json={"template_name": "base"}).json()["id"]
    env = {**os.environ, "SANDBOXD_URL": server.url, "SANDBOXD_API_KEY": API_KEY}
    code = ("import typer; from sandboxd.cli import monitoring, sandbox; app = typer.Typer(); "
            "monitoring.register(sandbox.app); app.add_typer(sandbox.app, name='sandbox'); app()")
    proc = subprocess.Popen([sys.executable, "-c", code, "sandbox", "metrics", sid, "--follow"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines = []
        end = time.time() + 30
        # 8 lines at a 0.25 s interval: more than the history at start-up, so some came through --follow.
        while sum(1 for x in lines if x.startswith("[")) < 8:
            assert time.time() < end and proc.poll() is None, (lines, proc.stderr.read() if proc.poll() is not None else "")
            lines.append(proc.stdout.readline().rstrip("\n"))
        assert all(" Cores | Memory: " in x for x in lines if x.startswith("["))
        server.client.delete(f"/v1/sandboxes/{sid}")
        rest, errs = proc.communicate(timeout=30)
        assert proc.returncode == 0 and f"sandbox {sid} ended" in rest, (rest, errs)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
