import os
import shutil
import tempfile
from pathlib import Path

import pytest

from sandboxd.config import Settings
from sandboxd.templates.store import TemplateStore

SHARED = Path(os.environ.get("SANDBOXD_TEMPLATES_PATH", "/var/lib/sandboxd/templates"))


@pytest.fixture
def shared_store():
    """The image store the install built (`sandboxd setup`), where the built-ins live."""
    store = TemplateStore(Settings(templates_path=SHARED))
    missing = store.builtin_missing()
    if missing:
        pytest.fail(f"built-in templates missing in {SHARED}: {missing} (run sandboxd setup)")
    return store


@pytest.fixture
def world_dir():
    """A scratch dir the sandboxes' uid range can traverse (pytest's tmp_path is 0700 root)."""
    path = Path(tempfile.mkdtemp(prefix="tpl-b-", dir="/var/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def scratch_store(world_dir, shared_store):
    """A private store whose built-ins are the shared ones (layers linked, not copied or rebuilt)."""
    store = TemplateStore(Settings(data_dir=world_dir / "data", templates_path=world_dir / "templates"))
    store.layers_dir.mkdir(parents=True)
    for name in ("base", "code-interpreter"):
        image = shared_store.get(name)
        h = image.content_hash
        (store.layers_dir / h).symlink_to(shared_store.layers_dir / h)
        store.save_image(image, builtin=True)
    return store
