"""`payapi state document` / `payapi state compare`: the state drills compare (pure).

The seed's ``./scripts/document-state.sh --output pre-test-state.json``: before a drill,
write down what the platform holds; afterwards, write it again and compare.
:mod:`payapi.ops.state_observe` reads the platform; this module turns what was read into
the document and compares two documents. Nothing here does I/O.

The document (``SCHEMA`` 1)::

    {"schema": 1, "taken_at", "environment",
     "payments": {"count", "checksum", "by_status": {...}, "totals": {CUR: "0.00"}},
     "vault": {"variables", "versions", "checksum"},
     "redis": {"keys", "kinds": {"tokens", "token_sets", "verifications", "rate_limits",
                                 "generation", "other"}},
     "audit": {"head_seq"},
     "components": {NAME: {"healthy": bool, "detail": str}},
     "replication": {MEMBER: {"role", "state", "in_recovery", "position"}},
     "versions": {"payapi", "postgresql", "redis"}}

Invariants:

- The payments checksum is order-independent and deterministic: each row is encoded
  canonically (:func:`payment_line`: id, client id, amount as a Decimal string with its
  scale, currency, status, reference, created_at in UTC, and the SHA-256 of the
  idempotency key, never the key itself), hashed, and the sorted row hashes are hashed
  again. Two databases with the same rows give the same checksum, whatever order they
  were read in.
- The document holds counts, digests and names, never a secret value: vault variables
  are counted with their kept versions, not read.

Fields that legitimately move on an unchanged platform (:data:`ALLOWED_TO_MOVE`):
``taken_at``; ``replication.*`` (WAL positions advance with checkpoints and the archive
timeout, roles and states are the HA engine's); ``components.*.detail`` (it shows lags
in bytes); ``redis.keys`` and ``redis.kinds.rate_limits`` (rate-limit counters expire
within two minutes of the last request). Everything else must be identical; a drill
that empties Redis on purpose passes ``--allow redis`` (a pattern covers every field
below it).
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

__all__ = [
    "ALLOWED_TO_MOVE",
    "REDIS_KINDS",
    "SCHEMA",
    "Comparison",
    "Difference",
    "PaymentRow",
    "compare",
    "flatten",
    "payment_line",
    "payments_summary",
    "vault_summary",
]

SCHEMA = 1
ALLOWED_TO_MOVE: tuple[str, ...] = (
    "taken_at",
    "replication",
    "components.*.detail",
    "redis.keys",
    "redis.kinds.rate_limits",
)
REDIS_KINDS = ("tokens", "token_sets", "verifications", "rate_limits", "generation", "other")
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


@dataclass(frozen=True)
class PaymentRow:
    """One row of ``payments`` as read (the columns of sapi/migrations/0001)."""

    id: str
    client_id: str
    amount: Decimal
    currency: str
    status: str
    reference: str
    created_at: datetime
    idempotency_key: str | None = None


def _utc(ts: datetime) -> str:
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    return ts.astimezone(UTC).isoformat(timespec="microseconds")


def payment_line(row: PaymentRow) -> bytes:
    """The canonical encoding of one payment (a JSON array of strings)."""
    key = row.idempotency_key
    key_hash = hashlib.sha256(key.encode()).hexdigest() if key is not None else ""
    fields = [
        str(row.id).lower(),
        row.client_id,
        format(row.amount, "f"),
        row.currency,
        row.status,
        row.reference,
        _utc(row.created_at),
        key_hash,
    ]
    return json.dumps(fields, ensure_ascii=True, separators=(",", ":")).encode()


def payments_summary(rows: Iterable[PaymentRow]) -> dict[str, Any]:
    """Count, order-independent checksum, counts per status and totals per currency."""
    digests: list[bytes] = []
    by_status: dict[str, int] = {}
    totals: dict[str, Decimal] = {}
    for row in rows:
        digests.append(hashlib.sha256(payment_line(row)).digest())
        by_status[row.status] = by_status.get(row.status, 0) + 1
        totals[row.currency] = totals.get(row.currency, Decimal("0")) + row.amount
    digests.sort()
    outer = hashlib.sha256()
    for d in digests:
        outer.update(d)
    return {
        "count": len(digests),
        "checksum": outer.hexdigest() if digests else EMPTY_SHA256,
        "by_status": dict(sorted(by_status.items())),
        "totals": {c: format(t, "f") for c, t in sorted(totals.items())},
    }


def vault_summary(resources: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Variables and their kept versions from the vault's resource listing (Conjur's
    ``GET /resources/{account}?kind=variable``: each resource has ``id`` and ``secrets``,
    a list of ``{"version": n}``). The checksum covers each variable's id and version
    numbers, so a version added, removed or replaced shows even when counts agree."""
    entries: list[str] = []
    versions = 0
    for r in resources:
        kept = sorted(int(s.get("version", 0)) for s in r.get("secrets") or [])
        versions += len(kept)
        entries.append(json.dumps([str(r.get("id", "")), kept], separators=(",", ":")))
    entries.sort()
    digest = hashlib.sha256("\n".join(entries).encode()).hexdigest()
    return {"variables": len(entries), "versions": versions, "checksum": digest}


def redis_summary(kinds: Mapping[str, int]) -> dict[str, Any]:
    counted = {k: int(kinds.get(k, 0)) for k in REDIS_KINDS}
    counted["other"] += sum(int(v) for k, v in kinds.items() if k not in REDIS_KINDS)
    return {"keys": sum(counted.values()), "kinds": counted}


# --------------------------------------------------------------------------- compare


def flatten(doc: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` → ``{"a.b": 1}``; lists and scalars are leaves; an empty
    mapping is a leaf too (so that ``{}`` and a missing key differ)."""
    if isinstance(doc, Mapping) and doc:
        out: dict[str, Any] = {}
        for k, v in doc.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: doc}


@dataclass(frozen=True)
class Difference:
    path: str
    before: Any
    after: Any
    allowed: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "before": self.before,
            "after": self.after,
            "allowed": self.allowed,
        }


@dataclass(frozen=True)
class Comparison:
    differences: tuple[Difference, ...]
    allowed_patterns: tuple[str, ...]

    @property
    def unexpected(self) -> tuple[Difference, ...]:
        return tuple(d for d in self.differences if not d.allowed)

    @property
    def same(self) -> bool:
        """No difference beyond the allowed ones."""
        return not self.unexpected

    @property
    def exit_code(self) -> int:
        return 0 if self.same else 1

    def to_json(self) -> dict[str, Any]:
        return {
            "same": self.same,
            "unexpected": len(self.unexpected),
            "allowed": len(self.differences) - len(self.unexpected),
            "allowed_patterns": list(self.allowed_patterns),
            "differences": [d.to_json() for d in self.differences],
        }


_MISSING = "<missing>"


def _allowed(path: str, patterns: Sequence[str]) -> bool:
    """A pattern covers a path it matches and everything under it (``redis`` covers
    ``redis.keys``)."""
    return any(
        path == p or path.startswith(p + ".") or fnmatch.fnmatchcase(path, p) for p in patterns
    )


def compare(
    before: Mapping[str, Any],
    after: Mapping[str, Any],
    *,
    allow: Sequence[str] = (),
    defaults: Sequence[str] = ALLOWED_TO_MOVE,
) -> Comparison:
    """Every leaf that differs between two documents, each marked allowed when a pattern
    of ``defaults`` or ``allow`` covers it (a dotted path, ``fnmatch`` wildcards; a path
    covers the fields below it)."""
    patterns = tuple(dict.fromkeys([*defaults, *allow]))
    a, b = flatten(before), flatten(after)
    diffs = []
    for path in sorted(set(a) | set(b)):
        va, vb = a.get(path, _MISSING), b.get(path, _MISSING)
        if va != vb:
            diffs.append(Difference(path, va, vb, _allowed(path, patterns)))
    return Comparison(tuple(diffs), patterns)
