"""What package managers need to reach the network during a build, taken from the host, for the build only.

This machine reaches PyPI/npm/apt through a TLS-intercepting proxy, so installs need the host's CA
bundle and proxy variables. They are lent to a build (a read-only bind + environment variables of the
exec) and never written into an image.
"""
from __future__ import annotations

import configparser
import os
from pathlib import Path

HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
# Where a build sandbox sees the host's CA bundle (a read-only bind mount, absent from every layer).
BUILD_CA_PATH = "/etc/ssl/certs/sandboxd-build-ca.crt"

_PROXY_VARS = ("http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "all_proxy", "ALL_PROXY")
# pip settings that describe the network (not the host's local wheel dirs, which a sandbox cannot see).
_PIP_VARS = ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_TRUSTED_HOST", "PIP_DEFAULT_TIMEOUT")
_NPM_VARS = ("NPM_CONFIG_REGISTRY", "npm_config_registry")


def host_ca_bundle() -> Path | None:
    for var in ("SANDBOXD_BUILD_CA_BUNDLE", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE", "PIP_CERT"):
        value = os.environ.get(var)
        if value and Path(value).is_file():
            return Path(value)
    return HOST_CA_BUNDLE if HOST_CA_BUNDLE.is_file() else None


def _network_only(value: str) -> str:
    # file:// indexes live on the host only; keep the http(s) ones.
    return " ".join(u for u in value.split() if not u.startswith("file:"))


def host_pip_config() -> dict[str, str]:
    """index-url / extra-index-url / trusted-host from the host's pip config files, as PIP_* variables."""
    files = [Path("/etc/pip.conf"), Path("/etc/xdg/pip/pip.conf"), Path.home() / ".pip/pip.conf",
             Path.home() / ".config/pip/pip.conf"]
    if os.environ.get("PIP_CONFIG_FILE"):
        files.append(Path(os.environ["PIP_CONFIG_FILE"]))
    parser = configparser.RawConfigParser()
    try:
        parser.read([f for f in files if f.is_file()])
    except configparser.Error:
        return {}
    out: dict[str, str] = {}
    for section in ("global", "install"):
        for key in ("index-url", "extra-index-url", "trusted-host"):
            if parser.has_option(section, key):
                out["PIP_" + key.upper().replace("-", "_")] = " ".join(parser.get(section, key).split())
    return out


def build_env(ca_inside: str | None = BUILD_CA_PATH) -> dict[str, str]:
    """Environment for one build exec: proxy + pip index settings from the host, CA variables pointing at ca_inside."""
    env: dict[str, str] = {}
    for var in _PROXY_VARS + _NPM_VARS:
        if os.environ.get(var):
            env[var] = os.environ[var]
    pip_conf = host_pip_config()
    for var in _PIP_VARS:
        value = _network_only(os.environ.get(var) or pip_conf.get(var, ""))
        if value:
            env[var] = value
    if ca_inside:
        for var in ("PIP_CERT", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE", "CURL_CA_BUNDLE", "NODE_EXTRA_CA_CERTS",
                    "GIT_SSL_CAINFO", "npm_config_cafile"):
            env[var] = ca_inside
    return env
