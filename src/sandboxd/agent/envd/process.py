"""envd's process.Process on the agent's processes service (agent/processes.py: Processes): requests to
calls, and the calls' output to envd's events (base64 data, Go's exit wording). A stream whose deadline
(Connect-Timeout-Ms, the SDK's command `timeout`) passes kills its process, as envd does; a finished
process has left the table, so signalling it afterwards is NOT_FOUND.
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import os
import signal
from typing import AsyncIterator, Callable

from sandboxd.errors import Invalid

from ..errors import ProcessNotFound
from ..processes import Ended, Proc, Processes, ids_of
from . import users

SIGNALS = {"SIGNAL_SIGKILL": signal.SIGKILL, "SIGNAL_SIGTERM": signal.SIGTERM, 9: signal.SIGKILL,
           15: signal.SIGTERM}
MAX_KEEPALIVE = 50.0
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def unb64(value: str | None) -> bytes:
    try:
        return base64.b64decode(value or "", validate=False)
    except (binascii.Error, ValueError):
        raise Invalid("input is not valid base64") from None


def select(procs: Processes, selector: dict | None) -> Proc:
    """The process a ProcessSelector names, by pid or by tag."""
    selector = selector or {}
    if "pid" in selector:
        try:
            return procs.get(int(selector["pid"]))
        except (TypeError, ValueError):
            raise ProcessNotFound(f"process with pid {selector['pid']} not found") from None
    if "tag" in selector:
        return procs.tagged(selector["tag"])
    raise Invalid("process selector needs pid or tag")


def _env(base_env: Callable[[dict | None], dict] | None, user: users.User, extra: dict | None) -> dict[str, str]:
    if base_env is not None:
        env = dict(base_env(None))
    else:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SANDBOXD_AGENT_")}
    env.update({"HOME": user.home, "USER": user.name, "LOGNAME": user.name})
    env.setdefault("PATH", DEFAULT_PATH)
    for k, v in (extra or {}).items():
        env[str(k)] = "" if v is None else str(v)
    return env


async def start(procs: Processes, base_env, msg: dict, user: users.User) -> Proc:
    """Starts the process a StartRequest describes, as `user`."""
    cfg = msg.get("process") or {}
    cmd = cfg.get("cmd")
    if not cmd:
        raise Invalid("process.cmd is required")
    args = [str(a) for a in cfg.get("args") or []]
    envs = cfg.get("envs") or {}
    cwd = users.expand(cfg.get("cwd"), user, default=users.default_cwd(user))
    if not os.path.isdir(cwd):
        if cfg.get("cwd"):
            raise Invalid(f"cwd '{cwd}' does not exist")
        cwd = "/"
    pty = msg.get("pty")
    size = (pty or {}).get("size") or {}
    config = {"cmd": cmd, "args": args, "envs": {str(k): str(v) for k, v in envs.items()}}
    if cfg.get("cwd"):
        config["cwd"] = cfg["cwd"]
    return await procs.start(
        [cmd, *args], cwd=cwd, env=_env(base_env, user, envs),
        ids=ids_of(None if user.is_self else user),
        pty=None if pty is None else (int(size.get("rows") or 24), int(size.get("cols") or 80)),
        stdin=msg.get("stdin", True) is not False,  # absent means true (older clients)
        tag=msg.get("tag"), config=config)


def end_event(end: Ended) -> dict:
    if end.signal is None:
        out: dict = {"exited": True, "status": f"exit status {end.code}"}
        if end.code:
            out["exitCode"] = end.code
        return out
    # Go's os.ProcessState wording, which envd reports: "signal: killed", "signal: terminated".
    name = (signal.strsignal(end.signal) or f"signal {end.signal}").lower()
    return {"exitCode": -1, "exited": False, "status": f"signal: {name}"}


async def events(p: Proc, q: asyncio.Queue, keepalive: float) -> AsyncIterator[dict]:
    """{start}, then data/keepalive events, ending with {end}."""
    yield {"event": {"start": {"pid": p.pid}}}
    try:
        while True:
            try:
                kind, value = await asyncio.wait_for(q.get(), keepalive)
            except asyncio.TimeoutError:
                yield {"event": {"keepalive": {}}}
                continue
            if kind == "end":
                yield {"event": {"end": end_event(value)}}
                return
            yield {"event": {"data": {kind: b64(value)}}}
    finally:
        p.unsubscribe(q)


async def send_input(procs: Processes, p: Proc, inp: dict | None) -> None:
    inp = inp or {}
    if "pty" in inp:
        await procs.send_input(p, unb64(inp["pty"]), to_pty=True)
    else:
        await procs.send_input(p, unb64(inp.get("stdin")))


def send_signal(p: Proc, sig_name) -> None:
    sig = SIGNALS.get(sig_name)
    if sig is None:
        raise Invalid(f"unsupported signal {sig_name!r}")
    p.kill(sig)


def resize(procs: Processes, p: Proc, pty: dict | None) -> None:
    size = (pty or {}).get("size") or {}
    procs.resize(p, int(size.get("rows") or 24), int(size.get("cols") or 80))


def info(p: Proc) -> dict:
    out: dict = {"config": p.config, "pid": p.pid}
    if p.tag:
        out["tag"] = p.tag
    return out


def keepalive_interval(header: str | None) -> float:
    try:
        value = float(header) if header else MAX_KEEPALIVE
    except ValueError:
        value = MAX_KEEPALIVE
    return max(1.0, min(value, MAX_KEEPALIVE))
