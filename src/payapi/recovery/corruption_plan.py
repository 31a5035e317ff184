"""Deciding a data-corruption correction: pure functions, no I/O (unit tested).

Given the rows of a table as they were just before the corruption time T (read from a
point-in-time copy beside production) and as they are now (live), :func:`plan_table`
says, row by row, what to put back. The vault's counterpart, :func:`plan_vault`, does
the same for secret versions. :mod:`payapi.recovery.corruption` reads and acts.

Counting, exactly (the ``--json`` contract of ``payapi recover corruption``):

- ``restored_rows``: rows that existed before T and whose pre-T version is put back —
  rows changed since T (``update``) **plus** rows deleted since T (``insert``).
- ``deleted_rows_restored``: the part of ``restored_rows`` that was deleted since T.
- ``kept_rows``: rows created after T, left as they are (valid later payments).
- ``dropped_rows``: rows created after T that the operator marked (``--drop-ids``):
  deleted by the correction. Never counted in ``kept_rows``.
- Rows identical before and now are ``unchanged`` and are not touched.

For the vault a "row" is a variable: ``restored_rows`` counts variables that get their
last pre-T value back as a new version, ``deleted_rows_restored`` those of them whose
pre-T version is no longer stored live (pruned or deleted), ``kept_rows`` variables whose
versions changed after T but that had no pre-T value (or that the operator kept).

Invariants: a plan never holds a secret. Rows are JSON values; a column whose name looks
like a credential is replaced by ``[redacted]`` in the plan file (the in-memory plan
keeps it so ``--apply`` can write it back). Vault plans carry ids, version numbers and a
12-hex-digit prefix of the ciphertext's SHA-256, never a value or a whole digest.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal

from payapi.core.errors import UsageError

PLAN_FORMAT = "payapi-correction-plan/1"
REDACTED = "[redacted]"
HASH_PREFIX = 12
# "Just before T": the copy holds every commit strictly before T (microsecond clocks).
JUST_BEFORE = timedelta(microseconds=1)

# Column names that look like credentials (the same idea as payapi.core.logs' redaction).
_CREDENTIAL = re.compile(
    r"(secret|password|passwd|api_?key|token|authorization|credential|cookie|data_?key|sealed)",
    re.IGNORECASE,
)

Row = Mapping[str, Any]
Action = Literal["update", "insert", "delete"]


class CorrectionPlanError(UsageError):
    """The inputs cannot make a plan (an operator's mark names no row created after T)."""


def looks_secret(column: str) -> bool:
    return bool(_CREDENTIAL.search(column))


def target_time(since: datetime) -> datetime:
    """The recovery target for a corruption at ``since``: just before it, in UTC."""
    return since.astimezone(UTC) - JUST_BEFORE


def row_key(row: Row, primary_key: Sequence[str]) -> tuple[str, ...]:
    """A hashable key: the primary key's values as text (one table's keys compare alike)."""
    return tuple(_text(row.get(c)) for c in primary_key)


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str)


def _redact(row: Row | None) -> dict[str, Any] | None:
    if row is None:
        return None
    return {k: (REDACTED if looks_secret(k) and v is not None else v) for k, v in row.items()}


# --------------------------------------------------------------------------- tables


@dataclass(frozen=True)
class RowChange:
    """One row to correct. ``update``: changed since T (``before`` goes back over
    ``now``); ``insert``: deleted since T (``before`` is inserted, ``now`` is None);
    ``delete``: created after T and marked by the operator (``before`` is None)."""

    key: dict[str, Any]
    action: Action
    before: dict[str, Any] | None
    now: dict[str, Any] | None

    def diff(self) -> dict[str, dict[str, Any]]:
        """Column → {"before", "now"} for every column that differs (secrets redacted)."""
        b_row, n_row = self.before or {}, self.now or {}
        shown_b, shown_n = _redact(self.before) or {}, _redact(self.now) or {}
        out: dict[str, dict[str, Any]] = {}
        for column in dict.fromkeys([*b_row, *n_row]):
            if column in b_row and column in n_row and _same(b_row[column], n_row[column]):
                continue
            out[column] = {"before": shown_b.get(column), "now": shown_n.get(column)}
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "action": self.action,
            "before": _redact(self.before),
            "now": _redact(self.now),
            "diff": self.diff(),
        }


@dataclass(frozen=True)
class TablePlan:
    table: str
    primary_key: tuple[str, ...]
    changes: tuple[RowChange, ...] = ()
    kept: tuple[dict[str, Any], ...] = ()  # keys of rows created after T, kept
    unchanged: int = 0

    @property
    def restored(self) -> int:
        return sum(1 for c in self.changes if c.action in ("update", "insert"))

    @property
    def deleted_restored(self) -> int:
        return sum(1 for c in self.changes if c.action == "insert")

    @property
    def dropped(self) -> int:
        return sum(1 for c in self.changes if c.action == "delete")

    def counts(self) -> dict[str, int]:
        return {
            "restored_rows": self.restored,
            "deleted_rows_restored": self.deleted_restored,
            "kept_rows": len(self.kept),
            "dropped_rows": self.dropped,
            "unchanged_rows": self.unchanged,
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "table": self.table,
            "primary_key": list(self.primary_key),
            **self.counts(),
            "changes": [c.to_json() for c in self.changes],
            "kept": list(self.kept),
        }


def plan_table(
    table: str,
    primary_key: Sequence[str],
    before: Iterable[Row],
    now: Iterable[Row],
    *,
    drop: Iterable[str] = (),
) -> TablePlan:
    """Compare ``before`` (the pre-T copy) with ``now`` (live), by primary key.

    ``drop`` names rows created after T that the operator wants gone (the text of a
    single-column primary key); naming any other row is a :class:`CorrectionPlanError`, because a
    correction must never delete a row that existed before the corruption.
    """
    pk = tuple(primary_key)
    if not pk:
        raise CorrectionPlanError(f"table {table} has no primary key: rows cannot be matched")
    old = {row_key(r, pk): dict(r) for r in before}
    new = {row_key(r, pk): dict(r) for r in now}
    marked = {(d,) if isinstance(d, str) else tuple(d) for d in drop}
    for m in sorted(marked):
        if m in old:
            raise CorrectionPlanError(
                f"--drop-ids: {', '.join(m)} existed before the corruption time; "
                "only rows created after it can be dropped"
            )
        if m not in new:
            raise CorrectionPlanError(f"--drop-ids: {', '.join(m)} is not a row of {table}")
    changes: list[RowChange] = []
    kept: list[dict[str, Any]] = []
    unchanged = 0
    for key in sorted(old):
        b = old[key]
        n = new.get(key)
        ident = {c: b.get(c) for c in pk}
        if n is None:
            changes.append(RowChange(ident, "insert", b, None))
        elif not same_row(b, n):
            changes.append(RowChange(ident, "update", b, n))
        else:
            unchanged += 1
    for key in sorted(new.keys() - old.keys()):
        n = new[key]
        ident = {c: n.get(c) for c in pk}
        if key in marked:
            changes.append(RowChange(ident, "delete", None, n))
        else:
            kept.append(ident)
    return TablePlan(table, pk, tuple(changes), tuple(kept), unchanged)


def same_row(a: Row | None, b: Row | None) -> bool:
    """Equal values column by column (``Decimal('12.50') == Decimal('12.5')``)."""
    if a is None or b is None:
        return a is b
    return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)


def _same(x: Any, y: Any) -> bool:
    if isinstance(x, Decimal | int | float) and isinstance(y, Decimal | int | float):
        if isinstance(x, bool) or isinstance(y, bool):
            return x is y
        return Decimal(str(x)) == Decimal(str(y))
    if isinstance(x, Mapping) and isinstance(y, Mapping):
        return same_row(x, y)
    if isinstance(x, list) and isinstance(y, list):
        return len(x) == len(y) and all(_same(p, q) for p, q in zip(x, y, strict=True))
    return bool(x == y) and type(x) is type(y)


# --------------------------------------------------------------------------- plans


@dataclass(frozen=True)
class CorrectionPlan:
    """The database's correction plan: one :class:`TablePlan` per table, in order."""

    since: datetime
    tables: tuple[TablePlan, ...]
    created_at: datetime
    backup_id: str | None = None
    component: str = "db"

    @property
    def target_time(self) -> datetime:
        return target_time(self.since)

    def total(self, name: str) -> int:
        return sum(t.counts()[name] for t in self.tables)

    def counts(self) -> dict[str, int]:
        names = (
            "restored_rows",
            "kept_rows",
            "deleted_rows_restored",
            "dropped_rows",
            "unchanged_rows",
        )
        return {n: self.total(n) for n in names}

    @property
    def empty(self) -> bool:
        return not any(t.changes for t in self.tables)

    def to_json(self) -> dict[str, Any]:
        """The plan file's document (secrets redacted)."""
        return {
            "format": PLAN_FORMAT,
            "component": self.component,
            "since": _iso(self.since),
            "target_time": _iso(self.target_time),
            "created_at": _iso(self.created_at),
            "backup_id": self.backup_id,
            **self.counts(),
            "tables": [t.to_json() for t in self.tables],
        }


def _iso(ts: datetime) -> str:
    return ts.astimezone(UTC).isoformat(timespec="microseconds")


# --------------------------------------------------------------------------- vault


@dataclass(frozen=True)
class SecretVersion:
    """One stored version: its number, creation time and ciphertext digest (hex)."""

    version: int
    sealed_sha256: str
    created_at: datetime | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "sealed_sha256_prefix": self.sealed_sha256[:HASH_PREFIX],
            "created_at": None if self.created_at is None else _iso(self.created_at),
        }


@dataclass(frozen=True)
class VariableRestore:
    """Give ``resource_id`` its last pre-T value again, as a new version after ``now``."""

    resource_id: str
    before: SecretVersion
    now: SecretVersion | None
    before_still_stored: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "variable": self.resource_id,
            "action": "new_version",
            "before": self.before.to_json(),
            "now": None if self.now is None else self.now.to_json(),
            "pre_t_version_still_stored": self.before_still_stored,
        }


@dataclass(frozen=True)
class VaultPlan:
    since: datetime
    restores: tuple[VariableRestore, ...]
    kept: tuple[str, ...]
    missing: tuple[str, ...]  # had a pre-T value, no longer a variable: not recreated
    unchanged: int
    created_at: datetime
    backup_id: str | None = None
    component: str = "vault"

    @property
    def target_time(self) -> datetime:
        return target_time(self.since)

    @property
    def empty(self) -> bool:
        return not self.restores

    def counts(self) -> dict[str, int]:
        return {
            "restored_rows": len(self.restores),
            "kept_rows": len(self.kept),
            "deleted_rows_restored": sum(1 for r in self.restores if not r.before_still_stored),
            "dropped_rows": 0,
            "unchanged_rows": self.unchanged,
            "missing_variables": len(self.missing),
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "format": PLAN_FORMAT,
            "component": self.component,
            "since": _iso(self.since),
            "target_time": _iso(self.target_time),
            "created_at": _iso(self.created_at),
            "backup_id": self.backup_id,
            **self.counts(),
            "variables": [r.to_json() for r in self.restores],
            "kept": list(self.kept),
            "missing": list(self.missing),
        }


def plan_vault(
    before: Mapping[str, Sequence[SecretVersion]],
    now: Mapping[str, Sequence[SecretVersion]],
    *,
    since: datetime,
    created_at: datetime,
    keep: Iterable[str] = (),
    backup_id: str | None = None,
) -> VaultPlan:
    """Variables (resource id → stored versions) before T and now.

    A variable whose newest version now is not its newest version before T (another
    number, or the same number with other ciphertext) changed after T: its pre-T value
    comes back as a new version. One with no pre-T version, or named in ``keep``, is
    kept. One that is gone live is reported missing (its policy would have to be
    reloaded; a correction does not recreate resources).
    """
    keep_set = set(keep)
    restores: list[VariableRestore] = []
    kept: list[str] = []
    missing: list[str] = []
    unchanged = 0
    for rid in sorted(before.keys() | now.keys()):
        old = _newest(before.get(rid, ()))
        live_versions = now.get(rid)
        if live_versions is None:
            if old is not None:
                missing.append(rid)
            continue
        new = _newest(live_versions)
        if old == new or (old is not None and new is not None and _same_version(old, new)):
            unchanged += 1
            continue
        if old is None or rid in keep_set:
            kept.append(rid)
            continue
        still = any(_same_version(v, old) for v in live_versions)
        restores.append(VariableRestore(rid, old, new, still))
    return VaultPlan(
        since=since,
        restores=tuple(restores),
        kept=tuple(kept),
        missing=tuple(missing),
        unchanged=unchanged,
        created_at=created_at,
        backup_id=backup_id,
    )


def _newest(versions: Sequence[SecretVersion]) -> SecretVersion | None:
    return max(versions, key=lambda v: v.version) if versions else None


def _same_version(a: SecretVersion, b: SecretVersion) -> bool:
    return a.version == b.version and a.sealed_sha256 == b.sealed_sha256


@dataclass(frozen=True)
class Check:
    """One integrity check of ``--verify``: ``ok``, how many offending rows, one line."""

    name: str
    ok: bool
    detail: str
    offending: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "ok": self.ok,
            "offending": self.offending,
            "detail": self.detail,
        }


@dataclass(frozen=True)
class IntegrityReport:
    checks: tuple[Check, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def failed(self) -> list[Check]:
        return [c for c in self.checks if not c.ok]

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "checks": [c.to_json() for c in self.checks]}
