"""Reading the control plane's SSE streams in tests."""
from __future__ import annotations

import time

import httpx


def replay_shows_kill(client: httpx.Client, sid: str, within: float = 3.0) -> bool:
    """Whether the client's lifecycle stream, replayed from the start (Last-Event-ID 0), shows the sandbox's
    kill: the event is in the replay or never comes to this key. The stream's heartbeats end the wait."""
    with client.stream("GET", "/v1/sandboxes/stream", headers={"Last-Event-ID": "0"}) as s:
        text, until = "", time.monotonic() + within
        for chunk in s.iter_text():
            text += chunk
            if (sid in text and "sandbox.killed" in text) or time.monotonic() > until:
                break
    return sid in text
