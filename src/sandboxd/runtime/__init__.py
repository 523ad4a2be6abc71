"""Isolation backends. `get_backend(settings)` picks one by `settings.backend`: crun (default), runc, fake."""
from __future__ import annotations

from sandboxd.errors import Invalid
from sandboxd.runtime.base import Backend


def get_backend(settings, **kwargs) -> Backend:
    name = (settings.backend or "crun").lower()
    if name in ("crun", "runc"):
        from sandboxd.runtime.hostsetup import prepare_host
        from sandboxd.runtime.oci.backend import OciBackend

        # May fall back to runc (logged) where crun cannot run on this host's cgroup layout.
        return OciBackend(settings, runtime=prepare_host(settings, backend=name).backend, **kwargs)
    if name == "fake":
        from sandboxd.runtime.fake import FakeBackend

        return FakeBackend(settings, **kwargs)
    raise Invalid(f"unknown backend {settings.backend!r}: use crun, runc or fake")


__all__ = ["get_backend"]
