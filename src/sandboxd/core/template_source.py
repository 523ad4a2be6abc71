"""Adapter from the control plane's catalog to the template image store (sandboxd.templates)."""
from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import Any, Awaitable, Callable

from sandboxd.config import Settings
from sandboxd.errors import BuildFailed
from sandboxd.runtime.base import TemplateImage

DISPLAY = {"base": "Base (Debian + Python)", "code-interpreter": "Code Interpreter"}
FREE_RETRY_DELAYS = (1.0, 2.0, 5.0, 10.0, 30.0)  # seconds: a killed sandbox's teardown takes about one
FEATURES = ["code_execution", "file_operations", "terminal_access", "ipython_kernel", "system_metrics"]


def builtin_metadata(exists: Callable[[str], bool] = lambda _n: True) -> list[dict[str, Any]]:
    from sandboxd.templates import bases

    out = []
    for name, recipe in bases.BUILTINS.items():
        rich = "matplotlib" in recipe.user_pip
        out.append({
            "name": name, "display_name": DISPLAY.get(name, name), "description": recipe.description or None,
            "category": "development", "language": "python",
            "features": FEATURES + (["rich_output"] if rich else []),
            "tags": ["python", "debian"] + (["data"] if rich else []),
            # A built-in whose image is not built yet cannot start sandboxes (run `sandboxd setup`).
            "status": "active" if exists(name) else "pending",
        })
    if exists(DESKTOP):
        out.append(desktop_metadata())
    return out


DESKTOP = "desktop"


def desktop_metadata() -> dict[str, Any]:
    """The built-in desktop template (templates/desktop.py): listed once `sandboxd setup` has built it."""
    return {
        "name": DESKTOP, "display_name": "Desktop (X11, VNC, Chromium)",
        "description": "base + an X display on demand (Xvnc, openbox), VNC, xdotool, Chromium, OCR",
        "category": "desktop", "language": "python",
        "features": FEATURES + ["desktop", "vnc", "screenshots", "browser"],
        "tags": ["python", "debian", "desktop", "vnc"],
        # Chromium on a display wants room: give it more than the 1 GiB / 2 GB defaults.
        "vcpu": 2, "memory_mb": 2048, "disk_gb": 4, "status": "active",
    }


class FakeTemplateSource:
    """The fake backend's templates: it runs the agent on the host, so a template is only a name (no rootfs);
    the catalogue has the built-in names of the real image store, so API tests use the same names."""

    def __init__(self, settings: Settings):
        self.settings = settings

    def builtins(self) -> list[dict[str, Any]]:
        return builtin_metadata()

    async def image(self, name: str) -> TemplateImage:
        return TemplateImage(name=name, layers=(), content_hash=f"fake:{name}")

    async def snapshot(self, name: str, parent: TemplateImage, export: Callable[[Path], Awaitable[None]],
                       source: str) -> TemplateImage:
        with tempfile.TemporaryDirectory(prefix="sandboxd-fake-snapshot-") as tmp:
            await export(Path(tmp))  # the sandbox is frozen and copied as on a real backend; no image keeps it
        return TemplateImage(name=name, layers=(), content_hash=f"fake:{name}")

    async def forget(self, name: str, free_layers: bool = True) -> list[str]:
        return []  # the fake backend keeps no images


class StoreTemplateSource:
    def __init__(self, settings: Settings, backend=None):
        from sandboxd.templates.store import TemplateStore

        self.settings = settings
        self.store = TemplateStore(settings)
        self._later: set[asyncio.Future[None]] = set()

    def builtins(self) -> list[dict[str, Any]]:
        return builtin_metadata(self.store.exists)

    async def image(self, name: str) -> TemplateImage:
        return self.store.get(name)

    async def snapshot(self, name: str, parent: TemplateImage, export: Callable[[Path], Awaitable[None]],
                       source: str) -> TemplateImage:
        from sandboxd.templates.snapshot import snapshot_image

        return await snapshot_image(self.store, name, parent, export, source)

    async def forget(self, name: str, free_layers: bool = True) -> list[str]:
        if not self.store.exists(name):
            return []
        candidates = await asyncio.to_thread(self.store.remove, name)
        if not free_layers:
            return []
        removed = await asyncio.to_thread(self._free, candidates)
        if candidates - removed:
            # Still mounted: a sandbox of this template that was just killed tears down in the background.
            task = asyncio.ensure_future(self._free_later(candidates - removed))
            self._later.add(task)
            task.add_done_callback(self._later.discard)
        return sorted(removed)

    def _free(self, candidates: set[str]) -> set[str]:
        # Reads every sandbox record on the host and removes directory trees: callers run it off the loop.
        return self.store.free_layers(candidates, keep=self.store.layers_in_use(self.settings.data_dir))

    async def _free_later(self, candidates: set[str]) -> None:
        for delay in FREE_RETRY_DELAYS:
            await asyncio.sleep(delay)
            candidates = candidates - await asyncio.to_thread(self._free, candidates)
            if not candidates:
                return
        # Still in use after that (a stopped sandbox keeps its template's layers): `sandboxd setup` frees them.


def recipe_doc(req) -> dict[str, Any]:
    """The build request in the wire dialect sandboxd.templates.steps parses."""
    return {"name": req.name, "from_image": req.from_image, "steps": req.steps, "startCmd": req.start_cmd,
            "readyCmd": req.ready_cmd, "cpu": req.cpu, "memory": req.memory_mb, "diskGB": req.disk_gb,
            "skipCache": req.skip_cache}


def check_recipe(req) -> None:
    """Refuse a malformed build at trigger time (400), not later in the background."""
    from sandboxd.templates.steps import parse_build_request

    parse_build_request(recipe_doc(req))


def template_builder(settings: Settings, backend=None):
    """The build function the BuildService runs: the template store's step builder on the real backend."""

    async def build(req, *, uploads: Path, log: Callable[[str], None]) -> dict[str, Any]:
        from sandboxd.templates.build import Builder
        from sandboxd.templates.steps import parse_build_request
        from sandboxd.templates.store import TemplateStore

        if backend is not None and backend.capabilities.isolation == "process":
            raise BuildFailed("the fake backend cannot build templates (RUN steps need a real sandbox); "
                              "use SANDBOXD_BACKEND=crun")
        recipe = parse_build_request(recipe_doc(req))
        hashes = {s.get("filesHash") or s.get("files_hash") for s in req.steps}
        recipe.contexts = {h: uploads / f"{h}.tar.gz" for h in hashes if h}
        image = await Builder(TemplateStore(settings), backend).build(recipe, log)
        return {"language": "python", "content_hash": image.content_hash}

    return build
