"""The agent's error tables: every wire adapter answers the shared vocabulary (`sandboxd.errors`) from its
one table, looked up along the class hierarchy, and no error class carries an HTTP status of its own."""
from __future__ import annotations

import importlib
import inspect

import pytest

from sandboxd import errors as ground
from sandboxd.agent import errors as agent
from sandboxd.agent.desktop import errors as desktop
from sandboxd.agent.envd import errors as envd


@pytest.mark.parametrize("exc, status, code", [
    (agent.FileNotFound("x", path="/p"), 404, "FILE_NOT_FOUND"),
    (agent.PathNotAllowed("x"), 403, "PATH_NOT_ALLOWED"),
    (agent.FileExists("x"), 409, "FILE_ALREADY_EXISTS"),
    (agent.BodyTooLarge("x"), 413, "INVALID_REQUEST"),
    (agent.MethodNotAllowed("x"), 405, "METHOD_NOT_ALLOWED"),
    (agent.CannotFork("x"), 503, "INTERNAL_ERROR"),
    (agent.PortNotOpen("x"), 502, "port_not_open"),
    (ground.Invalid("x", code="invalid_argument"), 400, "invalid_argument"),
    (ground.RuntimeFailure("x"), 500, "runtime_error"),
    (desktop.DesktopNotAvailable(["xdotool"]), 501, "DESKTOP_NOT_AVAILABLE"),
    (desktop.DesktopNotFound("x"), 404, "NOT_FOUND"),
    (desktop.DesktopToolFailed("x"), 500, "DESKTOP_ERROR"),
])
def test_hopx_table(exc, status, code):
    assert (agent.status_of(exc), exc.code) == (status, code)


@pytest.mark.parametrize("exc, connect_code, http_status", [
    (ground.NotFound("x"), "not_found", 404),
    (ground.Invalid("x"), "invalid_argument", 400),
    (envd.FailedPrecondition("x"), "failed_precondition", 400),
    (ground.Unauthorized("x"), "unauthenticated", 401),
    (ground.Forbidden("x"), "permission_denied", 403),
    (agent.PermissionDenied("x"), "permission_denied", 401),  # envd's answer to a file it may not touch
    (ground.Conflict("x"), "already_exists", 500),
    (agent.CannotFork("x"), "resource_exhausted", 500),
    (envd.DiskFull("x"), "internal", 507),
    (agent.BodyTooLarge("x"), "resource_exhausted", 413),
])
def test_envd_tables(exc, connect_code, http_status):
    answer = envd.to_connect(exc)
    assert (answer.code, answer.message) == (connect_code, "x")
    assert envd.http_status(exc) == http_status


def test_envd_answers_python_faults_and_leaves_the_unexpected_to_the_codec():
    assert envd.to_connect(PermissionError("no")).code == "permission_denied"
    assert envd.to_connect(KeyError("k")).code == "invalid_argument"
    assert envd.to_connect(RuntimeError("boom")) is None


@pytest.mark.parametrize("module", ["sandboxd.agent.errors", "sandboxd.agent.envd.errors",
                                    "sandboxd.agent.desktop.errors"])
def test_error_classes_know_no_http(module):
    for _, cls in inspect.getmembers(importlib.import_module(module), inspect.isclass):
        if issubclass(cls, Exception) and cls.__module__ == module:
            assert issubclass(cls, ground.SandboxdError), cls
            assert not hasattr(cls, "status"), cls
