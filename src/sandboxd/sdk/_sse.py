"""Server-sent events: (event, data) pairs from a text/event-stream's lines."""
from __future__ import annotations

import json
from typing import Iterator


def sse_frames(lines: Iterator[str]) -> Iterator[tuple[str, dict]]:
    """(event, data) pairs from an SSE line stream; comments and heartbeats are skipped."""
    event = "message"
    data: list[str] = []
    for line in lines:
        if line == "":
            if data:
                try:
                    yield event, json.loads("\n".join(data))
                except ValueError:
                    pass
            event, data = "message", []
        elif line.startswith(":"):
            continue
        else:
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if name == "event":
                event = value
            elif name == "data":
                data.append(value)
