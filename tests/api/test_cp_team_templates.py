"""Templates, builds and snapshots belong to a team: another team's private one answers 404 with the body of a
missing one in both dialects, a published one can be started from but not changed, and deleting or publishing
takes a team admin (docs/teams.md)."""
from __future__ import annotations

import uuid

import httpx
import pytest

from support.bodies import without_ids


@pytest.fixture(scope="module")
def teams(cp):
    """Teams A and B; A has a member and an admin key, B a member key."""
    out = {}
    with cp.client() as op:
        for name in ("tpl-a", "tpl-b"):
            r = op.post("/v1/teams", json={"name": name})
            assert r.status_code == 201, r.text
        for label, team, role in (("a", "tpl-a", "member"), ("a-admin", "tpl-a", "admin"), ("b", "tpl-b", "member")):
            r = op.post("/v1/api-keys", json={"name": f"k-{label}", "team": team, "role": role})
            assert r.status_code == 201, r.text
            out[label] = cp.client(r.json()["key"])
    out["op"] = cp.client()
    yield out
    for c in out.values():
        c.close()


def _code(r) -> str:
    """The machine code in either dialect's error body (E2B's `code` is the HTTP status)."""
    body = r.json()
    return body.get("error_code") or body["code"]


def _announce(client, name: str) -> dict:
    r = client.post("/v3/templates", json={"name": name, "cpuCount": 1, "memoryMB": 512})
    assert r.status_code == 202, r.text
    return r.json()


def _same_as_missing(r, missing, ref: str, missing_ref: str) -> None:
    assert r.status_code == missing.status_code == 404, (r.text, missing.text)
    assert without_ids(r, ref) == without_ids(missing, missing_ref)


def test_another_teams_template_and_build_are_404_like_missing_ones(teams):
    a, b = teams["a"], teams["b"]
    name = f"a-private-{uuid.uuid4().hex[:8]}"
    made = _announce(a, name)
    tid, build = made["templateID"], made["buildID"]
    missing = f"nothing-{uuid.uuid4().hex[:8]}"
    for ref in (name, tid):
        for method, path in (("GET", "/v1/templates/{}"), ("DELETE", "/v1/templates/{}"),
                             ("GET", "/templates/aliases/{}"), ("GET", "/templates/{}/tags"),
                             ("DELETE", "/templates/{}")):
            _same_as_missing(b.request(method, path.format(ref)), b.request(method, path.format(missing)), ref, missing)
    r = b.get(f"/templates/{tid}/builds/{build}/status")
    assert r.status_code == 404
    assert b.get(f"/v1/templates/build/{build}/status").status_code == 404
    assert b.get(f"/v1/templates/build/{tid}/logs").status_code == 404
    assert b.post(f"/v2/templates/{tid}/builds/{build}", json={"fromImage": "base", "steps": []}).status_code == 404
    assert b.get(f"/templates/{tid}/files/{'ab' * 32}").status_code == 404
    assert b.patch(f"/v2/templates/{tid}", json={"public": True}).status_code == 404
    # Not listed, not startable, its name not taken over.
    assert name not in [t["name"] for t in b.get("/v1/templates").json()["data"]]
    assert name not in [n for t in b.get("/templates").json() for n in t["names"]]
    assert b.post("/v1/sandboxes", json={"template_name": name}).status_code == 404
    assert b.post("/v2/sandboxes", json={"templateID": name, "timeout": 30}).status_code == 404
    r = b.post("/v3/templates", json={"name": name, "cpuCount": 1, "memoryMB": 512})
    assert r.status_code == 409 and _code(r) == "template_name_taken", r.text
    # Its own team and the operator see it.
    assert a.get(f"/v1/templates/{name}").json()["id"] == tid
    assert a.get(f"/v1/templates/build/{build}/status").status_code == 200
    assert teams["op"].get(f"/v1/templates/{tid}").status_code == 200


def test_a_published_template_is_used_not_changed_by_other_teams(teams):
    a, a_admin, b = teams["a"], teams["a-admin"], teams["b"]
    name = f"a-shared-{uuid.uuid4().hex[:8]}"
    tid = _announce(a, name)["templateID"]
    r = a.patch(f"/v1/templates/{name}", json={"public": True})
    assert r.status_code == 403 and r.json()["code"] == "admin_required"  # a member does not publish
    r = a_admin.patch(f"/v1/templates/{name}", json={"public": True})
    assert r.status_code == 200 and r.json()["is_public"] is True, r.text
    assert b.get(f"/v1/templates/{tid}").status_code == 200
    assert name in [t["name"] for t in b.get("/v1/templates").json()["data"]]
    assert b.get(f"/templates/aliases/{name}").json() == {"templateID": tid, "public": True}
    for method, path, body in (("DELETE", f"/v1/templates/{name}", None), ("DELETE", f"/templates/{tid}", None),
                               ("PATCH", f"/v1/templates/{name}", {"public": False}),
                               ("POST", "/v3/templates", {"name": name, "cpuCount": 1, "memoryMB": 512})):
        r = b.request(method, path, json=body)
        assert r.status_code in (403, 409), r.text
        assert _code(r) in ("template_not_owned", "template_name_taken")
    assert a.delete(f"/v1/templates/{name}").json()["code"] == "admin_required"
    assert a_admin.patch(f"/v2/templates/{tid}", json={"public": False}).json() == {"names": [name]}
    assert b.get(f"/v1/templates/{tid}").status_code == 404  # private again
    assert a_admin.delete(f"/v1/templates/{name}").status_code == 200


def test_built_ins_are_every_teams_and_nobodys_to_change(teams):
    b = teams["b"]
    assert b.get("/v1/templates/base").status_code == 200
    for method, path, body in (("DELETE", "/v1/templates/base", None), ("PATCH", "/v1/templates/base", {"public": False}),
                               ("POST", "/templates/tags", {"target": "base", "tags": ["mine"]})):
        r = b.request(method, path, json=body)
        assert r.status_code == 400 and _code(r) == "template_is_builtin", r.text


def test_snapshots_are_their_teams_and_start_other_teams_sandboxes_once_published(teams):
    a, a_admin, b = teams["a"], teams["a-admin"], teams["b"]
    r = a.post("/v2/sandboxes", json={"templateID": "base", "timeout": 120})
    assert r.status_code == 201, r.text
    sid = r.json()["sandboxID"]
    made = []
    try:
        r = a.post(f"/sandboxes/{sid}/snapshots", json={"name": f"snap-{uuid.uuid4().hex[:8]}"})
        assert r.status_code == 201, r.text
        snap = r.json()["snapshotID"]
        assert a.get(f"/v1/templates/{snap}").json()["category"] == "snapshot"
        assert b.post("/v2/sandboxes", json={"templateID": snap, "timeout": 30}).status_code == 404
        assert snap not in [s["snapshotID"] for s in b.get("/snapshots").json()]
        assert a_admin.patch(f"/templates/{snap}", json={"public": True}).status_code == 200
        r = b.post("/v2/sandboxes", json={"templateID": snap, "timeout": 30})
        assert r.status_code == 201, r.text
        made.append((b, r.json()["sandboxID"]))
        assert snap not in [s["snapshotID"] for s in b.get("/snapshots").json()]  # still A's snapshot
        assert b.delete(f"/templates/{snap}").status_code == 403
    finally:
        for client, other in made:
            client.delete(f"/sandboxes/{other}")
        a.delete(f"/sandboxes/{sid}")
    r = a.delete(f"/templates/{snap}")  # a member deletes its team's snapshot
    assert r.status_code == 204, r.text


def test_uploaded_build_files_are_the_uploading_teams(teams):
    """Upload links are by the hash the client sends, which the server cannot check: another team naming the
    same hash has nothing there, and its build cannot use the files."""
    a, b = teams["a"], teams["b"]
    files_hash = f"teamfiles{uuid.uuid4().hex}"
    link = a.post("/v1/templates/files/upload-link", json={"files_hash": files_hash, "content_length": 3}).json()
    assert httpx.put(link["upload_url"], content=b"abc").status_code == 200
    ask = {"files_hash": files_hash, "content_length": 3}
    assert a.post("/v1/templates/files/upload-link", json=ask).json()["present"] is True
    assert b.post("/v1/templates/files/upload-link", json=ask).json()["present"] is False
    tid = _announce(b, f"b-copy-{uuid.uuid4().hex[:8]}")["templateID"]
    assert b.get(f"/templates/{tid}/files/{files_hash}").json()["present"] is False
    build = {"name": f"b-build-{uuid.uuid4().hex[:8]}", "from_image": "base",
             "steps": [{"type": "COPY", "args": ["app", "/app"], "filesHash": files_hash}]}
    r = b.post("/v1/templates/build", json=build)
    assert r.status_code == 400 and _code(r) == "files_not_uploaded", r.text


def test_a_team_makes_no_more_templates_than_its_quota(teams):
    op = teams["op"]
    assert op.post("/v1/teams", json={"name": "tpl-c"}).status_code == 201
    assert op.patch("/v1/teams/tpl-c", json={"max_templates": 1}).status_code == 200
    r = op.post("/v1/api-keys", json={"name": "k-c", "team": "tpl-c"})
    with httpx.Client(base_url=str(op.base_url), headers={"X-API-Key": r.json()["key"]}) as c:
        first = f"c-one-{uuid.uuid4().hex[:8]}"
        _announce(c, first)
        r = c.post("/v3/templates", json={"name": f"c-two-{uuid.uuid4().hex[:8]}", "cpuCount": 1, "memoryMB": 512})
        assert r.status_code == 429 and r.headers["should-retry"] == "false" and _code(r) == "quota_exceeded"
        build = {"name": f"c-three-{uuid.uuid4().hex[:8]}", "from_image": "base", "steps": [{"type": "RUN", "args": ["true"]}]}
        r = c.post("/v1/templates/build", json=build)
        assert r.status_code == 403 and r.json()["details"]["quota"] == "max_templates", r.text
        assert "limit" in r.json()["message"]
        _announce(c, first)  # the one it has is still its to rebuild
        assert c.get("/v1/team").json()["usage_now"]["templates"] == 1
