"""Builds with RUN steps in real build sandboxes: layers from the upper dir, cache, failures, the proxy CA."""
import os
import uuid

import pytest

from sandboxd.errors import BuildFailed
from sandboxd.runtime.base import SandboxSpec
from sandboxd.templates.steps import parse_build_request

pytestmark = [pytest.mark.real, pytest.mark.slow]


def find(image, rel):
    for layer in image.layers:
        p = layer / rel
        if p.exists() or p.is_symlink():
            return p
    return None


def req(name, steps, **kw):
    return parse_build_request({"name": name, "from_image": "base", "steps": steps, **kw})


STEPS = [
    {"type": "RUN", "args": ["echo hello > /workspace/hello.txt && rm /etc/motd"]},
    {"type": "RUN", "args": ["pip install --no-deps --no-cache-dir six && python -c 'import six'"]},
    {"type": "USER", "args": ["user"]},
    {"type": "RUN", "args": ["id -un > /home/user/who.txt"]},
]


async def test_run_steps_become_cached_layers(scratch_store):
    logs = []
    image = await scratch_store.build(req("tpl-b-run", STEPS), logs.append)
    assert find(image, "workspace/hello.txt").read_text() == "hello\n"
    motd = find(image, "etc/motd")
    assert motd is not None and os.lstat(motd).st_rdev == 0 and not motd.is_file()  # a whiteout
    site = "opt/python/lib/python3.11/site-packages/six.py"
    assert find(image, site) is not None  # pip reached PyPI through the proxy with the lent CA
    assert find(image, "home/user/who.txt").read_text() == "user\n"
    assert os.stat(find(image, "home/user/who.txt")).st_uid == scratch_store.settings.uid_base + 1000
    for layer in image.layers[:3]:
        assert not (layer / "etc/ssl/certs/sandboxd-build-ca.crt").exists()
    assert not [k for k in image.env if "CERT" in k or "proxy" in k.lower()]
    assert find(image, ".sandboxd-build.log") is None
    assert any("Successfully installed six" in line for line in logs)  # RUN output reached the log callback

    logs.clear()
    again = await scratch_store.build(req("tpl-b-run2", STEPS), logs.append)
    assert again.layers == image.layers
    assert sum("using cache" in line for line in logs) == 3

    # The built template boots and sees its files (and not the deleted one).
    from sandboxd.templates.build import Builder
    backend = Builder(scratch_store).backend
    sid = f"tpl-b-{uuid.uuid4().hex[:8]}"
    try:
        await backend.create(SandboxSpec(id=sid, image=image))
        res = await backend.exec(sid, ["/bin/sh", "-c", "cat /workspace/hello.txt; test ! -e /etc/motd && echo gone"])
        assert res.exit_code == 0 and res.stdout == b"hello\ngone\n"
    finally:
        await backend.destroy(sid)


async def test_failing_run_fails_the_build_with_its_log(scratch_store):
    logs = []
    with pytest.raises(BuildFailed) as exc:
        await scratch_store.build(req("tpl-b-fail", [{"type": "RUN", "args": ["echo before-failing; exit 3"]}]),
                                  logs.append)
    assert exc.value.details["exit_code"] == 3
    assert any("before-failing" in line for line in logs)
    assert "before-failing" in exc.value.details["log_tail"]
    assert not scratch_store.exists("tpl-b-fail")
    assert not any(scratch_store.tmp_dir.iterdir())
