"""Commands, /env, health/info/metrics/processes/jupyter and the error contract."""
from __future__ import annotations

import os
import time

import pytest

from .conftest import assert_error


def cmd(client, line, **kw):
    r = client.post("/commands/run", json={"command": "bash", "args": ["-c", line], **kw})
    assert r.status_code == 200 and r.headers["content-type"] == "application/json", r.text
    return r.json()


def test_commands_run_output_exit_code_duration(client):
    r = cmd(client, "echo out; echo err >&2; exit 7")
    assert (r["stdout"], r["stderr"], r["exit_code"], r["success"]) == ("out\n", "err\n", 7, False)
    assert isinstance(r["execution_time"], float) and r["execution_time"] >= 0


def test_commands_workdir_and_env(client, workspace):
    client.put("/env", json={"env_vars": {"FROM_API": "api"}})
    try:
        r = cmd(client, "pwd; echo $FROM_API $REQ", workdir=str(workspace), env={"REQ": "req"})
        assert r["stdout"] == f"{workspace}\napi req\n"
    finally:
        client.delete("/env")


def test_command_string_without_args_runs_in_shell(client):
    r = client.post("/commands/run", json={"command": "echo a && echo b"}).json()
    assert r["stdout"] == "a\nb\n"


def test_commands_timeout_kills_process_group(client, workspace):
    marker = workspace / "cmd-grandchild"
    t0 = time.monotonic()
    r = cmd(client, f"(sleep 2; touch {marker}) & sleep 60", timeout=1)
    assert time.monotonic() - t0 < 5
    assert r["timed_out"] is True and r["exit_code"] == 124
    time.sleep(2.5)
    assert not marker.exists()


def test_commands_background(client, workspace):
    out = workspace / "bg-out"
    r = client.post("/commands/background", json={"command": "bash", "args": ["-c", f"echo hi > {out}"]})
    assert r.status_code == 200 and r.json()["process_id"]
    for _ in range(100):
        if out.exists() and out.read_text() == "hi\n":
            break
        time.sleep(0.05)
    assert out.read_text() == "hi\n"


def test_commands_as_user_when_root(client):
    if os.geteuid() != 0:
        return
    import pwd

    name = pwd.getpwuid(65534).pw_name  # nobody exists on every Debian
    r = cmd(client, "id -u", user=name)
    assert r["stdout"] == "65534\n"
    assert_error(client.post("/commands/run", json={"command": "true", "user": "no-such-user"}), 400,
                 "INVALID_REQUEST")


def test_commands_as_uid_given_as_a_string(client):
    """A uid in a string names that user, as the terminal's `?user=` always carries it."""
    if os.geteuid() != 0:
        pytest.skip("switching users needs root")
    assert cmd(client, "id -u", user="65534")["stdout"] == "65534\n"
    assert cmd(client, "id -u", user=65534)["stdout"] == "65534\n"


def test_env_get_put_patch_delete(client):
    base = client.get("/env").json()["env_vars"]
    assert base["AGENT_TEMPLATE_VAR"] == "from-template"
    assert not any(k.startswith("SANDBOXD_AGENT_") for k in base)
    r = client.put("/env", json={"env_vars": {"A": "1", "B": "2"}}).json()
    assert r["env_vars"]["A"] == "1" and r["env_vars"]["B"] == "2" and r["count"] == len(r["env_vars"])
    r = client.put("/env", json={"env_vars": {"C": "3"}}).json()  # replace: A and B are gone
    assert "A" not in r["env_vars"] and r["env_vars"]["C"] == "3"
    r = client.patch("/env", json={"env_vars": {"D": "4"}, "merge": True}).json()  # merge
    assert r["env_vars"]["C"] == "3" and r["env_vars"]["D"] == "4"
    assert cmd(client, "echo $C$D")["stdout"] == "34\n"  # visible to new commands immediately
    r = client.delete("/env")
    assert r.status_code == 200 and r.json()["success"] is True
    env = client.get("/env").json()["env_vars"]
    assert "C" not in env and "D" not in env and env["AGENT_TEMPLATE_VAR"] == "from-template"
    assert_error(client.put("/env", json={"env_vars": "nope"}), 400, "INVALID_REQUEST")


def test_health_and_info(client):
    r = client.get("/health")
    assert r.status_code == 200 and r.json()["status"] == "healthy"
    assert r.json()["features"]["code_execution"] is True
    info = client.get("/info").json()
    assert info["agent"] == "sandboxd-agent" and "POST /execute" in info["endpoints"]
    assert info["uptime"] >= 0 and info["start_time"].endswith("Z")


def test_metrics_snapshot_superset(client):
    client.get("/health")
    for path in ("/metrics/snapshot", "/metrics"):
        m = client.get(path).json()
        for key in ("timestamp", "uptime_seconds", "total_requests", "total_errors", "error_count",
                    "active_executions", "total_executions", "requests_total", "avg_duration_ms", "system",
                    "process", "cache"):
            assert key in m, key
        assert m["total_requests"] >= 1 and m["requests_total"]["/health"] >= 1
        sysm = m["system"]
        assert sysm["cpu"]["cores"] >= 1 and 0 <= sysm["cpu"]["usage_percent"]
        assert sysm["memory"]["total"] > 0 and 0 < sysm["memory"]["used"] <= sysm["memory"]["total"]
        assert sysm["disk"]["total"] > 0 and sysm["disk"]["free"] > 0
        assert m["process"]["count"] >= 1
    s = client.get("/system").json()
    assert set(s) >= {"cpu", "memory", "disk", "uptime"}


def test_errors_are_counted(client):
    before = client.get("/metrics").json()["total_errors"]
    assert_error(client.get("/does-not-exist"), 404, "NOT_FOUND")
    assert_error(client.delete("/health"), 405, "METHOD_NOT_ALLOWED")
    assert client.get("/metrics").json()["total_errors"] == before + 2


def test_processes_lists_every_process(client):
    r = client.get("/processes").json()
    procs = {p["pid"]: p for p in r["processes"]}
    me = [p for p in procs.values() if "sandboxd.agent" in p["command"]]
    assert me, "the agent itself is listed"
    p = me[0]
    assert p["name"] and p["status"] and isinstance(p["cpu_percent"], float) and p["memory_mb"] > 0


def test_jupyter_sessions_and_warm(client):
    client.post("/execute", json={"code": "1"})
    r = client.post("/jupyter/warm").json()
    assert r["success"] is True
    s = client.get("/jupyter/sessions").json()["sessions"]
    assert len(s) == 1 and s[0]["kernel_id"] and s[0]["execution_state"] in ("idle", "busy")
    assert s[0]["last_activity"].endswith("Z") and s[0]["connections"] == 1


def test_auth_headers_are_accepted_and_ignored(client):
    r = client.get("/health", headers={"X-API-Key": "whatever", "Authorization": "Bearer x"})
    assert r.status_code == 200
