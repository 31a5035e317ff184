"""Payment-EAPI: the external API. Authenticates clients, limits rates, forwards to SAPI.

Routes are thin; the decisions live in ``verifier`` (who is this?), ``cache`` (tokens and
limits) and SAPI (the payment itself). Every failure answers with the error envelope.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import orjson
from fastapi import FastAPI, Request
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from pydantic import ValidationError
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from payapi.core.logs import get_logger
from payapi.core.settings import Settings, read_secret_file
from payapi.eapi import openapi
from payapi.eapi.audit_sink import AuditSink
from payapi.eapi.cache import Cache, CacheDown, LocalLimiter, RateDecision
from payapi.eapi.sapi_client import SapiClient, SapiUnavailable
from payapi.eapi.verifier import ClientVerifier, DependencyDown
from payapi.schemas import MalformedJSON, PaymentCreate
from payapi.vault.client import VaultClient
from payapi.web import (
    ApiError,
    JSONResponse,
    PlainRoute,
    error_response,
    install_error_handlers,
    read_body,
    request_id,
    validation_error,
)

log = get_logger("payapi.eapi")

MAX_BODY_BYTES = 16 * 1024


@dataclass
class Metrics:
    registry: CollectorRegistry
    requests: Counter
    latency: Histogram
    auth_failures: Counter
    degraded: Counter

    @classmethod
    def create(cls) -> Metrics:
        reg = CollectorRegistry()
        return cls(
            registry=reg,
            requests=Counter(
                "payapi_eapi_requests", "EAPI requests", ["route", "status"], registry=reg
            ),
            latency=Histogram(
                "payapi_eapi_request_seconds",
                "EAPI request latency",
                ["route"],
                registry=reg,
                buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            ),
            auth_failures=Counter(
                "payapi_eapi_auth_failures", "Rejected credentials", ["reason"], registry=reg
            ),
            degraded=Counter(
                "payapi_eapi_degraded_requests",
                "Requests served while a dependency was down",
                ["dependency"],
                registry=reg,
            ),
        )


@dataclass
class Deps:
    settings: Settings
    vault: VaultClient
    cache: Cache
    sapi: SapiClient
    verifier: ClientVerifier
    audit: AuditSink
    local_limits: LocalLimiter
    metrics: Metrics


class MetricsMiddleware:
    """Requests and latency per route, as pure ASGI.

    Not ``@app.middleware("http")``: Starlette's BaseHTTPMiddleware runs every request in
    an extra task with memory streams; with it, EAPI spent 1.39 instead of 0.58 ms of CPU
    per payment (docs/benchmarks.md). Like before, a request whose exception escapes every
    handler is not counted here (the 500 is answered further out).
    """

    def __init__(self, app: ASGIApp, state: Any) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 0

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        await self.app(scope, receive, send_status)
        deps: Deps | None = getattr(self.state, "deps", None)
        if deps is not None and status:
            path = getattr(scope.get("route"), "path", "unmatched")
            deps.metrics.requests.labels(path, str(status)).inc()
            deps.metrics.latency.labels(path).observe(time.perf_counter() - start)


def _deps(request: Request) -> Deps:
    deps: Deps = request.app.state.deps
    return deps


def _client_ip(request: Request) -> str:
    return request.client.host if request.client else "unknown"


async def _rate_limit(deps: Deps, checks: list[tuple[str, int]]) -> None:
    rl = deps.settings.eapi.rate_limit
    if not rl.enabled:
        return
    decision: RateDecision
    try:
        decision = await deps.cache.hit(checks)
    except CacheDown:
        decision = deps.local_limits.hit(checks)
    if not decision.allowed:
        raise _too_many(decision.retry_after)


def _unauthorized(deps: Deps, request: Request, reason: str, client_id: str | None) -> ApiError:
    deps.metrics.auth_failures.labels(reason).inc()
    deps.audit.emit(
        "auth.failure",
        actor=client_id or "anonymous",
        subject=request.url.path,
        details={"reason": reason, "ip": _client_ip(request), "request_id": request_id(request)},
    )
    return ApiError(401, "authentication_error", "unauthorized", "invalid or missing credentials")


def _unavailable(deps: Deps, dependency: str) -> ApiError:
    deps.metrics.degraded.labels(dependency).inc()
    return ApiError(
        503,
        "service_unavailable",
        "dependency_unavailable",
        f"cannot verify credentials right now ({dependency} unavailable); retry later",
        headers={"Retry-After": "5"},
    )


async def _verify_headers(deps: Deps, request: Request) -> str:
    client_id = request.headers.get("x-client-id")
    secret = request.headers.get("x-client-secret")
    if not client_id or not secret:
        raise _unauthorized(deps, request, "missing_credentials", client_id)
    try:
        ok = await deps.verifier.verify(client_id, secret)
    except DependencyDown as exc:
        raise _unavailable(deps, exc.dependency) from None
    if not ok:
        raise _unauthorized(deps, request, "bad_client_credentials", client_id)
    return client_id


def _too_many(retry_after: int) -> ApiError:
    return ApiError(
        429,
        "rate_limit_error",
        "rate_limited",
        "too many requests; retry later",
        headers={"Retry-After": str(retry_after)},
    )


async def _admit_headers(deps: Deps, request: Request, ip: str) -> str | None:
    """Header credentials with rate limits on, in one Redis round trip when the
    verification is cached (``Cache.admit``): the IP counter, the cached verification and
    the client counter, in the order and with the answers of the separate steps in
    :func:`authenticate_caller`. None: take those separate steps instead (no credentials,
    no cache key, or Redis down: with the breaker now open they degrade as they always did).
    """
    client_id = request.headers.get("x-client-id")
    secret = request.headers.get("x-client-secret")
    if not client_id or not secret:
        return None
    verifier = deps.verifier
    now = verifier.clock()
    mac = await verifier.mac(client_id, secret)
    if mac is None:
        return None
    rl = deps.settings.eapi.rate_limit
    client_scope = f"client:{client_id}"
    try:
        adm = await deps.cache.admit(
            f"ip:{ip}", rl.per_ip_per_minute, client_id, mac, client_scope, now
        )
    except CacheDown:
        return None
    if adm.ip_count > rl.per_ip_per_minute:
        raise _too_many(adm.retry_after)
    if adm.blocked:  # breach containment: refused before anything else is asked
        raise _unauthorized(deps, request, "bad_client_credentials", client_id)
    if adm.client_count is not None:  # a valid cached verification; the client counted
        if adm.client_count > rl.per_client_per_minute:
            raise _too_many(adm.retry_after)
        return client_id
    try:
        ok = await verifier.verify_with_vault(
            client_id, secret, now, mac=mac, generation=adm.generation
        )
    except DependencyDown as exc:
        raise _unavailable(deps, exc.dependency) from None
    if not ok:
        raise _unauthorized(deps, request, "bad_client_credentials", client_id)
    await _rate_limit(deps, [(client_scope, rl.per_client_per_minute)])
    return client_id


async def _admit_bearer(deps: Deps, request: Request, ip: str, token: str) -> str | None:
    """A bearer token with rate limits on, in one Redis round trip (``Cache.admit_token``):
    the IP counter, the token and the client counter, in the order and with the answers of
    the separate steps in :func:`authenticate_caller`. None: Redis is down, so take those
    steps instead (the breaker is now open: the local IP limiter, then 503)."""
    rl = deps.settings.eapi.rate_limit
    now = time.time()
    try:
        adm = await deps.cache.admit_token(f"ip:{ip}", rl.per_ip_per_minute, token, now)
    except CacheDown:
        return None
    if adm.ip_count > rl.per_ip_per_minute:
        raise _too_many(adm.retry_after)
    if adm.client_id is None:
        raise _unauthorized(deps, request, "invalid_token", None)
    if adm.client_count is not None and adm.client_count > rl.per_client_per_minute:
        raise _too_many(adm.retry_after)
    return adm.client_id


async def authenticate_caller(deps: Deps, request: Request) -> str:
    """The client id of the caller: a bearer token, or the seed's two headers."""
    ip = _client_ip(request)
    rl = deps.settings.eapi.rate_limit
    auth = request.headers.get("authorization")
    bearer = auth is not None and auth[:7].lower() == "bearer "
    if rl.enabled:
        admitted: str | None = None
        if not bearer:
            admitted = await _admit_headers(deps, request, ip)
        elif auth is not None and (token := auth[7:].strip()):
            admitted = await _admit_bearer(deps, request, ip, token)
        if admitted is not None:
            return admitted
    await _rate_limit(deps, [(f"ip:{ip}", rl.per_ip_per_minute)])
    if auth is not None and bearer:
        token = auth[7:].strip()
        try:
            client_id = await deps.cache.token_client(token) if token else None
        except CacheDown:
            # Tokens live only in Redis: we cannot tell valid from revoked, so 503, never
            # a 401 for a valid token and never a 200 for a revoked one.
            raise _unavailable(deps, "redis") from None
        if client_id is None:
            raise _unauthorized(deps, request, "invalid_token", None)
    else:
        client_id = await _verify_headers(deps, request)
    await _rate_limit(deps, [(f"client:{client_id}", rl.per_client_per_minute)])
    return client_id


def parse_payment(body: bytes) -> PaymentCreate:
    """Validate at the edge, with the same model SAPI uses (400 vs 422 as the contract)."""
    try:
        return PaymentCreate.from_json(body)
    except MalformedJSON:
        raise ApiError(
            400, "invalid_request_error", "malformed_json", "body is not valid JSON"
        ) from None
    except ValidationError as exc:
        raise validation_error(exc) from None


# SAPI's answer headers that are part of EAPI's contract too (docs/openapi/eapi.json).
_FORWARDED_HEADERS = ("idempotent-replayed", "retry-after")


def _forward(resp: Any) -> Response:
    headers = {
        name: value for name in _FORWARDED_HEADERS if (value := resp.headers.get(name)) is not None
    }
    return Response(
        content=resp.content,
        status_code=resp.status_code,
        media_type="application/json",
        headers=headers,
    )


def create_app(
    settings: Settings,
    *,
    vault: VaultClient | None = None,
    cache: Cache | None = None,
) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        v = vault or VaultClient(
            settings.vault.endpoints(),
            settings.vault.account,
            settings.eapi.vault_login,
            read_secret_file(settings.eapi.vault_api_key_file, "EAPI vault API key"),
        )
        c = cache or Cache.from_settings(settings.redis)
        sapi = SapiClient(settings.sapi.url, v, timeout=settings.eapi.sapi_timeout_seconds)
        audit = AuditSink(sapi)
        deps = Deps(
            settings=settings,
            vault=v,
            cache=c,
            sapi=sapi,
            verifier=ClientVerifier(v, c, cache_seconds=settings.eapi.verification_cache_seconds),
            audit=audit,
            local_limits=LocalLimiter(),
            metrics=Metrics.create(),
        )
        app.state.deps = deps
        try:
            yield
        finally:
            await audit.drain(timeout=2.0)
            await sapi.aclose()
            if cache is None:
                await c.aclose()
            if vault is None:
                await v.aclose()

    app = FastAPI(
        title="Payment-EAPI",
        version="1",
        lifespan=lifespan,
        default_response_class=JSONResponse,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    install_error_handlers(app, challenge=openapi.CHALLENGE)

    app.add_middleware(MetricsMiddleware, state=app.state)

    @app.post("/api/v1/authenticate")
    async def authenticate(request: Request) -> JSONResponse:
        deps = _deps(request)
        rl = deps.settings.eapi.rate_limit
        await _rate_limit(
            deps, [(f"auth-ip:{_client_ip(request)}", rl.authenticate_per_ip_per_minute)]
        )
        client_id = await _verify_headers(deps, request)
        token = secrets.token_urlsafe(32)
        ttl = deps.settings.eapi.token_ttl_seconds
        try:
            await deps.cache.store_token(token, client_id, ttl)
        except CacheDown:
            raise _unavailable(deps, "redis") from None
        return JSONResponse({"access_token": token, "token_type": "Bearer", "expires_in": ttl})

    @app.post("/api/v1/revoke")
    async def revoke(request: Request) -> JSONResponse:
        """The presented bearer token revokes itself (logout; RFC 7009 in spirit)."""
        deps = _deps(request)
        client_id = await authenticate_caller(deps, request)
        auth = request.headers.get("authorization") or ""
        if auth[:7].lower() != "bearer ":
            raise ApiError(
                400, "invalid_request_error", "bearer_required", "send the token to revoke"
            )
        try:
            revoked = await deps.cache.revoke_token(auth[7:].strip())
        except CacheDown:
            raise _unavailable(deps, "redis") from None
        deps.audit.emit(
            "token.revoked",
            actor=client_id,
            subject=client_id,
            details={"request_id": request_id(request)},
        )
        return JSONResponse({"revoked": revoked})

    # The two payment routes are plain Starlette routes (web.PlainRoute): no dependency
    # solver per request; same answers, envelope, 405 Allow and metrics label.
    async def create_payment(request: Request) -> Response:
        deps = _deps(request)
        client_id = await authenticate_caller(deps, request)
        body = await read_body(
            request,
            MAX_BODY_BYTES,
            error=lambda: ApiError(
                413, "invalid_request_error", "payload_too_large", "body too large"
            ),
        )
        payment = parse_payment(body)
        headers = {"X-Client-ID": client_id, "X-Request-ID": request_id(request)}
        idem = request.headers.get("idempotency-key")
        if idem is not None:
            headers["Idempotency-Key"] = idem
        try:
            resp = await deps.sapi.request(
                "POST",
                "/api/internal/payments",
                headers=headers,
                content=payment.canonical(),
            )
        except SapiUnavailable:
            raise _unavailable(deps, "payment-sapi") from None
        if resp.status_code >= 500 or resp.status_code == 401:
            log.error("sapi_error", status=resp.status_code, request_id=request_id(request))
            raise _unavailable(deps, "payment-sapi")
        return _forward(resp)

    async def get_payment(request: Request) -> Response:
        payment_id: str = request.path_params["payment_id"]
        deps = _deps(request)
        client_id = await authenticate_caller(deps, request)
        try:
            resp = await deps.sapi.request(
                "GET",
                f"/api/internal/payments/{payment_id}",
                headers={"X-Client-ID": client_id, "X-Request-ID": request_id(request)},
            )
        except SapiUnavailable:
            raise _unavailable(deps, "payment-sapi") from None
        if resp.status_code >= 500 or resp.status_code == 401:
            raise _unavailable(deps, "payment-sapi")
        return _forward(resp)

    app.router.routes.append(PlainRoute("/api/v1/payments", create_payment, methods=["POST"]))
    app.router.routes.append(
        PlainRoute("/api/v1/payments/{payment_id}", get_payment, methods=["GET"])
    )

    @app.get("/api/health")
    async def health(request: Request) -> JSONResponse:
        deps = _deps(request)
        redis_ok, vault_ok, sapi_ok = await asyncio.gather(
            deps.cache.ping(), deps.vault.health(), deps.sapi.health()
        )
        checks = {
            "redis": "ok" if redis_ok else "down",
            "vault": "ok" if vault_ok else "down",
            "sapi": "ok" if sapi_ok else "down",
        }
        serving = sapi_ok and (redis_ok or vault_ok)
        status = "ok" if all((redis_ok, vault_ok, sapi_ok)) else "degraded"
        if not serving:
            status = "down"
        if serving:
            return JSONResponse({"status": status, "checks": checks})
        # The error envelope, plus the keys of a healthy answer for monitors.
        down = ", ".join(name for name, value in checks.items() if value == "down")
        resp = error_response(request, 503, "service_unavailable", "unhealthy", f"down: {down}")
        body = orjson.loads(resp.body)
        body.update({"status": status, "checks": checks})
        return JSONResponse(body, status_code=503)

    @app.get("/metrics")
    async def metrics(request: Request) -> Response:
        deps = _deps(request)
        return Response(generate_latest(deps.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    # The routes read raw bodies, so FastAPI cannot infer the contract: it is written in
    # payapi.eapi.openapi and served as is (docs/openapi/eapi.json holds the same).
    contract = orjson.dumps(openapi.document())

    @app.get("/openapi.json", include_in_schema=False)
    async def openapi_document() -> Response:
        return Response(contract, media_type="application/json")

    return app
