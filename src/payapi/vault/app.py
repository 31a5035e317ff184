"""The vault server: a FastAPI app speaking the Conjur REST API.

``create_app`` reads the data key immediately, so a missing or malformed key fails before
a socket is opened. The lifespan opens the pool, applies migrations and checks that the
key is the one this database was sealed with; any of these failing stops the startup
with one clear message rather than a vault that answers 500s.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import parse_qsl

import asyncpg
from asyncpg.exceptions import TargetServerAttributeNotMatched
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from payapi import pgfailure
from payapi.core.logs import get_logger
from payapi.core.settings import ConfigError, Settings
from payapi.vault import availability, db, errors
from payapi.vault.crypto import DecryptionError, SecretCipher, load_data_key
from payapi.vault.routes import router
from payapi.vault.state import VaultState, get_state
from payapi.vault.tokens import TokenService
from payapi.web import (
    JSONResponse,
    RequestIdMiddleware,
    method_not_allowed_headers,
    request_id,
    with_challenge,
    with_request_id_header,
)

log = get_logger("payapi.vault.app")

STARTUP_CONNECT_SECONDS = 15.0
# What the startup waits out (PostgreSQL still starting, a standby whose active vault has
# not migrated yet) before it gives up with one line.
_STARTUP_RETRY = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.InterfaceError,
    TargetServerAttributeNotMatched,
    db.StandbyNotReady,
)
# The asyncpg errors a request may fail with: each goes through the one mapping of
# :func:`payapi.vault.availability.failure_error` (503) or is a bug (500).
_DATABASE_ERRORS = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.InternalClientError,
)


def vault_dsn(settings: Settings) -> str:
    dsn = settings.vault.dsn or settings.postgres.vault_dsn
    if not dsn:
        raise ConfigError("vault: no database configured (vault.dsn or postgres.vault_dsn)")
    return dsn


async def _open_pool(dsn: str, data_key: bytes) -> asyncpg.Pool[Any]:
    """Connect (retrying while PostgreSQL is still starting), migrate, check the key.

    On a standby database nothing is written: :func:`payapi.vault.db.prepare` only checks
    that the active vault migrated and sealed it, and waits for that (replication) until
    the deadline.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + STARTUP_CONNECT_SECONDS
    while True:
        pool: asyncpg.Pool[Any] | None = None
        try:
            connect = pgfailure.connect_writer_first if pgfailure.seeks_writer(dsn) else None
            pool = await asyncpg.create_pool(
                dsn, min_size=1, max_size=10, command_timeout=30, connect=connect
            )
            async with pool.acquire() as conn:
                await db.prepare(conn, data_key)
            return pool
        except _STARTUP_RETRY as exc:
            if pool is not None:
                await pool.close()
            if loop.time() >= deadline:
                if isinstance(exc, ConfigError):
                    raise
                raise ConfigError(
                    f"vault: cannot connect to its database ({type(exc).__name__})"
                ) from None
            await asyncio.sleep(0.5)
        except BaseException:
            if pool is not None:
                await pool.close()
            raise


def create_app(settings: Settings) -> FastAPI:
    data_key = load_data_key(settings.vault)
    dsn = vault_dsn(settings)
    state = VaultState(
        settings=settings.vault,
        dsn=dsn,
        cipher=SecretCipher.from_data_key(data_key),
        tokens=TokenService(data_key, ttl_seconds=settings.vault.token_ttl_seconds),
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        state.pool = await _open_pool(dsn, data_key)
        log.info("vault_started", account=settings.vault.account)
        try:
            yield
        finally:
            pool, state.pool = state.pool, None
            if pool is not None:
                await pool.close()

    app = FastAPI(
        title="payapi vault",
        description="A CyberArk Conjur compatible secrets server",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.vault = state
    app.include_router(router)
    app.add_middleware(RepeatedQueryGuard)
    install_error_handlers(app)
    return app


class RepeatedQueryGuard:
    """422 for a query parameter given twice (``?offset=1&offset=``): which one did the
    caller mean? Conjur's clients never repeat one; refusing beats guessing."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw = scope.get("query_string", b"") if scope["type"] == "http" else b""
        if raw:
            names = [k for k, _ in parse_qsl(raw.decode("latin-1"), keep_blank_values=True)]
            repeated = sorted({n for n in names if names.count(n) > 1})
            if repeated:
                rid = scope.get("state", {}).get("request_id", "")
                err = errors.unprocessable(f"query parameter given more than once: {repeated[0]}")
                await JSONResponse(err.body(rid), status_code=422)(scope, receive, send)
                return
        await self.app(scope, receive, send)


# What a 401 tells the client to send (Conjur's access-token scheme).
CHALLENGE = 'Token realm="payapi-vault"'


def _render(request: Request, exc: errors.ConjurError) -> Response:
    headers = with_challenge(exc.status, exc.headers, CHALLENGE)
    return JSONResponse(exc.body(request_id(request)), status_code=exc.status, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    """Every failure answers Conjur's error JSON; none echoes a header or a body."""
    app.add_middleware(RequestIdMiddleware)

    @app.exception_handler(errors.ConjurError)
    async def _conjur(request: Request, exc: errors.ConjurError) -> Response:
        return _render(request, exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> Response:
        return _render(request, errors.unprocessable("invalid request parameters"))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 404:
            err = errors.ConjurError(404, "not_found", "Not found")
        elif exc.status_code == 405:
            # RFC 9110: a 405 must list the methods of the path in Allow.
            err = errors.ConjurError(
                405,
                "method_not_allowed",
                "Method not allowed",
                headers=method_not_allowed_headers(request, exc.headers),
            )
        else:
            err = errors.ConjurError(
                exc.status_code, "error", str(exc.detail), headers=dict(exc.headers or {})
            )
        return _render(request, err)

    @app.exception_handler(DecryptionError)
    async def _decrypt(request: Request, exc: DecryptionError) -> Response:
        # The message names the variable and version only.
        log.error("vault_decryption_failed", error=str(exc), request_id=request_id(request))
        return _render(
            request, errors.ConjurError(500, "internal_error", "secret cannot be decrypted")
        )

    async def _database(request: Request, exc: Exception) -> Response:
        # The one place a request's database failure becomes an answer: a failover or a
        # standby is a 503 (never a 500), and connections to a dead or demoted leader go.
        err = availability.failure_error(exc)
        if err is None:
            raise exc  # a bug: the catch-all below answers 500 and keeps the traceback
        log.warning("vault_database_unavailable", error_type=type(exc).__name__)
        await availability.after_failure(get_state(request).pool, exc)
        return _render(request, err)

    for exc_type in _DATABASE_ERRORS:
        app.add_exception_handler(exc_type, _database)

    @app.exception_handler(Exception)
    async def _unhandled(request: Request, exc: Exception) -> Response:
        log.error(
            "vault_unhandled_error",
            error_type=type(exc).__name__,
            request_id=request_id(request),
        )
        response = _render(request, errors.ConjurError(500, "internal_error", "internal error"))
        return with_request_id_header(request, response)
