"""Payment persistence: create (idempotently), read, and purge old idempotency keys.

Keyword-only functions over an asyncpg pool or connection; no HTTP here.

Idempotency, and why it is correct under concurrency:
- ``UNIQUE (client_id, idempotency_key)`` is the arbiter. A payment is created by one
  ``INSERT ... ON CONFLICT DO NOTHING RETURNING`` (one round trip, a prepared statement).
- If a concurrent transaction holds the same key, PostgreSQL makes our INSERT wait until
  it commits or aborts. So when the INSERT returns no row, the conflicting row is
  committed, and a following SELECT (a new snapshot) sees it: we replay it if the request
  fingerprint matches, else refuse the key (:class:`IdempotencyKeyReused`).
- If the key was purged between the two statements, the INSERT is simply tried again.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import asyncpg

from payapi.core.errors import PayapiError
from payapi.schemas import PaymentCreate, payment_body

MIN_IDEMPOTENCY_RETENTION = timedelta(hours=24)
DEFAULT_IDEMPOTENCY_RETENTION = timedelta(hours=48)

Executor = asyncpg.Pool | asyncpg.Connection
"""Anything with ``fetchrow``/``execute``: a pool (one connection per call) or a connection."""

_COLUMNS = "id, amount, currency, reference, status, created_at"

_INSERT = f"""
INSERT INTO payments
    (client_id, amount, currency, reference, status, idempotency_key, request_hash)
VALUES ($1, $2, $3, $4, 'succeeded', $5, $6)
ON CONFLICT (client_id, idempotency_key) DO NOTHING
RETURNING {_COLUMNS}
"""  # noqa: S608 - constant column list, no user input

_BY_KEY = f"""
SELECT {_COLUMNS}, request_hash FROM payments
WHERE client_id = $1 AND idempotency_key = $2
"""  # noqa: S608

_BY_ID = f"SELECT {_COLUMNS} FROM payments WHERE id = $1 AND client_id = $2"  # noqa: S608

PURGE_BATCH = 5000

# In batches, so that a large backlog never runs into the command timeout or holds many
# row locks at once; the partial index on created_at finds the candidates.
_PURGE = """
UPDATE payments SET idempotency_key = NULL
WHERE id IN (
    SELECT id FROM payments
    WHERE idempotency_key IS NOT NULL AND created_at < now() - $1::interval
    LIMIT $2
)
"""


class IdempotencyKeyReused(PayapiError):
    """The key was already used by this client for a different request body."""


@dataclass(frozen=True, slots=True)
class CreateResult:
    body: dict[str, str]
    """The payment as JSON-ready strings; identical for the first answer and every replay."""
    created: bool
    """True for the request that created the payment, False for a replay."""


def _body(row: Any) -> dict[str, str]:
    return payment_body(
        row["id"],
        row["amount"],
        row["currency"],
        row["reference"],
        row["status"],
        row["created_at"],
    )


async def create_payment(
    db: Executor, *, client_id: str, data: PaymentCreate, idempotency_key: str | None
) -> CreateResult:
    """Create a payment, or replay the one created earlier with the same key and body."""
    fingerprint = data.fingerprint()
    for _ in range(3):
        row = await db.fetchrow(
            _INSERT,
            client_id,
            data.amount,
            data.currency,
            data.reference,
            idempotency_key,
            fingerprint,
        )
        if row is not None:
            return CreateResult(_body(row), created=True)
        if idempotency_key is None:  # pragma: no cover - a NULL key never conflicts
            raise RuntimeError("insert without idempotency key returned no row")
        existing = await db.fetchrow(_BY_KEY, client_id, idempotency_key)
        if existing is None:
            continue  # the key was purged in between: insert again
        if existing["request_hash"] != fingerprint:
            raise IdempotencyKeyReused(idempotency_key)
        return CreateResult(_body(existing), created=False)
    raise RuntimeError("idempotency key kept vanishing between insert and select")


async def get_payment(db: Executor, *, client_id: str, payment_id: Any) -> dict[str, str] | None:
    """The payment ``payment_id`` if it belongs to ``client_id``; None otherwise.

    "Does not exist" and "belongs to someone else" are deliberately the same answer.
    """
    row = await db.fetchrow(_BY_ID, payment_id, client_id)
    return None if row is None else _body(row)


async def purge_idempotency_keys(
    db: Executor,
    *,
    retention: timedelta = DEFAULT_IDEMPOTENCY_RETENTION,
    batch: int = PURGE_BATCH,
) -> int:
    """Forget idempotency keys older than ``retention`` (at least 24 h); keep the payments.

    Returns how many keys were purged.
    """
    if retention < MIN_IDEMPOTENCY_RETENTION:
        raise ValueError(f"idempotency retention must be at least {MIN_IDEMPOTENCY_RETENTION}")
    total = 0
    while True:
        status = await db.execute(_PURGE, retention, batch)
        count = int(status.rsplit(" ", 1)[-1])
        total += count
        if count < batch:
            return total
