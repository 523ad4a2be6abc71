"""Compat suites: the official clients, unmodified, against a real `sandboxd serve`. Each suite runs on
the real crun backend where it runs (always in CI: a failure there if it cannot), else on the fake one
(support.real.client_backends)."""
from __future__ import annotations


import pytest

from support.real import client_backends
from support.server import IN_CI, real_problem, running_server


# Module scope: a server lives only while its module runs (session scope kept one per suite and
# backend alive until the very end of a full run).
@pytest.fixture(scope="module", params=client_backends())
def hopx_server(request, tmp_path_factory):
    if request.param == "crun" and (problem := real_problem()):
        if IN_CI:
            pytest.fail(f"real backend unavailable in CI: {problem}")
        pytest.skip(problem)
    # hopx-ai's Template().from_python_image() builds FROM python:<v>; no registry is reachable here, so
    # the operator maps it onto the local base.
    yield from running_server(tmp_path_factory, request.param, SANDBOXD_IMAGE_ALIASES="python=base")
