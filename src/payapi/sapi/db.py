"""SAPI's connection pool: migrated at startup, and patient when the database is down.

SAPI starts even if PostgreSQL is unreachable (a DR drill may start services before the
database is restored): it answers 503 and keeps trying to migrate and connect in the
background, so it recovers by itself once the database is back.

It follows a failover by itself too. The DSN may name several hosts with
``target_session_attrs=read-write``: asyncpg connects to the writer among them. A request
whose connection fails because the writer moved (the connection died, or its server is
read-only now) gets a 503, and :meth:`Database.failed` expires the pool's connections so
that the next requests connect again and land on the new writer
(:mod:`payapi.pgfailure` decides which failures those are).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import asyncpg

from payapi import pgfailure
from payapi.core.errors import PayapiError
from payapi.core.logs import get_logger
from payapi.sapi.migrate import migrate

log = get_logger("payapi.sapi.db")

CONNECT_TIMEOUT_SECONDS = 5.0
COMMAND_TIMEOUT_SECONDS = 10.0
ACQUIRE_TIMEOUT_SECONDS = 5.0
HEALTH_TIMEOUT_SECONDS = 2.0
RETRY_MAX_SECONDS = 5.0


class DatabaseUnavailable(PayapiError):
    pass


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Pool reset hook: skip asyncpg's default ``RESET ALL; UNLISTEN *; ...`` round trip.

    The pool still rolls back an open transaction on release. In exchange, code using
    this pool must not leave session state behind (``SET``, session advisory locks,
    ``LISTEN``): use ``SET LOCAL`` and ``pg_advisory_xact_lock``.
    """
    return None


class Database:
    def __init__(
        self, dsn: str, *, min_size: int, max_size: int, retry_max: float = RETRY_MAX_SECONDS
    ) -> None:
        self._dsn = dsn
        self._min = min_size
        self._max = max(max_size, min_size, 1)
        self._retry_max = retry_max
        self._pool: asyncpg.Pool | None = None
        self._side_pool: asyncpg.Pool | None = None
        self._retry_task: asyncio.Task[None] | None = None
        self.migrations_applied: list[str] = []

    @property
    def ready(self) -> bool:
        return self._pool is not None

    @property
    def pool(self) -> asyncpg.Pool:
        """The pool, or :class:`DatabaseUnavailable` while SAPI has not connected yet."""
        if self._pool is None:
            raise DatabaseUnavailable("database not connected")
        return self._pool

    @property
    def side_pool(self) -> asyncpg.Pool:
        """A small pool with asyncpg's full reset, for rare calls that hold session state.

        The audit writer takes a session advisory lock; on this pool a connection is
        always returned clean (``pg_advisory_unlock_all``, ``RESET ALL``), whatever
        happened, without slowing the payments pool.
        """
        if self._side_pool is None:
            raise DatabaseUnavailable("database not connected")
        return self._side_pool

    async def start(self) -> None:
        """Migrate and open the pool; on failure keep trying in the background."""
        try:
            await self._connect()
        except Exception as exc:
            log.warning("database_unavailable_at_start", error_type=type(exc).__name__)
            self._retry_task = asyncio.create_task(self._retry())

    async def _connect(self) -> None:
        self.migrations_applied = await migrate(self._dsn)
        self._pool = await asyncpg.create_pool(
            self._dsn,
            min_size=self._min,
            max_size=self._max,
            reset=_keep_session,
            command_timeout=COMMAND_TIMEOUT_SECONDS,
            timeout=CONNECT_TIMEOUT_SECONDS,
            server_settings={"application_name": "payapi-sapi"},
        )
        # min_size=0: no connection is opened until the first audit event.
        self._side_pool = await asyncpg.create_pool(
            self._dsn,
            min_size=0,
            max_size=2,
            command_timeout=COMMAND_TIMEOUT_SECONDS,
            timeout=CONNECT_TIMEOUT_SECONDS,
            server_settings={"application_name": "payapi-sapi-audit"},
        )
        log.info("database_connected", migrations_applied=len(self.migrations_applied))

    async def _retry(self) -> None:
        delay = 0.2
        while self._pool is None:
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._retry_max)
            try:
                await self._connect()
            except Exception as exc:
                log.debug("database_still_unavailable", error_type=type(exc).__name__)

    async def failed(self, exc: BaseException) -> pgfailure.Failure | None:
        """What ``exc`` means (None: not an unavailability, a bug). When the pool may hold
        connections to the wrong server (the old leader, dead or read-only now), they are
        all expired so that the next acquire connects to the current writer."""
        failure = pgfailure.classify(exc)
        if failure is not None and failure.reconnect:
            await pgfailure.discard_connections(self._pool, self._side_pool)
        return failure

    async def check(self) -> bool:
        """True while a writable database answers. A standby, or the old leader come back
        read-only, is not healthy: SAPI cannot take payments there."""
        pool = self._pool
        if pool is None:
            return False
        try:
            value: Any = await asyncio.wait_for(
                pool.fetchval(pgfailure.WRITABLE_SQL), HEALTH_TIMEOUT_SECONDS
            )
        except Exception as exc:
            await self.failed(exc)
            return False
        if value is not True:
            # Alive but read-only: leave it, so that the next check (and the next
            # payment) connects to whichever host is the writer now.
            await pgfailure.discard_connections(self._pool, self._side_pool)
            return False
        return True

    async def close(self) -> None:
        task = self._retry_task
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for pool in (self._pool, self._side_pool):
            if pool is not None:
                try:
                    await asyncio.wait_for(pool.close(), 10)
                except Exception:
                    pool.terminate()
        self._pool = self._side_pool = None
