import os

import pytest

from sandboxd.config import Settings
from sandboxd.runtime.base import TemplateImage
from sandboxd.templates.shift import shift_tree
from sandboxd.templates.store import TemplateStore


@pytest.fixture
def store(tmp_path):
    # An explicit templates_path: SANDBOXD_TEMPLATES_PATH (set by scripts/test.sh) must never point a unit
    # test at the shared image store.
    return TemplateStore(Settings(data_dir=tmp_path / "data", templates_path=tmp_path / "templates"))


@pytest.fixture
def tiny(store):
    """A small hand-made rootfs registered as the template `tiny` (stands in for a built-in: no mmdebstrap)."""
    if os.geteuid() != 0:
        pytest.skip("layer ownership needs root")
    staged = store.new_tmp("tiny")
    root = staged / "rootfs"
    for d in ("etc", "usr/bin", "home/user", "workspace", "tmp"):
        (root / d).mkdir(parents=True)
    (root / "bin").symlink_to("usr/bin")
    (root / "etc/passwd").write_text("root:x:0:0::/root:/bin/bash\nuser:x:1000:1000::/home/user:/bin/bash\n")
    os.chown(root / "home/user", 1000, 1000)
    os.chmod(root / "home/user", 0o750)
    shift_tree(root, store.settings.uid_base)
    path = store.commit_layer(staged, "t" * 64, {"kind": "test"})
    image = TemplateImage(name="tiny", layers=(path,), content_hash="t" * 64, env={"PATH": "/usr/bin", "A": "0"})
    store.save_image(image)
    return image
