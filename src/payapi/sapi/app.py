"""Payment-SAPI: the internal system API that persists payments in PostgreSQL.

Only authenticated services (Payment-EAPI) may call it; see :mod:`payapi.sapi.auth`.
Startup migrates ``payment_db`` (:mod:`payapi.sapi.migrate`) and opens a pool sized by
``settings.sapi.pool_min/pool_max``; neither a database nor a vault outage at startup
stops the process (it answers 503 until they are back).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

from fastapi import FastAPI

from payapi.core.logs import get_logger
from payapi.core.settings import ConfigError, Settings
from payapi.sapi import service
from payapi.sapi.auth import ServiceAuth
from payapi.sapi.db import Database
from payapi.sapi.routes import SapiState, build_router
from payapi.web import install_error_handlers

log = get_logger("payapi.sapi")

PURGE_EVERY_SECONDS = 3600.0


def database_dsn(settings: Settings) -> str:
    dsn = settings.sapi.dsn or settings.postgres.payment_dsn
    if not dsn:
        raise ConfigError("sapi: no database configured (sapi.dsn or postgres.payment_dsn)")
    return dsn


async def _purge_loop(state: SapiState) -> None:
    """Forget old idempotency keys every hour (idempotent, so every replica may run it)."""
    while True:
        await asyncio.sleep(PURGE_EVERY_SECONDS)
        if not state.db.ready:
            continue
        try:
            purged = await service.purge_idempotency_keys(
                state.db.pool, retention=state.idempotency_retention
            )
        except Exception as exc:
            log.warning("idempotency_purge_failed", error_type=type(exc).__name__)
        else:
            if purged:
                log.info("idempotency_keys_purged", count=purged)


def create_app(
    settings: Settings,
    *,
    service_auth: ServiceAuth | None = None,
    idempotency_retention: timedelta = service.DEFAULT_IDEMPOTENCY_RETENTION,
) -> FastAPI:
    """Build the SAPI application.

    ``service_auth`` replaces the vault-backed token check (tests, or a caller that
    manages it); when it is given, the caller also closes it. Without it, the vault
    settings must be complete (the API key file is read here, so a bad path fails now).
    """
    if idempotency_retention < service.MIN_IDEMPOTENCY_RETENTION:
        raise ConfigError(
            f"sapi: idempotency retention must be at least {service.MIN_IDEMPOTENCY_RETENTION}"
        )
    owns_auth = service_auth is None
    auth = service_auth if service_auth is not None else ServiceAuth.from_settings(settings)
    db = Database(
        database_dsn(settings), min_size=settings.sapi.pool_min, max_size=settings.sapi.pool_max
    )
    state = SapiState(
        settings=settings, db=db, auth=auth, idempotency_retention=idempotency_retention
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await asyncio.gather(db.start(), auth.start())
        purge = asyncio.create_task(_purge_loop(state))
        log.info("sapi_started", database=db.ready)
        try:
            yield
        finally:
            purge.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await purge
            await db.close()
            if owns_auth:
                await auth.aclose()
            log.info("sapi_stopped")

    app = FastAPI(
        title="Payment-SAPI",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    install_error_handlers(app, challenge='Bearer realm="payment-sapi"')
    app.state.sapi = state
    # The routes themselves, not include_router: FastAPI's included-router layer wraps
    # every route and rebuilds a plain Starlette route (the payment routes, PlainRoute)
    # as a starlette Route, which would add HEAD and lose scope["route"].
    app.router.routes.extend(build_router(state).routes)
    return app
