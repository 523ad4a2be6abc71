"""Host preparation, cgroup layout detection and counters, and the shipped seccomp profile."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from support.runtime import make_settings, require_real
from sandboxd.runtime import cgroups, seccomp
from sandboxd.runtime.cgroups import Layout, SandboxCgroup
from sandboxd.runtime.hostsetup import prepare_host


def test_shipped_profile_is_containers_common_plus_namespace_rule():
    if not seccomp.CONTAINERS_COMMON.exists():
        pytest.skip("golang-github-containers-common is not installed")
    assert seccomp.profile() == json.loads(json.dumps(seccomp.generate()))
    rules = {n: r for r in seccomp.profile()["syscalls"] for n in r["names"]}
    assert rules["clone"]["args"] == [{"index": 0, "value": 0x7E020000, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}]
    assert (rules["clone3"]["action"], rules["clone3"]["errnoRet"]) == ("SCMP_ACT_ERRNO", 38)
    assert (rules["unshare"]["action"], rules["unshare"]["errnoRet"]) == ("SCMP_ACT_ERRNO", 1)
    # resolved for our capabilities: no CAP_SYS_ADMIN, so bpf/perf_event_open are refused, not allowed
    allowed = {n for r in seccomp.profile()["syscalls"] if r["action"] == "SCMP_ACT_ALLOW" for n in r["names"]}
    assert not {"bpf", "perf_event_open", "init_module", "unshare", "clone3", "setns"} & allowed


def test_detect_layouts(tmp_path):
    v2 = tmp_path / "v2"
    v2.mkdir()
    (v2 / "cgroup.controllers").write_text("cpu memory pids\n")
    assert cgroups.detect(v2) is Layout.V2
    v1 = tmp_path / "v1"
    (v1 / "memory").mkdir(parents=True)
    assert cgroups.detect(v1) is Layout.V1
    (v1 / "unified").mkdir()
    (v1 / "unified" / "cgroup.controllers").write_text("hugetlb\n")
    assert cgroups.detect(v1) is Layout.HYBRID  # a controller held by cgroup2 and not mounted as v1
    assert cgroups.v2_unbound_controllers(v1) == ["hugetlb"]


def test_v2_counters(tmp_path):
    d = tmp_path / "sandboxd" / "sb1"
    d.mkdir(parents=True)
    files = {"cpu.stat": "usage_usec 1500\nuser_usec 1000\n", "cpu.max": "50000 100000\n",
             "memory.current": "3000000\n", "memory.max": "8388608\n",
             "memory.stat": "file 1000000\ninactive_file 400000\n", "memory.events": "oom 2\noom_kill 1\n",
             "pids.current": "7\n", "cgroup.freeze": "1\n"}
    for name, text in files.items():
        (d / name).write_text(text)
    cg = SandboxCgroup("sb1", Layout.V2, root=tmp_path)
    c = cg.counters()
    assert (c.cpu_usage_ns, c.cpu_quota_cores, c.memory_used_bytes, c.memory_limit_bytes) == (1_500_000, 0.5, 2_600_000, 8388608)
    assert (c.memory_cache_bytes, c.pids, c.oom_kills) == (1_000_000, 7, 1)
    assert cg.frozen()


@pytest.mark.real
def test_prepare_host_is_idempotent_and_makes_crun_usable():
    require_real()
    settings = make_settings("crun")
    first = prepare_host(settings, force=True)
    again = prepare_host(settings, force=True)
    assert first.backend == again.backend == "crun"
    assert cgroups.detect() in (Layout.V1, Layout.V2)  # hybrid fixed (crun refuses hybrid)
    assert Path("/proc/sys/net/ipv4/ip_forward").read_text().strip() == "1"
    table = subprocess.run(["nft", "list", "table", "inet", "sandboxd"], capture_output=True, text=True).stdout
    assert 'iifname "vh*" drop' in table and "masquerade" in table
    base = [c for c in ("input", "floor", "postrouting", "egress_rules") if f"chain {c} {{" in table]
    assert len(base) == 4 and table.count("chain egress_rules {") == 1  # not duplicated by the second call
    assert Path(settings.sandboxes_dir).stat().st_mode & 0o011 == 0o011
    cgroup2 = [ln.split(" - ")[1].split()[2] for ln in Path("/proc/self/mountinfo").read_text().splitlines()
               if " - cgroup2 " in ln]
    assert all("favordynmods" in opts.split(",") for opts in cgroup2)  # cgroup moves wait for no grace period
    Path(settings.sandboxes_dir).rmdir()
    Path(settings.data_dir).rmdir()
