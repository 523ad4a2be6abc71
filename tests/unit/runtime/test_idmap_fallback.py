"""The path-based overlay fallback: the switch that forces it, and options that would not fit a page."""
from __future__ import annotations

import errno

import pytest

from sandboxd.runtime import idmap


@pytest.fixture
def fresh_probe(monkeypatch):
    monkeypatch.setattr(idmap, "_by_fd", None)
    yield
    idmap._by_fd = None


@pytest.mark.parametrize("value", ["false", "0", "no", "OFF"])
def test_the_switch_forces_layers_by_path(fresh_probe, monkeypatch, value):
    monkeypatch.setenv("SANDBOXD_OVERLAY_BY_FD", value)
    assert idmap.overlay_by_fd() is False


def test_options_longer_than_a_page_are_refused_before_any_mount(tmp_path):
    lowers = [f"/run/sandboxd/x/l/{'a' * 40}/{i}" for i in range(200)]
    with pytest.raises(OSError) as exc:
        idmap.overlay_paths(lowers, "/u", "/w", str(tmp_path), 0)
    assert exc.value.errno == errno.E2BIG
