"""Retention: which backups and WAL segments to keep, decided by a pure function.

Deciding is separate from doing (Patroni's ``decide(state)``): :func:`decide` takes the
backups and WAL segments that exist, a :class:`RetentionPolicy` and the time ``now``, and
returns a :class:`RetentionPlan` — one :class:`Decision` per backup, with the reasons — and
the WAL names to remove. It does no I/O and reads no clock, so every rule is unit-tested
with an injected ``now``. :func:`purge` is the part that acts: per component, under the
component's lock, it decides again on what the repository holds right then and deletes
children before parents (:func:`deletion_order`), through a :class:`RetentionSource`.
The policies themselves are :mod:`payapi.backup.retention_policy`.

Invariants (each one a unit test):

- Windows and tiers count back from the series' *anchor*: the newest verified backup (the
  newest backup when none is verified), never the clock — a stalled backup job purges
  nothing that the tiers kept on the day it stalled.
- In each tier, one backup per calendar period (UTC day, ISO week, month, year) is kept:
  the newest *verified* one. Unverified backups never count for a tier.
- The newest backup and the newest verified backup of each series are always kept, and so
  is every backup newer than the newest verified one (it is still waiting for verification).
- A kept backup keeps its whole chain (an incremental keeps its parents up to the full); a
  backup whose chain is broken (a parent is not in the repository) is removed, so no
  orphan chains remain.
- WAL is kept from the start of the base backup of the point-in-time window onwards, plus
  the range each kept backup needs to be consistent (``wal_start``..``wal_end``).
- A backup whose series has no rule in the policy is kept ("unmanaged"): retention never
  removes what the plan does not talk about.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

from payapi.backup.lock import DEFAULT_LEASE, Lock, LockError, LockStore, lock_name
from payapi.core.plan import PlanError

if TYPE_CHECKING:
    from payapi.backup.repository import Repository
    from payapi.core.plan import Plan

from payapi.backup.retention_policy import (
    GFS,
    LSN_PATTERN,
    TIER_ORDER,
    WAL_HISTORY_PATTERN,
    BackupRef,
    RetentionPolicy,
    Tier,
    WalRef,
    newest_of,
    require_aware,
    stamp,
    wal_position,
)

# --------------------------------------------------------------------------- outputs


@dataclass(frozen=True)
class Decision:
    """Keep or remove one backup, and why.

    Every reason starts with the key of what decided it and a colon: a tier (``daily``,
    ``weekly``, ``monthly``, ``annual``), ``window``, ``newest``, ``newest-verified``,
    ``pending``, ``chain``, ``pitr``, ``forever``, ``unmanaged``; for a removal ``expired``,
    ``orphan`` or the rule that looked at it and passed.
    """

    backup_id: str
    keep: bool
    reasons: list[str]
    component: str = ""
    type: str = ""
    finished_at: datetime | None = None
    verified: bool = False

    @property
    def rules(self) -> frozenset[str]:
        """The keys of the reasons (``{"daily", "window"}``)."""
        return frozenset(r.split(":", 1)[0] for r in self.reasons)

    def to_json(self) -> dict[str, Any]:
        return {
            "backup_id": self.backup_id,
            "component": self.component,
            "type": self.type,
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
            "verified": self.verified,
            "action": "keep" if self.keep else "remove",
            "reasons": list(self.reasons),
        }


@dataclass(frozen=True)
class RetentionPlan:
    """What :func:`decide` chose. ``decisions`` are ordered by component, then age."""

    now: datetime
    decisions: tuple[Decision, ...]
    wal_keep: tuple[str, ...] = ()
    wal_remove: tuple[str, ...] = ()
    anchors: Mapping[str, datetime] = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    @property
    def kept(self) -> tuple[Decision, ...]:
        return tuple(d for d in self.decisions if d.keep)

    @property
    def removed(self) -> tuple[Decision, ...]:
        return tuple(d for d in self.decisions if not d.keep)

    def decision(self, backup_id: str) -> Decision:
        for d in self.decisions:
            if d.backup_id == backup_id:
                return d
        raise KeyError(backup_id)

    def to_json(self) -> dict[str, Any]:
        return {
            "now": self.now.isoformat(),
            "kept": len(self.kept),
            "removed": len(self.removed),
            "anchors": {k: v.isoformat() for k, v in self.anchors.items()},
            "backups": [d.to_json() for d in self.decisions],
            "wal": {
                "kept": len(self.wal_keep),
                "removed": len(self.wal_remove),
                "remove": list(self.wal_remove),
            },
            "notes": list(self.notes),
        }


# --------------------------------------------------------------------------- decide


def _chains(by_id: Mapping[str, BackupRef]) -> tuple[dict[str, list[str]], dict[str, str]]:
    """Ancestors (nearest first) of every backup whose chain is whole; why the rest are not."""
    ancestors: dict[str, list[str]] = {}
    broken: dict[str, str] = {}
    for b in by_id.values():
        chain: list[str] = []
        seen = {b.backup_id}
        cur = b
        while cur.parent is not None:
            parent = by_id.get(cur.parent)
            if parent is None:
                broken[b.backup_id] = (
                    f"orphan: parent {cur.parent} of {cur.backup_id} is not in the repository"
                )
                break
            if parent.backup_id in seen:
                broken[b.backup_id] = (
                    f"orphan: the chain of {b.backup_id} loops at {parent.backup_id}"
                )
                break
            seen.add(parent.backup_id)
            chain.append(parent.backup_id)
            cur = parent
        else:
            ancestors[b.backup_id] = chain
    return ancestors, broken


def decide(
    backups: Sequence[BackupRef],
    wal: Sequence[WalRef],
    policy: RetentionPolicy,
    now: datetime,
) -> RetentionPlan:
    """Decide what to keep. Pure: the same inputs always give the same plan.

    ``now`` is only used to report and to keep backups stamped in the future (a clock
    that jumped); windows and tiers are anchored on the backups themselves.
    """
    require_aware(now, "now")
    by_id: dict[str, BackupRef] = {}
    for b in backups:
        if b.backup_id in by_id:
            raise ValueError(f"backup id {b.backup_id} appears twice")
        by_id[b.backup_id] = b
    ancestors, broken = _chains(by_id)

    keep: dict[str, list[str]] = defaultdict(list)
    miss: dict[str, list[str]] = defaultdict(list)
    anchors: dict[str, datetime] = {}
    notes: list[str] = []

    series: dict[tuple[str, str], list[BackupRef]] = defaultdict(list)
    for b in by_id.values():
        if b.backup_id not in broken:
            series[(b.component, b.type)].append(b)

    for (component, type_), members in sorted(series.items()):
        key = f"{component}/{type_}"
        sp = policy.for_series(component, type_)
        if sp is None:
            for b in members:
                keep[b.backup_id].append(f"unmanaged: the policy has no rule for {key}")
            continue
        verified = [b for b in members if b.verified]
        newest = newest_of(members)
        anchor = newest_of(verified).finished_at if verified else newest.finished_at
        anchors[key] = anchor
        if not verified and sp.rule(GFS) is not None:
            notes.append(f"{key}: no verified backup, so the GFS tiers keep nothing yet")
        for rule in sp.rules:
            result = rule.apply(members, anchor)
            for bid, reasons in result.keep.items():
                keep[bid].extend(reasons)
            for bid, reasons in result.miss.items():
                miss[bid].extend(reasons)
        keep[newest.backup_id].append(f"newest: the newest backup of {key}")
        if verified:
            nv = newest_of(verified)
            keep[nv.backup_id].append(f"newest-verified: the newest verified backup of {key}")
            for b in members:
                if b.finished_at > nv.finished_at and not b.verified:
                    keep[b.backup_id].append("pending: newer than the newest verified backup")
        for b in members:
            if b.finished_at > now:
                keep[b.backup_id].append(f"future: finished after now ({stamp(now)})")

    # The base backup of each component's point-in-time window.
    wal_floor: dict[str, tuple[int, int]] = {}
    components = sorted({c for c, _ in series} | {w.component for w in wal})
    for component in components:
        pitr = policy.pitr(component)
        if pitr is None:
            continue
        restorable = [b for (c, _), ms in series.items() if c == component for b in ms]
        with_wal = [b for b in restorable if b.wal_start is not None]
        if not with_wal:
            if any(w.component == component for w in wal):
                notes.append(f"{component}: no backup records a WAL range, so all its WAL is kept")
            continue
        verified = [b for b in with_wal if b.verified]
        anchor = newest_of(verified or with_wal).finished_at
        anchors[f"{component}/wal"] = anchor
        base = pitr.base(with_wal, anchor)
        assert base is not None and base.wal_start is not None
        keep[base.backup_id].append(
            f"pitr: base backup of the {pitr.window.text} point-in-time window"
        )
        pos = wal_position(base.wal_start)
        assert pos is not None
        wal_floor[component] = pos

    # A kept backup keeps its whole chain.
    needed_by: dict[str, list[str]] = defaultdict(list)
    for bid in list(keep):
        if bid in broken:
            continue
        for parent in ancestors.get(bid, ()):
            needed_by[parent].append(bid)
    for parent, children in needed_by.items():
        newest_child = newest_of(by_id[c] for c in children)
        more = f" and {len(children) - 1} more" if len(children) > 1 else ""
        keep[parent].append(f"chain: parent of kept {newest_child.backup_id}{more}")

    decisions: list[Decision] = []
    for b in sorted(by_id.values(), key=lambda b: (b.component, b.finished_at, b.backup_id)):
        if b.backup_id in broken:
            kept, reasons = False, [broken[b.backup_id]]
        elif keep.get(b.backup_id):
            kept, reasons = True, list(keep[b.backup_id])
        else:
            kept = False
            reasons = [
                f"expired: no rule of {b.series} keeps it",
                *miss.get(b.backup_id, []),
            ]
        decisions.append(
            Decision(
                backup_id=b.backup_id,
                keep=kept,
                reasons=reasons,
                component=b.component,
                type=b.type,
                finished_at=b.finished_at,
                verified=b.verified,
            )
        )

    wal_keep, wal_remove = _decide_wal(wal, policy, wal_floor, by_id, keep, broken, notes)
    return RetentionPlan(
        now=now,
        decisions=tuple(decisions),
        wal_keep=tuple(wal_keep),
        wal_remove=tuple(wal_remove),
        anchors=anchors,
        notes=tuple(notes),
    )


def _decide_wal(
    wal: Sequence[WalRef],
    policy: RetentionPolicy,
    floor: Mapping[str, tuple[int, int]],
    by_id: Mapping[str, BackupRef],
    keep: Mapping[str, list[str]],
    broken: Mapping[str, str],
    notes: list[str],
) -> tuple[list[str], list[str]]:
    """WAL to keep: from the PITR base on, plus each kept backup's own range."""
    ranges: dict[str, list[tuple[tuple[int, int], tuple[int, int] | None]]] = defaultdict(list)
    for bid, reasons in keep.items():
        b = by_id.get(bid)
        if b is None or not reasons or bid in broken or b.wal_start is None:
            continue
        start = wal_position(b.wal_start)
        end = wal_position(b.wal_end) if b.wal_end is not None else None
        assert start is not None
        ranges[b.component].append((start, end))

    keep_names: list[str] = []
    remove_names: list[str] = []
    unknown: list[str] = []
    for w in sorted(wal, key=lambda w: (w.component, w.name)):
        if policy.pitr(w.component) is None or w.component not in floor:
            keep_names.append(w.name)
            continue
        if WAL_HISTORY_PATTERN.match(w.name):
            keep_names.append(w.name)  # tiny, and needed to follow a timeline switch
            continue
        pos = wal_position(w.name)
        if pos is None or LSN_PATTERN.match(w.name.strip()):
            unknown.append(w.name)
            keep_names.append(w.name)
            continue
        needed = pos >= floor[w.component] or any(
            start <= pos and (end is None or pos <= end) for start, end in ranges[w.component]
        )
        (keep_names if needed else remove_names).append(w.name)
    if unknown:
        notes.append(f"{len(unknown)} WAL files with unrecognised names kept (first: {unknown[0]})")
    return keep_names, remove_names


# --------------------------------------------------------------------------- simulate


def synthetic_daily_history(
    days: int,
    end: datetime,
    *,
    component: str = "database",
    type_: str = "full",
    hour: int = 1,
) -> list[BackupRef]:
    """One verified backup a day for ``days`` days, the last one at or before ``end``.

    Each backup finishes at ``hour``:00 UTC; ids are ``<component>-<type>-YYYYMMDD``.
    """
    if days < 1:
        raise ValueError("a history needs at least one day")
    last = end.astimezone(UTC).replace(hour=hour, minute=0, second=0, microsecond=0)
    if last > end:
        last -= timedelta(days=1)  # today's backup has not run yet
    out: list[BackupRef] = []
    for i in range(days - 1, -1, -1):
        at = last - timedelta(days=i)
        out.append(
            BackupRef(
                backup_id=f"{component}-{type_}-{at:%Y%m%d}",
                component=component,
                type=type_,
                finished_at=at,
                verified_at=at + timedelta(minutes=30),
            )
        )
    return out


def simulate(
    history: Sequence[BackupRef],
    policy: RetentionPolicy,
    now: datetime,
) -> dict[str, Any]:
    """Run the policy over ``history`` and say what each GFS tier keeps.

    ``kept``/``removed`` count backups (a backup kept by several tiers counts once). Per
    tier: ``keep`` (its duration), ``kept`` (backups the tier keeps), ``adds`` (those no
    shorter tier keeps), ``oldest`` (the oldest it keeps). ``rules`` counts every reason.
    """
    plan = decide(history, (), policy, now)
    tiers: dict[str, dict[str, Any]] = {}
    seen: set[str] = set()
    gfs_tiers: dict[str, Tier] = {}
    for sp in policy.series.values():
        gfs = sp.rule(GFS)
        if isinstance(gfs, GFS):
            for t in gfs.tiers:
                gfs_tiers.setdefault(t.name, t)
    for name in TIER_ORDER:
        if name not in gfs_tiers:
            continue
        mine = [d for d in plan.kept if name in d.rules]
        ids = {d.backup_id for d in mine}
        oldest = min((d.finished_at for d in mine if d.finished_at), default=None)
        tiers[name] = {
            "keep": gfs_tiers[name].keep.text,
            "kept": len(ids),
            "adds": len(ids - seen),
            "oldest": oldest.isoformat() if oldest else None,
        }
        seen |= ids
    rules: dict[str, int] = defaultdict(int)
    for d in plan.kept:
        for r in d.rules:
            rules[r] += 1
    first = min((b.finished_at for b in history), default=None)
    last = max((b.finished_at for b in history), default=None)
    return {
        "policy": str(policy),
        "history": {
            "backups": len(history),
            "first": first.isoformat() if first else None,
            "last": last.isoformat() if last else None,
        },
        "kept": len(plan.kept),
        "removed": len(plan.removed),
        "tiers": tiers,
        "rules": dict(sorted(rules.items())),
        "notes": list(plan.notes),
    }


# --------------------------------------------------------------------------- purge

# The repository's WAL archive is the PostgreSQL cluster's: it is retained as the
# database component's.
WAL_COMPONENT = "database"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def decide_for(
    source: RetentionSource, policy: RetentionPolicy, component: str | None, now: datetime
) -> RetentionPlan:
    backups = source.backups(component)
    wal = source.wal() if component in (None, WAL_COMPONENT) else []
    scoped = policy.only(component) if component is not None else policy
    return decide(backups, wal, scoped, now)


class RetentionSource(Protocol):
    """What retention needs from a backup repository."""

    url: str

    def backups(self, component: str | None) -> list[BackupRef]: ...

    def wal(self) -> list[WalRef]: ...

    def delete_backup(self, backup_id: str) -> None: ...

    def delete_wal(self, names: Sequence[str]) -> int: ...

    def lock_store(self) -> LockStore: ...

    def close(self) -> None: ...


class RepositorySource:
    """:class:`RetentionSource` over :class:`payapi.backup.repository.Repository`."""

    def __init__(self, repo: Repository, plan: Plan) -> None:
        self.repo = repo
        self.plan = plan
        self.url = str(repo.url)

    def _component(self, name: str) -> str:
        try:
            return self.plan.resolve(name)
        except PlanError:
            return name  # unknown to the plan: unmanaged, so kept

    def backups(self, component: str | None) -> list[BackupRef]:
        return [
            BackupRef(
                backup_id=b.backup_id,
                component=self._component(b.component),
                type=b.type,
                finished_at=b.finished_at,
                parent=b.parent,
                verified_at=b.verified_at,
                wal_start=b.wal_start,
                wal_end=b.wal_end,
            )
            for b in self.repo.list_backups(component)
        ]

    def wal(self) -> list[WalRef]:
        return [WalRef(name, WAL_COMPONENT) for name in self.repo.list_wal()]

    def delete_backup(self, backup_id: str) -> None:
        self.repo.delete_backup(backup_id)

    def delete_wal(self, names: Sequence[str]) -> int:
        return self.repo.delete_wal(names)

    def lock_store(self) -> LockStore:
        return self.repo.lock_store()

    def close(self) -> None:
        self.repo.close()


@dataclass
class PurgeReport:
    removed: list[str] = field(default_factory=list)
    wal_removed: int = 0
    kept: int = 0
    components: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    failed: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "dry_run": False,
            "components": self.components,
            "kept": self.kept,
            "removed": len(self.removed),
            "removed_backups": self.removed,
            "wal_removed": self.wal_removed,
            "notes": self.notes,
            "failed": self.failed,
        }


def deletion_order(plan: RetentionPlan, backups: Sequence[BackupRef]) -> list[str]:
    """Children before parents, so that a purge stopped halfway leaves no orphan chain."""
    by_id = {b.backup_id: b for b in backups}

    def depth(bid: str) -> int:
        n, seen, cur = 0, {bid}, by_id.get(bid)
        while cur is not None and cur.parent is not None and cur.parent not in seen:
            seen.add(cur.parent)
            cur = by_id.get(cur.parent)
            n += 1
        return n

    removed = list(plan.removed)
    removed.sort(key=lambda d: (-depth(d.backup_id), d.finished_at or _EPOCH, d.backup_id))
    return [d.backup_id for d in removed]


def _purge_component(
    source: RetentionSource,
    lock: Lock,
    policy: RetentionPolicy,
    component: str,
    lease: timedelta,
    wait: timedelta,
    report: PurgeReport,
) -> None:
    holder = f"retention purge (pid {os.getpid()})"
    with lock.hold(lock_name(component), holder, lease, wait=wait) as held:
        # Decide under the lock: the listing is what no backup is changing right now.
        backups = source.backups(component)
        wal = source.wal() if component == WAL_COMPONENT else []
        result = decide(backups, wal, policy.only(component), datetime.now(UTC))
        report.kept += len(result.kept)
        report.notes.extend(result.notes)
        for backup_id in deletion_order(result, backups):
            held.renew()
            try:
                source.delete_backup(backup_id)
            except Exception as exc:
                report.failed = f"deleting backup {backup_id} of {component}: {exc}"
                return
            report.removed.append(backup_id)
        if result.wal_remove:
            held.renew()
            try:
                report.wal_removed += source.delete_wal(list(result.wal_remove))
            except Exception as exc:
                report.failed = f"deleting WAL of {component}: {exc}"


def purge(
    source: RetentionSource,
    policy: RetentionPolicy,
    component: str | None = None,
    *,
    lock_wait: timedelta = timedelta(0),
    lease: timedelta = DEFAULT_LEASE,
) -> PurgeReport:
    """Remove what no rule keeps, component by component (``component`` alone if given),
    each under its lock, deciding again under the lock. Stops at the first failure and
    says so in :attr:`PurgeReport.failed`; what was removed until then is reported."""
    report = PurgeReport()
    try:
        if component is not None:
            components = [component]
        else:
            found = {b.component for b in source.backups(None)}
            if source.wal():
                found.add(WAL_COMPONENT)
            components = sorted(found)
        lock = Lock(source.lock_store())
        for name in components:
            report.components.append(name)
            _purge_component(source, lock, policy, name, lease, lock_wait, report)
            if report.failed:
                break
    except LockError as exc:
        report.failed = str(exc)
    except Exception as exc:  # a store failure mid-purge: reported, the rest kept
        report.failed = f"retention purge: {exc}"
    return report
