"""Append-only, hash-chained audit events in ``payment_db``, with the chain head kept outside.

One job: the audit chain (append, read, verify, the head outside); long because every
way of breaking a chain has its own check and message.

Why a chain: an audit log that the people it audits can quietly edit proves nothing. Each
event commits to the one before it, so changing, removing or reordering any event breaks
the chain from that point on, and :func:`verify` says where and how.

Why a head file: a chain alone cannot show that its newest events were deleted (what
remains is still a valid chain), nor that someone rewrote history and recomputed every
hash. So after each append the newest ``{seq, hash}`` is also written OUTSIDE the database
(a file here; WORM/object-lock storage in production). The database cannot vouch for
itself.

Invariants:

- ``seq`` is 1, 2, 3, ... without gaps; event ``n`` has ``prev_hash`` = hash of event
  ``n-1`` (:data:`GENESIS_HASH`, 64 zeros, for ``n = 1``), and ``hash`` =
  :func:`event_hash` of its own fields.
- Writers are serialized by a session advisory lock held from reading the tail until the
  head file is written, so the head file never goes backwards and at most one committed
  event can be missing from it (a crash between commit and head write; for the very
  first event that means no head file yet). Both :func:`append` and :func:`verify` accept
  exactly that lag of one, and the next append catches the head up; any other
  disagreement is tampering.
- :func:`append` refuses to write when the head file and the table disagree (beyond that
  lag): appending would overwrite the only evidence that events were deleted.
- Details never hold secrets: a key that looks like a credential (same idea as the log
  redaction in :mod:`payapi.core.logs`) may carry only numbers, booleans or null (counts such as
  ``tokens_revoked``), never a string.
- ``append`` must not run inside a caller's transaction: the head is written after the
  commit, and a commit that could still roll back would leave the head ahead of the table.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import json
import os
import re
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from enum import Enum
from pathlib import Path
from typing import Any, Literal, TypeVar, cast
from uuid import UUID

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from payapi.core.errors import PayapiError
from payapi.core.logs import _SENSITIVE as _SECRET_KEY

__all__ = [
    "GENESIS_HASH",
    "LOCK_KEY",
    "AuditDetailsError",
    "AuditError",
    "AuditEvent",
    "AuditHeadError",
    "Head",
    "Problem",
    "ProblemKind",
    "VerifyResult",
    "append",
    "canonical_json",
    "event_hash",
    "list_events",
    "read_head",
    "verify",
    "write_head",
]

GENESIS_HASH = "0" * 64
# pg_advisory_lock key: "payapi" in ASCII plus 2 (the migration runner uses ...0001).
LOCK_KEY = 0x7061796170690002
# How far from a broken event verify looks for the event it was swapped with.
REORDER_WINDOW = 64

Conn = asyncpg.Connection | PoolConnectionProxy
Target = asyncpg.Connection | asyncpg.Pool | PoolConnectionProxy
T = TypeVar("T")


class AuditError(PayapiError):
    """The audit log cannot do what was asked; the message is one line for the operator."""


class AuditDetailsError(AuditError, ValueError):
    """The event was refused before anything was written (secret-looking key, not JSON)."""


class AuditHeadError(AuditError):
    """The head file and the table disagree: appending would hide the difference."""


@dataclass(frozen=True, slots=True)
class Head:
    """The newest event as recorded outside the database."""

    seq: int
    hash: str


@dataclass(frozen=True, slots=True)
class AuditEvent:
    seq: int
    occurred_at: datetime
    type: str
    actor: str
    subject: str | None
    details: dict[str, Any]
    prev_hash: str
    hash: str

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["occurred_at"] = _iso(self.occurred_at)
        return out


ProblemKind = Literal[
    "edited", "deleted", "reordered", "head_mismatch", "head_missing", "truncated"
]


@dataclass(frozen=True, slots=True)
class Problem:
    """The first thing wrong with the chain. ``seq`` is None when no event is to blame."""

    kind: ProblemKind
    seq: int | None
    detail: str

    def line(self) -> str:
        where = f"at seq {self.seq}" if self.seq is not None else "at the head"
        return f"audit chain broken {where}: {self.kind} ({self.detail})"


@dataclass(frozen=True, slots=True)
class VerifyResult:
    ok: bool
    events_checked: int
    last_seq: int | None
    head: Head | None
    problem: Problem | None = None
    notes: tuple[str, ...] = field(default=())

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "events_checked": self.events_checked,
            "last_seq": self.last_seq,
            "head": None if self.head is None else asdict(self.head),
            "problem": None if self.problem is None else asdict(self.problem),
            "notes": list(self.notes),
        }


# --------------------------------------------------------------------------- hashing


def _iso(ts: datetime) -> str:
    """One textual form per instant: UTC, microseconds always present."""
    if ts.tzinfo is None:
        raise AuditError("audit timestamps must be timezone-aware")
    return ts.astimezone(UTC).isoformat(timespec="microseconds")


def canonical_json(value: Any) -> bytes:
    """Sorted keys, no spaces, UTF-8: the same value always gives the same bytes."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def event_hash(
    *,
    seq: int,
    occurred_at: datetime,
    type: str,
    actor: str,
    subject: str | None,
    details: Any,
    prev_hash: str,
) -> str:
    """SHA-256 (hex) of the canonical JSON of every field but the hash itself."""
    doc = {
        "seq": seq,
        "occurred_at": _iso(occurred_at),
        "type": type,
        "actor": actor,
        "subject": subject,
        "details": details,
        "prev_hash": prev_hash,
    }
    return hashlib.sha256(canonical_json(doc)).hexdigest()


def _hash_of(ev: AuditEvent, *, seq: int | None = None, prev_hash: str | None = None) -> str:
    return event_hash(
        seq=ev.seq if seq is None else seq,
        occurred_at=ev.occurred_at,
        type=ev.type,
        actor=ev.actor,
        subject=ev.subject,
        details=ev.details,
        prev_hash=ev.prev_hash if prev_hash is None else prev_hash,
    )


# --------------------------------------------------------------------------- details


def _jsonable(value: Any, path: str, under_secret_key: bool) -> Any:
    """Plain JSON types only; refuses strings under keys that look like credentials."""
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise AuditDetailsError(f"audit details: {path} is not a finite number")
        return value
    if isinstance(value, Enum):
        return _jsonable(value.value, path, under_secret_key)
    if isinstance(value, str | Decimal | UUID | Path | datetime | date):
        if under_secret_key:
            raise AuditDetailsError(
                f"audit details: {path} looks like a secret; audit events never hold secrets"
            )
        if isinstance(value, datetime):
            return _iso(value) if value.tzinfo is not None else value.isoformat()
        if isinstance(value, date):
            return value.isoformat()
        return str(value)
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise AuditDetailsError(f"audit details: {path} has a non-string key {key!r}")
            secret = under_secret_key or bool(_SECRET_KEY.search(key))
            out[key] = _jsonable(item, f"{path}.{key}", secret)
        return out
    if isinstance(value, list | tuple):
        return [_jsonable(item, f"{path}[{i}]", under_secret_key) for i, item in enumerate(value)]
    raise AuditDetailsError(
        f"audit details: {path} has a value of type {type(value).__name__}, not JSON"
    )


def _clean_details(details: Mapping[str, Any]) -> str:
    if not isinstance(details, Mapping):
        raise AuditDetailsError("audit details must be a JSON object")
    return json.dumps(_jsonable(details, "details", False), ensure_ascii=False, allow_nan=False)


# --------------------------------------------------------------------------- head file


def read_head(path: Path) -> Head | None:
    """The head recorded in ``path``; None if the file does not exist.

    Raises AuditError if it exists but is not a head (that is tampering or damage, and
    must not be mistaken for "no head yet").
    """
    try:
        raw = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise AuditError(f"cannot read audit head file {path}: {exc.strerror or exc}") from None
    try:
        data = json.loads(raw)
        seq, digest = data["seq"], data["hash"]
        if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
            raise ValueError
        if not isinstance(digest, str) or not re.fullmatch(r"[0-9a-f]{64}", digest):
            raise ValueError
    except (ValueError, KeyError, TypeError):
        raise AuditError(f"audit head file {path} is not a valid head") from None
    return Head(seq=seq, hash=digest)


def write_head(path: Path, head: Head) -> None:
    """Replace ``path`` atomically: temp file in the same folder, fsync, rename, fsync dir.

    A reader sees the old head or the new one, never a torn file, even after a crash.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    data = json.dumps({"seq": head.seq, "hash": head.hash}).encode() + b"\n"
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


async def _in_thread_to_the_end(fn: Callable[..., T], *args: Any) -> T:
    """Run blocking file I/O off the loop; if cancelled, still wait for it to finish.

    The head must be on disk before the advisory lock is released, or a slow write could
    land after the next writer's and move the head backwards.
    """
    task: asyncio.Future[T] = asyncio.ensure_future(asyncio.to_thread(fn, *args))
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await task
        raise


# --------------------------------------------------------------------------- locking


async def _with_conn(target: Target, fn: Callable[[Conn], Awaitable[T]]) -> T:
    if isinstance(target, asyncpg.Pool):
        async with target.acquire() as conn:
            return await fn(conn)
    return await fn(target)


@contextlib.asynccontextmanager
async def _chain_lock(conn: Conn) -> AsyncIterator[dict[str, bool]]:
    """Hold the writers' session advisory lock; always release it, or drop the session.

    Pooled connections keep their session (SAPI's pool does not reset it), so a lock that
    could not be released must not go back to the pool: terminating the connection is
    what releases it server-side. The same goes for an acquisition that was interrupted
    (cancelled while waiting): the server may have granted the lock just before, and
    nobody would ever release it. So in both cases the connection is closed.
    """
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", LOCK_KEY)
    except BaseException:
        _terminate(conn)
        raise
    state = {"held": True}
    try:
        yield state
    finally:
        if state["held"]:
            try:
                await conn.execute("SELECT pg_advisory_unlock($1)", LOCK_KEY)
            except BaseException:
                _terminate(conn)
                raise


def _terminate(conn: Conn) -> None:
    # A pool proxy forwards terminate() to its connection; the pool then replaces it.
    cast(asyncpg.Connection, conn).terminate()


async def _unlock(conn: Conn, state: dict[str, bool]) -> None:
    await conn.execute("SELECT pg_advisory_unlock($1)", LOCK_KEY)
    state["held"] = False


def _refuse_in_transaction(conn: Conn, what: str) -> None:
    if conn.is_in_transaction():
        raise AuditError(
            f"audit {what} must not run inside a caller's transaction "
            "(the head file is written after the commit)"
        )


# --------------------------------------------------------------------------- append

_TAIL = """
SELECT d.details, clock_timestamp() AS now, t.seq, t.hash
FROM (SELECT $1::jsonb::text AS details) AS d
LEFT JOIN LATERAL (
    SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1
) AS t ON true
"""
_INSERT = """
INSERT INTO audit_events (seq, occurred_at, type, actor, subject, details, prev_hash, hash)
VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7, $8)
"""


async def append(
    conn: Target,
    *,
    type: str,
    actor: str,
    subject: str | None,
    details: Mapping[str, Any],
    head_file: Path | None,
) -> AuditEvent:
    """Append one event and return it (with its ``seq`` and ``hash``).

    ``conn`` is a connection not inside a transaction, or a pool (one connection is
    borrowed). ``head_file`` None skips the external head: then deleting the newest events
    cannot be detected, so production configs always set ``audit.head_file``.

    Raises AuditDetailsError (nothing written) for bad details, AuditHeadError (nothing
    written) if the head file disagrees with the table, AuditError if the head could not be
    written after the event committed (the next append catches it up). If cancelled while
    waiting for the writers' lock, the connection is closed (see :func:`_chain_lock`).
    """
    if not isinstance(type, str) or not type.strip():
        raise AuditDetailsError("audit event type must be a non-empty string")
    if not isinstance(actor, str) or not actor.strip():
        raise AuditDetailsError("audit event actor must be a non-empty string")
    if subject is not None and not isinstance(subject, str):
        raise AuditDetailsError("audit event subject must be a string or None")
    details_json = _clean_details(details)

    async def run(c: Conn) -> AuditEvent:
        _refuse_in_transaction(c, "append")
        async with _chain_lock(c):
            try:
                row = await c.fetchrow(_TAIL, details_json)
            except asyncpg.DataError as exc:
                raise AuditDetailsError(f"audit details refused by the database: {exc}") from None
            assert row is not None
            last_seq: int | None = row["seq"]
            last_hash: str | None = row["hash"]
            if head_file is not None:
                await _check_head_before_append(c, head_file, last_seq, last_hash)
            # What jsonb gives back is what verify will read, so hash exactly that.
            stored_details = json.loads(row["details"])
            ev = AuditEvent(
                seq=(last_seq or 0) + 1,
                occurred_at=row["now"],
                type=type,
                actor=actor,
                subject=subject,
                details=stored_details,
                prev_hash=last_hash or GENESIS_HASH,
                hash="",
            )
            ev = dataclasses.replace(ev, hash=_hash_of(ev))
            await c.execute(
                _INSERT,
                ev.seq,
                ev.occurred_at,
                ev.type,
                ev.actor,
                ev.subject,
                row["details"],
                ev.prev_hash,
                ev.hash,
            )
            if head_file is not None:
                try:
                    await _in_thread_to_the_end(write_head, head_file, Head(ev.seq, ev.hash))
                except OSError as exc:
                    raise AuditError(
                        f"audit event {ev.seq} committed but the head file {head_file} "
                        f"could not be written: {exc.strerror or exc}"
                    ) from None
            return ev

    return await _with_conn(conn, run)


async def _check_head_before_append(
    conn: Conn, head_file: Path, last_seq: int | None, last_hash: str | None
) -> None:
    head = await _in_thread_to_the_end(read_head, head_file)
    if head is None:
        # No head yet: an empty log, or the crash window of the very first event.
        if last_seq is None or last_seq == 1:
            return
        raise AuditHeadError(
            f"audit head file {head_file} is missing but the log holds events up to seq "
            f"{last_seq}; refusing to append (run `payapi audit verify`)"
        )
    if last_seq is not None and head.seq == last_seq and head.hash == last_hash:
        return
    if last_seq is not None and head.seq == last_seq - 1:
        # The crash window: the newest event committed, its head write did not happen.
        row = await conn.fetchrow(
            "SELECT a.hash, b.prev_hash FROM audit_events a, audit_events b "
            "WHERE a.seq = $1 AND b.seq = $2",
            head.seq,
            last_seq,
        )
        if row is not None and row["hash"] == head.hash == row["prev_hash"]:
            return
    raise AuditHeadError(
        f"audit head file {head_file} (seq {head.seq}) does not match the log "
        f"(last seq {last_seq if last_seq is not None else 'none'}); refusing to append "
        "(run `payapi audit verify`)"
    )


# --------------------------------------------------------------------------- reading

_COLUMNS = "seq, occurred_at, type, actor, subject, details::text AS details, prev_hash, hash"


def _event(row: asyncpg.Record) -> AuditEvent:
    return AuditEvent(
        seq=row["seq"],
        occurred_at=row["occurred_at"],
        type=row["type"],
        actor=row["actor"],
        subject=row["subject"],
        details=json.loads(row["details"]),
        prev_hash=row["prev_hash"],
        hash=row["hash"],
    )


async def list_events(
    conn: Target, *, limit: int = 50, type: str | None = None
) -> list[AuditEvent]:
    """The newest ``limit`` events (optionally of one ``type``), oldest first."""
    if limit < 1:
        raise AuditError("limit must be at least 1")

    async def run(c: Conn) -> list[AuditEvent]:
        rows = await c.fetch(
            f"SELECT {_COLUMNS} FROM audit_events "  # noqa: S608 - constant column list
            "WHERE $2::text IS NULL OR type = $2 ORDER BY seq DESC LIMIT $1",
            limit,
            type,
        )
        return [_event(r) for r in reversed(rows)]

    return await _with_conn(conn, run)


# --------------------------------------------------------------------------- verify


async def verify(conn: Target, head_file: Path | None) -> VerifyResult:
    """Check every event and the head; report the first problem found.

    Detects: an edited event (any field, with or without a recomputed hash), a deleted
    event in the middle (gap) or at the end (via the head file: ``truncated``), a
    reordered pair, and a head file that is missing or disagrees with the table.

    The check runs on one snapshot taken while holding the writers' lock, so concurrent
    appends neither disturb it nor are mistaken for tampering; the lock is released as
    soon as the snapshot and the head have been read.
    """

    async def run(c: Conn) -> VerifyResult:
        _refuse_in_transaction(c, "verify")
        async with (
            _chain_lock(c) as lock,
            c.transaction(isolation="repeatable_read", readonly=True),
        ):
            await c.fetchval("SELECT count(*) FROM audit_events")  # takes the snapshot
            head: Head | None = None
            head_error: str | None = None
            if head_file is not None:
                try:
                    head = await _in_thread_to_the_end(read_head, head_file)
                except AuditError as exc:
                    head_error = str(exc)
            # Appends may proceed now: they only add rows this snapshot cannot see.
            await _unlock(c, lock)
            return await _verify_snapshot(c, head_file, head, head_error)

    return await _with_conn(conn, run)


_LAG_NOTE = (
    "the head lags the log by one event (seq {} committed, head not yet updated: a crash "
    "or cancellation between commit and head write); the next append catches up"
)


async def _verify_snapshot(
    conn: Conn, head_file: Path | None, head: Head | None, head_error: str | None
) -> VerifyResult:
    expected_seq = 1
    prev = GENESIS_HASH
    checked = 0
    hash_at_head: str | None = None
    anomaly: tuple[str, AuditEvent] | None = None
    async for row in conn.cursor(
        f"SELECT {_COLUMNS} FROM audit_events ORDER BY seq",  # noqa: S608 - constant
        prefetch=1000,
    ):
        ev = _event(row)
        if ev.seq != expected_seq:
            anomaly = ("gap", ev)
            break
        if _hash_of(ev) != ev.hash:
            anomaly = ("self", ev)
            break
        if ev.prev_hash != prev:
            anomaly = ("link", ev)
            break
        checked += 1
        prev = ev.hash
        expected_seq += 1
        if head is not None and ev.seq == head.seq:
            hash_at_head = ev.hash
    last_seq = expected_seq - 1 if expected_seq > 1 else None

    def broken(problem: Problem) -> VerifyResult:
        return VerifyResult(False, checked, last_seq, head, problem)

    if anomaly is not None:
        what, ev = anomaly
        return broken(await _classify(conn, what, ev, expected_seq, prev))

    # The chain is internally sound; now the newest end, against the head file.
    if head_file is None:
        note = "no head file configured: deletion of the newest events is not detectable"
        return VerifyResult(True, checked, last_seq, None, notes=(note,))
    if head_error is not None:
        return broken(Problem("head_mismatch", None, head_error))
    if head is None:
        if last_seq is None:
            return VerifyResult(True, 0, None, None, notes=("the log is empty",))
        if last_seq == 1:
            return VerifyResult(True, checked, last_seq, None, notes=(_LAG_NOTE.format(1),))
        return broken(
            Problem(
                "head_missing",
                None,
                f"head file {head_file} is missing but the log holds {checked} events",
            )
        )
    if last_seq is None or head.seq > last_seq:
        first_missing = (last_seq or 0) + 1
        return broken(
            Problem(
                "truncated",
                first_missing,
                f"the head records seq {head.seq} but the log ends at "
                f"{last_seq if last_seq is not None else 'nothing'}",
            )
        )
    if hash_at_head != head.hash:
        return broken(
            Problem(
                "head_mismatch",
                head.seq,
                "the head's hash differs from the event's: history was rewritten",
            )
        )
    if head.seq == last_seq:
        return VerifyResult(True, checked, last_seq, head)
    if head.seq == last_seq - 1:
        return VerifyResult(True, checked, last_seq, head, notes=(_LAG_NOTE.format(last_seq),))
    return broken(
        Problem(
            "head_mismatch",
            head.seq + 1,
            f"{last_seq - head.seq} events after the head (seq {head.seq}) were not "
            "recorded in it: appended outside payapi",
        )
    )


async def _classify(conn: Conn, what: str, ev: AuditEvent, expected_seq: int, prev: str) -> Problem:
    """Name the first problem: deleted, reordered or edited (in that order of evidence)."""
    if what == "gap":
        # The event that should follow the last good one: somewhere else, or gone?
        row = await conn.fetchrow(
            f"SELECT {_COLUMNS} FROM audit_events "  # noqa: S608 - constant
            "WHERE prev_hash = $1 AND seq <> $2 LIMIT 1",
            prev,
            expected_seq,
        )
        if row is not None:
            moved = _event(row)
            if _hash_of(moved, seq=expected_seq) == moved.hash:
                return Problem(
                    "reordered",
                    expected_seq,
                    f"event {expected_seq} was moved to seq {moved.seq}",
                )
        missing = ev.seq - expected_seq
        span = f"seq {expected_seq}" if missing == 1 else f"seq {expected_seq}..{ev.seq - 1}"
        return Problem("deleted", expected_seq, f"{span} missing (gap before seq {ev.seq})")

    k = ev.seq
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM audit_events "  # noqa: S608 - constant
        "WHERE seq BETWEEN $1 AND $2 ORDER BY seq",
        k - REORDER_WINDOW,
        k + REORDER_WINDOW,
    )
    window = [_event(r) for r in rows]
    hashes = {w.hash for w in window}

    if what == "self":
        for other in window:
            if other.seq == k:
                continue
            # The payload of event `other.seq` sits here (contents swapped, seq kept).
            if _hash_of(ev, seq=other.seq, prev_hash=other.prev_hash) == other.hash:
                return Problem("reordered", k, f"seq {k} holds the contents of seq {other.seq}")
        for j in range(k - REORDER_WINDOW, k + REORDER_WINDOW + 1):
            if j < 1 or j == k:
                continue
            # This whole event belongs at seq j (its seq was relabelled).
            if _hash_of(ev, seq=j) == ev.hash:
                if ev.prev_hash in hashes or ev.prev_hash == GENESIS_HASH:
                    return Problem("reordered", k, f"seq {k} holds event {j}")
                return Problem(
                    "deleted",
                    expected_seq,
                    f"event {j} was renumbered to {k}: the event before it is gone",
                )
        return Problem("edited", k, "its hash does not match its contents")

    # what == "link": the event is self-consistent, but does not follow its predecessor.
    if ev.prev_hash in hashes:
        j = next(w.seq for w in window if w.hash == ev.prev_hash)
        return Problem("reordered", k, f"seq {k} follows seq {j}, not seq {k - 1}")
    return Problem(
        "edited",
        k - 1,
        f"seq {k - 1} no longer has the hash seq {k} committed to (rewritten with a new hash)",
    )
