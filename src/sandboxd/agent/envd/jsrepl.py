"""A stateful JavaScript context of the E2B code interpreter: one Node process per context (jsrepl.js).

Node's REPL evaluator runs each cell in the same global scope, so variables, functions and imports
live on between cells and a cell may `await` at top level, as in E2B's own JavaScript kernel. Cells and
their events travel as NDJSON over a socketpair.
"""
from __future__ import annotations

import asyncio
import os
import socket

from .repl import Repl

SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "jsrepl.js")


class JsRepl(Repl):
    async def _spawn(self, env: dict[str, str], cwd: str, typescript: bool = False, **_options):
        ours, theirs = socket.socketpair()
        try:
            proc = await asyncio.create_subprocess_exec(
                "node", SCRIPT, str(theirs.fileno()), "ts" if typescript else "js", cwd=cwd, env=env,
                pass_fds=(theirs.fileno(),), stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE, start_new_session=True)
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        reader, writer = await asyncio.open_unix_connection(sock=ours)
        return proc, reader, writer
