"""`sandboxd network show/set`: a sandbox's egress policy, what it refused and where its traffic went
(docs/network.md), on the SDK."""
from __future__ import annotations

import os
import sys
from typing import Any, List, Optional

import typer

from sandboxd.cli.common import WIDE, client, fail, handles_errors, print_json, table, when

app = typer.Typer(no_args_is_help=True)

REFUSALS_SHOWN = 20  # the server keeps the latest 256; a terminal wants the newest few, --json has them all


@app.command()
@handles_errors
def show(sandbox_id: str, as_json: bool = typer.Option(False, "--json"), wide: bool = WIDE) -> None:
    """Show a sandbox's egress policy, what it refused, and its traffic per destination.

    Refusals are the newest connections refused by name; traffic is counted over the last hour."""
    with client() as c:
        info = c.get_network(sandbox_id)
    if as_json:
        return print_json(info)
    _print(info)


@app.command("set")
@handles_errors
def set_(sandbox_id: str,
         allow: Optional[List[str]] = typer.Option(None, "--allow", help="address, CIDR or host name "
                                                   "(example.com, *.example.com) let out; repeatable"),
         deny: Optional[List[str]] = typer.Option(None, "--deny", help="the same, refused unless allowed; "
                                                  "0.0.0.0/0 is all traffic; repeatable"),
         header: Optional[List[str]] = typer.Option(None, "--header", help="HOST:NAME=VALUE, a header set on the "
                                                    "plain-HTTP requests to HOST; repeatable"),
         dns: Optional[List[str]] = typer.Option(None, "--dns", help="DNS server address; repeatable"),
         no_internet: bool = typer.Option(False, "--no-internet", help="deny all traffic but --allow "
                                          "(the same as --deny 0.0.0.0/0)"),
         proxy: Optional[str] = typer.Option(None, "--proxy", help="HOST:PORT of a SOCKS5 proxy the sandbox's "
                                             "TCP goes out through (credentials: SANDBOXD_PROXY_USER, "
                                             "SANDBOXD_PROXY_PASSWORD)"),
         proxy_tls: bool = typer.Option(False, "--proxy-tls", help="speak TLS to the --proxy"),
         as_json: bool = typer.Option(False, "--json"), wide: bool = WIDE) -> None:
    """Replace a sandbox's whole egress policy, then show it as `show` does.

    What is not given is cleared: `set ID` alone lets everything out again. The sandbox's new connections
    meet the policy once this returns. An allow-list: `--allow api.example.com --no-internet`."""
    with client() as c:
        info = c.update_network(sandbox_id, allow_out=allow or None, deny_out=deny or None,
                                rules=_rules(header), dns_servers=dns or None,
                                allow_internet_access=False if no_internet else None,
                                egress_proxy=_proxy(proxy, proxy_tls))
    if as_json:
        return print_json(info)
    _print(info)


def _rules(headers: list[str] | None) -> dict[str, list[dict[str, Any]]] | None:
    """--header HOST:NAME=VALUE options as E2B's rules: host → [{"transform": {"headers": {NAME: VALUE}}}].
    Host names hold no ':' (the policy has no IPv6) and header names no '=', so the first of each splits."""
    if not headers:
        return None
    by_host: dict[str, dict[str, str]] = {}
    for h in headers:
        host, _, pair = h.partition(":")
        name, sep, value = pair.partition("=")
        if not host or not name or not sep:
            fail(f"--header must look like HOST:NAME=VALUE, got {h!r}")
        by_host.setdefault(host.strip(), {})[name.strip()] = value
    return {host: [{"transform": {"headers": hs}}] for host, hs in by_host.items()}


def _proxy(address: str | None, tls: bool) -> dict[str, Any] | None:
    """--proxy as E2B's egress_proxy; its credentials come from the environment, never the command line (which
    other users of the host can read in the process list)."""
    if address is None:
        if tls:
            fail("--proxy-tls needs --proxy")
        return None
    out: dict[str, Any] = {"address": address}
    user, password = os.environ.get("SANDBOXD_PROXY_USER"), os.environ.get("SANDBOXD_PROXY_PASSWORD")
    if user:
        out["username"] = user
    if password:
        out["password"] = password
    if tls:
        out["tls"] = True
    return out


def _proxy_shown(proxy: dict[str, Any] | None) -> str:
    if not proxy:
        return "(none: straight out)"
    user = f"{proxy['username']}@" if proxy.get("username") else ""
    return f"socks5://{user}{proxy.get('address')}" + (" over TLS" if proxy.get("tls") else "")


def _listed(values: list[str] | None, empty: str) -> str:
    return ", ".join(values) if values else empty


def _header_names(rules: dict[str, list[dict[str, Any]]]) -> str:
    """Each host with the names of the headers set on its requests. Not their values: those are often
    credentials (what rules are for), and a table ends up in scrollback and screen shares; --json has them."""
    parts = []
    for host, rs in rules.items():
        names = [name for r in rs for name in (r.get("transform") or {}).get("headers") or {}]
        parts.append(f"{host}: {', '.join(names)}")
    return "; ".join(parts)


def _print(info) -> None:  # an SDK NetworkInfo
    table(["FIELD", "VALUE"], [["id", info.id], ["allow_out", _listed(info.allow_out, "(none)")],
                               ["deny_out", _listed(info.deny_out, "(none: all goes out)")],
                               ["dns_servers", _listed(info.dns_servers, "(default)")],
                               ["header rules", _header_names(info.rules) or "(none)"],
                               ["egress proxy", _proxy_shown(info.egress_proxy)]])
    d = info.denied
    sys.stdout.write(f"\nRefused by address since the sandbox started: {d.packets} packets, {d.bytes} bytes"
                     f"; addresses in the last hour: {_listed(d.destinations, 'none')}\n")
    # Newest last, next to the prompt, whatever order the server kept them in.
    shown = sorted(d.refusals, key=lambda r: r.time.timestamp() if r.time else 0.0)[-REFUSALS_SHOWN:]
    if shown:
        older = len(d.refusals) - len(shown)
        more = f"; {older} older in --json" if older else ""
        sys.stdout.write(f"\nRefused by name (times UTC, newest last{more}):\n")
        sys.stdout.flush()
        table(["TIME", "DESTINATION", "ADDRESS", "PORT", "REASON"],
              [[when(r.time), r.destination, r.address, r.port, r.reason] for r in shown])
    else:
        sys.stdout.write("\nNo connection refused by name.\n")
    if info.usage:
        sys.stdout.write("\nTraffic per destination, last hour:\n")
        sys.stdout.flush()
        table(["DESTINATION", "CONNECTIONS", "SENT", "RECEIVED", "DENIED"],
              [[u.destination, u.connections, u.bytes_sent, "-" if u.bytes_received is None else u.bytes_received,
                u.denied] for u in info.usage])
    else:
        sys.stdout.write("\nNo traffic counted in the last hour.\n")
