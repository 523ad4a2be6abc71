"""uidslots: one host uid range per sandbox, claimed host-wide, kept by its owner, stale claims taken over."""
from __future__ import annotations

import os
from types import SimpleNamespace

import pytest

from sandboxd.errors import CapacityExceeded, RuntimeFailure
from sandboxd.runtime import uidslots


@pytest.fixture
def slots(tmp_path, monkeypatch):
    monkeypatch.setattr(uidslots, "SLOTS_DIR", tmp_path / "slots")
    monkeypatch.setattr(uidslots, "_held", {})
    return SimpleNamespace(uid_base=100000, uid_count=65536, uid_ranges=3)


def test_ranges_are_disjoint_and_never_the_stores(slots):
    assert uidslots.base(slots, 1) == 165536 and uidslots.base(slots, 2) == 231072
    assert uidslots.base(slots, 1) - slots.uid_base == slots.uid_count


def test_each_sandbox_gets_its_own_slot_until_none_is_left(slots, tmp_path):
    dirs = [tmp_path / f"s{i}" for i in range(4)]
    for d in dirs:
        d.mkdir()
    got = [uidslots.claim(slots, d) for d in dirs[:3]]
    assert sorted(got) == [1, 2, 3]
    assert uidslots.claim(slots, dirs[0]) == got[0], "a sandbox asking again keeps its own"
    with pytest.raises(CapacityExceeded):
        uidslots.claim(slots, dirs[3])
    uidslots.release(dirs[1], got[1])
    assert uidslots.claim(slots, dirs[3]) == got[1]


def test_a_recorded_slot_is_preferred_and_never_taken_from_a_live_owner(slots, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    assert uidslots.claim(slots, a, prefer=2) == 2
    assert uidslots.claim(slots, b, prefer=2) != 2
    uidslots.release(b, 2)  # not b's: a keeps it
    assert os.readlink(uidslots.SLOTS_DIR / "2") == str(a)


def test_a_claim_whose_sandbox_dir_is_gone_is_taken_over(slots, tmp_path):
    gone, new = tmp_path / "gone", tmp_path / "new"
    new.mkdir()
    uidslots.SLOTS_DIR.mkdir()
    for slot in (1, 2, 3):
        os.symlink(str(gone), uidslots.SLOTS_DIR / str(slot))
    assert uidslots.claim(slots, new) == 1
    assert os.readlink(uidslots.SLOTS_DIR / "1") == str(new)


def test_settings_past_the_uid_space_are_refused(slots, tmp_path):
    slots.uid_ranges = 70000
    with pytest.raises(RuntimeFailure):
        uidslots.claim(slots, tmp_path)


def test_a_sandbox_of_any_data_dir_keeps_its_layers_from_gc(slots, tmp_path):
    """Overlays are built from layer fds, so mountinfo names no layer: the claims lead gc to every record."""
    import json

    from sandboxd.config import Settings
    from sandboxd.templates.store import TemplateStore

    store = TemplateStore(Settings(data_dir=tmp_path / "here", templates_path=tmp_path / "templates"))
    elsewhere = tmp_path / "other-data" / "sandboxes" / "sb1"
    elsewhere.mkdir(parents=True)
    record = {"spec": {"image": {"layers": [str(store.layer_path("e" * 64))]}}}
    (elsewhere / "state.json").write_text(json.dumps(record))
    assert store.layers_in_use(tmp_path / "here") == set()
    uidslots.claim(slots, elsewhere)
    assert store.layers_in_use(tmp_path / "here") == {"e" * 64}


def test_host_subordinate_ids_in_a_sandbox_range_are_named(slots, tmp_path, monkeypatch):
    subuid, subgid = tmp_path / "subuid", tmp_path / "subgid"
    subuid.write_text("alice:165536:65536\nbob:900000000:65536\n")
    subgid.write_text("alice:10000:50000\n")  # below uid_base: harmless
    monkeypatch.setattr(uidslots, "SUBID_FILES", (subuid, subgid))
    assert uidslots.subid_overlaps(slots) == [f"{subuid}: alice:165536:65536"]
