"""The payment routes of EAPI and SAPI are plain Starlette routes (``web.PlainRoute``,
no dependency solver); callers must not be able to tell: the metrics label is the route
template, a 405 lists exactly the path's methods (HEAD is not added to GET routes), and
errors keep the envelope and the request id."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute

from payapi.core.settings import Settings
from payapi.eapi.app import Metrics
from payapi.eapi.app import create_app as create_eapi
from payapi.eapi.cache import LocalLimiter, RateDecision
from payapi.sapi.app import create_app as create_sapi
from payapi.web import PlainRoute

PAYMENT = "/api/v1/payments/{payment_id}"


class _Cache:
    async def hit(self, checks: list[tuple[str, int]], now: float | None = None) -> RateDecision:
        return RateDecision(True)


class _Audit:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def emit(self, type_: str, **kw: Any) -> None:
        self.events.append((type_, kw))


def _eapi() -> tuple[Any, Metrics]:
    app = create_eapi(Settings())
    metrics = Metrics.create()
    # The deps a request reaches before it needs the vault: none of these requests
    # carries credentials, so each stops at 401 (or 405 before any route code runs).
    app.state.deps = SimpleNamespace(
        settings=Settings(),
        cache=_Cache(),
        local_limits=LocalLimiter(),
        metrics=metrics,
        audit=_Audit(),
    )
    return app, metrics


def _call(app: Any, method: str, path: str, **kw: Any) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            return await http.request(method, path, **kw)

    return asyncio.run(go())


def _counted(metrics: Metrics) -> dict[tuple[str, str], float]:
    out = {}
    for family in metrics.registry.collect():
        if family.name != "payapi_eapi_requests":
            continue
        for s in family.samples:
            if s.name.endswith("_total"):
                out[(s.labels["route"], s.labels["status"])] = s.value
    return out


def test_the_payment_routes_are_plain_and_the_others_unchanged() -> None:
    app, _ = _eapi()
    kinds = {getattr(r, "path", ""): type(r) for r in app.routes}
    assert kinds["/api/v1/payments"] is PlainRoute
    assert kinds[PAYMENT] is PlainRoute
    assert kinds["/api/v1/authenticate"] is APIRoute
    sapi = create_sapi(
        Settings.model_validate({"sapi": {"dsn": "postgresql://u@127.0.0.1:1/db"}}),
        service_auth=_FakeAuth(),  # type: ignore[arg-type]
    )
    sapi_kinds = {getattr(r, "path", ""): type(r) for r in sapi.routes}
    assert sapi_kinds["/api/internal/payments"] is PlainRoute
    assert sapi_kinds["/api/internal/payments/{payment_id}"] is PlainRoute
    assert sapi_kinds["/api/internal/audit"] is APIRoute


def test_the_metrics_label_is_the_route_template_not_the_path() -> None:
    app, metrics = _eapi()
    resp = _call(app, "GET", "/api/v1/payments/8f1c-not-a-real-id")
    assert resp.status_code == 401
    err = resp.json()["error"]
    assert err["code"] == "unauthorized" and err["request_id"] == resp.headers["x-request-id"]
    assert resp.headers["www-authenticate"]
    resp = _call(app, "POST", "/api/v1/payments", content=b"{}")
    assert resp.status_code == 401
    counted = _counted(metrics)
    assert counted == {(PAYMENT, "401"): 1.0, ("/api/v1/payments", "401"): 1.0}


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("HEAD", "/api/v1/payments/abc", "GET"),  # Starlette would add HEAD; FastAPI did not
        ("DELETE", "/api/v1/payments/abc", "GET"),
        ("GET", "/api/v1/payments", "POST"),
        ("PUT", "/api/v1/payments", "POST"),
    ],
)
def test_405_lists_exactly_the_methods_of_the_path(method: str, path: str, allow: str) -> None:
    app, metrics = _eapi()
    resp = _call(app, method, path)
    assert resp.status_code == 405
    assert resp.headers["allow"] == allow
    assert resp.headers["x-request-id"]
    if method != "HEAD":
        err = resp.json()["error"]
        assert (err["type"], err["code"]) == ("invalid_request_error", "method_not_allowed")
    template = PAYMENT if path.count("/") == 4 else "/api/v1/payments"
    assert _counted(metrics) == {(template, "405"): 1.0}


class _FakeAuth:
    has_cached_token = True

    async def verify(self, token: str) -> bool:
        return False

    async def start(self) -> None:
        return None

    async def check(self) -> bool:
        return True


def test_sapi_payment_routes_keep_auth_first_and_405() -> None:
    app = create_sapi(
        Settings.model_validate({"sapi": {"dsn": "postgresql://u@127.0.0.1:1/db"}}),
        service_auth=_FakeAuth(),  # type: ignore[arg-type]
    )
    resp = _call(app, "GET", "/api/internal/payments/abc", headers={"Authorization": "Bearer x"})
    assert resp.status_code == 401
    assert resp.json()["error"]["message"] == "invalid service token"
    assert resp.headers["www-authenticate"] == "Bearer"
    resp = _call(app, "POST", "/api/internal/payments", content=b"not json")
    assert resp.status_code == 401  # nothing is parsed before the caller is authenticated
    assert resp.json()["error"]["message"] == "service token required"
    for method, path, allow in (
        ("HEAD", "/api/internal/payments/abc", "GET"),
        ("GET", "/api/internal/payments", "POST"),
    ):
        resp = _call(app, method, path)
        assert resp.status_code == 405 and resp.headers["allow"] == allow
