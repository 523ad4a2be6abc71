"""docs/getting-started.md: every tagged Python block runs, as written, against a real server."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

DOC = Path(__file__).parents[2] / "docs" / "getting-started.md"


def blocks() -> dict[str, str]:
    text = DOC.read_text()
    return {m[1]: m[2] for m in re.finditer(r"<!-- test: (\w+) -->\n```python\n(.*?)```", text, re.S)}


def run_block(name: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", blocks()[name]], env=env, capture_output=True, text=True,
                          timeout=300)


def test_every_block_is_tagged():
    assert set(blocks()) == {"sandboxd", "hopx", "e2b"}


def test_our_sdk_block(server):
    r = run_block("sandboxd", server.client_env)
    assert r.returncode == 0 and r.stdout == "hello\n42\n42\n", r.stderr[-2000:]


def test_hopx_block(server):
    r = run_block("hopx", server.client_env)
    assert r.returncode == 0 and r.stdout == "42\n", r.stderr[-2000:]


def test_e2b_block(server):
    r = run_block("e2b", server.client_env)  # E2B_API_URL, E2B_SANDBOX_URL, E2B_API_KEY as the doc exports
    assert r.returncode == 0 and r.stdout == "42\n", r.stderr[-2000:]
