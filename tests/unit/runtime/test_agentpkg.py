"""agentpkg: one copy of the agent package per version; versions no sandbox binds are removed once stale."""
from __future__ import annotations

import json
import os
import time
from types import SimpleNamespace

import pytest

from sandboxd.runtime import agentpkg, uidslots

TARGET = "/opt/sandboxd/pkg/sandboxd"


@pytest.fixture
def root(tmp_path, monkeypatch):
    monkeypatch.setattr(agentpkg, "ROOT", tmp_path / "pkgroot")
    monkeypatch.setattr(agentpkg, "_mount_root", lambda: agentpkg.ROOT.mkdir(exist_ok=True))  # no tmpfs here
    monkeypatch.setattr(uidslots, "SLOTS_DIR", tmp_path / "slots")
    monkeypatch.setattr(uidslots, "_held", {})
    agentpkg.version.cache_clear()
    yield agentpkg.ROOT
    agentpkg.version.cache_clear()


def _pkg(tmp_path, text: str):
    pkg = tmp_path / text / "sandboxd"
    (pkg / "agent").mkdir(parents=True)
    (pkg / "agent" / "__init__.py").write_text(text)
    return pkg


def test_a_version_is_copied_once_and_named_by_its_files(root, tmp_path):
    pkg = _pkg(tmp_path, "one")
    dest = agentpkg.copy_for_sandboxes(pkg, TARGET)
    assert dest == root / agentpkg.version(pkg) / "sandboxd"
    assert (dest / "agent" / "__init__.py").read_text() == "one"
    assert agentpkg.ready(pkg) == dest and agentpkg.copy_for_sandboxes(pkg, TARGET) == dest
    other = _pkg(tmp_path, "two")
    assert agentpkg.version(other) != agentpkg.version(pkg)


def test_stale_versions_go_unless_a_sandbox_binds_them(root, tmp_path):
    old_bound, old_free, fresh = (agentpkg.copy_for_sandboxes(_pkg(tmp_path, n), TARGET) for n in ("a", "b", "c"))
    past = time.time() - agentpkg.STALE_SECONDS - 60
    for d in (old_bound, old_free):
        os.utime(d.parent, (past, past))
    box = tmp_path / "sandboxes" / "sb1"
    box.mkdir(parents=True)
    (box / "config.json").write_text(json.dumps({"mounts": [{"destination": TARGET, "source": str(old_bound)}]}))
    uidslots.claim(SimpleNamespace(uid_base=100000, uid_count=65536, uid_ranges=4), box)
    newest = agentpkg.copy_for_sandboxes(_pkg(tmp_path, "d"), TARGET)  # a copy made: the store is pruned
    assert old_bound.is_dir() and fresh.is_dir() and newest.is_dir()
    assert not old_free.parent.exists()
