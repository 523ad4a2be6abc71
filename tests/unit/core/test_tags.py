"""Tag names: plain or `name:tag` of the same template; a tag names one build and moves when reassigned."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest

from sandboxd.core.store.db import Store, make_engine, upgrade
from sandboxd.core.store.tables import BuildRow
from sandboxd.core.tags import TagService, check_tags
from sandboxd.errors import Invalid, NotFound


def test_check_tags():
    assert check_tags("app", ["v1", "app:prod", "v1"]) == ["v1", "prod"]
    for bad in ([":x"], ["app:"], ["other:x"], ["a b"], [], ["-x"]):
        with pytest.raises(Invalid):
            check_tags("app", bad)


def test_assign_moves_and_remove_refuses_unknown(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    upgrade(engine)
    tags = TagService(Store(engine))
    now = datetime.now(timezone.utc)
    with tags.store.tx() as s:
        for bid in ("b1", "b2"):
            s.add(BuildRow(id=bid, template_id="t", status="active", progress=100, request={}, started_at=now))
    tags.assign("t", "b1", ["v1", "prod"])
    tags.assign("t", "b2", ["prod"])
    assert {t.tag: t.build_id for t in tags.list("t")} == {"v1": "b1", "prod": "b2"}
    assert tags.build_of("t", "v1") == "b1"
    with pytest.raises(NotFound):
        tags.build_of("t", "nope")
    with pytest.raises(NotFound):
        tags.remove("t", ["v1", "nope"])
    assert {t.tag for t in tags.list("t")} == {"v1", "prod"}  # nothing removed when one is unknown
    tags.remove("t", ["v1"])
    assert [t.tag for t in tags.list("t")] == ["prod"]
