"""The hash-chained audit log on real PostgreSQL: appends chain, tampering is caught."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import AsyncIterator
from decimal import Decimal
from importlib import resources
from pathlib import Path

import asyncpg
import pytest
from typer.testing import CliRunner

from payapi import audit
from payapi.audit import (
    GENESIS_HASH,
    AuditDetailsError,
    AuditError,
    AuditHeadError,
    Head,
    append,
    event_hash,
    list_events,
    read_head,
    verify,
    write_head,
)
from payapi.cli.main import app

SQL = resources.files("payapi.sapi").joinpath("migrations", "0002_audit.sql").read_text()


async def _apply_schema(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(SQL)
    finally:
        await conn.close()


@pytest.fixture
async def db(fresh_db: str) -> str:
    await _apply_schema(fresh_db)
    return fresh_db


@pytest.fixture
async def conn(db: str) -> AsyncIterator[asyncpg.Connection]:
    c = await asyncpg.connect(db)
    yield c
    await c.close()


@pytest.fixture
def head(tmp_path: Path) -> Path:
    return tmp_path / "audit" / "head.json"


async def _fill(conn: asyncpg.Connection, head: Path | None, n: int = 5) -> list[audit.AuditEvent]:
    return [
        await append(
            conn,
            type="test.event",
            actor=f"actor-{i}",
            subject=None if i % 2 else f"subject-{i}",
            details={"i": i, "nested": {"ok": True, "list": [1, "two", None]}},
            head_file=head,
        )
        for i in range(1, n + 1)
    ]


async def _tamper(conn: asyncpg.Connection, *statements: str) -> None:
    """Tamper as a superuser would: with the append-only triggers switched off."""
    async with conn.transaction():
        await conn.execute("SET LOCAL session_replication_role = replica")
        for sql in statements:
            await conn.execute(sql)


# --------------------------------------------------------------------------- appending


async def test_append_builds_a_chain(conn: asyncpg.Connection, head: Path) -> None:
    events = await _fill(conn, head)
    assert [e.seq for e in events] == [1, 2, 3, 4, 5]
    assert events[0].prev_hash == GENESIS_HASH
    for before, after in itertools.pairwise(events):
        assert after.prev_hash == before.hash
        assert after.occurred_at >= before.occurred_at
    for e in events:
        assert e.hash == event_hash(
            seq=e.seq,
            occurred_at=e.occurred_at,
            type=e.type,
            actor=e.actor,
            subject=e.subject,
            details=e.details,
            prev_hash=e.prev_hash,
        )
    assert read_head(head) == Head(5, events[-1].hash)
    assert json.loads(head.read_text()) == {"seq": 5, "hash": events[-1].hash}
    listed = await list_events(conn, limit=3)
    assert [e.seq for e in listed] == [3, 4, 5]
    assert listed[-1] == events[-1]


async def test_append_accepts_a_pool(db: str, head: Path) -> None:
    pool = await asyncpg.create_pool(db, min_size=1, max_size=2)
    try:
        ev = await append(pool, type="t", actor="a", subject="s", details={}, head_file=head)
        assert ev.seq == 1
        assert (await verify(pool, head)).ok
    finally:
        await pool.close()


async def test_details_survive_jsonb_normalisation(conn: asyncpg.Connection, head: Path) -> None:
    details = {
        "big_float": 1e20,
        "small": 1.5e-7,
        "one_point_o": 1.0,
        "huge_int": 2**70,
        "amount": Decimal("100.00"),
        "unicode": "Zürich, 東京 🚀",
        "z": 1,
        "a": {"b": [True, False, None]},
    }
    ev = await append(conn, type="t", actor="a", subject=None, details=details, head_file=head)
    assert ev.details["amount"] == "100.00"
    result = await verify(conn, head)
    assert result.ok, result


async def test_secret_looking_details_are_refused(conn: asyncpg.Connection, head: Path) -> None:
    for bad in (
        {"client_secret": "s3cr3t"},
        {"outer": {"api_key": "k"}},
        {"tokens": ["abc", "def"]},
        {"Authorization": "Bearer x"},
        {"password": 1234.5, "x": {"data_key": "base64..."}},
    ):
        with pytest.raises(AuditDetailsError, match="looks like a secret"):
            await append(conn, type="t", actor="a", subject=None, details=bad, head_file=head)
    assert await conn.fetchval("SELECT count(*) FROM audit_events") == 0
    assert not head.exists()
    # Counts and flags under such names are not secrets.
    ev = await append(
        conn,
        type="credentials.emergency_rotation",
        actor="payapi-cli",
        subject="all-clients",
        details={"tokens_revoked": 3, "services_rotated": True, "credential_ttl": None},
        head_file=head,
    )
    assert ev.details["tokens_revoked"] == 3


async def test_non_json_details_are_refused(conn: asyncpg.Connection, db: str, head: Path) -> None:
    with pytest.raises(AuditDetailsError):
        await append(
            conn, type="t", actor="a", subject=None, details={"x": object()}, head_file=head
        )
    with pytest.raises(AuditDetailsError):
        await append(
            conn, type="t", actor="a", subject=None, details={"x": float("nan")}, head_file=head
        )
    with pytest.raises(AuditDetailsError):
        await append(conn, type="t", actor="a", subject=None, details={"x": "\x00"}, head_file=head)
    with pytest.raises(AuditDetailsError):
        await append(conn, type="", actor="a", subject=None, details={}, head_file=head)
    assert await conn.fetchval("SELECT count(*) FROM audit_events") == 0
    # The lock was released after each refusal: another session can append.
    other = await asyncpg.connect(db)
    try:
        ev = await append(other, type="t", actor="a", subject=None, details={}, head_file=head)
        assert ev.seq == 1
    finally:
        await other.close()


async def test_append_inside_a_transaction_is_refused(conn: asyncpg.Connection) -> None:
    async with conn.transaction():
        with pytest.raises(AuditError, match="inside a caller's transaction"):
            await append(conn, type="t", actor="a", subject=None, details={}, head_file=None)


async def test_table_is_append_only_for_ordinary_sql(conn: asyncpg.Connection) -> None:
    await _fill(conn, None, 2)
    for sql in (
        "UPDATE audit_events SET actor = 'x' WHERE seq = 1",
        "DELETE FROM audit_events WHERE seq = 2",
        "TRUNCATE audit_events",
    ):
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
            await conn.execute(sql)
    assert await conn.fetchval("SELECT count(*) FROM audit_events") == 2


# --------------------------------------------------------------------------- verifying


async def test_verify_ok(conn: asyncpg.Connection, head: Path) -> None:
    events = await _fill(conn, head)
    result = await verify(conn, head)
    assert result.ok and result.problem is None
    assert (result.events_checked, result.last_seq) == (5, 5)
    assert result.head == Head(5, events[-1].hash)
    assert result.notes == ()


async def test_verify_empty_log(conn: asyncpg.Connection, head: Path) -> None:
    result = await verify(conn, head)
    assert result.ok and result.events_checked == 0


async def test_verify_without_head_file_says_what_it_cannot_see(
    conn: asyncpg.Connection,
) -> None:
    await _fill(conn, None, 3)
    result = await verify(conn, None)
    assert result.ok
    assert "not detectable" in result.notes[0]


@pytest.mark.parametrize(
    ("seq", "change"),
    [
        (3, "type = 'forged'"),
        (3, "actor = 'mallory'"),
        (3, "subject = 'added'"),  # seq 3 has no subject
        (4, "subject = NULL"),
        (4, "subject = 'other'"),
        (3, "details = '{\"i\": 99}'"),
        (3, "details = details || '{\"extra\": 1}'"),
        (3, "occurred_at = occurred_at + interval '1 microsecond'"),
        (3, "prev_hash = repeat('a', 64)"),
        (3, "hash = repeat('b', 64)"),
        (5, "actor = 'mallory'"),  # the newest event
        (1, "details = '{}'"),  # the oldest
    ],
)
async def test_edited_event_is_detected(
    conn: asyncpg.Connection, head: Path, seq: int, change: str
) -> None:
    await _fill(conn, head)
    await _tamper(conn, f"UPDATE audit_events SET {change} WHERE seq = {seq}")
    result = await verify(conn, head)
    assert not result.ok
    assert result.problem is not None
    assert (result.problem.kind, result.problem.seq) == ("edited", seq)
    assert result.events_checked == seq - 1


async def test_edited_and_rehashed_event_is_detected(conn: asyncpg.Connection, head: Path) -> None:
    events = await _fill(conn, head)
    e = events[2]
    forged = event_hash(
        seq=e.seq,
        occurred_at=e.occurred_at,
        type=e.type,
        actor="mallory",
        subject=e.subject,
        details=e.details,
        prev_hash=e.prev_hash,
    )
    await _tamper(
        conn, f"UPDATE audit_events SET actor = 'mallory', hash = '{forged}' WHERE seq = 3"
    )
    problem = (await verify(conn, head)).problem
    assert problem is not None
    assert (problem.kind, problem.seq) == ("edited", 3)


async def test_history_rewritten_with_all_hashes_is_caught_by_the_head(
    conn: asyncpg.Connection, head: Path
) -> None:
    events = await _fill(conn, head)
    prev = events[1].hash
    statements = []
    for e in events[2:]:
        new = event_hash(
            seq=e.seq,
            occurred_at=e.occurred_at,
            type=e.type,
            actor="mallory",
            subject=e.subject,
            details=e.details,
            prev_hash=prev,
        )
        statements.append(
            f"UPDATE audit_events SET actor = 'mallory', prev_hash = '{prev}', hash = '{new}' "
            f"WHERE seq = {e.seq}"
        )
        prev = new
    await _tamper(conn, *statements)
    result = await verify(conn, head)
    assert result.problem is not None
    assert (result.problem.kind, result.problem.seq) == ("head_mismatch", 5)
    assert result.events_checked == 5  # every link is sound; only the head knows


async def test_deleted_middle_event_is_detected(conn: asyncpg.Connection, head: Path) -> None:
    await _fill(conn, head)
    await _tamper(conn, "DELETE FROM audit_events WHERE seq = 3")
    problem = (await verify(conn, head)).problem
    assert problem is not None
    assert (problem.kind, problem.seq) == ("deleted", 3)
    assert "seq 3 missing" in problem.detail


async def test_deleted_first_events_are_detected(conn: asyncpg.Connection, head: Path) -> None:
    await _fill(conn, head)
    await _tamper(conn, "DELETE FROM audit_events WHERE seq <= 2")
    problem = (await verify(conn, head)).problem
    assert problem is not None
    assert (problem.kind, problem.seq) == ("deleted", 1)


async def test_deleted_and_renumbered_is_detected(conn: asyncpg.Connection, head: Path) -> None:
    await _fill(conn, head)
    await _tamper(
        conn,
        "DELETE FROM audit_events WHERE seq = 3",
        "UPDATE audit_events SET seq = seq - 1 WHERE seq = 4",
        "UPDATE audit_events SET seq = seq - 1 WHERE seq = 5",
    )
    problem = (await verify(conn, head)).problem
    assert problem is not None
    assert (problem.kind, problem.seq) == ("deleted", 3)


async def test_deleted_last_event_is_detected_by_the_head(
    conn: asyncpg.Connection, head: Path
) -> None:
    await _fill(conn, head)
    await _tamper(conn, "DELETE FROM audit_events WHERE seq = 5")
    result = await verify(conn, head)
    assert result.problem is not None
    assert (result.problem.kind, result.problem.seq) == ("truncated", 5)
    # Appending now would overwrite the evidence: refused, nothing written.
    with pytest.raises(AuditHeadError, match="refusing to append"):
        await append(conn, type="t", actor="a", subject=None, details={}, head_file=head)
    assert await conn.fetchval("SELECT max(seq) FROM audit_events") == 4
    assert read_head(head) is not None and read_head(head).seq == 5  # type: ignore[union-attr]


async def test_all_events_deleted_is_detected(conn: asyncpg.Connection, head: Path) -> None:
    await _fill(conn, head)
    await _tamper(conn, "DELETE FROM audit_events")
    problem = (await verify(conn, head)).problem
    assert problem is not None
    assert (problem.kind, problem.seq) == ("truncated", 1)


async def test_swapped_seq_numbers_are_reordered(conn: asyncpg.Connection, head: Path) -> None:
    await _fill(conn, head)
    await _tamper(
        conn,
        "UPDATE audit_events SET seq = 1000 WHERE seq = 3",
        "UPDATE audit_events SET seq = 3 WHERE seq = 4",
        "UPDATE audit_events SET seq = 4 WHERE seq = 1000",
    )
    problem = (await verify(conn, head)).problem
    assert problem is not None
    assert (problem.kind, problem.seq) == ("reordered", 3)


async def test_swapped_contents_are_reordered(conn: asyncpg.Connection, head: Path) -> None:
    await _fill(conn, head)
    cols = "occurred_at, type, actor, subject, details"
    await _tamper(
        conn,
        f"""
        UPDATE audit_events a SET ({cols}) = (SELECT {cols} FROM audit_events b
            WHERE b.seq = CASE a.seq WHEN 3 THEN 4 ELSE 3 END)
        WHERE a.seq IN (3, 4)
        """,
    )
    problem = (await verify(conn, head)).problem
    assert problem is not None
    assert (problem.kind, problem.seq) == ("reordered", 3)


async def test_swapped_rows_except_seq_are_reordered(conn: asyncpg.Connection, head: Path) -> None:
    await _fill(conn, head)
    cols = "occurred_at, type, actor, subject, details, prev_hash, hash"
    await _tamper(
        conn,
        f"""
        UPDATE audit_events a SET ({cols}) = (SELECT {cols} FROM audit_events b
            WHERE b.seq = CASE a.seq WHEN 2 THEN 3 ELSE 2 END)
        WHERE a.seq IN (2, 3)
        """,
    )
    problem = (await verify(conn, head)).problem
    assert problem is not None
    assert (problem.kind, problem.seq) == ("reordered", 2)


async def test_missing_head_file(conn: asyncpg.Connection, head: Path) -> None:
    await _fill(conn, head)
    head.unlink()
    result = await verify(conn, head)
    assert result.problem is not None
    assert result.problem.kind == "head_missing"
    with pytest.raises(AuditHeadError, match="missing"):
        await append(conn, type="t", actor="a", subject=None, details={}, head_file=head)


async def test_corrupt_head_file(conn: asyncpg.Connection, head: Path) -> None:
    await _fill(conn, head)
    head.write_text("{not json")
    result = await verify(conn, head)
    assert result.problem is not None
    assert result.problem.kind == "head_mismatch"
    with pytest.raises(AuditError, match="not a valid head"):
        await append(conn, type="t", actor="a", subject=None, details={}, head_file=head)


async def test_head_lagging_by_one_is_the_crash_window(
    conn: asyncpg.Connection, head: Path
) -> None:
    events = await _fill(conn, head)
    write_head(head, Head(4, events[3].hash))  # as if we crashed after commit 5
    result = await verify(conn, head)
    assert result.ok
    assert "lags the log by one event" in result.notes[0]
    ev = await append(conn, type="t", actor="a", subject=None, details={}, head_file=head)
    assert ev.seq == 6
    assert read_head(head) == Head(6, ev.hash)
    assert (await verify(conn, head)).notes == ()


async def test_no_head_after_the_first_event_is_the_crash_window(
    conn: asyncpg.Connection, head: Path
) -> None:
    await _fill(conn, head, 1)
    head.unlink()  # as if we crashed after committing event 1
    result = await verify(conn, head)
    assert result.ok and "lags the log by one event" in result.notes[0]
    ev = await append(conn, type="t", actor="a", subject=None, details={}, head_file=head)
    assert read_head(head) == Head(2, ev.hash)


async def test_head_lagging_by_two_is_tampering(conn: asyncpg.Connection, head: Path) -> None:
    events = await _fill(conn, head)
    write_head(head, Head(3, events[2].hash))
    result = await verify(conn, head)
    assert result.problem is not None
    assert (result.problem.kind, result.problem.seq) == ("head_mismatch", 4)
    with pytest.raises(AuditHeadError):
        await append(conn, type="t", actor="a", subject=None, details={}, head_file=head)


async def test_verify_reads_a_consistent_snapshot_during_appends(db: str, head: Path) -> None:
    writer = await asyncpg.connect(db)
    reader = await asyncpg.connect(db)
    try:

        async def write() -> None:
            for i in range(40):
                await append(
                    writer, type="t", actor="a", subject=None, details={"i": i}, head_file=head
                )

        async def check() -> list[audit.VerifyResult]:
            out = []
            for _ in range(10):
                out.append(await verify(reader, head))
                await asyncio.sleep(0)
            return out

        _, results = await asyncio.gather(write(), check())
        assert all(r.ok for r in results), [r.problem for r in results if not r.ok]
    finally:
        await writer.close()
        await reader.close()


# --------------------------------------------------------------------------- concurrency


async def test_concurrent_appends_from_many_connections(db: str, head: Path) -> None:
    writers, per_writer = 8, 25
    conns = [await asyncpg.connect(db) for _ in range(writers)]
    try:

        async def run(w: int, c: asyncpg.Connection) -> list[int]:
            seqs = []
            for i in range(per_writer):
                ev = await append(
                    c, type="load", actor=f"w{w}", subject=None, details={"i": i}, head_file=head
                )
                seqs.append(ev.seq)
            return seqs

        results = await asyncio.gather(*(run(w, c) for w, c in enumerate(conns)))
    finally:
        for c in conns:
            await c.close()
    total = writers * per_writer
    assert sorted(s for r in results for s in r) == list(range(1, total + 1))
    for r in results:
        assert r == sorted(r)
    conn = await asyncpg.connect(db)
    try:
        result = await verify(conn, head)
        # No advisory lock is left behind by any writer.
        held = await conn.fetchval(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted"
        )
    finally:
        await conn.close()
    assert result.ok, result.problem
    assert result.events_checked == total
    assert read_head(head) == Head(total, result.head.hash if result.head else "")
    assert held == 0


async def test_concurrent_appends_through_a_pool(db: str, head: Path) -> None:
    pool = await asyncpg.create_pool(db, min_size=4, max_size=4)
    try:
        await asyncio.gather(
            *(
                append(pool, type="p", actor="a", subject=None, details={"i": i}, head_file=head)
                for i in range(60)
            )
        )
        result = await verify(pool, head)
    finally:
        await pool.close()
    assert result.ok and result.events_checked == 60


async def _advisory_locks_held(db: str) -> int:
    c = await asyncpg.connect(db)
    try:
        return int(
            await c.fetchval(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted "
                "AND objid = ($1::bigint & 4294967295)::oid",
                audit.LOCK_KEY,
            )
        )
    finally:
        await c.close()


async def _no_lock_within(db: str, seconds: float) -> None:
    """Terminated sessions end asynchronously on the server: a bounded wait, not a speed."""
    deadline = asyncio.get_running_loop().time() + seconds
    while await _advisory_locks_held(db):
        assert asyncio.get_running_loop().time() < deadline, "advisory lock still held"
        await asyncio.sleep(0.05)


async def test_append_cancelled_while_waiting_leaves_no_lock(db: str, head: Path) -> None:
    holder = await asyncpg.connect(db)
    victim = await asyncpg.connect(db)
    try:
        await holder.execute("SELECT pg_advisory_lock($1)", audit.LOCK_KEY)
        task = asyncio.create_task(
            append(victim, type="t", actor="a", subject=None, details={}, head_file=head)
        )
        await asyncio.sleep(0.3)
        assert not task.done()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert victim.is_closed()  # the only way to be sure it holds no lock
        await holder.execute("SELECT pg_advisory_unlock($1)", audit.LOCK_KEY)
    finally:
        await holder.close()
        await victim.close()
    await _no_lock_within(db, 10)
    other = await asyncpg.connect(db)
    try:
        ev = await asyncio.wait_for(
            append(other, type="t", actor="a", subject=None, details={}, head_file=head), 10
        )
        assert ev.seq == 1
    finally:
        await other.close()


async def test_cancelled_appends_through_a_pool_keep_the_chain(db: str, head: Path) -> None:
    pool = await asyncpg.create_pool(db, min_size=4, max_size=4)
    try:
        tasks = [
            asyncio.create_task(
                append(pool, type="p", actor="a", subject=None, details={"i": i}, head_file=head)
            )
            for i in range(40)
        ]
        for i, t in enumerate(tasks):
            if i % 3 == 0:
                await asyncio.sleep(0.002)
                t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        result = await verify(pool, head)
        assert result.ok, result.problem
        ev = await asyncio.wait_for(
            append(pool, type="after", actor="a", subject=None, details={}, head_file=head), 10
        )
        assert ev.seq == result.events_checked + 1
    finally:
        await pool.close()
    await _no_lock_within(db, 10)


# --------------------------------------------------------------------------- migrations


async def test_migration_runner_applies_the_audit_table(fresh_db: str, head: Path) -> None:
    from payapi.sapi.migrate import migrate

    applied = await migrate(fresh_db)
    assert "0002_audit.sql" in applied
    conn = await asyncpg.connect(fresh_db)
    try:
        await append(conn, type="t", actor="a", subject=None, details={}, head_file=head)
        assert (await verify(conn, head)).ok
    finally:
        await conn.close()


# --------------------------------------------------------------------------- CLI


def _config(tmp_path: Path, dsn: str, head: Path) -> Path:
    cfg = tmp_path / "payapi.toml"
    cfg.write_text(f'[postgres]\npayment_dsn = "{dsn}"\n\n[audit]\nhead_file = "{head}"\n')
    return cfg


def _sync_fill(dsn: str, head: Path) -> None:
    async def go() -> None:
        c = await asyncpg.connect(dsn)
        try:
            await _fill(c, head)
        finally:
            await c.close()

    asyncio.run(go())


def _sync_tamper(dsn: str, sql: str) -> None:
    async def go() -> None:
        c = await asyncpg.connect(dsn)
        try:
            await _tamper(c, sql)
        finally:
            await c.close()

    asyncio.run(go())


def test_cli_verify_and_list(
    db: str, head: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PAYAPI_CONFIG", raising=False)
    _sync_fill(db, head)
    cfg = _config(tmp_path, db, head)
    runner = CliRunner()

    ok = runner.invoke(app, ["--config", str(cfg), "audit", "verify"])
    assert ok.exit_code == 0, ok.output
    assert "intact: 5 events" in ok.stdout

    as_json = runner.invoke(app, ["--config", str(cfg), "audit", "verify", "--json"])
    assert as_json.exit_code == 0
    assert json.loads(as_json.stdout)["ok"] is True

    listed = runner.invoke(app, ["--config", str(cfg), "audit", "list", "--limit", "2", "--json"])
    assert listed.exit_code == 0, listed.output
    assert [e["seq"] for e in json.loads(listed.stdout)] == [4, 5]
    table = runner.invoke(app, ["--config", str(cfg), "audit", "list"], env={"COLUMNS": "200"})
    assert table.exit_code == 0 and "test.event" in table.stdout

    _sync_tamper(db, "UPDATE audit_events SET actor = 'mallory' WHERE seq = 2")
    bad = runner.invoke(app, ["--config", str(cfg), "audit", "verify"])
    assert bad.exit_code == 1
    lines = bad.stderr.strip().splitlines()
    assert len(lines) == 1, bad.stderr
    assert "seq 2" in lines[0] and "edited" in lines[0]

    bad_json = runner.invoke(app, ["--config", str(cfg), "audit", "verify", "--json"])
    assert bad_json.exit_code == 1
    assert json.loads(bad_json.stdout)["problem"] == {
        "kind": "edited",
        "seq": 2,
        "detail": "its hash does not match its contents",
    }


def test_cli_verify_without_dsn_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PAYAPI_CONFIG", raising=False)
    monkeypatch.delenv("PAYAPI_POSTGRES__PAYMENT_DSN", raising=False)
    cfg = tmp_path / "payapi.toml"
    cfg.write_text("")
    result = CliRunner().invoke(app, ["--config", str(cfg), "audit", "verify"])
    assert result.exit_code == 1
    assert "payment_dsn is not configured" in result.stderr


def test_cli_verify_without_table_is_one_line(
    fresh_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PAYAPI_CONFIG", raising=False)
    cfg = _config(tmp_path, fresh_db, tmp_path / "head.json")
    result = CliRunner().invoke(app, ["--config", str(cfg), "audit", "verify"])
    assert result.exit_code == 1
    assert "migrations" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
