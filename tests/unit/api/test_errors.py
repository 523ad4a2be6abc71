"""api/errors.py: the one table from domain errors to HTTP statuses and the error body both SDKs read."""
from __future__ import annotations

import inspect

import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient
from pydantic import BaseModel

from sandboxd import errors as E
from sandboxd.api import errors as api_errors
from sandboxd.api.errors import STATUS, PayloadTooLarge, error_body, install, status_for


def test_every_subclass_comes_before_its_base_classes():
    # status_for takes the first isinstance match: a base class listed first would shadow its subclasses.
    for i, (cls, _) in enumerate(STATUS):
        for later, _ in STATUS[i + 1:]:
            assert not issubclass(later, cls), f"{later.__name__} is listed after its base {cls.__name__}"


def test_every_domain_error_has_a_row():
    listed = {cls for cls, _ in STATUS}
    domain = {c for _, c in inspect.getmembers(E, inspect.isclass) if issubclass(c, E.SandboxdError)}
    # A class without its own row answers with its nearest listed base: that must be a deliberate choice.
    for cls in domain - listed:
        assert any(issubclass(cls, base) for base in listed - {E.SandboxdError}), cls.__name__


@pytest.mark.parametrize("exc, status", [
    (PayloadTooLarge("big"), 413), (E.Invalid("x"), 400), (E.NotFound("x"), 404), (E.Conflict("x"), 409),
    (E.Unauthorized("x"), 401), (E.Forbidden("x"), 403), (E.RateLimited("x"), 429),
    (E.CapacityExceeded("x"), 503), (E.NotSupported("x"), 501), (E.BuildFailed("x"), 400),
    (E.RuntimeFailure("x"), 500), (E.SandboxdError("x"), 500),
])
def test_status_for(exc, status):
    assert status_for(exc) == status


def test_the_body_carries_the_error_as_an_object_and_at_the_top_level():
    body = error_body(404, "not_found", "no such sandbox", "req_1", {"id": "sb"})
    inner = {"message": "no such sandbox", "code": "not_found", "request_id": "req_1", "details": {"id": "sb"}}
    assert body == {"error": inner, **inner}
    assert error_body(500, "internal_error", "m", "req_2")["details"] == {}


class Body(BaseModel):
    n: int


@pytest.fixture
def client():
    app = FastAPI()
    install(app)

    @app.middleware("http")
    async def request_id(request: Request, call_next):
        request.state.request_id = request.headers.get("x-test-rid", "req_test")
        return await call_next(request)

    @app.get("/raise/{kind}")
    async def raise_(kind: str):
        raise {
            "rate": E.RateLimited("slow down", details={"retry_after_seconds": 7}),
            "full": E.CapacityExceeded("no room", details={"retry_after_seconds": 3}),
            "full-no-hint": E.CapacityExceeded("no room"),
            "conflict": E.Conflict("taken", details={"retry_after_seconds": 9}),
            "custom-code": E.Invalid("bad name", code="invalid_name"),
            "bug": ValueError("boom"),
        }[kind]

    @app.post("/body")
    async def body(b: Body):
        return b

    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def test_retry_after_on_429_and_503_only(client):
    r = client.get("/raise/rate")
    assert (r.status_code, r.headers["retry-after"], r.json()["code"]) == (429, "7", "rate_limited")
    r = client.get("/raise/full")
    assert (r.status_code, r.headers["retry-after"], r.json()["code"]) == (503, "3", "capacity_exceeded")
    assert "retry-after" not in client.get("/raise/full-no-hint").headers
    r = client.get("/raise/conflict")
    assert r.status_code == 409 and "retry-after" not in r.headers


def test_every_error_answer_names_the_request(client):
    r = client.get("/raise/custom-code", headers={"x-test-rid": "req_abc"})
    assert r.status_code == 400 and r.headers["x-request-id"] == "req_abc"
    assert r.json()["error"] == {"message": "bad name", "code": "invalid_name", "request_id": "req_abc",
                                 "details": {}}
    missing = client.get("/no/such/route")
    assert missing.status_code == 404 and missing.json()["message"] == "no route for GET /no/such/route"
    assert missing.headers["x-request-id"] == "req_test"


def test_validation_errors_name_the_field_and_bad_json(client):
    r = client.post("/body", json={"n": "x"})
    assert r.status_code == 400 and r.json()["code"] == "invalid_request"
    assert r.json()["message"].startswith("n: ") and r.json()["details"]["errors"][0]["loc"] == ["body", "n"]
    r = client.post("/body", content=b"{", headers={"content-type": "application/json"})
    assert (r.status_code, r.json()["code"]) == (400, "invalid_json")


def test_an_unexpected_exception_is_a_500_without_its_text(client):
    r = client.get("/raise/bug")
    assert r.status_code == 500 and r.json()["code"] == "internal_error" and "boom" not in r.text


def test_request_id_without_a_request():
    assert api_errors.request_id_of(None) == "req_unknown"
