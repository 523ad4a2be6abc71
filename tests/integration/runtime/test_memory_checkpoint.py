"""Memory checkpoints of real sandboxes (runtime/oci/memory.py, docs/snapshots.md): to disk and back."""
from __future__ import annotations

import json
import time

import pytest

from support.runtime import spec
from sandboxd.errors import Conflict
from sandboxd.runtime import agentclient
from sandboxd.runtime.base import RuntimeState
from sandboxd.runtime.cgroups import SandboxCgroup
from sandboxd.runtime.oci.state import Record

pytestmark = pytest.mark.real
COUNTER = "setsid sh -c 'i=0; while :; do i=$((i+1)); echo $i > /tmp/count; sleep 0.1; done' >/dev/null 2>&1 </dev/null &"


@pytest.fixture(scope="module")
def backend(rt_env):
    settings, sb, image = rt_env
    if not sb.backend.memory_snapshots():
        pytest.fail("no usable CRIU on this host: `sandboxd setup` provides one (runtime/criutools.py)")
    return sb


def _call(sb, rt, method, path, body=None):
    return sb.loop.run_until_complete(agentclient.call_json(rt.agent_socket, method, path, body, 60.0))


def _count(sb, sid) -> int:
    return int(sb.exec(sid, ["cat", "/tmp/count"]).stdout or 0)


def test_processes_and_memory_go_to_disk_and_come_back(rt_env, backend):
    _, sb, image = rt_env
    rt = sb.create(spec(image, "ckpt"))
    assert sb.exec(rt.id, ["sh", "-c", COUNTER]).exit_code == 0
    assert _call(sb, rt, "POST", "/execute", {"code": "kept = 6 * 7", "language": "python"})["success"]
    time.sleep(0.5)
    before = _count(sb, rt.id)
    cp = sb.checkpoint(rt.id)
    # On disk: nothing of it runs or holds memory, and its record says so across restarts.
    assert cp.size_bytes > 1 << 20 and cp.seconds > 0
    assert sb.state(rt.id) is RuntimeState.PAUSED
    assert Record.load(rt.bundle).status == "checkpointed"
    assert SandboxCgroup(rt.id).pids() == [] and not SandboxCgroup(rt.id).exists()
    with pytest.raises(Conflict):
        sb.exec(rt.id, ["true"])
    with pytest.raises(Conflict):
        sb.checkpoint(rt.id)
    images = rt.bundle / "checkpoint"
    assert (images / "pages-1.img").exists() and oct(images.stat().st_mode & 0o777) == "0o750"
    time.sleep(2.0)  # 20 ticks of the counter, had it run
    seconds = sb.resume(rt.id)
    assert seconds is not None and seconds > 0
    assert sb.state(rt.id) is RuntimeState.RUNNING
    # The same processes went on where they stopped: the counter neither restarted nor moved while on disk
    # (it ran on during the checkpoint and the restore, a few ticks).
    after = _count(sb, rt.id)
    assert before <= after < before + 15
    time.sleep(0.3)
    assert _count(sb, rt.id) > after
    got = _call(sb, rt, "POST", "/execute", {"code": "print(kept)", "language": "python"})
    assert got["stdout"].strip() == "42"
    # The agent serves on a new host socket; a second round works the same.
    assert _call(sb, rt, "GET", "/health")["status"] == "healthy"
    sb.checkpoint(rt.id)
    sb.resume(rt.id)
    assert _call(sb, rt, "POST", "/execute", {"code": "print(kept + 1)", "language": "python"})["stdout"].strip() == "43"
    sb.destroy(rt.id)
    assert not rt.bundle.exists()


SEEN = ("find /proc/acpi /sys/firmware /sys/kernel -mindepth 1 | wc -l; touch /proc/acpi/x /sys/kernel/x 2>&1 | grep -c 'Read-only'; "
        "grep -c ' lo$' /proc/net/if_inet6; "
        "python3 -c 'import socket; s=socket.socket(); s.bind((\"127.0.0.1\", 0)); s.listen(); "
        "socket.create_connection(s.getsockname()); print(\"lo\")'")


def test_what_a_restore_leaves_out_is_what_the_kernel_or_host_gives_the_same(rt_env, backend):
    """The images hold no network addresses, routes, rules or firewall of the sandbox (it cannot change them,
    criuprep.py) and masked directories are not saved as tmpfs: after the restore the loopback still has both
    addresses and serves, and the masks are still empty and read-only."""
    _, sb, image = rt_env
    rt = sb.create(spec(image, "ckseen"))
    before = sb.exec(rt.id, ["sh", "-c", SEEN]).stdout.decode().split()
    assert before == ["0", "2", "1", "lo"]
    sb.checkpoint(rt.id)
    images = rt.bundle / "checkpoint"
    assert not [f.name for f in images.iterdir() if f.name.startswith(("ifaddr-", "route", "rule-", "iptables-",
                                                                        "ip6tables-", "nftables-"))]
    assert len(list(images.glob("tmpfs-dev-*"))) == 3  # /dev, /dev/shm and /sys/fs/cgroup keep their contents
    sb.resume(rt.id)
    assert sb.exec(rt.id, ["sh", "-c", SEEN]).stdout.decode().split() == before
    sb.destroy(rt.id)


def test_a_sandbox_with_internet_keeps_its_address_and_rules(rt_env, backend):
    _, sb, image = rt_env
    rt = sb.create(spec(image, "cknet", internet_access=True))
    net = Record.load(rt.bundle).net
    addr = sb.exec(rt.id, ["sh", "-c", "ip -4 -o addr show dev eth0 || cat /proc/net/fib_trie"]).stdout.decode()
    assert net["sandbox_ip"] in addr
    sb.checkpoint(rt.id)
    assert json.loads((rt.bundle / "checkpoint" / "sandboxd.json").read_text())["net"]["veth"] == net["veth"]
    sb.resume(rt.id)
    assert Record.load(rt.bundle).net == net
    again = sb.exec(rt.id, ["sh", "-c", "ip -4 -o addr show dev eth0 || cat /proc/net/fib_trie"]).stdout.decode()
    assert net["sandbox_ip"] in again
    sb.destroy(rt.id)


def test_compressed_images_are_smaller_and_come_back_the_same(rt_env, backend):
    _, sb, image = rt_env
    rt = sb.create(spec(image, "ckzst"))
    sb.exec(rt.id, ["sh", "-c", COUNTER])
    plain = sb.checkpoint(rt.id)
    sb.resume(rt.id)
    assert not (rt.bundle / "checkpoint").exists()  # a restored sandbox's images are gone
    packed = sb.checkpoint(rt.id, compress=True)
    assert list((rt.bundle / "checkpoint").glob("pages-*.img.zst")) and packed.size_bytes < plain.size_bytes / 2
    sb.resume(rt.id)
    first = _count(sb, rt.id)
    time.sleep(0.3)
    assert _count(sb, rt.id) > first
    sb.destroy(rt.id)


def test_a_frozen_sandbox_goes_to_disk_and_a_stop_drops_its_memory(rt_env, backend):
    _, sb, image = rt_env
    rt = sb.create(spec(image, "ckfrz"))
    sb.exec(rt.id, ["sh", "-c", COUNTER])
    sb.pause(rt.id)
    sb.checkpoint(rt.id)
    assert sb.state(rt.id) is RuntimeState.PAUSED
    sb.stop(rt.id)  # files kept, memory gone: a start boots afresh
    assert not (rt.bundle / "checkpoint").exists()
    sb.start(rt.id)
    assert sb.exec(rt.id, ["sh", "-c", "pgrep -f 'echo \\$i' || echo none"]).stdout.strip() == b"none"
    assert _count(sb, rt.id) > 0  # its files are still there
    sb.destroy(rt.id)


@pytest.mark.serial  # it gives up a host-wide uid-range claim, which another worker's create would take meanwhile
def test_after_a_host_reboot_it_comes_back_with_a_new_network_end(rt_env, backend):
    """What a reboot takes from a sandbox on disk: /run (its uid-range claim, the runtime's state, the parked
    network namespace) and the veth. Its images and files stay; resume makes what is missing."""
    from sandboxd.runtime import network, uidslots

    _, sb, image = rt_env
    rt = sb.create(spec(image, "ckboot", internet_access=True))
    sb.exec(rt.id, ["sh", "-c", COUNTER])
    time.sleep(0.3)
    sb.checkpoint(rt.id)
    rec = Record.load(rt.bundle)
    network.destroy(network.SandboxNet.from_dict(rec.net))  # the veth and the parked namespace
    uidslots.release(rt.bundle, rec.extra["uid_slot"])
    assert not (sb.backend.cli.root / rt.id).exists()
    sb.resume(rt.id)
    net = Record.load(rt.bundle).net
    assert net and (rt.bundle.parent.parent / "sandboxes").exists()
    addr = sb.exec(rt.id, ["cat", "/proc/net/fib_trie"]).stdout.decode()
    assert net["sandbox_ip"] in addr
    first = _count(sb, rt.id)
    time.sleep(0.3)
    assert _count(sb, rt.id) > first > 0
    sb.destroy(rt.id)
