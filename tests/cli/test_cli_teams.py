"""`sandboxd teams ...`, `keys create --team --role` and `sandbox create --memory-mb` end to end (docs/teams.md)."""
from __future__ import annotations

import json
import secrets


def _ok(r):
    assert r.returncode == 0, r.stderr
    return r


def _error_line(r) -> str:
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode != 0 and len(lines) == 1 and lines[0].startswith("error:"), r.stderr
    return lines[0]


def test_teams_quota_refuses_the_teams_next_create(cli):
    name = "cli-" + secrets.token_hex(4)
    team_id = _ok(cli("teams", "create", name)).stdout.strip()
    assert name in _ok(cli("teams", "list")).stdout
    key = json.loads(_ok(cli("keys", "create", "k", "--team", name, "--role", "admin", "--json")).stdout)
    assert key["team_id"] == team_id and key["role"] == "admin"
    shown = json.loads(_ok(cli("teams", "quota", name, "--max-sandboxes", "1", "--max-memory-mb", "4096",
                               "--json")).stdout)
    assert shown["quotas"]["max_sandboxes"] == 1 and shown["quotas"]["max_memory_mb"] == 4096
    assert "no limit" in _ok(cli("teams", "show", name)).stdout

    made = json.loads(_ok(cli("sandbox", "create", "-t", "base", "--memory-mb", "320", "--json",
                              key=key["key"])).stdout)
    try:
        assert made["resources"]["memory_mb"] == 320
        line = _error_line(cli("sandbox", "create", "-t", "base", key=key["key"]))
        assert "limit of 1 concurrent sandboxes" in line and "quota_exceeded" in line
        own = json.loads(_ok(cli("teams", "show", "--json", key=key["key"])).stdout)
        assert own["name"] == name and own["usage_now"] == {**own["usage_now"], "sandboxes": 1, "memory_mb": 320}
        cleared = json.loads(_ok(cli("teams", "quota", name, "--max-sandboxes", "none", "--json")).stdout)
        assert cleared["quotas"]["max_sandboxes"] is None and cleared["quotas"]["max_memory_mb"] == 4096
    finally:
        _ok(cli("sandbox", "kill", made["id"]))
    assert "non-negative integer" in _error_line(cli("teams", "quota", name, "--max-vcpu", "-2"))
    assert "at least one quota" in _error_line(cli("teams", "quota", name))
    _error_line(cli("teams", "quota", name, "--max-vcpu", "2", key=key["key"]))  # the operator's only
    # Without a team: the team admin's own limit for its team, under the operator's.
    own = json.loads(_ok(cli("teams", "quota", "--max-memory-mb", "1024", "--json", key=key["key"])).stdout)
    assert own["quotas"]["max_memory_mb"] == 1024 and own["operator_quotas"]["max_memory_mb"] == 4096
    assert "over the operator's quota" in _error_line(cli("teams", "quota", "--max-memory-mb", "9999",
                                                          key=key["key"]))
    _ok(cli("keys", "revoke", key["id"]))
    _ok(cli("teams", "delete", name))
    assert "not found" in _error_line(cli("teams", "show", name))
