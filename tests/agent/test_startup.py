"""How the agent runs in a sandbox: on an inherited listening unix socket (fd 3), and clean shutdown."""
from __future__ import annotations

import os
import signal
import socket
import time

import httpx

from .conftest import start_agent, wait_healthy


def test_serves_on_inherited_fd3_and_stops_cleanly_on_sigterm(tmp_path):
    sock_path = tmp_path / "agent.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(sock_path))
    listener.listen(16)
    fd = listener.fileno()

    def to_fd3():
        os.dup2(fd, 3)

    proc = start_agent([], tmp_path, {"SANDBOXD_AGENT_FD": "3"}, pass_fds=(fd, 3), preexec_fn=to_fd3)  # 3 kept open after the dup2
    listener.close()
    try:
        with httpx.Client(transport=httpx.HTTPTransport(uds=str(sock_path)), base_url="http://agent") as c:
            wait_healthy(c, proc)
            # private agent variables never leak into the user's environment
            assert "SANDBOXD_AGENT_FD" not in c.get("/env").json()["env_vars"]
            r = c.post("/commands/run", json={"command": "bash", "args": ["-c", "echo $SANDBOXD_AGENT_FD"]})
            assert r.json()["stdout"] == "\n"
            job = c.post("/commands/background", json={"command": "sleep", "args": ["60"]}).json()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
        # background jobs die with the agent (their process group is killed)
        time.sleep(0.2)
        assert not os.path.exists(f"/proc/{job['pid']}") or \
            open(f"/proc/{job['pid']}/stat").read().split()[2] == "Z"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
