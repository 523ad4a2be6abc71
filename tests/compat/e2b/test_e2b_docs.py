"""The copy-paste block of docs/e2b.md runs as written (only the three E2B_* variables set)."""
from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

DOC = Path(__file__).resolve().parents[3] / "docs" / "e2b.md"


def test_docs_python_block_runs(e2b_env):
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)
    assert blocks, "docs/e2b.md has no python block"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(blocks[0], str(DOC), "exec"), {})
    assert out.getvalue() == "2\nhi\n\n"
