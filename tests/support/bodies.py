"""Comparing error bodies across resources: another team's id must answer exactly like a missing one."""
from __future__ import annotations

import json


def without_ids(resp, ident: str) -> object:
    """The JSON body with `ident` written as X and the per-request id taken out."""
    body = json.loads(resp.text.replace(ident, "X"))
    if isinstance(body, dict):
        body.pop("request_id", None)
        if isinstance(body.get("error"), dict):
            body["error"].pop("request_id", None)
    return body
