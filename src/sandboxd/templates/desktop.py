"""The `desktop` template: `base` plus a display stack for GUI automation (agent/desktop/).

Built the templates engine's way, FROM base with RUN steps (build.py runs them in a build sandbox with
egress and the host CA lent for the build only). Debian packages only:

- tigervnc-standalone-server (Xvnc: the virtual framebuffer X server, which also serves VNC and accepts
  new screen sizes at run time) + tigervnc-tools (vncpasswd); xvfb too, for users' own `xvfb-run`;
- openbox (a light EWMH window manager: wmctrl needs one), xdotool, wmctrl, xclip,
  x11-utils (xprop), x11-xserver-utils (xrandr), ffmpeg (screenshots, recording, ffprobe);
- chromium (started with --no-sandbox: a sandbox cannot create the namespaces Chromium's own sandbox
  needs), xterm, fonts, python3-tk (small GUI apps and the tests), tesseract-ocr (+eng) for OCR.

The display itself starts on the first desktop call, never at sandbox start.
"""
from __future__ import annotations

from sandboxd.templates.steps import BuildRecipe, Step

NAME = "desktop"
FROM = "base"
DISPLAY = ":1"

PACKAGES = (
    "tigervnc-standalone-server", "tigervnc-tools", "xvfb", "openbox", "xdotool", "wmctrl", "xclip",
    "x11-utils", "x11-xserver-utils", "ffmpeg", "chromium", "xterm", "xfonts-base", "fonts-dejavu-core",
    "python3-tk", "tesseract-ocr", "tesseract-ocr-eng",
)

# The build exec gets SSL_CERT_FILE when the host lends its CA (buildenv.build_env); apt over https needs it.
APT_INSTALL = (
    "set -e; export DEBIAN_FRONTEND=noninteractive; "
    'CA=${SSL_CERT_FILE:+-o Acquire::https::CAInfo=$SSL_CERT_FILE}; '
    "apt-get $CA update -qq && "
    "apt-get $CA install -y -qq --no-install-recommends " + " ".join(PACKAGES) + " && "
    "apt-get clean && rm -rf /var/lib/apt/lists/*"
)

# Debian's /usr/bin/chromium wrapper sources /etc/chromium.d/*: every launch gets flags that work here.
CHROMIUM_FLAGS = (
    "mkdir -p /etc/chromium.d && printf '%s\\n' "
    "'export CHROMIUM_FLAGS=\"$CHROMIUM_FLAGS --no-sandbox --disable-dev-shm-usage --disable-gpu "
    "--no-first-run --password-store=basic\"' > /etc/chromium.d/sandboxd"
)

ENV = {"DISPLAY": DISPLAY}


def recipe() -> BuildRecipe:
    return BuildRecipe(name=NAME, from_image=FROM, env=dict(ENV),
                       steps=[Step("RUN", (APT_INSTALL,)), Step("RUN", (CHROMIUM_FLAGS,))])


async def ensure(store, log=lambda _line: None, backend=None):
    """Build the desktop template unless it exists (the layer cache makes an unchanged rebuild cheap).

    `store` is a templates.store.TemplateStore; `base` must exist (store.ensure_builtin("base")).
    """
    if store.exists(NAME):
        return store.get(NAME)
    await store.ensure_builtin(FROM, log)
    return await store.build(recipe(), log, backend=backend)
