"""The built-in images `sandboxd setup` made: contents, ownership, and no trace of the host's CA or proxy."""
import os
import re
from pathlib import Path

import pytest

from sandboxd.templates import bases

pytestmark = pytest.mark.real


def rootfs(store, name):
    image = store.get(name)
    assert len(image.layers) == 1
    return image, image.layers[0]


@pytest.mark.parametrize("name", ["base", "code-interpreter"])
def test_builtin_layout(shared_store, name):
    image, root = rootfs(shared_store, name)
    assert image.content_hash == shared_store.builtin_hash(name)
    assert image.workdir == "/workspace" and image.env["PATH"].startswith("/opt/python/bin:")
    assert image.env["LANG"] == "C.UTF-8"
    passwd = (root / "etc/passwd").read_text()
    assert re.search(r"^user:x:1000:1000::/home/user:/bin/bash$", passwd, re.M)
    assert re.search(r"^root:x:0:0:", passwd, re.M)
    # uid-shifted once: 0 -> uid_base, 1000 -> uid_base + 1000.
    base = shared_store.settings.uid_base
    assert os.stat(root / "etc/passwd").st_uid == base
    assert os.stat(root / "home/user").st_uid == base + 1000
    assert os.stat(root / "workspace").st_uid == base + 1000
    assert os.lstat(root / "opt/python/bin/pip").st_uid == base + 1000  # user pip installs work
    assert os.stat(root / "bin/su").st_mode & 0o4000  # setuid kept through the shift
    for tool in ("usr/bin/python3", "usr/bin/bash", "usr/bin/curl", "usr/bin/git", "usr/bin/tini", "usr/bin/ps"):
        assert (root / tool).exists(), tool
    site = root / "opt/python/lib/python3.11/site-packages"
    assert (site / "ipykernel").is_dir()
    pth = root / "opt/sandboxd/venv/lib/python3.11/site-packages/sandboxd-pkg.pth"
    assert pth.read_text().strip() == "/opt/sandboxd/pkg"
    assert (root / "opt/sandboxd/pkg/sandboxd").is_dir()  # the runtime's bind-mount target
    for req in bases.agent_requirements():
        dist = re.split(r"[<>=!~\[; ]", req, maxsplit=1)[0].lower().replace("-", "_")
        found = list((root / "opt/sandboxd/venv/lib/python3.11/site-packages").glob("*.dist-info"))
        assert any(p.name.lower().startswith(dist + "-") for p in found), f"agent requirement {req} missing"
    assert "/opt/python/bin" in (root / "etc/profile.d/sandboxd-python.sh").read_text()
    assert os.readlink(root / "usr/local/bin/pip3") == "/opt/python/bin/pip3"


def test_code_interpreter_extras(shared_store):
    _, root = rootfs(shared_store, "code-interpreter")
    site = root / "opt/python/lib/python3.11/site-packages"
    for pkg in ("numpy", "pandas", "matplotlib"):
        assert (site / pkg).is_dir(), pkg
    assert (root / "usr/bin/node").exists() and (root / "usr/bin/npm").exists()
    _, base_root = rootfs(shared_store, "base")
    assert not (base_root / "usr/bin/node").exists()


def _host_local_cas() -> list[str]:
    """Base64 bodies of the CAs this host added itself (the TLS-intercepting proxy's), not Debian's."""
    bodies = []
    for crt in Path("/usr/local/share/ca-certificates").rglob("*.crt"):
        text = crt.read_text(errors="replace")
        for m in re.finditer(r"-----BEGIN CERTIFICATE-----(.*?)-----END CERTIFICATE-----", text, re.S):
            bodies.append("".join(m.group(1).split())[:120])
    return bodies


@pytest.mark.parametrize("name", ["base", "code-interpreter"])
def test_no_trace_of_host_ca_or_proxy(shared_store, name):
    image, root = rootfs(shared_store, name)
    cas = _host_local_cas()
    if not cas:
        pytest.skip("this host added no CA of its own")
    bundle = "".join((root / "etc/ssl/certs/ca-certificates.crt").read_text().split())
    for body in cas:
        assert body not in bundle
    assert not any((root / "usr/local/share/ca-certificates").iterdir())
    for leftover in ("etc/pip.conf", "root/.config/pip", "root/.pip", "etc/ssl/certs/sandboxd-build-ca.crt",
                     "tmp/sandboxd-wheels", "root/.cache/pip"):
        assert not (root / leftover).exists(), leftover
    banned = re.compile(r"proxy|PIP_|CA_BUNDLE|CERT", re.I)
    assert not [k for k in image.env if banned.search(k)]
    environment = root / "etc/environment"
    assert not environment.exists() or not banned.search(environment.read_text())
    assert (root / "etc/resolv.conf").read_text() == ""  # not the host's resolver


async def test_setup_again_changes_nothing(shared_store):
    before = {i.name: (i.content_hash, i.layers) for i in shared_store.list() if i.name in bases.BUILTINS}
    logs = []
    images = await shared_store.ensure_builtins(logs.append)
    assert {i.name: (i.content_hash, i.layers) for i in images} == before
    assert not any("building" in line for line in logs)
