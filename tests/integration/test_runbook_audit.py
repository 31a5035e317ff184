"""Every runbook step's start and end is an event of the hash chain (real PostgreSQL)."""

from __future__ import annotations

import asyncio
from importlib import resources
from pathlib import Path

import asyncpg

from payapi import audit
from payapi.core.journal import Journal
from payapi.recovery.audit_sink import ChainAudit
from payapi.recovery.executor import Executor
from payapi.recovery.runbook import Runbook

SQL = resources.files("payapi.sapi").joinpath("migrations", "0002_audit.sql").read_text()


async def _sql(dsn: str, text: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(text)
    finally:
        await conn.close()


async def _events_and_verdict(dsn: str, head: Path) -> tuple[list[audit.AuditEvent], bool]:
    conn = await asyncpg.connect(dsn)
    try:
        events = await audit.list_events(conn, limit=100)
        return events, (await audit.verify(conn, head)).ok
    finally:
        await conn.close()


def test_step_events_chain_and_verify(fresh_db: str, tmp_path: Path) -> None:
    asyncio.run(_sql(fresh_db, SQL))
    head = tmp_path / "audit" / "head.json"
    runbook = Runbook.model_validate(
        {
            "name": "audited",
            "title": "Audited",
            "steps": [
                {"id": "a", "action": "noop", "approval": "lead"},
                {"id": "b", "action": "fail", "on_failure": "continue"},
            ],
        }
    )
    ex = Executor(
        journal_dir=tmp_path / "runs",
        journal=Journal.silent(),
        audit=ChainAudit(fresh_db, head, "alice"),
        requested_by="alice",
    )
    result = ex.start(runbook, {})
    assert result.ok
    events, intact = asyncio.run(_events_and_verdict(fresh_db, head))
    assert intact
    kinds = [(e.type, e.details.get("step"), e.details.get("status")) for e in events]
    assert kinds == [  # oldest first
        ("runbook.approval.approved", "a", None),
        ("runbook.step.started", "a", None),
        ("runbook.step.ended", "a", "ok"),
        ("runbook.step.started", "b", None),
        ("runbook.step.ended", "b", "failed"),
    ]
    assert {e.actor for e in events} == {"alice"}
    assert {e.subject for e in events} == {f"runbook:audited/{result.run_id}"}
    ended_a = next(e for e in events if e.type == "runbook.step.ended" and e.details["step"] == "a")
    assert ended_a.details["approved_by"] == "policy:allow-all"
