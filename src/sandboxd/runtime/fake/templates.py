"""Template source for the fake backend: the fake runs the agent on the host, so a template needs no rootfs.

The catalogue mirrors the built-in template names of the real image store so API tests use the same names.
"""
from __future__ import annotations

from sandboxd.runtime.base import TemplateImage


class FakeTemplateSource:
    def __init__(self, settings):
        self.settings = settings

    def builtins(self) -> list[dict]:
        from sandboxd.core.template_source import builtin_metadata

        return builtin_metadata()

    async def image(self, name: str) -> TemplateImage:
        # The fake runs the host's agent: an image is only a name, no layers to mount.
        return TemplateImage(name=name, layers=(), content_hash=f"fake:{name}")
