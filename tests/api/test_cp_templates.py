"""Templates and the build flow's wire shapes (the builder's strict dataclasses), on the fake backend."""
from __future__ import annotations

import asyncio
import io
import tarfile
import time

import httpx
import pytest
from hopx_ai.models import Template
from hopx_ai.template import build_flow
from hopx_ai.template.types import BuildOptions, BuildResponse, BuildStatusResponse, UploadLinkResponse


def test_list_get_and_filters(client):
    data = client.get("/v1/templates").json()["data"]
    parsed = [Template(**t) for t in data]  # every item must pass the SDK's model
    names = {t.name for t in parsed}
    assert {"base", "code-interpreter"} <= names
    base = client.get("/v1/templates/base").json()
    assert Template(**base).is_active and client.get(f"/v1/templates/{base['id']}").json()["name"] == "base"
    assert client.get("/v1/templates", params={"language": "python"}).json()["data"]
    assert client.get("/v1/templates", params={"language": "cobol"}).json()["data"] == []
    assert client.get("/v1/templates", params={"category": "development"}).json()["data"]


def test_delete_rules(client):
    r = client.delete("/v1/templates/base")
    assert r.status_code == 400 and r.json()["code"] == "template_is_builtin"
    assert client.delete("/v1/templates/no-such-template").status_code == 404


def tarball(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_upload_link_is_signed_and_expiring(cp, client):
    body = tarball({"app.py": b"print('hi')\n"})
    h = "testfiles" + str(time.time_ns())
    link = client.post("/v1/templates/files/upload-link", json={"files_hash": h, "content_length": len(body)}).json()
    parsed = UploadLinkResponse(**link)  # strict: no extra keys
    assert parsed.present is False and parsed.upload_url.startswith(cp.base)
    tampered = parsed.upload_url.replace("signature=", "signature=00")
    r = httpx.put(tampered, content=body, headers={"Content-Type": "application/gzip"})
    assert r.status_code == 401 and r.json()["code"] == "invalid_upload_signature"
    expired = parsed.upload_url.replace("expires=", "expires=1")
    assert httpx.put(expired, content=body).status_code == 401
    r = httpx.put(parsed.upload_url, content=body, headers={"Content-Type": "application/gzip"})  # no auth header
    assert r.status_code == 200 and r.json()["size"] == len(body)
    again = UploadLinkResponse(**client.post("/v1/templates/files/upload-link",
                                             json={"files_hash": h, "content_length": len(body)}).json())
    assert again.present is True
    assert client.post("/v1/templates/files/upload-link", json={"files_hash": "../../x", "content_length": 1}
                       ).status_code == 400


def test_build_shapes_logs_and_failure_on_the_fake_backend(cp, client):
    h = "testbuild" + str(time.time_ns())
    body = tarball({"app.py": b"print('hi')\n"})
    link = client.post("/v1/templates/files/upload-link", json={"files_hash": h, "content_length": len(body)}).json()
    httpx.put(link["upload_url"], content=body)
    payload = {"name": f"test-tpl-{time.time_ns() % 10**8}", "from_image": "base",
               "steps": [{"type": "COPY", "args": ["app.py", "/app/"], "filesHash": h},
                         {"type": "ENV", "args": ["A", "1"]}, {"type": "RUN", "args": ["echo hi"]}],
               "startCmd": None, "readyCmd": None, "cpu": 1, "memory": 512, "diskGB": 2, "skipCache": False,
               "update": False}
    r = client.post("/v1/templates/build", json=payload)
    assert r.status_code in (200, 201, 202), r.text
    resp = BuildResponse(**r.json())
    deadline = time.monotonic() + 30
    while True:
        st = BuildStatusResponse(**client.get(f"/v1/templates/build/{resp.build_id}/status").json())
        if st.status in ("active", "success", "failed"):
            break
        assert time.monotonic() < deadline
        time.sleep(0.2)
    # The fake backend runs no rootfs, so the build fails — cleanly, with a message, never a 5xx.
    assert st.status == "failed" and "fake" in st.error_message and isinstance(st.progress, int)
    opts = BuildOptions(name=payload["name"], api_key=cp.key, base_url=cp.base)
    logs = asyncio.run(build_flow.get_logs(resp.template_id, cp.key, 0, base_url=cp.base))
    assert logs.complete and "ERROR" in logs.logs and logs.offset == len(logs.logs.encode())
    tail = asyncio.run(build_flow.get_logs(resp.template_id, cp.key, logs.offset, base_url=cp.base))
    assert tail.logs == "" and tail.offset == logs.offset
    t = Template(**client.get(f"/v1/templates/{resp.template_id}").json())
    assert t.status == "failed" and t.is_active is False
    with pytest.raises(Exception, match="failed"):
        asyncio.run(build_flow.wait_for_template_active(resp.template_id, cp.base, opts, max_wait_seconds=10))
    assert client.delete(f"/v1/templates/{resp.template_id}").status_code == 200
    assert client.get(f"/v1/templates/{resp.template_id}").status_code == 404


def test_an_image_nobody_configured_is_a_404_never_a_stand_in(client):
    payload = {"name": "no-such-base", "from_image": "python:3.12", "steps": [{"type": "RUN", "args": ["true"]}],
               "cpu": 1, "memory": 512, "diskGB": 2}
    r = client.post("/v1/templates/build", json=payload)
    assert r.status_code == 404 and r.json()["code"] == "image_not_found", r.text
    assert "SANDBOXD_IMAGE_ALIASES" in r.json()["message"]
    assert client.get("/v1/templates/no-such-base").status_code == 404  # nothing was made


@pytest.mark.parametrize("change,code", [
    ({"steps": [{"type": "COPY", "args": ["a", "/a"], "filesHash": "neveruploaded1"}]}, "files_not_uploaded"),
    ({"steps": [{"type": "EXPLODE", "args": []}]}, "invalid_step"),
    ({"steps": []}, None),
    ({"name": "Bad Name!"}, "invalid_template_name"),
    ({"name": "base"}, "template_is_builtin"),
    ({"cpu": "two"}, None),
    ({"surprise": 1}, None),
])
def test_bad_builds_are_400_and_create_nothing(client, change, code):
    before = len(client.get("/v1/templates").json()["data"])
    payload = {"name": "test-bad", "from_image": "base", "steps": [{"type": "RUN", "args": ["true"]}], **change}
    r = client.post("/v1/templates/build", json=payload)
    assert r.status_code == 400, r.text
    if code:
        assert r.json()["code"] == code
    assert len(client.get("/v1/templates").json()["data"]) == before


def test_templates_stream_reports_build_changes(cp, client):
    import json

    from test_cp_streams import read_frames

    name = f"test-stream-{time.time_ns() % 10**8}"
    with httpx.Client(base_url=cp.base, timeout=30) as c:
        with c.stream("GET", "/v1/templates/stream", headers={"Authorization": f"Bearer {cp.key}"}) as resp:
            r = client.post("/v1/templates/build", json={"name": name, "from_image": "base",
                                                        "steps": [{"type": "RUN", "args": ["true"]}]})
            assert r.status_code == 202
            frames, _ = read_frames(resp, 2)
    events = [json.loads(f["data"]) for f in frames]
    assert [e["type"] for e in events] == ["template.created", "template.updated"]
    assert events[0]["data"]["status"] == "building" and events[1]["data"]["status"] == "failed"
    assert all(e["data"]["name"] == name for e in events) and int(frames[1]["id"]) > int(frames[0]["id"])
    client.delete(f"/v1/templates/{name}")
