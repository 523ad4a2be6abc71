"""Escape and abuse probes against real sandboxes. Each asserts the specific way the attempt fails.

Syscall numbers are x86-64. Errnos: EPERM 1, ENOENT 2, EAGAIN 11, ENOSPC 28, EROFS 30, ENOSYS 38.
"""
from __future__ import annotations

import errno
import json
import os
import subprocess
import uuid
from pathlib import Path

import pytest

from probes import syscall
from support.runtime import spec

pytestmark = pytest.mark.real

CLONE_NEWUSER, CLONE_NEWNS, CLONE_NEWNET, SIGCHLD = 0x10000000, 0x00020000, 0x40000000, 17
SYS_CLONE, SYS_UNSHARE, SYS_SETNS, SYS_CLONE3 = 56, 272, 308, 435
SYS_FINIT_MODULE, SYS_INIT_MODULE, SYS_BPF, SYS_PERF_EVENT_OPEN = 313, 175, 321, 298


@pytest.fixture(scope="module")
def box(rt_env):
    _, sb, image = rt_env
    return sb.create(spec(image, "sec"))


def run_py(sb, box_id, code, **kw):
    r = sb.py(box_id, code, **kw)
    assert r.exit_code == 0, r.stderr.decode()
    return json.loads(r.stdout.decode().strip().splitlines()[-1])


def test_host_processes_are_invisible(rt_env, box):
    _, sb, _ = rt_env
    marker = str(900000 + os.getpid() % 99999)
    sleeper = subprocess.Popen(["sleep", marker])
    try:
        found = run_py(sb, box.id, "import os,json; print(json.dumps([open(f'/proc/{p}/cmdline','rb').read().decode(errors='replace')"
                                   " for p in os.listdir('/proc') if p.isdigit()]))")
        assert not any(marker in c for c in found)
        assert any(c.startswith("/usr/bin/tini") for c in found)
        assert len(found) < 10  # tini, the agent, this probe (and maybe a kernel): not the host's hundreds
        # pid 1 inside is tini, not the host's init
        assert sb.exec(box.id, ["cat", "/proc/1/comm"]).stdout == b"tini\n"
    finally:
        sleeper.kill()
        sleeper.wait()


def test_host_files_are_unreachable(rt_env, box):
    _, sb, _ = rt_env
    marker = Path("/root") / f".rt-marker-{uuid.uuid4().hex}"
    marker.write_text("secret")
    try:
        code = ("import json,errno\nout={}\n"
                "for p in ['/work/main/pyproject.toml', %r, '/proc/1/root%s']:\n"
                "    try: open(p).read(); out[p]='read'\n"
                "    except OSError as e: out[p]=errno.errorcode[e.errno]\n"
                "print(json.dumps(out))") % (str(marker), str(marker))
        assert set(run_py(sb, box.id, code).values()) == {"ENOENT"}
        host_shadow = Path("/etc/shadow").read_bytes()
        inside = sb.exec(box.id, ["cat", "/etc/shadow"]).stdout
        assert inside and inside != host_shadow  # the template's own, not the host's
        assert b"postgres" not in inside
    finally:
        marker.unlink()


def test_proc_kcore_is_masked(rt_env, box):
    _, sb, _ = rt_env
    code = ("import json,os,errno\ntry: r=[os.stat('/proc/kcore').st_size, len(open('/proc/kcore','rb').read(4096))]\n"
            "except OSError as e: r=errno.errorcode[e.errno]\nprint(json.dumps(r))")
    r = run_py(sb, box.id, code)
    if Path("/proc/kcore").exists():
        assert r == [0, 0]  # /dev/null bound over it
    else:  # this kernel has no /proc/kcore at all (CONFIG_PROC_KCORE=n)
        assert r == "ENOENT"
    assert "/proc/kcore" in sb.backend.agent_pkg.parent.joinpath("sandboxd/runtime/oci/config.py").read_text()


def test_proc_sys_is_read_only(rt_env, box):
    _, sb, _ = rt_env
    code = ("import json,errno\ntry:\n open('/proc/sys/kernel/hostname','w').write('pwned'); r='written'\n"
            "except OSError as e: r=errno.errorcode[e.errno]\nprint(json.dumps(r))")
    assert run_py(sb, box.id, code) == "EROFS"
    assert Path("/proc/sys/kernel/hostname").read_text().strip() != "pwned"


def test_mount_is_denied(rt_env, box):
    _, sb, _ = rt_env
    code = syscall("[libc.mount(b'none', b'/mnt', b'tmpfs', ctypes.c_ulong(0), None), ctypes.get_errno()]")
    assert run_py(sb, box.id, code) == [-1, errno.EPERM]
    r = sb.exec(box.id, ["mount", "-t", "tmpfs", "none", "/mnt"])
    assert r.exit_code != 0 and b"ermission denied" in r.stderr


def test_nested_user_namespace_is_blocked(rt_env, box):
    _, sb, _ = rt_env
    assert run_py(sb, box.id, syscall(f"sc({SYS_UNSHARE}, {CLONE_NEWUSER})")) == [-1, errno.EPERM]
    assert run_py(sb, box.id, syscall(f"sc({SYS_UNSHARE}, {CLONE_NEWNS})")) == [-1, errno.EPERM]
    # clone with any namespace flag matches no allow rule: the profile's default errno, ENOSYS
    assert run_py(sb, box.id, syscall(f"sc({SYS_CLONE}, {CLONE_NEWUSER | SIGCHLD}, 0, 0, 0, 0)")) == [-1, errno.ENOSYS]
    assert run_py(sb, box.id, syscall(f"sc({SYS_CLONE}, {CLONE_NEWNET | SIGCHLD}, 0, 0, 0, 0)")) == [-1, errno.ENOSYS]
    assert run_py(sb, box.id, syscall(f"sc({SYS_CLONE3}, 0, 0)")) == [-1, errno.ENOSYS]
    assert run_py(sb, box.id, syscall(f"sc({SYS_SETNS}, 0, 0)")) == [-1, errno.EPERM]
    r = sb.exec(box.id, ["unshare", "-U", "true"])
    assert r.exit_code != 0 and b"Operation not permitted" in r.stderr
    # plain fork/threads still work (clone without namespace flags)
    assert sb.py(box.id, "import os,threading; t=threading.Thread(target=print); t.start(); t.join(); "
                         "p=os.fork()\nif p==0: os._exit(7)\nprint(os.waitpid(p,0)[1]>>8)").stdout.split()[-1] == b"7"


def test_module_load_is_denied(rt_env, box):
    _, sb, _ = rt_env
    assert run_py(sb, box.id, syscall(f"sc({SYS_FINIT_MODULE}, 0, 0, 0)")) == [-1, errno.EPERM]
    assert run_py(sb, box.id, syscall(f"sc({SYS_INIT_MODULE}, 0, 0, 0)")) == [-1, errno.EPERM]


def test_raw_socket_is_denied(rt_env, box):
    _, sb, _ = rt_env
    code = ("import socket,json,errno\ntry:\n socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP); r='ok'\n"
            "except OSError as e: r=errno.errorcode[e.errno]\nprint(json.dumps(r))")
    assert run_py(sb, box.id, code) == "EPERM"
    code = code.replace("socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP", "socket.AF_PACKET, socket.SOCK_RAW, 0")
    assert run_py(sb, box.id, code) == "EAFNOSUPPORT"  # a family seccomp refuses before CAP_NET_RAW is checked


def test_bpf_and_perf_event_open_are_denied(rt_env, box):
    _, sb, _ = rt_env
    assert run_py(sb, box.id, syscall(f"sc({SYS_BPF}, 0, 0, 0)")) == [-1, errno.EPERM]
    assert run_py(sb, box.id, syscall(f"sc({SYS_PERF_EVENT_OPEN}, 0, 0, -1, -1, 0)")) == [-1, errno.EPERM]


def test_exec_has_no_new_privs_and_no_dangerous_caps(rt_env, box):
    _, sb, _ = rt_env
    out = sb.sh(box.id, "grep -E 'NoNewPrivs|CapBnd' /proc/self/status", user="user").stdout.decode()
    assert "NoNewPrivs:\t1" in out
    bnd = int(out.split("CapBnd:")[1].split()[0], 16)
    for cap in (21, 13, 27, 16, 17, 12, 19):  # SYS_ADMIN NET_RAW MKNOD SYS_MODULE SYS_RAWIO NET_ADMIN SYS_PTRACE
        assert not bnd & (1 << cap)
