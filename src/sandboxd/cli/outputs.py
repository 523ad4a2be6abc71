"""Rich outputs of `sandboxd sandbox run` (a matplotlib figure's PNG, SVG, HTML, PDF) saved as files: a
terminal cannot show them, so each goes to a new file and stderr says where."""
from __future__ import annotations

import base64
import sys
from pathlib import Path

# MIME type → file suffix, and whether the payload is base64 (binary) or text.
KINDS = {"image/png": (".png", True), "image/jpeg": (".jpg", True), "application/pdf": (".pdf", True),
         "image/svg+xml": (".svg", False), "text/html": (".html", False)}


def _free(directory: Path, suffix: str) -> Path:
    n = 1
    while (path := directory / f"output-{n}{suffix}").exists():
        n += 1
    return path


def _wanted(data: dict) -> list[str]:
    """The forms worth a file: images and PDFs; SVG only for a figure with no bitmap; HTML only when there
    is no text form (a DataFrame's table is printed as text already)."""
    kinds = [m for m in ("image/png", "image/jpeg", "application/pdf") if data.get(m)]
    if data.get("image/svg+xml") and not any(data.get(m) for m in ("image/png", "image/jpeg")):
        kinds.append("image/svg+xml")
    if data.get("text/html") and not data.get("text/plain"):
        kinds.append("text/html")
    return kinds


def save_outputs(ex, directory: Path) -> list[Path]:
    """Save the rich outputs of an Execution, each to a new file; returns the files written."""
    saved = []
    for result in ex.results:
        for mime in _wanted(result.data):
            suffix, binary = KINDS[mime]
            payload = result.data[mime]
            directory.mkdir(parents=True, exist_ok=True)
            path = _free(directory, suffix)
            path.write_bytes(base64.b64decode(payload) if binary else str(payload).encode())
            sys.stderr.write(f"{mime} saved to {path}\n")
            saved.append(path)
    return saved
