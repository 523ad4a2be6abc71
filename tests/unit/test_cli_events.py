"""The CLI spells the lifecycle event types itself (the client-only package has no server core): the same as
the server's."""
from __future__ import annotations

from sandboxd.cli.webhooks import LIFECYCLE_TYPES as CLI_TYPES
from sandboxd.core.events import LIFECYCLE_TYPES


def test_the_cli_knows_the_servers_lifecycle_event_types():
    assert CLI_TYPES == LIFECYCLE_TYPES
