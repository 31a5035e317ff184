"""Versioned schema migrations of ``payment_db``.

The files ``payapi/sapi/migrations/NNNN_name.sql`` ship inside the package and are applied
in name order, each exactly once, each in its own transaction, and recorded in
``schema_migrations`` (name, SHA-256 of the file, time applied).

Invariants:
- A session advisory lock serializes migrators, so several SAPI replicas starting at once
  apply every file once; the others wait, then find nothing to do.
- A file either applies completely and is recorded, or leaves no trace (one transaction).
- An applied file whose content changed afterwards is reported in the log, never re-run.
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass
from importlib import resources

import asyncpg

from payapi.core.logs import get_logger

log = get_logger("payapi.sapi.migrate")

# pg_advisory_lock key: "payapi" in ASCII plus a 1, fits a signed bigint.
LOCK_KEY = 0x7061796170690001
CONNECT_TIMEOUT_SECONDS = 10.0

_CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    name       text        PRIMARY KEY,
    checksum   text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


@dataclass(frozen=True)
class Migration:
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode("utf-8")).hexdigest()


def load_migrations() -> list[Migration]:
    """The packaged migration files, in name order."""
    folder = resources.files("payapi.sapi").joinpath("migrations")
    found = [
        Migration(name=entry.name, sql=entry.read_text(encoding="utf-8"))
        for entry in folder.iterdir()
        if entry.is_file() and entry.name.endswith(".sql")
    ]
    return sorted(found, key=lambda m: m.name)


async def migrate(
    target: str | asyncpg.Connection, *, migrations: list[Migration] | None = None
) -> list[str]:
    """Apply pending migrations to ``target`` (a DSN or an open connection).

    Returns the names applied by this call, in order; ``[]`` when the schema is current.
    A connection passed in is left open; one opened from a DSN is closed.
    """
    todo = load_migrations() if migrations is None else sorted(migrations, key=lambda m: m.name)
    if isinstance(target, str):
        conn = await asyncpg.connect(target, timeout=CONNECT_TIMEOUT_SECONDS)
        try:
            return await _migrate(conn, todo)
        finally:
            await conn.close()
    return await _migrate(target, todo)


async def _migrate(conn: asyncpg.Connection, todo: list[Migration]) -> list[str]:
    applied_now: list[str] = []
    await conn.execute("SELECT pg_advisory_lock($1)", LOCK_KEY)
    try:
        await conn.execute(_CREATE_TABLE)
        rows = await conn.fetch("SELECT name, checksum FROM schema_migrations")
        done = {r["name"]: r["checksum"] for r in rows}
        for m in todo:
            if m.name in done:
                if done[m.name] != m.checksum:
                    log.warning("migration_changed_after_apply", migration=m.name)
                continue
            async with conn.transaction():
                await conn.execute(m.sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (name, checksum) VALUES ($1, $2)",
                    m.name,
                    m.checksum,
                )
            log.info("migration_applied", migration=m.name)
            applied_now.append(m.name)
    finally:
        if not conn.is_closed():
            await conn.execute("SELECT pg_advisory_unlock($1)", LOCK_KEY)
    return applied_now


def migrate_sync(dsn: str) -> list[str]:
    """:func:`migrate` for synchronous callers (the CLI)."""
    return asyncio.run(migrate(dsn))
