"""Applying a correction plan on real PostgreSQL (the payments schema of sapi's migrations).

The plan is made from rows read the way ``recover corruption`` reads them (``to_jsonb``);
"before T" is a snapshot read before the corruption, standing in for the PITR copy.
One transaction: all rows corrected, or — when a row changed after the plan was made,
or the database refuses one — none.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest

from payapi.recovery.corruption import (
    StalePlanError,
    apply_db_on,
    connect,
    read_rows,
    resolve_tables,
)
from payapi.recovery.corruption_plan import CorrectionPlan, plan_table
from payapi.sapi.migrate import migrate

T = datetime(2026, 3, 1, tzinfo=UTC)


@pytest.fixture
async def conn(fresh_db: str) -> AsyncIterator[asyncpg.Connection]:
    await migrate(fresh_db)
    c = await connect(fresh_db)
    await c.execute(
        "INSERT INTO payments (client_id, amount, currency, reference, status, "
        "idempotency_key) SELECT 'c1', 10 + g, 'EUR', 'ref-' || g, 'succeeded', 'k-' || g "
        "FROM generate_series(1, 10) g"
    )
    try:
        yield c
    finally:
        await c.close()


async def _snapshot(conn: asyncpg.Connection) -> dict[str, dict[str, Any]]:
    return {r["id"]: r for r in await read_rows(conn, "payments")}


async def _corrupt(conn: asyncpg.Connection) -> None:
    await conn.execute("UPDATE payments SET amount = 0.01 WHERE reference IN ('ref-1', 'ref-2')")
    await conn.execute("DELETE FROM payments WHERE reference = 'ref-3'")
    await conn.execute(
        "INSERT INTO payments (client_id, amount, currency, reference, status) "
        "VALUES ('c1', 5, 'EUR', 'later', 'pending')"
    )


async def _plan(conn: asyncpg.Connection, before: dict[str, Any]) -> CorrectionPlan:
    (ref,) = await resolve_tables(conn, ["payments"])
    table = plan_table(ref.name, ref.primary_key, before.values(), await read_rows(conn, ref.name))
    return CorrectionPlan(since=T, tables=(table,), created_at=T)


async def test_apply_puts_back_changed_and_deleted_rows_and_keeps_later_ones(
    conn: asyncpg.Connection,
) -> None:
    before = await _snapshot(conn)
    await _corrupt(conn)
    plan = await _plan(conn, before)
    assert plan.counts()["restored_rows"] == 3 and plan.counts()["kept_rows"] == 1
    await apply_db_on(conn, plan)
    after = await _snapshot(conn)
    later = {k: v for k, v in after.items() if v["reference"] == "later"}
    assert len(later) == 1
    assert {k: v for k, v in after.items() if k not in later} == before


async def test_apply_whose_rows_changed_since_the_plan_aborts_with_nothing_changed(
    conn: asyncpg.Connection,
) -> None:
    before = await _snapshot(conn)
    await _corrupt(conn)
    plan = await _plan(conn, before)
    # After the plan: someone touches one of the rows it will correct.
    await conn.execute("UPDATE payments SET status = 'failed' WHERE reference = 'ref-2'")
    untouched = await _snapshot(conn)
    with pytest.raises(StalePlanError, match="changed since the plan was made"):
        await apply_db_on(conn, plan)
    assert await _snapshot(conn) == untouched


async def test_a_deleted_row_that_reappeared_aborts_too(conn: asyncpg.Connection) -> None:
    before = await _snapshot(conn)
    await _corrupt(conn)
    plan = await _plan(conn, before)
    gone = next(v for v in before.values() if v["reference"] == "ref-3")
    await conn.execute(
        "INSERT INTO payments (id, client_id, amount, currency, reference, status) "
        "VALUES ($1::uuid, 'c1', 1, 'EUR', 'back', 'pending')",
        gone["id"],
    )
    untouched = await _snapshot(conn)
    with pytest.raises(StalePlanError, match="reappeared"):
        await apply_db_on(conn, plan)
    assert await _snapshot(conn) == untouched


async def test_a_row_the_database_refuses_rolls_back_every_row(conn: asyncpg.Connection) -> None:
    """ref-3's idempotency key was taken by a later payment: the re-insert conflicts."""
    before = await _snapshot(conn)
    await _corrupt(conn)
    await conn.execute(
        "INSERT INTO payments (client_id, amount, currency, reference, status, idempotency_key) "
        "VALUES ('c1', 7, 'EUR', 'taker', 'pending', 'k-3')"
    )
    plan = await _plan(conn, before)
    untouched = await _snapshot(conn)
    with pytest.raises(asyncpg.UniqueViolationError):
        await apply_db_on(conn, plan)
    assert await _snapshot(conn) == untouched


async def test_unknown_tables_and_the_audit_log_are_refused(conn: asyncpg.Connection) -> None:
    from payapi.core.errors import UsageError

    for name, message in (
        ("nope", "no such table"),
        ("audit_events", "append-only"),
        ("bad name(", "no such table"),
    ):
        with pytest.raises(UsageError, match=message):
            await resolve_tables(conn, [name])
    await conn.execute("CREATE TABLE nokey (a int)")
    with pytest.raises(UsageError, match="no primary key"):
        await resolve_tables(conn, ["nokey"])


async def test_verify_reports_each_check_and_fails_on_a_malformed_reference(
    conn: asyncpg.Connection, fresh_db: str
) -> None:
    """The schema allows what the API refuses (a reference with a space): --verify finds it."""
    from payapi.core.settings import PostgresSettings, Settings
    from payapi.recovery.corruption_checks import verify_db

    settings = Settings(postgres=PostgresSettings(payment_dsn=fresh_db))
    good = await asyncio.to_thread(verify_db, settings)
    assert good.ok, good.to_json()
    names = [c.name for c in good.checks]
    assert names[:4] == ["audit_chain", "positive_amounts", "idempotency_keys", "references"]
    await conn.execute("UPDATE payments SET reference = 'bad ref' WHERE reference = 'ref-4'")
    bad = await asyncio.to_thread(verify_db, settings)
    assert not bad.ok
    (failed,) = bad.failed()
    assert (failed.name, failed.offending) == ("references", 1)


async def test_a_later_row_the_operator_marked_is_deleted(conn: asyncpg.Connection) -> None:
    before = await _snapshot(conn)
    await _corrupt(conn)
    (ref,) = await resolve_tables(conn, ["payments"])
    now = await read_rows(conn, ref.name)
    later = next(r["id"] for r in now if r["reference"] == "later")
    table = plan_table(ref.name, ref.primary_key, before.values(), now, drop=[later])
    await apply_db_on(conn, CorrectionPlan(since=T, tables=(table,), created_at=T))
    assert await _snapshot(conn) == before
