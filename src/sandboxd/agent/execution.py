"""Code execution for every language of the contract, the result cache, and webhook callbacks.

Python goes to the stateful kernel (kernel.py); other languages run as one-shot processes in their own
process group. User failures are results (success false, exit code, traceback), never exceptions.
"""
from __future__ import annotations

import asyncio
import json
import os
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Awaitable, Callable

from . import processes
from .env import EnvStore, find_user_python
from .errors import InvalidRequest, to_number
from .kernel import KernelManager, KernelUnavailable
from .languages import LANGUAGES
from .server import now_iso
from .users import workdir_of

OnText = Callable[[str, str], Awaitable[None]] | None


def normalize_language(language: str | None) -> str:
    lang = LANGUAGES.get((language or "python").strip().lower())
    if lang is None:
        raise InvalidRequest(f"unsupported language: {language!r}; supported: {', '.join(sorted(LANGUAGES))}",
                             language=language)
    return lang


def kernel_exit_code(success: bool, timed_out: bool, error: str | None) -> int:
    """The exit code a cell's run reports, as `python -c` would give it: `sys.exit(n)` is n (`sys.exit()` 0, a
    message 1), a timeout 124, any other exception 1. The kernel reports SystemExit as an error "SystemExit: n"."""
    if success:
        return 0
    if timed_out:
        return 124
    name, _, value = (error or "").partition(": ")
    if name != "SystemExit":
        return 1
    value = value.strip()
    if value in ("", "None"):
        return 0
    try:
        return int(value) & 0xFF
    except ValueError:
        return 1  # sys.exit("message"): Python prints it and exits 1


@dataclass
class ExecRequest:
    code: str
    language: str = "python"
    timeout: float = 120
    workdir: str | None = None
    env: dict | None = None
    user: str | None = None

    @classmethod
    def from_json(cls, body: dict, *, default_timeout: float = 120, workspace: str = "/workspace") -> "ExecRequest":
        code = body.get("code")
        if not isinstance(code, str):
            raise InvalidRequest("code (string) is required")
        env = body.get("env") or body.get("env_vars")
        if env is not None and not isinstance(env, dict):
            raise InvalidRequest("env must be an object")
        return cls(code=code, language=normalize_language(body.get("language")),
                   timeout=to_number(body.get("timeout"), default_timeout, "timeout"),
                   workdir=workdir_of(body.get("workdir") or body.get("working_dir") or body.get("cwd"), workspace),
                   env=env, user=body.get("user"))


class ResultCache:
    """Opt-in (per request) cache of execution results keyed by code + language + env + workdir."""

    def __init__(self, max_entries: int = 256):
        self.entries: OrderedDict[str, dict] = OrderedDict()
        self.max_entries = max_entries
        self.hits = self.misses = 0

    @staticmethod
    def key(req: ExecRequest, env: dict[str, str]) -> str:
        import hashlib

        raw = json.dumps([req.language, req.code, sorted(env.items()), req.workdir, req.user])
        return hashlib.sha256(raw.encode()).hexdigest()

    def get(self, key: str) -> dict | None:
        hit = self.entries.get(key)
        if hit is None:
            self.misses += 1
            return None
        self.hits += 1
        self.entries.move_to_end(key)
        return hit

    def put(self, key: str, result: dict) -> None:
        self.entries[key] = result
        self.entries.move_to_end(key)
        while len(self.entries) > self.max_entries:
            self.entries.popitem(last=False)

    def stats(self) -> dict:
        total = self.hits + self.misses
        size = sum(len(json.dumps(v, default=str)) for v in self.entries.values())
        return {"hits": self.hits, "misses": self.misses, "hit_rate": round(self.hits / total, 4) if total else 0.0,
                "size": size, "count": len(self.entries), "max_entries": self.max_entries, "enabled": True}

    def clear(self) -> int:
        n = len(self.entries)
        self.entries.clear()
        return n


class Executor:
    def __init__(self, env: EnvStore, kernels: KernelManager, procs: processes.Processes, workspace: str, activity):
        self.env, self.kernels, self.procs, self.workspace = env, kernels, procs, workspace
        self.activity = activity  # services.Activity, shared with /commands
        self.cache = ResultCache()

    async def run(self, req: ExecRequest, on_text: OnText = None, *, use_cache: bool = False) -> dict:
        env = self.env.for_run(req.env)
        key = self.cache.key(req, env) if use_cache else None
        if key:
            hit = self.cache.get(key)
            if hit is not None:
                return {**hit, "cached": True}
        started = time.monotonic()
        with self.activity.running():
            if req.language == "python":
                result = await self._python(req, env, on_text)
            else:
                result = await self._process(req, env, on_text)
        result["execution_time"] = round(time.monotonic() - started, 6)
        result["language"] = req.language
        result["timestamp"] = now_iso()
        if key and result.get("success"):
            self.cache.put(key, result)
        return result

    async def _python(self, req: ExecRequest, env: dict[str, str], on_text: OnText) -> dict:
        python = find_user_python(env)
        if python is None:
            return missing("python3", "no python3 found on the sandbox PATH")
        # The one stateful kernel runs as the template's USER (root for the built-in templates); code a request
        # runs as anyone else gets a fresh interpreter as that user.
        as_user = processes.run_as(req.user) if os.geteuid() == 0 else None
        if as_user == processes.run_as(None) or os.geteuid() != 0:
            if as_user is not None:
                env = {**env, "HOME": as_user.home, "USER": as_user.name}
            try:
                r = await self.kernels.execute(python, req.code, env=env, cwd=req.workdir, timeout=req.timeout,
                                               on_text=on_text, user=as_user)
            except KernelUnavailable:
                pass  # no ipykernel in this template: run the code in a fresh interpreter instead
            else:
                code = kernel_exit_code(r.success, r.timed_out, r.error)
                body = {"success": code == 0, "stdout": r.stdout, "stderr": r.stderr, "exit_code": code,
                        "error": r.error, "timed_out": r.timed_out, "outputs": r.outputs,
                        "kernel_restarted": r.restarted, **r.rich}
                if r.execution_count is not None:
                    body["execution_count"] = r.execution_count
                return body
        return await self._process(req, env, on_text, argv=[python, "-u", "-c", req.code])

    async def _process(self, req: ExecRequest, env: dict[str, str], on_text: OnText,
                       argv: list[str] | None = None) -> dict:
        import shutil

        tmp = None
        try:
            if argv is None:
                argv, tmp = self._argv(req, env)
                if isinstance(argv, dict):
                    return argv
            out = (lambda t: on_text("stdout", t)) if on_text else None
            err = (lambda t: on_text("stderr", t)) if on_text else None
            r = await processes.run(argv, cwd=req.workdir, env=env, timeout=req.timeout, user=req.user,
                                    on_stdout=out, on_stderr=err)
        finally:
            if tmp:
                shutil.rmtree(tmp, ignore_errors=True)
        error = None
        if r.timed_out:
            error = f"Execution timed out after {req.timeout:g}s; process group killed"
        elif r.exit_code != 0:
            error = f"exited with code {r.exit_code}"
        return {"success": r.exit_code == 0, "stdout": r.stdout, "stderr": r.stderr, "exit_code": r.exit_code,
                "error": error, "timed_out": r.timed_out, "pid": r.pid}

    def _argv(self, req: ExecRequest, env: dict[str, str]):
        import shutil
        import tempfile

        path = env.get("PATH", os.defpath)
        if req.language in ("bash", "sh"):
            exe = shutil.which(req.language, path=path) or shutil.which("sh", path=path)
            return [exe or "/bin/sh", "-c", req.code], None
        if req.language == "node":
            exe = shutil.which("node", path=path) or shutil.which("nodejs", path=path)
            if not exe:
                return missing("node", "JavaScript needs Node.js, which this template does not include"), None
            return [exe, "-e", req.code], None
        if req.language == "go":
            exe = shutil.which("go", path=path)
            if not exe:
                return missing("go", "Go needs the go toolchain, which this template does not include"), None
            tmp = tempfile.mkdtemp(prefix="sandboxd-go-")
            with open(os.path.join(tmp, "main.go"), "w") as f:
                f.write(req.code)
            if req.user:
                as_user = processes.run_as(req.user)
                if as_user is not None:
                    os.chown(tmp, as_user.uid, as_user.gid)
                    os.chown(os.path.join(tmp, "main.go"), as_user.uid, as_user.gid)
            return [exe, "run", os.path.join(tmp, "main.go")], tmp
        raise InvalidRequest(f"unsupported language: {req.language}")

    async def background(self, req: ExecRequest, name: str | None) -> processes.Proc:
        env = self.env.for_run(req.env)
        if req.language == "python":
            python = find_user_python(env) or "python3"
            argv = [python, "-u", "-c", req.code]
        else:
            argv, _tmp = self._argv(req, env)
            if isinstance(argv, dict):
                raise InvalidRequest(argv["error"], missing_dependencies=argv["missing_dependencies"])
        return await self.procs.background(argv, cwd=req.workdir, env=env, timeout=req.timeout,
                                           language=req.language, name=name, command=req.code[:200], user=req.user,
                                           envs=req.env)

    def start_async(self, req: ExecRequest, callback_url: str | None, headers: dict | None,
                    secret: str | None) -> str:
        execution_id = "exec_" + os.urandom(8).hex()

        async def work() -> None:
            result = await self.run(req)
            status = "completed" if result.get("success") else ("timeout" if result.get("timed_out") else "failed")
            payload = {"execution_id": execution_id, "status": status, "stdout": result.get("stdout", ""),
                       "stderr": result.get("stderr", ""), "exit_code": result.get("exit_code"),
                       "execution_time": result.get("execution_time"), "timestamp": now_iso(),
                       "error": result.get("error"), "success": result.get("success")}
            for k in ("png", "html", "json", "dataframe", "result"):
                if k in result:
                    payload[k] = result[k]
            if callback_url:
                await post_callback(callback_url, payload, headers or {}, secret)

        task = asyncio.create_task(work())
        _background_tasks.add(task)
        task.add_done_callback(_background_tasks.discard)
        return execution_id


_background_tasks: set[asyncio.Task] = set()


def missing(dep: str, message: str) -> dict:
    return {"success": False, "stdout": "", "stderr": message + "\n", "exit_code": 127, "error": message,
            "missing_dependencies": [dep], "timed_out": False}


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """HMAC-SHA256 over `<timestamp>.<body>` (hex), sent as `X-HOPX-Signature: sha256=<hex>`."""
    import hashlib
    import hmac

    return hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


async def post_callback(url: str, payload: dict, headers: dict, secret: str | None, attempts: int = 4,
                        backoff: float = 1.0) -> bool:
    """POST the result; retried with exponential backoff on network errors and 5xx/429."""
    import http.client
    import ssl
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    host = parts.hostname
    if parts.scheme not in ("http", "https") or not host:
        return False
    body = json.dumps(payload, default=str).encode()
    for attempt in range(attempts):
        ts = str(int(time.time()))
        h = {"Content-Type": "application/json", "User-Agent": "sandboxd-agent", "X-HOPX-Timestamp": ts,
             **{str(k): str(v) for k, v in headers.items()}}
        if secret:
            h["X-HOPX-Signature"] = "sha256=" + sign(secret, ts, body)

        def send(h: dict[str, str] = h) -> int:  # bound now: this attempt's headers
            # http.client keeps header names as given (urllib would send "X-hopx-signature").
            conn: http.client.HTTPConnection
            if parts.scheme == "https":
                conn = http.client.HTTPSConnection(host, parts.port, timeout=10, context=ssl.create_default_context())
            else:
                conn = http.client.HTTPConnection(host, parts.port, timeout=10)
            try:
                target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
                conn.request("POST", target, body=body, headers=h)
                return conn.getresponse().status
            except (OSError, http.client.HTTPException):
                return 0
            finally:
                conn.close()

        status = await asyncio.get_running_loop().run_in_executor(None, send)
        if 200 <= status < 300:
            return True
        if 400 <= status < 500 and status != 429:
            return False  # the receiver rejected it; retrying will not help
        if attempt + 1 < attempts:
            await asyncio.sleep(backoff * 2 ** attempt)
    return False
