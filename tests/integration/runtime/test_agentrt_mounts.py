"""The agent runtime's host mounts (runtime/agentrt.py): one read-only overlay per layer directory, found
again by the next create, taken down once no sandbox binds it and it is stale or its layer is gone."""
from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from sandboxd.runtime import agentrt, uidslots

pytestmark = pytest.mark.real


@pytest.fixture
def root(tmp_path, monkeypatch):
    monkeypatch.setattr(agentrt, "ROOT", tmp_path / "rt")
    records: list = []
    monkeypatch.setattr(uidslots, "claimed_dirs_records", lambda: list(records))
    yield records
    for line in reversed(open("/proc/self/mounts").read().splitlines()):
        target = line.split()[1]
        if target.startswith(str(tmp_path)):
            subprocess.run(["umount", "-l", target], check=False)


def layer(tmp_path, name: str):
    path = tmp_path / "layers" / name / "rootfs"
    (path / "lib").mkdir(parents=True)
    (path / "lib" / "ld.so").write_text(name)
    return path


def test_one_read_only_mount_per_layer_dir(root, tmp_path):
    a = layer(tmp_path, "a")
    assert agentrt.mounted(a) is None
    dest = agentrt.mount_for_sandboxes(a)
    assert (dest / "lib" / "ld.so").read_text() == "a" and agentrt.mounted(a) == dest
    assert agentrt.mount_for_sandboxes(a) == dest
    with pytest.raises(OSError):
        (dest / "x").write_text("no")
    opts = next(line.split()[3] for line in open("/proc/self/mounts") if line.split()[1] == str(dest))
    assert {"ro", "nosuid", "nodev"} <= set(opts.split(",")), opts
    # A layer made again at the same path is another directory: mounted anew, never the old files.
    shutil.rmtree(a.parent)
    a2 = layer(tmp_path, "a")
    (a2 / "lib" / "ld.so").write_text("a2")
    assert agentrt.mounted(a2) is None and (agentrt.mount_for_sandboxes(a2) / "lib" / "ld.so").read_text() == "a2"
    assert not dest.exists()  # the old one's layer was gone and no sandbox bound it: taken down


def test_a_mount_a_sandbox_binds_stays(root, tmp_path):
    a, b = layer(tmp_path, "a"), layer(tmp_path, "b")
    dest = agentrt.mount_for_sandboxes(a)
    sandbox = tmp_path / "sandboxes" / "s1"
    sandbox.mkdir(parents=True)
    (sandbox / "config.json").write_text(json.dumps({"mounts": [
        {"destination": agentrt.TARGET, "type": "bind", "source": str(dest)}]}))
    root.append(sandbox / "state.json")
    shutil.rmtree(a.parent)
    agentrt.mount_for_sandboxes(b)
    assert os.path.ismount(dest)  # still bound by s1
    root.clear()
    agentrt.mount_for_sandboxes(layer(tmp_path, "c"))
    assert not dest.exists()


def test_a_stale_mount_goes_when_another_is_made(root, tmp_path):
    b = layer(tmp_path, "b")
    dest = agentrt.mount_for_sandboxes(b)
    agentrt.mount_for_sandboxes(layer(tmp_path, "c"))
    assert os.path.ismount(dest)  # its layer is there and it was used just now
    old = os.stat(agentrt.ROOT / f".{dest.name}.used").st_mtime - agentrt.STALE_SECONDS - 1
    os.utime(agentrt.ROOT / f".{dest.name}.used", (old, old))
    agentrt.mount_for_sandboxes(layer(tmp_path, "d"))
    assert not dest.exists() and agentrt.mounted(b) is None
