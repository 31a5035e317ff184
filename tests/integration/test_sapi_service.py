"""payapi.sapi.service on real PostgreSQL, below HTTP: the database is the arbiter."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta

import asyncpg
import pytest

from payapi.sapi import service
from payapi.sapi.migrate import migrate
from payapi.schemas import PaymentCreate


@pytest.fixture
async def pool(fresh_db: str) -> AsyncIterator[asyncpg.Pool]:
    await migrate(fresh_db)
    p = await asyncpg.create_pool(fresh_db, min_size=1, max_size=20)
    try:
        yield p
    finally:
        await p.close()


def payment(amount: str = "10.00") -> PaymentCreate:
    return PaymentCreate.model_validate({"amount": amount, "currency": "USD", "reference": "S-1"})


async def test_twenty_racers_without_any_in_process_guard(pool: asyncpg.Pool) -> None:
    """Twenty concurrent inserts of one key, each on its own connection: one payment."""
    results = await asyncio.gather(
        *(
            service.create_payment(pool, client_id="c", data=payment(), idempotency_key="race")
            for _ in range(20)
        )
    )
    assert sum(r.created for r in results) == 1
    bodies = {tuple(sorted(r.body.items())) for r in results}
    assert len(bodies) == 1  # every loser replays the winner, identically
    assert await pool.fetchval("SELECT count(*) FROM payments") == 1


async def test_reused_key_with_other_body(pool: asyncpg.Pool) -> None:
    await service.create_payment(pool, client_id="c", data=payment(), idempotency_key="k")
    with pytest.raises(service.IdempotencyKeyReused):
        await service.create_payment(
            pool, client_id="c", data=payment("10.01"), idempotency_key="k"
        )


async def test_purge_forgets_old_keys_but_keeps_payments(pool: asyncpg.Pool) -> None:
    old = await service.create_payment(pool, client_id="c", data=payment(), idempotency_key="old")
    await service.create_payment(pool, client_id="c", data=payment(), idempotency_key="new")
    await pool.execute(
        "UPDATE payments SET created_at = now() - interval '3 days' WHERE idempotency_key = 'old'"
    )
    assert await service.purge_idempotency_keys(pool, retention=timedelta(hours=48)) == 1
    assert await service.purge_idempotency_keys(pool, retention=timedelta(hours=48)) == 0
    assert await pool.fetchval("SELECT count(*) FROM payments") == 2
    # The purged key is free again; the recent one still replays.
    again = await service.create_payment(pool, client_id="c", data=payment(), idempotency_key="old")
    assert again.created and again.body["id"] != old.body["id"]
    replay = await service.create_payment(
        pool, client_id="c", data=payment(), idempotency_key="new"
    )
    assert not replay.created


async def test_purge_runs_in_batches(pool: asyncpg.Pool) -> None:
    for i in range(7):
        await service.create_payment(pool, client_id="c", data=payment(), idempotency_key=f"b{i}")
    await pool.execute("UPDATE payments SET created_at = now() - interval '2 days'")
    assert await service.purge_idempotency_keys(pool, retention=timedelta(hours=24), batch=3) == 7
    assert await pool.fetchval("SELECT count(*) FROM payments WHERE idempotency_key IS NULL") == 7


async def test_retention_below_24_hours_is_refused(pool: asyncpg.Pool) -> None:
    with pytest.raises(ValueError, match="at least"):
        await service.purge_idempotency_keys(pool, retention=timedelta(hours=23))


async def test_get_payment_is_scoped_to_the_client(pool: asyncpg.Pool) -> None:
    made = await service.create_payment(pool, client_id="c", data=payment(), idempotency_key=None)
    pid = made.body["id"]
    assert await service.get_payment(pool, client_id="c", payment_id=pid) == made.body
    assert await service.get_payment(pool, client_id="d", payment_id=pid) is None


async def test_database_refuses_what_validation_would(pool: asyncpg.Pool) -> None:
    """The constraints are a second line behind the schema (e.g. a buggy writer)."""
    for values in (
        ("c", "0.00", "USD", "R", "succeeded"),
        ("c", "1.00", "usd", "R", "succeeded"),
        ("c", "1.00", "USD", "", "succeeded"),
        ("c", "1.00", "USD", "R", "weird"),
    ):
        with pytest.raises(asyncpg.CheckViolationError):
            await pool.execute(
                "INSERT INTO payments (client_id, amount, currency, reference, status) "
                "VALUES ($1, $2::numeric, $3, $4, $5)",
                *values,
            )
