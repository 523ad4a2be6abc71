"""spec/e2b.yaml matches the E2B routes, and live responses validate against its schemas."""
from __future__ import annotations

from pathlib import Path

import httpx
import jsonschema
import yaml

SPEC = yaml.safe_load((Path(__file__).resolve().parents[3] / "spec" / "e2b.yaml").read_text())


def _schema(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}", "components": SPEC["components"]}


def test_every_e2b_route_is_in_the_spec_and_every_spec_path_is_routed(tmp_path):
    from sandboxd.api.app import create_app
    from sandboxd.config import Settings

    app = create_app(Settings(data_dir=tmp_path, backend="fake"))
    routed = {(m.upper(), p) for p, ops in app.openapi()["paths"].items() for m, op in ops.items()
              if "e2b" in op.get("tags", [])}
    documented = {(m.upper(), p) for p, ops in SPEC["paths"].items() for m in ops if m != "parameters"}
    assert routed == documented


def test_live_responses_match_the_spec(e2b_env):
    api, h = e2b_env["api"], {"X-API-KEY": e2b_env["key"]}
    r = httpx.post(f"{api}/v2/sandboxes", json={"templateID": "base", "timeout": 60, "metadata": {"s": "spec"}},
                   headers=h)
    assert r.status_code == 201
    jsonschema.validate(r.json(), _schema("Sandbox"))
    sid = r.json()["sandboxID"]
    try:
        jsonschema.validate(httpx.get(f"{api}/sandboxes/{sid}", headers=h).json(), _schema("SandboxDetail"))
        listed = httpx.get(f"{api}/v2/sandboxes", params={"metadata": "s=spec"}, headers=h).json()
        assert [x["sandboxID"] for x in listed] == [sid]
        for item in listed:
            jsonschema.validate(item, _schema("ListedSandbox"))
        for t in httpx.get(f"{api}/templates", headers=h).json():
            jsonschema.validate(t, _schema("Template"))
        assert httpx.post(f"{api}/sandboxes/{sid}/refreshes", json={"duration": 30}, headers=h).status_code == 204
        r = httpx.post(f"{api}/sandboxes/{sid}/connect", json={"timeout": 60}, headers=h)
        assert r.status_code == 200
        jsonschema.validate(r.json(), _schema("Sandbox"))
        r = httpx.post(f"{api}/sandboxes/{sid}/resume", json={}, headers=h)
        assert r.status_code == 409
        jsonschema.validate(r.json(), _schema("Error"))
    finally:
        assert httpx.delete(f"{api}/sandboxes/{sid}", headers=h).status_code == 204
    r = httpx.delete(f"{api}/sandboxes/{sid}", headers=h)
    assert r.status_code == 404
    jsonschema.validate(r.json(), _schema("Error"))


def test_volume_responses_match_the_spec(e2b_env):
    api, h = e2b_env["api"], {"X-API-KEY": e2b_env["key"]}
    r = httpx.post(f"{api}/volumes", json={"name": "spec-volume"}, headers=h)
    assert r.status_code == 201
    jsonschema.validate(r.json(), _schema("VolumeAndToken"))
    vid, vh = r.json()["volumeID"], {"Authorization": f"Bearer {r.json()['token']}"}
    try:
        jsonschema.validate(httpx.get(f"{api}/volumes/{vid}", headers=h).json(), _schema("VolumeAndToken"))
        for v in httpx.get(f"{api}/volumes", headers=h).json():
            jsonschema.validate(v, _schema("Volume"))
        r = httpx.put(f"{api}/volumecontent/{vid}/file", params={"path": "/a"}, content=b"x", headers=vh)
        assert r.status_code == 201
        jsonschema.validate(r.json(), _schema("VolumeEntryStat"))
        for entry in httpx.get(f"{api}/volumecontent/{vid}/dir", params={"path": "/"}, headers=vh).json():
            jsonschema.validate(entry, _schema("VolumeEntryStat"))
        r = httpx.get(f"{api}/volumecontent/{vid}/file", params={"path": "/missing"}, headers=vh)
        assert r.status_code == 404
        jsonschema.validate(r.json(), _schema("Error"))
    finally:
        assert httpx.delete(f"{api}/volumes/{vid}", headers=h).status_code == 204
