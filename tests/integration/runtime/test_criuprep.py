"""What restores keep ready on the host (runtime/criuprep.py): the kerndat cache, the cgroup yard, the masked
directories' tmpfs, the restore's PATH, and which images are dropped after a dump."""
from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest

from support.runtime import require_real
from sandboxd.runtime import criuprep, criutools

pytestmark = pytest.mark.real


def test_the_yard_has_every_hierarchy_this_process_is_in_under_criu_names():
    require_real()
    yard = criuprep.cgroup_yard()
    assert yard is not None and yard == criuprep.cgroup_yard()  # made once, found again
    names = {("unified" if not c else ",".join(n.removeprefix("name=") for n in c.split(",")))
             for c in (ln.split(":", 2)[1] for ln in Path("/proc/self/cgroup").read_text().splitlines())}
    assert {p.name for p in yard.iterdir()} == names
    for p in yard.iterdir():  # each a mount of its hierarchy's root, not a plain directory
        assert p.stat().st_dev != yard.stat().st_dev
        assert (p / "cgroup.procs").exists()


def test_the_masked_tmpfs_is_empty_and_read_only():
    require_real()
    d = criuprep.masked_dir()
    assert d == criuprep.masked_dir() and list(d.iterdir()) == []
    with pytest.raises(OSError) as e:
        (d / "x").write_text("x")
    assert e.value.errno == errno.EROFS


def test_the_restore_path_has_its_tools_and_no_firewall():
    require_real()
    path = Path(criuprep.tools_path())
    assert {"tar", "gzip"} <= {p.name for p in path.iterdir()}
    assert not [p for p in path.iterdir() if "tables" in p.name]
    assert all(os.access(p, os.X_OK) for p in path.iterdir())


def test_kerndat_cache_is_made_for_this_boot(tmp_path):
    require_real()
    found, why = criutools.find("auto", Path(os.environ.get("SANDBOXD_TOOLS_DIR", "/var/lib/sandboxd/tools")))
    if found is None:
        pytest.fail(f"no usable CRIU: {why}")
    assert criuprep.kdat(found.argv)
    stamp = json.loads((criuprep.RUN / "criu.kdat.json").read_text())
    assert stamp["want"]["boot_id"] == criuprep.boot_id()
    assert Path(stamp["path"]).stat().st_size > 0


def test_only_network_config_images_are_dropped(tmp_path):
    keep = ["netdev-10.img", "netns-10.img", "pages-1.img", "core-1.img", "tmpfs-dev-68.tar.gz.img"]
    drop = ["ifaddr-10.img", "route-10.img", "route6-10.img", "rule-10.img", "iptables-10.img",
            "ip6tables-10.img", "nftables-10.img"]
    for n in keep + drop:
        (tmp_path / n).write_bytes(b"")
    criuprep.drop_netns_config(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(keep)
