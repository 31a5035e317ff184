"""SAPI's HTTP routes: thin views over :mod:`payapi.sapi.service`.

Bodies are read raw and parsed with ``parse_float=Decimal`` (see :mod:`payapi.core.money`);
responses are built as plain dicts and serialized by orjson, keeping pydantic and float
conversions off the hot path.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any
from uuid import UUID

import orjson
from fastapi import APIRouter, Request
from pydantic import ValidationError
from starlette.responses import Response

from payapi import audit
from payapi.core.logs import get_logger
from payapi.core.settings import Settings
from payapi.sapi import service
from payapi.sapi.auth import ServiceAuth, ServiceAuthUnavailable
from payapi.sapi.db import Database, DatabaseUnavailable
from payapi.schemas import AuditEventCreate, MalformedJSON, PaymentCreate
from payapi.web import (
    ApiError,
    JSONResponse,
    PlainRoute,
    error_response,
    read_body,
    validation_error,
)

log = get_logger("payapi.sapi")

MAX_BODY_BYTES = 16 * 1024
_CLIENT_ID = re.compile(r"^[\x21-\x7e]{1,255}\Z")
_IDEMPOTENCY_KEY = re.compile(r"^[\x20-\x7e]{1,255}\Z")


@dataclass
class SapiState:
    settings: Settings
    db: Database
    auth: ServiceAuth
    idempotency_retention: timedelta
    # (client_id, idempotency_key) being processed by this process right now.
    in_flight: set[tuple[str, str]] = field(default_factory=set)


# -- small helpers ---------------------------------------------------------------------


def _unauthorized(message: str) -> ApiError:
    return ApiError(
        401,
        "authentication_error",
        "unauthorized",
        message,
        headers={"WWW-Authenticate": "Bearer"},
    )


def _unavailable(code: str, message: str) -> ApiError:
    return ApiError(503, "service_unavailable", code, message, headers={"Retry-After": "1"})


def _not_found() -> ApiError:
    return ApiError(404, "invalid_request_error", "not_found", "payment not found")


@asynccontextmanager
async def _database_errors(db: Database) -> AsyncIterator[None]:
    """The one place SAPI turns "the database is down, read-only (the writer moved) or
    overloaded" into a clean 503; a failover never surfaces as a 500. Anything else is a
    bug and keeps its traceback."""
    try:
        yield
    except DatabaseUnavailable:
        raise _unavailable("database_unavailable", "database unavailable") from None
    except Exception as exc:
        failure = await db.failed(exc)
        if failure is None:
            raise
        log.warning("database_error", error_type=type(exc).__name__, failure=failure.kind)
        raise _unavailable("database_unavailable", "database unavailable") from None


def _client_id(request: Request) -> str:
    value = request.headers.get("x-client-id")
    if value is None:
        raise ApiError(
            422,
            "validation_error",
            "invalid",
            "X-Client-ID header is required",
            param="X-Client-ID",
        )
    if not _CLIENT_ID.match(value):
        raise ApiError(
            422,
            "validation_error",
            "invalid",
            "X-Client-ID must be 1-255 printable ASCII characters",
            param="X-Client-ID",
        )
    return value


def _idempotency_key(request: Request) -> str | None:
    value = request.headers.get("idempotency-key")
    if value is None:
        return None
    if not _IDEMPOTENCY_KEY.match(value):
        raise ApiError(
            422,
            "validation_error",
            "invalid",
            "Idempotency-Key must be 1-255 printable ASCII characters",
            param="Idempotency-Key",
        )
    return value


async def _read_body(request: Request) -> bytes:
    return await read_body(
        request,
        MAX_BODY_BYTES,
        error=lambda: ApiError(
            413, "invalid_request_error", "payload_too_large", "request body too large"
        ),
    )


def _malformed() -> ApiError:
    return ApiError(400, "invalid_request_error", "malformed_json", "body is not valid JSON")


def _seq_and_hash(result: Any) -> tuple[int, str]:
    """Accept what ``payapi.audit.append`` returns: an object, a mapping or a pair."""
    if isinstance(result, Mapping):
        return int(result["seq"]), str(result["hash"])
    if isinstance(result, tuple) and len(result) == 2:
        return int(result[0]), str(result[1])
    return int(result.seq), str(result.hash)


# -- the routes ------------------------------------------------------------------------


def build_router(state: SapiState) -> APIRouter:
    auth = state.auth
    db = state.db
    in_flight = state.in_flight

    async def require_service(request: Request) -> None:
        header = request.headers.get("authorization")
        if not header:
            raise _unauthorized("service token required")
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise _unauthorized("service token required")
        try:
            ok = await auth.verify(token)
        except ServiceAuthUnavailable:
            raise _unavailable(
                "auth_unavailable", "the service token cannot be verified right now"
            ) from None
        if not ok:
            log.warning("service_token_rejected", path=request.url.path)
            raise _unauthorized("invalid service token")

    # One flat router, and the service check called first thing in every internal route
    # rather than as a FastAPI dependency: the dependency solver and the nested routers
    # were a measurable share of SAPI's CPU per payment (docs/benchmarks.md). Same order
    # as before: nothing is read or parsed before the caller is authenticated.
    router = APIRouter()

    @router.get("/api/internal-health")
    async def health(request: Request) -> Response:
        """Status only. 200 while SAPI can serve: with the vault down but the service token
        cached, callers are still authenticated (degraded mode), so it stays 200 with
        ``"status": "degraded"``; a readiness probe must not pull every replica out of
        service because of a vault outage. 503 when it cannot serve."""
        db_ok, vault_ok = await asyncio.gather(db.check(), auth.check())
        checks = {"database": "ok" if db_ok else "down", "vault": "ok" if vault_ok else "down"}
        if db_ok and vault_ok:
            return JSONResponse({"status": "ok", "checks": checks})
        if db_ok and auth.has_cached_token:
            return JSONResponse({"status": "degraded", "checks": checks})
        down = ", ".join(name for name, value in checks.items() if value == "down")
        resp = error_response(request, 503, "service_unavailable", "unhealthy", f"down: {down}")
        # The error envelope, plus the same keys as a healthy answer for monitors.
        body = orjson.loads(resp.body)
        body.update({"status": "down", "checks": checks})
        return JSONResponse(body, status_code=503)

    async def create_payment(request: Request) -> Response:
        await require_service(request)
        client_id = _client_id(request)
        key = _idempotency_key(request)
        raw = await _read_body(request)
        try:
            data = PaymentCreate.from_json(raw)
        except MalformedJSON:
            raise _malformed() from None
        except ValidationError as exc:
            raise validation_error(exc) from None
        slot = (client_id, key) if key is not None else None
        if slot is not None:
            # Another request of this process holds the key: answer now instead of
            # parking a pool connection on the row lock.
            if slot in in_flight:
                raise ApiError(
                    409,
                    "conflict_error",
                    "idempotency_key_in_flight",
                    "a request with this Idempotency-Key is still being processed",
                    param="Idempotency-Key",
                    headers={"Retry-After": "1"},
                )
            in_flight.add(slot)
        try:
            async with _database_errors(db):
                result = await service.create_payment(
                    db.pool, client_id=client_id, data=data, idempotency_key=key
                )
        except service.IdempotencyKeyReused:
            raise ApiError(
                409,
                "conflict_error",
                "idempotency_key_reused",
                "this Idempotency-Key was already used with a different request body",
                param="Idempotency-Key",
            ) from None
        finally:
            if slot is not None:
                in_flight.discard(slot)
        if result.created:
            return JSONResponse(result.body, status_code=201)
        return JSONResponse(result.body, status_code=200, headers={"Idempotent-Replayed": "true"})

    async def read_payment(request: Request) -> Response:
        payment_id: str = request.path_params["payment_id"]
        await require_service(request)
        client_id = _client_id(request)
        try:
            uid = UUID(payment_id)
        except ValueError:
            raise _not_found() from None
        async with _database_errors(db):
            body = await service.get_payment(db.pool, client_id=client_id, payment_id=uid)
        if body is None:
            raise _not_found()
        return JSONResponse(body)

    # The payment routes are plain Starlette routes (web.PlainRoute): no dependency
    # solver per request; same answers, envelope and 405 Allow. SAPI's app adds this
    # router's routes to its own (sapi.app), not through include_router.
    router.routes.append(PlainRoute("/api/internal/payments", create_payment, methods=["POST"]))
    router.routes.append(
        PlainRoute("/api/internal/payments/{payment_id}", read_payment, methods=["GET"])
    )

    @router.post("/api/internal/audit", status_code=201)
    async def append_audit(request: Request) -> Response:
        await require_service(request)
        raw = await _read_body(request)
        try:
            parsed = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise _malformed() from None
        try:
            event = AuditEventCreate.model_validate(parsed)
        except ValidationError as exc:
            raise validation_error(exc) from None
        async with _database_errors(db):
            try:
                result = await audit.append(
                    db.side_pool,
                    type=event.type,
                    actor=event.actor,
                    subject=event.subject,
                    details=event.details,
                    head_file=state.settings.audit.head_file,
                )
            except audit.AuditDetailsError as exc:
                raise ApiError(
                    422, "validation_error", "invalid", str(exc), param="details"
                ) from None
            except audit.AuditError:
                # The chain refuses to grow (head mismatch): an operator must look.
                log.error("audit_append_refused")
                raise _unavailable("audit_unavailable", "audit log refuses appends") from None
        seq, digest = _seq_and_hash(result)
        return JSONResponse({"seq": seq, "hash": digest}, status_code=201)

    return router
