"""envd filesystem.Filesystem RPCs and the /files + /health HTTP endpoints."""
from __future__ import annotations

import asyncio
import gzip

from envd_wire import STREAM, envelope, parse_envelopes

F = "/e2b/49983/filesystem.Filesystem"


async def test_stat_list_mkdir_move_remove(agent):
    client, tmp, _ = agent
    (tmp / "d" / "sub").mkdir(parents=True)
    (tmp / "d" / "a.txt").write_text("hello")
    (tmp / "d" / "sub" / "deep.txt").write_text("x")
    r = await client.post(f"{F}/Stat", json={"path": str(tmp / "d" / "a.txt")})
    e = r.json()["entry"]
    assert (e["name"], e["type"], e["size"], e["permissions"][0]) == ("a.txt", "FILE_TYPE_FILE", "5", "-")
    assert e["modifiedTime"].endswith("Z")
    # A relative path starts at the user's home (HOME here).
    assert (await client.post(f"{F}/Stat", json={"path": "d"})).json()["entry"]["type"] == "FILE_TYPE_DIRECTORY"
    one = (await client.post(f"{F}/ListDir", json={"path": str(tmp / "d")})).json()["entries"]
    assert sorted(x["name"] for x in one) == ["a.txt", "sub"]
    two = (await client.post(f"{F}/ListDir", json={"path": str(tmp / "d"), "depth": 2})).json()["entries"]
    assert "deep.txt" in [x["name"] for x in two]
    r = await client.post(f"{F}/MakeDir", json={"path": str(tmp / "d" / "new" / "nested")})
    assert r.status_code == 200 and (tmp / "d" / "new" / "nested").is_dir()
    r = await client.post(f"{F}/MakeDir", json={"path": str(tmp / "d" / "new")})
    assert r.status_code == 409 and r.json()["code"] == "already_exists"
    r = await client.post(f"{F}/Move", json={"source": str(tmp / "d" / "a.txt"),
                                              "destination": str(tmp / "e" / "b.txt")})
    assert r.json()["entry"]["path"] == str(tmp / "e" / "b.txt") and (tmp / "e" / "b.txt").read_text() == "hello"
    assert (await client.post(f"{F}/Remove", json={"path": str(tmp / "d")})).json() == {}
    assert not (tmp / "d").exists()
    r = await client.post(f"{F}/Stat", json={"path": str(tmp / "d")})
    assert r.status_code == 404 and r.json()["code"] == "not_found"
    r = await client.post(f"{F}/ListDir", json={"path": str(tmp / "e" / "b.txt")})
    assert r.status_code == 400 and r.json()["code"] == "invalid_argument"


async def test_polled_watcher(agent):
    client, tmp, _ = agent
    wid = (await client.post(f"{F}/CreateWatcher", json={"path": str(tmp)})).json()["watcherId"]
    (tmp / "w.txt").write_text("1")
    (tmp / "w.txt").unlink()
    await asyncio.sleep(0.2)
    events = (await client.post(f"{F}/GetWatcherEvents", json={"watcherId": wid})).json()["events"]
    kinds = [(e["name"], e["type"]) for e in events]
    assert ("w.txt", "EVENT_TYPE_CREATE") in kinds and ("w.txt", "EVENT_TYPE_REMOVE") in kinds
    assert (await client.post(f"{F}/GetWatcherEvents", json={"watcherId": wid})).json()["events"] == []
    assert (await client.post(f"{F}/RemoveWatcher", json={"watcherId": wid})).status_code == 200
    r = await client.post(f"{F}/GetWatcherEvents", json={"watcherId": wid})
    assert r.status_code == 404


async def test_streamed_watch_starts_and_reports(agent):
    client, tmp, _ = agent

    async def touch():
        await asyncio.sleep(0.3)
        (tmp / "s.txt").write_text("x")

    task = asyncio.create_task(touch())
    buf = b""
    async with client.stream("POST", f"{F}/WatchDir", content=envelope({"path": str(tmp), "includeEntry": True}),
                             headers={**STREAM, "connect-timeout-ms": "1500"}) as r:
        async for chunk in r.aiter_raw():
            buf += chunk
    await task
    events = parse_envelopes(buf)
    assert events[0] == (0, {"start": {}})
    fs = [m["filesystem"] for f, m in events if f == 0 and "filesystem" in m]
    created = [e for e in fs if e["type"] == "EVENT_TYPE_CREATE"]
    assert created[0]["name"] == "s.txt" and created[0]["entry"]["type"] == "FILE_TYPE_FILE"
    assert events[-1][1]["error"]["code"] == "deadline_exceeded"  # the stream ends at its deadline


async def test_files_upload_download(agent):
    client, tmp, _ = agent
    target = tmp / "up" / "a.bin"
    r = await client.post("/e2b/49983/files", params={"path": str(target)},
                          files={"file": (str(target), b"\x00\x01multipart")})
    assert r.status_code == 200 and r.json() == [{"path": str(target), "name": "a.bin", "type": "file"}]
    assert target.read_bytes() == b"\x00\x01multipart"
    r = await client.post("/e2b/49983/files", params={"path": "rel.txt"}, content=gzip.compress(b"zipped"),
                          headers={"content-type": "application/octet-stream", "content-encoding": "gzip"})
    assert r.status_code == 200 and (tmp / "rel.txt").read_bytes() == b"zipped"
    r = await client.get("/e2b/49983/files", params={"path": str(target)})
    assert r.status_code == 200 and r.content == b"\x00\x01multipart"
    r = await client.get("/e2b/49983/files", params={"path": str(tmp / "missing")})
    assert r.status_code == 404 and r.json() == {"code": 404, "message": f"path '{tmp / 'missing'}' does not exist"}
    r = await client.get("/e2b/49983/files", params={"path": str(tmp)})
    assert r.status_code == 400
    assert (await client.get("/e2b/49983/health")).status_code == 204
    # The HopX agent's own /health is untouched by the E2B routes.
    assert (await client.get("/health")).status_code == 200
