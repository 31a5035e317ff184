"""SAPI's migrations on real PostgreSQL: ordered, once, atomic, concurrent-safe."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from payapi.sapi.migrate import Migration, load_migrations, migrate


def test_migrations_ship_in_the_package() -> None:
    names = [m.name for m in load_migrations()]
    assert names[0] == "0001_payments.sql"
    assert names == sorted(names)


async def test_migrate_twice_is_a_no_op(fresh_db: str) -> None:
    first = await migrate(fresh_db)
    assert first[0] == "0001_payments.sql"
    assert first == [m.name for m in load_migrations()]
    assert await migrate(fresh_db) == []
    conn = await asyncpg.connect(fresh_db)
    try:
        recorded = [r["name"] for r in await conn.fetch("SELECT name FROM schema_migrations")]
        assert sorted(recorded) == first
        cols = {
            r["column_name"]: r["data_type"]
            for r in await conn.fetch(
                "SELECT column_name, data_type FROM information_schema.columns "
                "WHERE table_name = 'payments'"
            )
        }
    finally:
        await conn.close()
    assert cols["id"] == "uuid"
    assert cols["amount"] == "numeric"
    assert cols["currency"] == "character"
    assert cols["created_at"] == "timestamp with time zone"
    assert {"client_id", "reference", "status", "idempotency_key", "request_hash"} <= set(cols)


async def test_migrate_accepts_an_open_connection(fresh_db: str) -> None:
    conn = await asyncpg.connect(fresh_db)
    try:
        assert "0001_payments.sql" in await migrate(conn)
        assert await migrate(conn) == []
        assert not conn.is_closed()
    finally:
        await conn.close()


async def test_concurrent_migrators_apply_each_file_once(fresh_db: str) -> None:
    results = await asyncio.gather(*(migrate(fresh_db) for _ in range(5)))
    applied = [name for r in results for name in r]
    assert sorted(applied) == [m.name for m in load_migrations()]


async def test_a_failing_migration_leaves_no_trace(fresh_db: str) -> None:
    good = Migration("0001_a.sql", "CREATE TABLE a (x int);")
    bad = Migration("0002_b.sql", "CREATE TABLE b (x int); SELECT no_such_function();")
    with pytest.raises(asyncpg.PostgresError):
        await migrate(fresh_db, migrations=[bad, good])  # applied in name order
    conn = await asyncpg.connect(fresh_db)
    try:
        assert await conn.fetchval("SELECT to_regclass('a') IS NOT NULL")
        assert await conn.fetchval("SELECT to_regclass('b') IS NULL")
        names = [r["name"] for r in await conn.fetch("SELECT name FROM schema_migrations")]
        assert names == ["0001_a.sql"]
    finally:
        await conn.close()
    fixed = Migration("0002_b.sql", "CREATE TABLE b (x int);")
    assert await migrate(fresh_db, migrations=[good, fixed]) == ["0002_b.sql"]
