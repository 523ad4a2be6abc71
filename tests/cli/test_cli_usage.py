"""`sandboxd usage` end to end: a team member's own usage as a table and as JSON (the same numbers the API
answers), and refusals as one error line."""
from __future__ import annotations

import json

import pytest

from test_cli import one_error_line


@pytest.fixture(scope="module")
def member(server):
    """A member key of a fresh team, whose sandbox ran and was killed (its numbers no longer move)."""
    with server.client() as op:
        assert op.post("/v1/teams", json={"name": "cli-usage"}).status_code == 201
        r = op.post("/v1/api-keys", json={"name": "cli-usage-member", "team": "cli-usage"})
        assert r.status_code == 201, r.text
        key = r.json()["key"]
    with server.client(key) as c:
        r = c.post("/v1/sandboxes", json={"template_name": "base"})
        assert r.status_code == 201, r.text
        sid = r.json()["id"]
        assert c.post(f"/v1/sandboxes/{sid}/pause").status_code == 200
        assert c.delete(f"/v1/sandboxes/{sid}").status_code == 200
    return key, sid


def test_usage_table_and_json(cli, server, member):
    key, sid = member
    out = json.loads(cli("usage", "--json", key=key).stdout)
    [team] = out["teams"]
    assert team["team_name"] == "cli-usage" and [s["sandbox_id"] for s in team["sandboxes"]] == [sid]
    with server.client() as op:
        api = op.get("/v1/usage", params={"team": "cli-usage"}).json()["teams"][0]
    assert [team[k] for k in ("sandbox_seconds", "vcpu_seconds", "gib_seconds")] == \
        [api[k] for k in ("sandbox_seconds", "vcpu_seconds", "gib_seconds")]
    assert team["sandbox_seconds"] > 0
    r = cli("usage", "--from", "2020-01-01T00:00:00Z", key=key)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("Usage from 2020-01-01 00:00:00 to ")
    assert f"Team cli-usage ({team['team_id']}): {team['sandbox_seconds']:.1f} s, " in r.stdout and sid in r.stdout
    # The operator picks one team; an empty window has no rows.
    assert [t["team_name"] for t in json.loads(cli("usage", "--team", "cli-usage", "--json").stdout)["teams"]] \
        == ["cli-usage"]
    empty = json.loads(cli("usage", "--from", "2020-01-01", "--to", "2020-01-02", "--json").stdout)
    assert empty["teams"] == []


def test_usage_refusals_are_one_line(cli, member):
    key, _ = member
    assert "team default not found" in one_error_line(cli("usage", "--team", "default", key=key))
    assert "ISO 8601" in one_error_line(cli("usage", "--from", "soon", key=key))
    assert "before" in one_error_line(cli("usage", "--from", "2020-01-02", "--to", "2020-01-01", key=key))
