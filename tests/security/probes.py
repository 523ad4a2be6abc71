"""Python one-liners run inside sandboxes (the base rootfs is minimal): each prints one JSON result."""
from __future__ import annotations

SYSCALL = """
import ctypes, json, os
libc = ctypes.CDLL(None, use_errno=True)
def sc(nr, *args):
    r = libc.syscall(nr, *[ctypes.c_long(a) for a in args])
    return [r, ctypes.get_errno() if r == -1 else 0]
"""


def syscall(expr: str) -> str:
    """Evaluate expr (using sc(nr, ...)) and print [ret, errno]."""
    return SYSCALL + f"print(json.dumps({expr}))"


def connect(host: str, port: int, timeout: float = 2.0) -> str:
    return f"""
import json, socket, errno
s = socket.socket(); s.settimeout({timeout})
try:
    s.connect(({host!r}, {port})); r = "connected"
except socket.timeout:
    r = "timeout"
except OSError as e:
    r = errno.errorcode.get(e.errno, str(e.errno))
print(json.dumps(r))
"""
