"""The built-in `desktop` template in the control plane's catalog: listed once the image store has it."""
from __future__ import annotations

import json

import pytest

from sandboxd.config import Settings
from sandboxd.core.catalog import CatalogService
from sandboxd.errors import NotFound
from sandboxd.core.eventlog import EventLog
from sandboxd.core.events import EventBus
from sandboxd.core.services import register_tables
from sandboxd.core.store.db import Store, make_engine, upgrade
from sandboxd.core.template_source import StoreTemplateSource
from sandboxd.runtime.base import TemplateImage
from sandboxd.templates.store import image_to_dict


@pytest.fixture
def catalog(tmp_path):
    settings = Settings(data_dir=tmp_path / "data", templates_path=tmp_path / "templates", backend="crun")
    engine = make_engine(f"sqlite:///{tmp_path}/cp.db")
    register_tables()
    upgrade(engine)
    store = Store(engine)
    cat = CatalogService(store, EventLog(store, EventBus()), StoreTemplateSource(settings))
    yield cat, settings
    engine.dispose()


def _store_image(settings, name: str) -> None:
    # What TemplateStore writes when a build finishes (images/<name>.json).
    images = settings.templates_dir / "images"
    images.mkdir(parents=True, exist_ok=True)
    doc = image_to_dict(TemplateImage(name=name, layers=(), content_hash="d" * 64, env={"DISPLAY": ":1"}))
    (images / f"{name}.json").write_text(json.dumps(doc))


def test_desktop_is_listed_with_hopx_types_once_built(catalog):
    from hopx_ai.models import Template

    cat, settings = catalog
    cat.sync_builtins()
    assert "desktop" not in {t.name for t in cat.list()}
    _store_image(settings, "desktop")
    # Built after the control plane started: found on first use, without a restart.
    t = cat.get("desktop")
    assert (t.category, t.status, t.is_public) == ("desktop", "active", True)
    wire = t.to_wire()
    model = Template(**wire)  # the official client's strict model
    assert model.is_active and model.status == "active" and model.category == "desktop"
    assert isinstance(wire["id"], str) and wire["display_name"] and wire["organization_id"] is None
    assert "desktop" in model.features and model.default_resources.memory_mb >= 2048
    assert [x.name for x in cat.list(category="desktop")] == ["desktop"]
    assert cat.get(t.id).name == "desktop"


def test_unbuilt_desktop_is_not_found(catalog):
    cat, _ = catalog
    cat.sync_builtins()
    with pytest.raises(NotFound):
        cat.get("desktop")
