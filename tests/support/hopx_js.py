"""The official `@hopx-ai/sdk` (JavaScript), installed once from tests/compat/hopx/js/package-lock.json.

Tests in several workers need it (the compat suite, the desktop suite); an exclusive lock on a file beside the
lockfile makes the first one run `npm ci` and the others wait for it, instead of finding a half-written
node_modules or none."""
from __future__ import annotations

import fcntl
import shutil
import subprocess
from pathlib import Path

from support.real import unavailable

JS = Path(__file__).resolve().parents[1] / "compat" / "hopx" / "js"
SDK = JS / "node_modules" / "@hopx-ai" / "sdk" / "dist" / "index.mjs"


def hopx_js_sdk() -> Path:
    """The SDK's entry module; outside CI a missing node or npm is a skip, in CI a failure."""
    if not shutil.which("node") or not shutil.which("npm"):
        unavailable("node/npm are not installed (scripts/install.sh installs Node.js)")
    with open(JS / ".install.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not SDK.exists():
            r = subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=JS, capture_output=True, text=True,
                               timeout=300)
            assert r.returncode == 0, f"npm ci failed:\n{r.stderr[-2000:]}"
    return SDK
