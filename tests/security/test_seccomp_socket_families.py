"""Inside a sandbox only the socket families it needs exist: AF_UNIX, AF_INET, AF_INET6, AF_NETLINK.

AF_VSOCK (a channel to the hypervisor's host when sandboxd runs in a VM) and the rarely used families
(kernel attack surface) fail with EAFNOSUPPORT, whoever asks: a command the crun exec path starts, a
command the agent starts (the agent is forked by the zygote, which loads the filter itself), the i386
system call ABI (socketcall, whose arguments seccomp cannot read) included.
"""
from __future__ import annotations

import base64
import json

import httpx
import pytest

from support.runtime import SyncBackend, cleanup, make_settings, spec

pytestmark = pytest.mark.real

PROBE = r'''
import ctypes, errno, json, os, socket, struct, subprocess, sys
libc = ctypes.CDLL(None, use_errno=True)

def result(ret):
    return "created" if ret >= 0 else errno.errorcode.get(ctypes.get_errno(), str(ctypes.get_errno()))

def make(family, kind):
    fd = libc.syscall(41, ctypes.c_long(family), ctypes.c_long(kind), ctypes.c_long(0))  # x86-64 socket(2)
    if fd >= 0:
        os.close(fd)
    return result(fd)

def pair(family):
    fds = (ctypes.c_int * 2)()
    ret = libc.socketpair(family, socket.SOCK_STREAM, 0, fds)
    if ret == 0:
        os.close(fds[0]); os.close(fds[1])
    return result(ret)

# socketcall(SYS_SOCKET, [AF_VSOCK, SOCK_STREAM, 0]) through int 0x80, the i386 entry, from this process.
I386 = """
import ctypes, struct
libc = ctypes.CDLL(None, use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
page = libc.mmap(None, 4096, 7, 0x62, -1, 0)  # rwx, private, anonymous, below 4 GiB (MAP_32BIT)
args = page + 256
ctypes.memmove(args, struct.pack("<III", 40, 1, 0), 12)
code = (b"\\x53\\xb8\\x66\\x00\\x00\\x00\\xbb\\x01\\x00\\x00\\x00\\xb9" + struct.pack("<I", args)
        + b"\\xcd\\x80\\x5b\\xc3")  # push rbx; eax=102; ebx=1; ecx=args; int 0x80; pop rbx; ret
ctypes.memmove(page, code, len(code))
print(ctypes.CFUNCTYPE(ctypes.c_int)(page)(), flush=True)
"""

out = {name: make(family, kind) for name, family, kind in [
    ("AF_VSOCK", 40, socket.SOCK_STREAM), ("AF_VSOCK|1<<32", (1 << 32) | 40, socket.SOCK_STREAM),
    ("AF_VSOCK dgram", 40, socket.SOCK_DGRAM), ("AF_KEY", 15, socket.SOCK_RAW), ("AF_ALG", 38, socket.SOCK_SEQPACKET),
    ("AF_PACKET", 17, socket.SOCK_RAW), ("AF_TIPC", 30, socket.SOCK_RDM), ("AF_RDS", 21, socket.SOCK_SEQPACKET),
    ("AF_CAN", 29, socket.SOCK_RAW), ("AF_BLUETOOTH", 31, socket.SOCK_STREAM), ("AF_XDP", 44, socket.SOCK_RAW),
    ("AF_UNSPEC", 0, socket.SOCK_STREAM), ("AF_UNIX", 1, socket.SOCK_STREAM), ("AF_INET", 2, socket.SOCK_STREAM),
    ("AF_INET6", 10, socket.SOCK_DGRAM), ("AF_NETLINK", 16, socket.SOCK_RAW)]}
out["socketpair AF_UNIX"] = pair(socket.AF_UNIX)
out["socketpair AF_VSOCK"] = pair(40)
r = subprocess.run([sys.executable, "-c", I386], capture_output=True, text=True)
out["i386 socketcall AF_VSOCK"] = [r.returncode, r.stdout.strip()]
print(json.dumps(out))
'''
COMMAND = f"python3 -c \"import base64; exec(base64.b64decode('{base64.b64encode(PROBE.encode()).decode()}'))\""
REFUSED = ("AF_VSOCK", "AF_VSOCK|1<<32", "AF_VSOCK dgram", "AF_KEY", "AF_ALG", "AF_PACKET", "AF_TIPC", "AF_RDS",
           "AF_CAN", "AF_BLUETOOTH", "AF_XDP", "AF_UNSPEC", "socketpair AF_VSOCK")
NEEDED = ("AF_UNIX", "AF_INET", "AF_INET6", "AF_NETLINK", "socketpair AF_UNIX")
SIGSYS = 31


@pytest.fixture(scope="module")
def box(rt_env):
    _, sb, image = rt_env
    return sb.create(spec(image, "sockfam", internet_access=True))


@pytest.fixture(scope="module")
def cold_box(rt_env):
    """A sandbox whose agent crun execs itself (no zygote): the filter is crun's, loaded from the profile."""
    _, _, image = rt_env
    settings = make_settings("crun")
    settings.zygote = False
    from sandboxd.runtime import get_backend

    sb = SyncBackend(get_backend(settings))
    try:
        yield sb.create(spec(image, "sockfam-cold"))
    finally:
        cleanup(settings, sb)
        sb.close()


def check(found: dict) -> None:
    assert {name: found[name] for name in REFUSED} == {name: "EAFNOSUPPORT" for name in REFUSED}
    assert {name: found[name] for name in NEEDED} == {name: "created" for name in NEEDED}
    # The i386 ABI is refused as a whole: the thread that enters it is killed, no socket is made.
    assert found["i386 socketcall AF_VSOCK"] == [-SIGSYS, ""]


def test_exec_path_has_only_the_needed_families(rt_env, box):
    _, sb, _ = rt_env
    r = sb.sh(box.id, COMMAND)
    assert r.exit_code == 0, r.stderr
    check(json.loads(r.stdout))


@pytest.mark.parametrize("agent", ["forked by the zygote", "started by crun"])
def test_commands_the_agent_starts_have_only_the_needed_families(request, agent):
    box = request.getfixturevalue("box" if agent == "forked by the zygote" else "cold_box")
    with httpx.Client(transport=httpx.HTTPTransport(uds=str(box.agent_socket)), base_url="http://agent") as c:
        r = c.post("/commands/run", json={"command": COMMAND}, timeout=60)
    assert r.status_code == 200 and r.json()["exit_code"] == 0, r.text
    check(json.loads(r.json()["stdout"]))
