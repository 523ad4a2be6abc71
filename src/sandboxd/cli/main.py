"""The `sandboxd` command: one Typer app, one sub-module per command group."""
from __future__ import annotations

from importlib.util import find_spec

from sandboxd.cli import keys, monitoring, network, pools, sandbox, teams, template, usage, webhooks
from sandboxd.cli.common import SandboxdApp, version_option

app = SandboxdApp(no_args_is_help=True, help="Self-hosted isolated sandboxes.")
app.callback()(version_option)

# `serve` and `setup` run the server: the client-only package (clients/python, docs/install.md) ships
# neither them nor the server modules they need.
if find_spec("sandboxd.cli.serve") is not None:
    from sandboxd.cli import serve, setup

    serve.register(app)
    setup.register(app)
usage.register(app)
monitoring.register(sandbox.app)
app.add_typer(pools.app, name="pools", help="Warm pools: ready sandboxes per template (admin key).")
app.add_typer(sandbox.app, name="sandbox", help="Create, inspect and drive sandboxes.")
app.add_typer(network.app, name="network", help="A sandbox's egress policy, refusals and traffic.")
app.add_typer(template.app, name="template", help="Build and manage templates.")
app.add_typer(keys.app, name="keys", help="Manage API keys.")
app.add_typer(teams.app, name="teams", help="Manage teams and their quotas.")
app.add_typer(webhooks.app, name="webhooks", help="Manage lifecycle webhooks.")

if __name__ == "__main__":
    app()
