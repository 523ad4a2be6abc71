"""docs/settings.md names every setting config.py reads, and no setting that does not exist."""
from __future__ import annotations

import re
from pathlib import Path

from sandboxd.config import Settings

DOC = (Path(__file__).resolve().parents[2] / "docs" / "settings.md").read_text()
OUTSIDE = {"SANDBOXD_OVERLAY_BY_FD", "SANDBOXD_E2B_COMPAT_BACKEND"}  # the doc's last table


def test_every_setting_is_documented():
    missing = [f"SANDBOXD_{name.upper()}" for name in Settings.model_fields
               if f"`SANDBOXD_{name.upper()}`" not in DOC]
    assert missing == []


def test_the_doc_names_no_setting_that_does_not_exist():
    named = set(re.findall(r"`(SANDBOXD_[A-Z0-9_]+)`", DOC))
    real = {f"SANDBOXD_{name.upper()}" for name in Settings.model_fields} | OUTSIDE
    assert named - real == set()
