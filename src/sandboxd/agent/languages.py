"""The languages /execute accepts (and their aliases) and the runner each maps to. Apart from execution.py
because /health lists them: the agent's start should not load the kernel manager for that."""
from __future__ import annotations

LANGUAGES = {
    "python": "python", "python3": "python", "py": "python", "ipython": "python",
    "javascript": "node", "js": "node", "node": "node", "nodejs": "node",
    "bash": "bash", "shell": "bash", "sh": "sh", "go": "go", "golang": "go",
}
