"""A stateful Java context of the E2B code interpreter: one JVM per context, running JavaRepl.java.

JavaRepl evaluates cells with the JDK's JShell API in its own JVM (local execution engine), so a cell's
variables, methods, classes and imports live on, and System.out/err are captured in process. The file runs
through Java's single-file source launcher: nothing is compiled ahead or written in the sandbox. Java cannot
take over an inherited socket, so cells go in on one pipe and events come back on another (opened there as
/proc/self/fd/N). A context's first cell pays the JVM and JShell start, about 1.5 s.
"""
from __future__ import annotations

import asyncio
import base64
import os

from .repl import Repl

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "JavaRepl.java")
# A REPL's cells are short: the client compiler alone starts faster, the serial collector is the smallest.
JVM_OPTIONS = ("-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-Xshare:auto")


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


class JavaRepl(Repl):
    async def _spawn(self, env: dict[str, str], cwd: str, **_options):
        cells_in, cells_out = os.pipe()
        events_in, events_out = os.pipe()
        try:
            proc = await asyncio.create_subprocess_exec(
                "java", *JVM_OPTIONS, SOURCE, str(cells_in), str(events_out), cwd=cwd, env=env,
                pass_fds=(cells_in, events_out), stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE, start_new_session=True)
        except BaseException:
            os.close(cells_out)
            os.close(events_in)
            raise
        finally:
            os.close(cells_in)
            os.close(events_out)
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=64 * 1024 * 1024)
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(events_in, "rb", 0))
        transport, protocol = await loop.connect_write_pipe(asyncio.streams.FlowControlMixin,
                                                            os.fdopen(cells_out, "wb", 0))
        return proc, reader, asyncio.StreamWriter(transport, protocol, None, loop)

    def _request(self, cell: int, code: str, env: dict[str, str]) -> bytes:
        pairs = ",".join(f"{_b64(k)}:{_b64(v)}" for k, v in env.items())  # ":" and "," are not base64
        return f"{cell} {_b64(code)} {pairs}\n".encode()
