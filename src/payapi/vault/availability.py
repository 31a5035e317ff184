"""The vault when its database is unavailable or read-only: a standby vault, failover.

A vault whose DSN accepts a standby (``target_session_attrs=any`` or ``prefer-standby``,
see :func:`payapi.pgfailure.accepts_standby`) and lands on a streaming standby is a
**standby vault**: it authenticates callers and serves secrets, and refuses writes (policy
loads, secret writes, key rotations) with one clear 503 until its database is promoted;
then it writes, without a restart, because the role is read from the database
(``pg_is_in_recovery()``) on every write and every health check, never remembered.

A vault whose DSN wants a writer (``read-write``) treats a read-only server as the old
leader of a failover: a 503, and the pool is expired so that the next connection finds
the new leader. Every database failure of a request is mapped here, in one place
(:func:`failure_error`); the app installs it as the handler of asyncpg's errors.
"""

from __future__ import annotations

from typing import Any, Literal

from payapi import pgfailure
from payapi.core.logs import get_logger
from payapi.vault import errors
from payapi.vault.db import Connection
from payapi.vault.state import VaultState

log = get_logger("payapi.vault.availability")

Role = Literal["active", "standby"]

STANDBY_MESSAGE = "this vault is a standby: read-only until promotion"
UNAVAILABLE_MESSAGE = "vault database unavailable"
_RETRY = {"Retry-After": "1"}


def standby_refusal() -> errors.ConjurError:
    """The answer to a write on a standby vault (and to a read-only database error)."""
    return errors.ConjurError(503, "standby_read_only", STANDBY_MESSAGE, headers=dict(_RETRY))


def unavailable() -> errors.ConjurError:
    return errors.ConjurError(503, "service_unavailable", UNAVAILABLE_MESSAGE, headers=dict(_RETRY))


def role_of(writable: bool) -> Role:
    return "active" if writable else "standby"


async def database_role(conn: Connection) -> Role:
    """``active`` on a server that accepts writes, ``standby`` on one in recovery (or made
    read-only)."""
    return role_of(bool(await conn.fetchval(pgfailure.WRITABLE_SQL)))


async def require_writable(conn: Connection, state: VaultState) -> None:
    """Refuse a write up front on a read-only database, before authenticating or parsing
    anything, so that PostgreSQL's own read-only error never reaches the caller.

    A standby vault says so (the caller goes to the active one). A vault that wants a
    writer is on the old leader of a failover: its connections go, and the caller retries.
    """
    if await database_role(conn) == "active":
        return
    if state.accepts_standby:
        if state.seeks_writer:  # the next request connects again, writer first
            await pgfailure.discard_connections(state.pool)
        raise standby_refusal()
    await pgfailure.discard_connections(state.pool)
    raise unavailable()


def failure_error(exc: BaseException) -> errors.ConjurError | None:
    """The 503 a database failure of a request answers; None when ``exc`` is not one (a
    bug: the caller answers 500). A read-only error that slipped past
    :func:`require_writable` (the database was demoted in between) is the standby answer."""
    failure = pgfailure.classify(exc)
    if failure is None:
        return None
    if failure.kind == "read_only":
        return standby_refusal()
    return unavailable()


async def after_failure(pool: Any, exc: BaseException) -> None:
    """Expire the pool's connections when they may point at the wrong server (a dead or
    demoted leader), so that the next acquire connects again and asyncpg re-checks
    ``target_session_attrs``."""
    failure = pgfailure.classify(exc)
    if failure is not None and failure.reconnect:
        await pgfailure.discard_connections(pool)
        log.warning("vault_database_connections_expired", failure=failure.kind)
