"""The host end of the agent channel: a listening unix socket handed to the sandbox as fd 3. What is said
over it goes through sandboxd.runtime.agentclient."""
from __future__ import annotations

import os
import socket
from pathlib import Path



def listen(path: Path) -> socket.socket:
    """A listening socket at path (replacing a stale one). The caller passes it to the runtime, then closes it."""
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(path))
        sock.listen(512)
        os.chmod(path, 0o600)
    except OSError:
        sock.close()
        raise
    return sock
