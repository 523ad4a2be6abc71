"""sandboxd: self-hosted isolated sandboxes.

The public SDK names are exported lazily (PEP 562) so that the in-sandbox agent, which imports
`sandboxd.agent`, does not pay for importing the SDK and its HTTP stack at start-up.
"""
from __future__ import annotations

__version__ = "0.1.0"

# name -> module that defines it; filled in by the SDK (issue 6).
_LAZY: dict[str, str] = {}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'sandboxd' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
