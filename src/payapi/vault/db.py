"""The vault database: migrations and the data-key check.

Migrations are the ``migrations/NNN_*.sql`` files, applied in name order, each in its own
transaction and recorded in ``schema_migrations``. Every applier takes a session advisory
lock first, so two vault processes starting together (a restart during a drill, a standby
coming up) never apply the same file twice.
"""

from __future__ import annotations

from importlib import resources
from typing import TYPE_CHECKING, Any, TypeAlias

import asyncpg

from payapi.core.logs import get_logger
from payapi.core.settings import ConfigError
from payapi.vault.crypto import DataKeyMismatch, key_check_value

log = get_logger("payapi.vault.db")

# An arbitrary constant: "payapi vault migrations" in the advisory-lock key space.
MIGRATION_LOCK_KEY = 0x7661_756C_745F_6D67  # "vault_mg"
KEY_CHECK_NAME = "data_key_check"

if TYPE_CHECKING:
    Connection: TypeAlias = asyncpg.Connection[Any] | asyncpg.pool.PoolConnectionProxy[Any]
else:  # asyncpg's classes are not subscriptable at runtime
    Connection = Any


def migration_files() -> list[tuple[str, str]]:
    """(version, sql) for every migration shipped with the package, in order."""
    folder = resources.files("payapi.vault") / "migrations"
    out: list[tuple[str, str]] = []
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".sql"):
            out.append((entry.name.removesuffix(".sql"), entry.read_text(encoding="utf-8")))
    return out


async def migrate(conn: Connection) -> list[str]:
    """Apply pending migrations; return the versions applied now."""
    applied_now: list[str] = []
    await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_KEY)
    try:
        await conn.execute(
            """CREATE TABLE IF NOT EXISTS schema_migrations (
                   version    text PRIMARY KEY,
                   applied_at timestamptz NOT NULL DEFAULT now()
               )"""
        )
        done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        for version, sql in migration_files():
            if version in done:
                continue
            async with conn.transaction():
                await conn.execute(sql)
                await conn.execute("INSERT INTO schema_migrations (version) VALUES ($1)", version)
            applied_now.append(version)
            log.info("vault_migration_applied", version=version)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_KEY)
    return applied_now


async def check_data_key(conn: Connection, data_key: bytes) -> None:
    """Record the key's check value on first use; refuse a different key afterwards.

    Without this, a vault started with the wrong key would serve 500s secret by secret;
    with it, the operator gets one clear startup error.
    """
    expected = key_check_value(data_key)
    await conn.execute(
        "INSERT INTO vault_meta (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
        KEY_CHECK_NAME,
        expected,
    )
    stored = await conn.fetchval("SELECT value FROM vault_meta WHERE name = $1", KEY_CHECK_NAME)
    if stored != expected:
        raise DataKeyMismatch(
            "the configured vault data key is not the key this vault database was "
            "created with; secrets cannot be decrypted (restore the right key file)"
        )


class StandbyNotReady(ConfigError):
    """A standby database does not hold a vault this process can serve (yet)."""


async def in_recovery(conn: Connection) -> bool:
    return bool(await conn.fetchval("SELECT pg_catalog.pg_is_in_recovery()"))


async def verify_standby(conn: Connection, data_key: bytes) -> None:
    """What :func:`prepare` does on a standby, read-only: a standby cannot migrate or
    record the key, it can only check that the active vault did both (its writes arrive by
    replication). A standby behind the code's schema would answer 500s on reads, and one
    sealed with another key could not decrypt a secret: both refuse to start, one line."""
    applied = await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
    done: set[str] = set()
    if applied:
        done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
    pending = [version for version, _ in migration_files() if version not in done]
    if pending:
        raise StandbyNotReady(
            "vault: the standby database lacks migrations "
            f"{', '.join(pending)}; start the active vault first (it applies them)"
        )
    stored = await conn.fetchval("SELECT value FROM vault_meta WHERE name = $1", KEY_CHECK_NAME)
    if stored is None:
        raise StandbyNotReady(
            "vault: the standby database has no data key recorded; bootstrap the active vault first"
        )
    if stored != key_check_value(data_key):
        raise DataKeyMismatch(
            "the configured vault data key is not the key this vault database was "
            "created with; secrets cannot be decrypted (restore the right key file)"
        )


async def prepare(conn: Connection, data_key: bytes) -> None:
    """Everything a process does before using the database: migrate, then check the key.
    On a standby (a standby vault) only check, read-only (:func:`verify_standby`)."""
    if await in_recovery(conn):
        await verify_standby(conn, data_key)
        return
    await migrate(conn)
    await check_data_key(conn, data_key)
