"""The peer of `make bench`: the one-hop payment service a competent engineer writes in an
afternoon. One FastAPI app, one ``POST /api/v1/payments`` route, a pydantic body, an
asyncpg pool, SAPI's own INSERT of the same row into the same ``payments`` table. No
authentication, no rate limits, no idempotency, no audit, no second hop.

``benchmarks/api.py`` runs it beside the lab on the same PostgreSQL with uvicorn and as
many workers as the machine has cores::

    NAIVE_DSN=postgresql://... uvicorn naive_service:app --workers 2 --app-dir benchmarks
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any

import asyncpg
from fastapi import FastAPI
from pydantic import BaseModel, Field

from payapi.sapi.service import _INSERT  # the same statement, so the same row and index work

CLIENT_ID = "bench-naive"
_pool: asyncpg.Pool | None = None


@asynccontextmanager
async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
    global _pool
    _pool = await asyncpg.create_pool(os.environ["NAIVE_DSN"], min_size=2, max_size=10)
    try:
        yield
    finally:
        await _pool.close()


app = FastAPI(title="naive payments", lifespan=lifespan)


class PaymentIn(BaseModel):
    amount: Decimal = Field(gt=0, max_digits=12, decimal_places=2)
    currency: str = Field(min_length=3, max_length=3)
    reference: str = Field(min_length=1, max_length=128)


@app.post("/api/v1/payments", status_code=201)
async def create_payment(body: PaymentIn) -> dict[str, Any]:
    assert _pool is not None
    fingerprint = hashlib.sha256(
        json.dumps(body.model_dump(mode="json"), sort_keys=True).encode()
    ).hexdigest()
    row = await _pool.fetchrow(
        _INSERT, CLIENT_ID, body.amount, body.currency, body.reference, None, fingerprint
    )
    assert row is not None
    return {
        "id": str(row["id"]),
        "amount": str(row["amount"]),
        "currency": row["currency"],
        "reference": row["reference"],
        "status": row["status"],
        "created_at": row["created_at"].isoformat(),
    }
