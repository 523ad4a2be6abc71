"""Which desktop programs are installed, and which Debian package provides each missing one.

The display is TigerVNC's Xvnc: an X server with a framebuffer (like Xvfb) that also serves VNC on a
unix socket and, unlike Xvfb, accepts new screen sizes at run time (xrandr), so set-resolution keeps
the user's windows open.
"""
from __future__ import annotations

import shutil

# program -> Debian package, for the features every desktop call needs.
CORE = {
    "Xvnc": "tigervnc-standalone-server",
    "vncpasswd": "tigervnc-tools",
    "openbox": "openbox",
    "xdotool": "xdotool",
    "wmctrl": "wmctrl",
    "xprop": "x11-utils",
    "xrandr": "x11-xserver-utils",
    "ffmpeg": "ffmpeg",
}
CLIPBOARD = {"xclip": "xclip"}
OCR = {"tesseract": "tesseract-ocr"}


def missing(programs: dict[str, str]) -> list[str]:
    """Debian package names of the programs not on PATH (sorted, no duplicates)."""
    return sorted({pkg for prog, pkg in programs.items() if shutil.which(prog) is None})
