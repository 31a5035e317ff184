"""The seed's "Data Corruption Recovery", beside production: ``payapi recover corruption``.

1. **A copy as it was just before T.** Point-in-time recovery of the newest base backup
   plus archived WAL into a scratch instance (:func:`scratch_copy`): a new data directory
   under ``[backup] work_dir`` (or the system's temp folder), started as the unprivileged
   lab user on a free port, never archiving (the restore engine's own rules), and always
   stopped and deleted afterwards, also on failure. Production is never restored in place:
   the rows written since T are valid payments that an in-place PITR would throw away.
2. **Compare and plan.** Each table is read by primary key from the copy and from live
   (values as ``to_jsonb``, so any table works and numerics stay exact), and the pure
   planner (:mod:`payapi.recovery.corruption_plan`) decides. The plan is written to a JSON
   file (mode 0600) before anything is applied, so the operator reviews what will happen.
3. **Apply** (:func:`apply_db`): ONE transaction on live. Every row the plan touches is
   locked and re-read first; if any differs from what the plan saw (the optimistic check)
   the transaction is rolled back and nothing changes. Then rows changed since T get
   their pre-T values (UPDATE), rows deleted since T are re-inserted (INSERT, never an
   upsert: a row that reappeared meanwhile is a conflict, not something to overwrite),
   rows the operator marked are deleted. After the commit (never inside the transaction:
   see :func:`payapi.audit.append`) one audit event records the counts and the plan's
   SHA-256.

The vault's counterpart is :mod:`payapi.recovery.corruption_vault`; ``--verify``'s checks
are :mod:`payapi.recovery.corruption_checks`.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import asyncpg

from payapi.backup.postgres import COMPONENT, PHYSICAL, PgMeta
from payapi.backup.restore import RestoreRequest, RestoreResult, Target, restore
from payapi.backup.service import restore_command_for
from payapi.core.errors import PayapiError, UsageError
from payapi.core.journal import Journal
from payapi.recovery.corruption_plan import (
    CorrectionPlan,
    CorrectionPlanError,
    IntegrityReport,
    RowChange,
    TablePlan,
    VaultPlan,
    plan_table,
    same_row,
    target_time,
)
from payapi.servers.postgres import stop_server

if TYPE_CHECKING:
    from payapi.backup.repository import Repository
    from payapi.core.settings import Settings

T = TypeVar("T")
Conn = asyncpg.Connection
CONNECT_TIMEOUT = 10.0
APPEND_ONLY = frozenset({"audit_events", "public.audit_events"})
AUDIT_TYPE = "recovery.corruption.applied"


class CorruptionError(PayapiError):
    """The correction could not be planned or applied (exit 1, one line)."""


class StalePlanError(CorruptionError):
    """A row changed between the plan and the apply: nothing was changed."""


@dataclass
class CorruptionRequest:
    """One ``recover corruption`` run (the CLI's options)."""

    since: datetime
    tables: tuple[str, ...] = ("payments",)
    drop_ids: tuple[str, ...] = ()
    keep_ids: tuple[str, ...] = ()
    plan_file: Path | None = None
    work_dir: Path | None = None
    archive_timeout: float = 120.0
    recovery_timeout: float = 600.0
    journal: Journal = field(default_factory=Journal)


@dataclass
class Outcome:
    """What ``--json`` prints: ``{"target_time", "restored_rows", "kept_rows",
    "deleted_rows_restored", "plan_file", "applied"}`` plus details."""

    plan: CorrectionPlan | VaultPlan
    plan_file: Path
    scratch: dict[str, Any] = field(default_factory=dict)
    applied: bool = False
    new_versions: dict[str, int] = field(default_factory=dict)
    audit: dict[str, Any] | None = None
    integrity: IntegrityReport | None = None
    # In memory only, never printed nor written: what --apply needs beyond the plan file
    # (the vault's pre-T ciphertexts).
    private: dict[str, bytes] = field(default_factory=dict, repr=False)

    def to_json(self) -> dict[str, Any]:
        counts = self.plan.counts()
        out: dict[str, Any] = {
            "target_time": self.plan.target_time.astimezone(UTC).isoformat(),
            "restored_rows": counts["restored_rows"],
            "kept_rows": counts["kept_rows"],
            "deleted_rows_restored": counts["deleted_rows_restored"],
            "plan_file": str(self.plan_file),
            "applied": self.applied,
            "component": self.plan.component,
            "since": self.plan.since.astimezone(UTC).isoformat(),
            "dropped_rows": counts["dropped_rows"],
            "unchanged_rows": counts["unchanged_rows"],
            "backup_id": self.plan.backup_id,
            "scratch": self.scratch,
        }
        if isinstance(self.plan, CorrectionPlan):
            out["tables"] = {t.table: t.counts() for t in self.plan.tables}
        else:
            out["missing_variables"] = list(self.plan.missing)
            out["new_versions"] = dict(self.new_versions)
        out["audit"] = self.audit
        out["integrity"] = None if self.integrity is None else self.integrity.to_json()
        return out


# --------------------------------------------------------------------------- helpers


def run(fn: Callable[[], Awaitable[T]]) -> T:
    """Run one coroutine; database failures become one line (never a DSN)."""
    try:
        return asyncio.run(fn())  # type: ignore[arg-type]
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise CorruptionError(f"database: {type(exc).__name__}: {exc}") from None


async def connect(dsn: str) -> Conn:
    """A connection whose timestamps print in UTC (so copy and live compare as text)."""
    return await asyncpg.connect(dsn, timeout=CONNECT_TIMEOUT, server_settings={"TimeZone": "UTC"})


def loads(text: str) -> Any:
    return json.loads(text, parse_float=Decimal)


def dumps(value: Any) -> str:
    return json.dumps(value, default=str, ensure_ascii=False)


def payment_dsn(settings: Settings) -> str:
    dsn = settings.postgres.payment_dsn
    if not dsn:
        raise UsageError("postgres.payment_dsn is not configured")
    return dsn


def check_time(since: datetime, repo: Repository, *, now: datetime | None = None) -> str:
    """UsageError when T is in the future or before the oldest physical backup; returns
    the id of the backup a copy just before T would start from."""
    now = now or datetime.now(UTC)
    if since > now:
        raise UsageError(
            f"--since {since.astimezone(UTC).isoformat()} is in the future "
            f"(now is {now.isoformat(timespec='seconds')})"
        )
    target = target_time(since)
    physical = [
        b for b in repo.list_backups(COMPONENT) if b.type in PHYSICAL and PgMeta.of(b).end()
    ]
    if not physical:
        raise CorruptionError("no physical database backup to recover a copy from")
    usable = [b for b in physical if b.finished_at <= target]
    if not usable:
        oldest = min(b.finished_at for b in physical)
        raise UsageError(
            f"--since {since.astimezone(UTC).isoformat()} is before the oldest database "
            f"backup (finished {oldest.astimezone(UTC).isoformat()}): no copy can show "
            "the data as it was then"
        )
    return max(usable, key=lambda b: (b.finished_at, b.backup_id)).backup_id


def write_plan(plan: CorrectionPlan | VaultPlan, path: Path) -> tuple[Path, str]:
    """Write the plan file atomically, mode 0600; returns (path, SHA-256 of its bytes)."""
    path = path.expanduser().absolute()
    path.parent.mkdir(parents=True, exist_ok=True)
    data = (json.dumps(plan.to_json(), indent=2, default=str) + "\n").encode()
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path, hashlib.sha256(data).hexdigest()


def default_plan_file(component: str, now: datetime | None = None) -> Path:
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    return Path.cwd() / f"correction-plan-{component}-{stamp}.json"


# --------------------------------------------------------------------------- scratch


@contextlib.contextmanager
def scratch_copy(
    repo: Repository, settings: Settings, since: datetime, req: CorruptionRequest
) -> Iterator[RestoreResult]:
    """A running point-in-time copy of the database as it was just before ``since``,
    beside production; stopped and deleted when the block ends, whatever happens."""
    work = req.work_dir or settings.backup.work_dir
    if work is not None:
        work.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="payapi-corruption-", dir=work))
    data = root / "data"
    try:
        restore_req = RestoreRequest(
            to=data,
            restore_command=restore_command_for(settings),
            target=Target("time", time=target_time(since)),
            start=True,
            source_dsn=settings.postgres.payment_dsn or None,
            archive_timeout=req.archive_timeout,
            recovery_timeout=req.recovery_timeout,
            journal=req.journal,
        )
        with req.journal.step("restoring a copy just before T beside production"):
            result = restore(repo, restore_req)
        yield result
    finally:
        with req.journal.step("removing the scratch copy"):
            with contextlib.suppress(Exception):
                stop_server(data, mode="immediate")
            shutil.rmtree(root, ignore_errors=True)


def scratch_dsn(result: RestoreResult, database: str) -> str:
    return f"postgresql://postgres@127.0.0.1:{result.port}/{database}"


def scratch_json(result: RestoreResult) -> dict[str, Any]:
    return {
        "backup_id": result.backup_id,
        "port": result.port,
        "recovered": result.recovered,
        "removed": True,
    }


# --------------------------------------------------------------------------- tables


@dataclass(frozen=True)
class TableRef:
    name: str  # as PostgreSQL prints the regclass (quoted when needed)
    primary_key: tuple[str, ...]


_TABLE = """
SELECT c.oid::regclass::text AS name,
       ARRAY(SELECT a.attname::text
             FROM pg_index i
             JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
             WHERE i.indrelid = c.oid AND i.indisprimary
             ORDER BY array_position(i.indkey::int2[], a.attnum)) AS pk
FROM pg_class c
WHERE c.oid = to_regclass($1) AND c.relkind IN ('r', 'p')
"""


async def resolve_tables(conn: Conn, names: Sequence[str]) -> list[TableRef]:
    """Each name as a live table with a primary key; UsageError naming the first that
    is not (unknown, no primary key, or the append-only audit log)."""
    out: list[TableRef] = []
    for name in names:
        if name.strip().lower() in APPEND_ONLY:
            raise UsageError(
                "--tables audit_events: the audit log is append-only and never corrected; "
                "check it with --verify"
            )
        try:
            row = await conn.fetchrow(_TABLE, name)
        except asyncpg.InvalidNameError:
            row = None
        if row is None:
            raise UsageError(f"--tables {name}: no such table in the payment database")
        if not row["pk"]:
            raise UsageError(f"--tables {name}: the table has no primary key to match rows by")
        if row["name"] in {t.name for t in out}:
            continue
        out.append(TableRef(row["name"], tuple(row["pk"])))
    return out


async def read_rows(conn: Conn, table: str) -> list[dict[str, Any]]:
    """Every row of ``table`` as JSON values; none when the table does not exist there."""
    if await conn.fetchval("SELECT to_regclass($1)", table) is None:
        return []
    rows = await conn.fetch(f"SELECT to_jsonb(t)::text AS j FROM {table} AS t")  # noqa: S608
    return [loads(r["j"]) for r in rows]


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _match(pk: Sequence[str]) -> str:
    return " AND ".join(f"t.{_ident(c)} = r.{_ident(c)}" for c in pk)


# --------------------------------------------------------------------------- db


def plan_db(
    settings: Settings, repo: Repository, req: CorruptionRequest
) -> tuple[Outcome, list[TableRef]]:
    """Check the request, recover a copy just before T, compare, write the plan file."""
    dsn = payment_dsn(settings)
    check_time(req.since, repo)

    async def tables() -> tuple[list[TableRef], str]:
        conn = await connect(dsn)
        try:
            return await resolve_tables(conn, req.tables), str(
                await conn.fetchval("SELECT current_database()")
            )
        finally:
            await conn.close()

    refs, database = run(tables)
    with scratch_copy(repo, settings, req.since, req) as copy:

        async def read() -> list[tuple[list[dict[str, Any]], list[dict[str, Any]]]]:
            old, new = await connect(scratch_dsn(copy, database)), await connect(dsn)
            try:
                return [(await read_rows(old, t.name), await read_rows(new, t.name)) for t in refs]
            finally:
                await old.close()
                await new.close()

        with req.journal.step("comparing the copy with live"):
            pairs = run(read)
        scratch = scratch_json(copy)
    try:
        table_plans = [
            plan_table(t.name, t.primary_key, before, now, drop=drops_for(t, i, req.drop_ids))
            for i, (t, (before, now)) in enumerate(zip(refs, pairs, strict=True))
        ]
    except CorrectionPlanError as exc:
        raise UsageError(str(exc)) from None
    plan = CorrectionPlan(
        since=req.since,
        tables=tuple(table_plans),
        created_at=datetime.now(UTC),
        backup_id=scratch["backup_id"],
    )
    path, _digest = write_plan(plan, req.plan_file or default_plan_file("db"))
    return Outcome(plan=plan, plan_file=path, scratch=scratch), refs


def drops_for(table: TableRef, index: int, ids: Sequence[str]) -> list[str]:
    """The ``--drop-ids`` lines for ``table``: ``TABLE:ID`` names a table, a bare ``ID``
    the first table of ``--tables`` (``payments`` by default)."""
    bare = table.name.rsplit(".", 1)[-1].strip('"')
    out: list[str] = []
    for line in ids:
        name, sep, ident = line.partition(":")
        if sep and name.strip() in (table.name, bare):
            out.append(ident.strip())
        elif not sep and index == 0:
            out.append(line.strip())
    return out


async def _check_row(conn: Conn, table: str, pk: Sequence[str], change: RowChange) -> None:
    sql = (
        f"SELECT to_jsonb(t)::text AS j FROM {table} AS t, "  # noqa: S608
        f"jsonb_populate_record(NULL::{table}, $1::jsonb) AS r WHERE {_match(pk)} FOR UPDATE OF t"
    )
    found = await conn.fetchval(sql, dumps(change.key))
    current = None if found is None else loads(found)
    if not same_row(current, change.now):
        key = ", ".join(f"{k}={v}" for k, v in change.key.items())
        what = "was deleted" if current is None else "changed"
        if change.now is None:
            what = "reappeared"
        raise StalePlanError(
            f"{table} row {key} {what} since the plan was made; nothing was changed "
            "(make a new plan)"
        )


async def _write_row(conn: Conn, table: str, pk: Sequence[str], change: RowChange) -> None:
    if change.action == "delete":
        sql = (
            f"DELETE FROM {table} AS t USING "  # noqa: S608
            f"jsonb_populate_record(NULL::{table}, $1::jsonb) AS r WHERE {_match(pk)}"
        )
        await conn.execute(sql, dumps(change.key))
        return
    assert change.before is not None
    columns = list(change.before)
    if change.action == "insert":
        cols = ", ".join(_ident(c) for c in columns)
        sql = (
            f"INSERT INTO {table} ({cols}) SELECT {cols} "  # noqa: S608
            f"FROM jsonb_populate_record(NULL::{table}, $1::jsonb)"
        )
    else:
        sets = ", ".join(f"{_ident(c)} = r.{_ident(c)}" for c in columns if c not in pk)
        if not sets:
            return
        sql = (
            f"UPDATE {table} AS t SET {sets} FROM "  # noqa: S608
            f"jsonb_populate_record(NULL::{table}, $1::jsonb) AS r WHERE {_match(pk)}"
        )
    await conn.execute(sql, dumps(change.before))


async def apply_db_on(conn: Conn, plan: CorrectionPlan) -> None:
    """Check every row the plan touches, then correct them: one transaction."""
    async with conn.transaction():
        for t in plan.tables:
            for change in t.changes:
                await _check_row(conn, t.table, t.primary_key, change)
        for t in plan.tables:
            for change in t.changes:
                await _write_row(conn, t.table, t.primary_key, change)


def apply_db(settings: Settings, outcome: Outcome) -> None:
    """Apply ``outcome``'s plan on live, then audit it; StalePlanError changes nothing."""
    plan = outcome.plan
    assert isinstance(plan, CorrectionPlan)
    dsn = payment_dsn(settings)

    async def go() -> None:
        conn = await connect(dsn)
        try:
            try:
                await apply_db_on(conn, plan)
            except asyncpg.PostgresError as exc:
                raise CorruptionError(
                    f"the correction was refused by the database and rolled back: "
                    f"{type(exc).__name__}: {exc}"
                ) from None
        finally:
            await conn.close()

    if not plan.empty:
        run(go)
    outcome.applied = True
    outcome.audit = audit_applied(settings, outcome)


def audit_applied(settings: Settings, outcome: Outcome) -> dict[str, Any]:
    """One event in the hash chain for an applied correction, after its commit. Returns
    ``{"seq"}``, or ``{"error"}`` when the audit log refused (the caller exits 1)."""
    from payapi.audit import AuditError, append

    plan = outcome.plan
    digest = hashlib.sha256(outcome.plan_file.read_bytes()).hexdigest()
    details: dict[str, Any] = {
        "component": plan.component,
        "since": plan.since.astimezone(UTC).isoformat(),
        "target_time": plan.target_time.astimezone(UTC).isoformat(),
        **plan.counts(),
        "plan_file": str(outcome.plan_file),
        "plan_sha256": digest,
        "operator": _operator(),
    }
    if isinstance(plan, CorrectionPlan):
        details["tables"] = [t.table for t in plan.tables]
    else:
        details["variables"] = sorted(outcome.new_versions)
    subject = f"{plan.component}:" + (
        ",".join(t.table for t in plan.tables) if isinstance(plan, CorrectionPlan) else "secrets"
    )
    dsn = payment_dsn(settings)

    async def go() -> int:
        conn = await connect(dsn)
        try:
            ev = await append(
                conn,
                type=AUDIT_TYPE,
                actor="payapi-cli",
                subject=subject,
                details=details,
                head_file=settings.audit.head_file,
            )
            return ev.seq
        finally:
            await conn.close()

    try:
        return {"seq": run(go), "type": AUDIT_TYPE}
    except (AuditError, CorruptionError) as exc:
        return {"error": str(exc), "type": AUDIT_TYPE}


def _operator() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def table_summary(plan: TablePlan) -> str:
    c = plan.counts()
    return (
        f"{plan.table}: {c['restored_rows']} restored to their pre-T version "
        f"({c['deleted_rows_restored']} of them re-inserted), {c['kept_rows']} created "
        f"after T kept, {c['dropped_rows']} dropped, {c['unchanged_rows']} unchanged"
    )
