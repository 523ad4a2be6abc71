"""The E2B dialect of the control plane: `router` is included by api/app.py, and
`gateway_resolver(services)` is the gateway hook `sandboxd serve` installs for E2b-Sandbox-Id routing."""
from __future__ import annotations

from sandboxd.gateway.e2b import resolver as gateway_resolver

from .routes import router
from .snapshots import router as _snapshots
from .templates import router as _template_builds
from .volumes import router as _volumes

router.include_router(_template_builds)
router.include_router(_snapshots)
router.include_router(_volumes)

__all__ = ["router", "gateway_resolver"]
