"""Images without a Python for the agent (busybox only; a musl tree): the import gives them the agent runtime,
and their sandboxes run the agent on it, bound read-only, while commands run the image's own binaries."""
import json
import os
import shutil
import subprocess
import uuid

import pytest

from sandboxd.runtime.base import LAYER_INFO, SandboxSpec
from sandboxd.templates.build import Builder
from sandboxd.templates.steps import parse_build_request
from support.images import busybox_layout

pytestmark = [pytest.mark.real, pytest.mark.skipif(not shutil.which("umoci"), reason="umoci not installed")]


async def build(store, tmp_path, name, **kw):
    busybox_layout(tmp_path / "layout", **kw)
    store.settings.import_dir = tmp_path
    logs = []
    image = await store.build(parse_build_request({"name": name, "from_image": "oci:layout:v1", "steps": [
        {"type": "ENV", "args": ["STAGE", "built"]}]}), logs.append)
    return image, logs


async def test_a_busybox_image_gets_the_agent_runtime(scratch_store, tmp_path):
    image, logs = await build(scratch_store, tmp_path, "bb-rt")
    text = "\n".join(logs)
    assert "agent runs on its own runtime" in text and "warning" not in text.lower(), text
    rt = image.agent_runtime
    assert rt is not None and json.loads((rt.parent / LAYER_INFO).read_text())["kind"] == "agent-runtime"
    assert (rt / "lib/ld.so").exists() and (rt / "venv/bin/python").exists() and (rt / "lib/libc.so.6").is_file()
    assert not any(p.is_symlink() and os.readlink(p).startswith("/") for p in rt.rglob("*"))  # nothing into the image
    kit = image.layers[0]
    assert (kit / "opt/sandboxd/rt").is_dir() and not (kit / "opt/sandboxd/venv/lib").exists()
    assert (kit / "usr/bin/tini").is_file()
    # The store keeps it as the template's: a later load and the GC both know the runtime layer.
    again = scratch_store.get("bb-rt")
    assert again.agent_runtime == rt and again.env["STAGE"] == "built"
    assert rt.parent.name not in scratch_store.gc()


async def test_its_sandbox_runs_the_agent_on_the_bound_runtime(scratch_store, tmp_path):
    image, _ = await build(scratch_store, tmp_path, "bb-rt-run")
    backend = Builder(scratch_store).backend
    sid = f"bb-rt-{uuid.uuid4().hex[:8]}"
    try:
        await backend.create(SandboxSpec(id=sid, image=image))  # waits for the agent's health answer

        async def sh(script):
            res = await backend.exec(sid, ["/bin/sh", "-c", script])
            return res.stdout.decode()

        mounts = [line for line in (await sh("cat /proc/self/mountinfo")).splitlines() if " /opt/sandboxd/rt " in line]
        assert len(mounts) == 1, mounts
        fields = mounts[0].split()
        assert fields[3] == "/" and {"ro", "nosuid", "nodev"} <= set(fields[5].split(",")), mounts
        assert str(scratch_store.root) not in mounts[0] and "/var/" not in mounts[0]
        assert "Read-only" in await sh("touch /opt/sandboxd/rt/x 2>&1; rm -rf /opt/sandboxd/rt/lib 2>&1 | head -1")
        # The agent (the container's init's child) runs the runtime's loader; no glibc of the image exists.
        cmd = await sh("for p in /proc/[0-9]*; do tr '\\0' ' ' < $p/cmdline; echo; done | grep sandboxd.agent")
        assert "/opt/sandboxd/rt/lib/ld.so --inhibit-cache --library-path /opt/sandboxd/rt/lib" in cmd, cmd
        assert (await sh("ls /lib /usr/lib 2>&1; echo; id -u")).endswith("\n0\n")
        # Its agent started cold took its socket at its doorbell: its init holds none of the host's, and the
        # sandbox goes to disk and back with its processes (docs/snapshots.md).
        assert backend.memory_snapshots(), "no usable CRIU: `sandboxd setup` provides one"
        await sh("setsid sleep 6543 >/dev/null 2>&1 </dev/null &")
        await backend.checkpoint(sid)
        await backend.resume(sid)
        assert "sleep 6543" in await sh("ps -o args 2>/dev/null || cat /proc/[0-9]*/cmdline | tr '\\0' ' '")
    finally:
        await backend.destroy(sid)


async def test_a_musl_image_keeps_its_libc_for_commands(scratch_store, tmp_path):
    """An alpine-like tree: Python 3.11 where Debian has it, but on musl. The agent runs on its own
    runtime; the image's musl programs run on the image's loader."""
    image, _ = await build(scratch_store, tmp_path, "musl-rt", musl=True)
    assert image.agent_runtime is not None
    backend = Builder(scratch_store).backend
    sid = f"musl-rt-{uuid.uuid4().hex[:8]}"
    try:
        await backend.create(SandboxSpec(id=sid, image=image))
        res = await backend.exec(sid, ["/bin/sh", "-c", "/usr/bin/hello; ls /lib"])
        assert res.stdout.decode().split() == ["hello", "from", "musl", "ld-musl-x86_64.so.1"], res
    finally:
        await backend.destroy(sid)


async def test_an_image_with_debians_python_runs_the_venv_on_it(scratch_store, tmp_path):
    """Debian's python3.11 on glibc where the agent's venv expects it: the kit is the venv, no runtime."""
    content = tmp_path / "content"
    for rel in ("usr/bin/python3.11", "usr/lib/python3.11/os.py", "usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"):
        (content / rel).parent.mkdir(parents=True, exist_ok=True)
        (content / rel).write_text("")
    os.symlink("python3.11", content / "usr/bin/python3")
    (content / "lib64").mkdir()
    os.symlink("/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2", content / "lib64/ld-linux-x86-64.so.2")
    layout = tmp_path / "layout"
    subprocess.run(["umoci", "init", "--layout", str(layout)], check=True)
    subprocess.run(["umoci", "new", "--image", f"{layout}:v1"], check=True)
    subprocess.run(["umoci", "insert", "--image", f"{layout}:v1", str(content), "/"], check=True)
    scratch_store.settings.import_dir = tmp_path
    logs = []
    image = await scratch_store.build(parse_build_request({"name": "deb-py", "from_image": "oci:layout:v1",
                                                           "steps": []}), logs.append)
    assert image.agent_runtime is None and not any("own runtime" in line for line in logs)
    kit = image.layers[0]
    assert (kit / "opt/sandboxd/venv/bin/python").is_symlink() and (kit / "opt/sandboxd/venv/lib").is_dir()
