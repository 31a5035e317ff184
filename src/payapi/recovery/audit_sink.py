"""Where the engine sends its audit events: every step's start and end.

The sink is injected, so the engine runs (and is tested) without a database: the
default records nothing. :class:`ChainAudit` appends to the hash chain
(:func:`payapi.audit.append`) in ``postgres.payment_dsn``; the CLI wires it when that is
configured. Details carry ids, statuses, attempts and durations, never a step's output
(an output is free text, and audit events never hold secrets).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

CONNECT_TIMEOUT_SECONDS = 5.0


class AuditSink(Protocol):
    def __call__(self, type_: str, subject: str, details: Mapping[str, Any]) -> None:
        """Record one event; raise on failure (the executor notes it and goes on)."""


def no_audit(type_: str, subject: str, details: Mapping[str, Any]) -> None:
    """The sink of a platform without a payment database: nothing is recorded."""


class ChainAudit:
    """Appends each event to the audit chain in the payment database (one connection
    per event: a runbook's steps are seconds apart, and a connection that outlives a
    database failover would be the wrong one)."""

    def __init__(self, dsn: str, head_file: Path | None, actor: str) -> None:
        self._dsn = dsn
        self._head_file = head_file
        self._actor = actor

    def __call__(self, type_: str, subject: str, details: Mapping[str, Any]) -> None:
        asyncio.run(self._append(type_, subject, details))

    async def _append(self, type_: str, subject: str, details: Mapping[str, Any]) -> None:
        import asyncpg

        from payapi.audit import append

        conn = await asyncpg.connect(self._dsn, timeout=CONNECT_TIMEOUT_SECONDS)
        try:
            await append(
                conn,
                type=type_,
                actor=self._actor,
                subject=subject,
                details=details,
                head_file=self._head_file,
            )
        finally:
            await conn.close()
