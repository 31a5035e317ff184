"""The live RPO check: how much data each component would lose if it were lost now.

Observing is separate from deciding (Patroni's ``decide(state)``):

- :func:`payapi.ops.rpo_observe.observe` reads the world — the backup repository
  (``list_backups``, the WAL index) and the payment database (``pg_stat_archiver``) —
  into immutable :class:`Observations`. It decides nothing.
- :func:`assess` is pure: plan + observations + ``now`` → one :class:`ComponentStatus`
  per component of the plan. Every rule below is a unit test with an injected clock.

Exposure (the full semantics, with examples, are in ``docs/rpo.md``):

- database: ``now`` minus its recovery point, the newer of the newest base backup's start
  and the newest WAL segment archived *into the repository*; zero while archiving works
  and no WAL has been written since the last archived segment (an idle database).
- vault, Redis: ``now`` minus the start of the newest backup of any type (an incremental
  counts: it restores on top of its full).
- database, vault, with ``[regions]`` configured: the better of the above and what
  streaming replication protects them with now (:mod:`payapi.ops.rpo_replication`).
- Payment-EAPI/SAPI hold no data; they are redeployed from the configuration, so their
  exposure is that of the newest ``configuration`` backup.
- A component without an RPO in the plan, or one payapi does not operate (monitoring),
  is NOT MANAGED.

Status: VIOLATION when there is no backup, when exposure exceeds the RPO, or when WAL
archiving is failing or off; AT RISK when exposure is above :data:`AT_RISK_FRACTION` of
the RPO, when the newest verified backup is older than the plan's verification cadence
allows, or when the database could not be asked; OK otherwise.

A backup's recovery point is when it *started*: writes made while it ran may not be in it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from payapi.backup.retention_policy import wal_position
from payapi.core.errors import PayapiError
from payapi.core.plan import BackupPolicy, Component, Plan, PlanError
from payapi.ops.rpo_cover import Cover, StandbyServices, cover_for
from payapi.ops.rpo_replication import Protection, ReplicationObservations, protection, replicated
from payapi.ops.schedule import backup_interval
from payapi.replication.lag import lsn_bytes
from payapi.replication.redis_observe import RedisObservation

__all__ = [
    "AT_RISK_FRACTION",
    "ArchiverObservation",
    "BackupObservation",
    "CheckError",
    "ComponentStatus",
    "Kind",
    "Observations",
    "RpoReport",
    "Status",
    "WalStatus",
    "assess",
    "component_kind",
    "human_duration",
    "report",
]

AT_RISK_FRACTION = 0.8
"""Exposure above this share of the RPO is AT RISK: one missed backup away from VIOLATION."""


class CheckError(PayapiError):
    """The check could not be made (no repository, no key...): one line, exit 2."""


class Status(StrEnum):
    OK = "OK"
    AT_RISK = "AT RISK"
    VIOLATION = "VIOLATION"
    NOT_MANAGED = "NOT MANAGED"

    @property
    def metric_label(self) -> str:
        return self.value.lower().replace(" ", "_")


_SEVERITY = {Status.OK: 0, Status.AT_RISK: 1, Status.VIOLATION: 2}


def _worse(a: Status, b: Status) -> Status:
    return a if _SEVERITY[a] >= _SEVERITY[b] else b


class Kind(StrEnum):
    """How payapi measures a component's exposure."""

    DATABASE = "database"  # base backups + continuous WAL archiving
    BACKUPS = "backups"  # its own backups (vault, Redis)
    REDEPLOYED = "redeployed"  # stateless: redeployed from the configuration backup


# Which plan components payapi operates, recognised by name or alias, so that a plan of
# your own may rename them. Anything else with an RPO (monitoring) is NOT MANAGED.
_KINDS: tuple[tuple[frozenset[str], Kind], ...] = (
    (frozenset({"database", "db", "postgres", "postgresql"}), Kind.DATABASE),
    (frozenset({"vault", "conjur"}), Kind.BACKUPS),
    (frozenset({"redis", "cache"}), Kind.BACKUPS),
    (frozenset({"payment-eapi", "eapi", "payment-sapi", "sapi"}), Kind.REDEPLOYED),
)
CONFIG_COMPONENT = "configuration"


def component_kind(component: Component) -> Kind | None:
    words = {component.name, *component.aliases}
    for names, kind in _KINDS:
        if words & names:
            return kind
    return None


# --------------------------------------------------------------------------- observations


def _aware(value: datetime | None, what: str) -> None:
    if value is not None and value.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware, got {value.isoformat()}")


@dataclass(frozen=True, slots=True)
class BackupObservation:
    """One committed backup, its component resolved to the plan's canonical name."""

    backup_id: str
    component: str
    type: str
    started_at: datetime
    finished_at: datetime
    verified_at: datetime | None = None

    def __post_init__(self) -> None:
        _aware(self.started_at, f"{self.backup_id}: started_at")
        _aware(self.finished_at, f"{self.backup_id}: finished_at")
        _aware(self.verified_at, f"{self.backup_id}: verified_at")


@dataclass(frozen=True, slots=True)
class ArchiverObservation:
    """What the payment database says about WAL archiving (``pg_stat_archiver``).

    Times are on the *local* clock: :func:`payapi.ops.rpo_observe.observe_database` shifts
    them by the difference
    between the database's ``now()`` and ours, so they compare with ``now`` and with
    repository times. ``insert_lsn`` is where the next WAL record goes
    (``pg_current_wal_insert_lsn()``), None on a standby.
    """

    reachable: bool
    error: str | None = None
    archive_mode: str | None = None
    archived_count: int = 0
    last_archived_wal: str | None = None
    last_archived_at: datetime | None = None
    failed_count: int = 0
    last_failed_wal: str | None = None
    last_failed_at: datetime | None = None
    insert_lsn: str | None = None
    wal_segment_size: int = 16 * 1024 * 1024
    in_recovery: bool = False

    def __post_init__(self) -> None:
        _aware(self.last_archived_at, "last_archived_at")
        _aware(self.last_failed_at, "last_failed_at")

    @property
    def failing(self) -> bool:
        """PostgreSQL's own reading: the last attempt failed (no success since)."""
        if self.last_failed_at is None:
            return False
        return self.last_archived_at is None or self.last_failed_at > self.last_archived_at

    @property
    def off(self) -> bool:
        return self.reachable and self.archive_mode == "off"

    @property
    def pending(self) -> bool | None:
        """Whether any WAL has been written since the last archived segment; None if unknown.

        After a segment switch the insert position sits just past the long page header
        (:data:`LONG_PAGE_HEADER` bytes) of the next segment; anything beyond that is WAL
        that is not archived yet. Known only when the last archived file is a plain
        segment: after a ``.backup`` label or a ``.history`` file the segment itself may
        still be waiting.
        """
        if self.insert_lsn is None or self.last_archived_wal is None:
            return None
        segment = _segment_number(self.last_archived_wal, self.wal_segment_size)
        insert = lsn_bytes(self.insert_lsn)
        if segment is None or insert is None:
            return None
        next_start = (segment + 1) * self.wal_segment_size
        return insert > next_start + LONG_PAGE_HEADER


LONG_PAGE_HEADER = 40
"""SizeOfXLogLongPHD: the header at the start of every WAL segment (64-bit builds)."""


def _segment_number(name: str, segment_size: int) -> int | None:
    """The absolute segment number of a plain WAL segment name (timeline ignored)."""
    if len(name) != 24 or segment_size <= 0:
        return None
    try:
        log, seg = int(name[8:16], 16), int(name[16:24], 16)
    except ValueError:
        return None
    return log * (0x100000000 // segment_size) + seg


@dataclass(frozen=True, slots=True)
class Observations:
    """Everything :func:`assess` needs, read at ``observed_at``.

    ``database`` is None when no payment database is configured. ``wal_newest`` is the
    newest WAL segment in the repository and ``wal_newest_at`` when it was archived.
    """

    observed_at: datetime
    backups: tuple[BackupObservation, ...] = ()
    wal_newest: str | None = None
    wal_newest_at: datetime | None = None
    wal_count: int = 0
    database: ArchiverObservation | None = None
    repository: str | None = None
    notes: tuple[str, ...] = ()
    replication: ReplicationObservations | None = None  # with [regions]: ops.rpo_replication
    redis: RedisObservation | None = None  # the serving region's Redis: ops.rpo_cover
    standby_services: StandbyServices | None = None  # with [regions]: ops.rpo_cover

    def __post_init__(self) -> None:
        _aware(self.observed_at, "observed_at")
        _aware(self.wal_newest_at, "wal_newest_at")


# --------------------------------------------------------------------------- results


@dataclass(frozen=True, slots=True)
class WalStatus:
    """The database's WAL archiving as judged: ``archiving`` is ok/failing/off/unknown."""

    archiving: str
    lag: timedelta | None
    last_archived_wal: str | None
    last_archived_at: datetime | None
    last_failed_wal: str | None
    last_failed_at: datetime | None
    failed_count: int
    pending: bool | None
    repository_newest_wal: str | None
    repository_newest_at: datetime | None
    database_reachable: bool | None
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "archiving": self.archiving,
            "archive_lag_seconds": _secs(self.lag),
            "last_archived_wal": self.last_archived_wal,
            "last_archived_at": _iso(self.last_archived_at),
            "last_failed_wal": self.last_failed_wal,
            "last_failed_at": _iso(self.last_failed_at),
            "failed_count": self.failed_count,
            "pending_wal": self.pending,
            "repository_newest_wal": self.repository_newest_wal,
            "repository_newest_archived_at": _iso(self.repository_newest_at),
            "database_reachable": self.database_reachable,
            "error": self.error,
        }


@dataclass(frozen=True, slots=True)
class ComponentStatus:
    """The verdict on one component, with the figures and the reasons behind it."""

    name: str
    title: str
    status: Status
    kind: Kind | None
    rpo: timedelta | None
    exposure: timedelta | None
    recovery_point_at: datetime | None
    source_component: str | None
    last_backup: BackupObservation | None
    last_verified: BackupObservation | None
    last_backup_age: timedelta | None
    last_verified_age: timedelta | None
    verification_max_age: timedelta | None
    backup_interval: timedelta | None
    retention: tuple[BackupPolicy, ...]
    wal: WalStatus | None = None
    reasons: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    replication: Protection | None = None
    cover: Cover | None = None  # Redis's replicas, a stateless service's standby deployment

    def to_json(self) -> dict[str, Any]:
        lb, lv = self.last_backup, self.last_verified
        return {
            "name": self.name,
            "title": self.title,
            "status": self.status.value,
            "rpo_seconds": _secs(self.rpo),
            "exposure_seconds": _secs(self.exposure),
            "recovery_point_at": _iso(self.recovery_point_at),
            "last_backup_at": _iso(lb.finished_at if lb else None),
            "last_backup_age_seconds": _secs(self.last_backup_age),
            "last_backup_id": lb.backup_id if lb else None,
            "last_backup_type": lb.type if lb else None,
            "last_verified_at": _iso(lv.finished_at if lv else None),
            "last_verified_age_seconds": _secs(self.last_verified_age),
            "last_verified_backup_id": lv.backup_id if lv else None,
            "last_verification_at": _iso(lv.verified_at if lv else None),
            "verification_max_age_seconds": _secs(self.verification_max_age),
            "backup_interval_seconds": _secs(self.backup_interval),
            "measured_by": self.kind.value if self.kind else None,
            "backups_of": self.source_component,
            "retention": [
                {
                    "type": r.type,
                    "frequency": r.frequency.text,
                    "retention": r.retention.text,
                    "retention_seconds": r.retention.seconds,
                    "location": r.location,
                }
                for r in self.retention
            ],
            "wal": self.wal.to_json() if self.wal else None,
            "replication": self.replication.to_json() if self.replication else None,
            "cover": self.cover.to_json() if self.cover else None,
            "reasons": list(self.reasons),
            "notes": list(self.notes),
        }


@dataclass(frozen=True, slots=True)
class RpoReport:
    """:func:`assess`'s statuses with the time they hold for."""

    checked_at: datetime
    components: tuple[ComponentStatus, ...]
    observed_at: datetime | None = None
    repository: str | None = None
    notes: tuple[str, ...] = ()
    replication: Protection | None = None

    @property
    def violation(self) -> bool:
        return any(c.status is Status.VIOLATION for c in self.components)

    @property
    def exit_code(self) -> int:
        return 1 if self.violation else 0

    def counts(self) -> dict[str, int]:
        out = {s.value: 0 for s in Status}
        for c in self.components:
            out[c.status.value] += 1
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "components": [c.to_json() for c in self.components],
            "checked_at": _iso(self.checked_at),
            "observed_at": _iso(self.observed_at),
            "repository": self.repository,
            "summary": self.counts(),
            "notes": list(self.notes),
        }


def _iso(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat() if value is not None else None


def _secs(value: timedelta | None) -> float | None:
    if value is None:
        return None
    s = value.total_seconds()
    return int(s) if s.is_integer() else round(s, 3)


def human_duration(value: timedelta | None) -> str:
    """``4m30s``, ``2h05m``, ``3d04h``; ``-`` for None."""
    if value is None:
        return "-"
    total = int(value.total_seconds())
    sign = "-" if total < 0 else ""
    total = abs(total)
    d, rem = divmod(total, 86400)
    h, rem = divmod(rem, 3600)
    m, s = divmod(rem, 60)
    if d:
        return f"{sign}{d}d{h:02d}h"
    if h:
        return f"{sign}{h}h{m:02d}m"
    if m:
        return f"{sign}{m}m{s:02d}s"
    return f"{sign}{s}s"


# --------------------------------------------------------------------------- deciding


def _age(now: datetime, then: datetime | None) -> timedelta | None:
    if then is None:
        return None
    return max(now - then, timedelta(0))


def _newest(items: Iterable[BackupObservation]) -> BackupObservation | None:
    return max(items, key=lambda b: (b.finished_at, b.backup_id), default=None)


def verification_max_age(plan: Plan, component: str) -> timedelta | None:
    """How old the newest *verified* backup may be: the plan's most frequent scheduled
    verification of the component (weekly test restores of vault and database; the monthly
    full recovery test elsewhere). Event rows ("on backup") set no age."""
    rows = [
        v.frequency.delta
        for v in plan.verifications_for(component)
        if v.frequency.kind == "interval" and v.frequency.delta > timedelta(0)
    ]
    return min(rows) if rows else None


def _newest_segment(names: Iterable[str]) -> str | None:
    """The newest plain WAL segment (24 hex digits) by position, ignoring other files."""
    best: tuple[int, int, int] | None = None
    out: str | None = None
    for name in names:
        if len(name) != 24:
            continue
        pos = wal_position(name)
        if pos is None:
            continue
        key = (int(name[:8], 16), *pos)
        if best is None or key > best:
            best, out = key, name
    return out


def _wal_key(name: str | None) -> tuple[int, int] | None:
    return wal_position(name) if name else None


@dataclass
class _Verdict:
    status: Status = Status.OK
    reasons: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def raise_to(self, status: Status, reason: str) -> None:
        self.status = _worse(self.status, status)
        self.reasons.append(reason)


def _judge_exposure(
    v: _Verdict, exposure: timedelta | None, rpo: timedelta, what: str, fraction: float
) -> None:
    if exposure is None:
        v.raise_to(Status.VIOLATION, f"no backup of {what} in the repository")
    elif exposure > rpo:
        v.raise_to(
            Status.VIOLATION,
            f"exposure {human_duration(exposure)} exceeds the RPO {human_duration(rpo)}",
        )
    elif exposure > rpo * fraction:
        v.raise_to(
            Status.AT_RISK,
            f"exposure {human_duration(exposure)} is above {fraction:.0%} "
            f"of the RPO {human_duration(rpo)}",
        )


def _judge_verification(
    v: _Verdict,
    now: datetime,
    backups: Sequence[BackupObservation],
    last_verified: BackupObservation | None,
    limit: timedelta | None,
) -> None:
    if limit is None or not backups:
        return
    if last_verified is None:
        oldest = min(b.finished_at for b in backups)
        if now - oldest > limit:
            v.raise_to(
                Status.AT_RISK,
                f"no verified backup, and backups exist for {human_duration(now - oldest)} "
                f"(the plan verifies every {human_duration(limit)})",
            )
        return
    age = now - last_verified.finished_at
    if age > limit:
        v.raise_to(
            Status.AT_RISK,
            f"the newest verified backup is {human_duration(age)} old "
            f"(the plan verifies every {human_duration(limit)})",
        )


def _assess_database(
    v: _Verdict,
    obs: Observations,
    backups: Sequence[BackupObservation],
    now: datetime,
    protected: bool = False,
) -> tuple[datetime | None, timedelta | None, WalStatus]:
    """Recovery point and exposure of the database, and its WAL status. ``protected``:
    replication keeps it within its RPO, so a broken archive (the fallback) is AT RISK."""
    broken = Status.AT_RISK if protected else Status.VIOLATION
    meanwhile = " (replication keeps it within its RPO meanwhile)" if protected else ""
    db = obs.database
    base = _newest(backups)
    repo_key = _wal_key(obs.wal_newest)
    wal_point: datetime | None = obs.wal_newest_at
    all_archived = False

    if db is None:
        archiving = "unknown"
        v.raise_to(
            Status.AT_RISK,
            "postgres.payment_dsn is not configured: WAL archiving state unknown "
            "(exposure from the repository alone)",
        )
    elif not db.reachable:
        archiving = "unknown"
        v.raise_to(
            Status.AT_RISK,
            f"database unreachable ({db.error}): WAL archiving state unknown "
            "(exposure from the repository alone)",
        )
    elif db.off:
        archiving = "off"
        v.raise_to(
            broken,
            "WAL archiving is off (archive_mode=off): the plan requires continuous "
            "transaction logs" + meanwhile,
        )
    elif db.failing:
        archiving = "failing"
        since = human_duration(now - db.last_failed_at) if db.last_failed_at else "-"
        v.raise_to(
            broken,
            f"WAL archiving is failing: {db.failed_count} failures, the last {since} ago "
            f"(segment {db.last_failed_wal}); nothing is archived since "
            f"{_iso(db.last_archived_at) or 'the start'}{meanwhile}",
        )
    else:
        archiving = "ok"

    if db is not None and db.reachable and db.last_archived_wal is not None:
        db_key = _wal_key(db.last_archived_wal)
        if db_key is not None and (repo_key is None or repo_key < db_key):
            v.notes.append(
                f"the database archived {db.last_archived_wal} but the repository's newest "
                f"segment is {obs.wal_newest or 'none'}: does archive_command write to this "
                "repository? Exposure counts what the repository holds."
            )
        elif archiving == "ok" and db.pending is False:
            all_archived = True
        in_repo = db_key is not None and repo_key is not None and repo_key >= db_key
        if db.last_archived_at is not None and in_repo:
            wal_point = max(wal_point or db.last_archived_at, db.last_archived_at)

    lag_from = db.last_archived_at if db is not None and db.reachable else obs.wal_newest_at
    wal = WalStatus(
        archiving=archiving,
        lag=_age(now, lag_from),
        last_archived_wal=db.last_archived_wal if db else None,
        last_archived_at=db.last_archived_at if db else None,
        last_failed_wal=db.last_failed_wal if db else None,
        last_failed_at=db.last_failed_at if db else None,
        failed_count=db.failed_count if db else 0,
        pending=db.pending if db and db.reachable else None,
        repository_newest_wal=obs.wal_newest,
        repository_newest_at=obs.wal_newest_at,
        database_reachable=db.reachable if db is not None else None,
        error=db.error if db is not None else None,
    )
    if base is None:
        if obs.wal_newest is not None:
            v.notes.append("WAL is archived, but without a base backup it cannot be restored")
        return None, None, wal
    points = [base.started_at] + ([wal_point] if wal_point is not None else [])
    point = max(points)
    if all_archived:
        v.notes.append("every WAL record written so far is archived (the database is idle)")
        point = now
    return point, _age(now, point), wal


def assess(
    plan: Plan,
    observations: Observations,
    now: datetime,
    *,
    at_risk_fraction: float = AT_RISK_FRACTION,
) -> list[ComponentStatus]:
    """Judge every component of ``plan`` against what ``observations`` say, at ``now``.

    Pure: no I/O, no clock. One status per component, in plan order.
    """
    _aware(now, "now")
    if not 0 < at_risk_fraction <= 1:
        raise ValueError("at_risk_fraction must be in (0, 1]")
    by_component: dict[str, list[BackupObservation]] = {}
    for b in observations.backups:
        by_component.setdefault(b.component, []).append(b)
    try:
        config_name: str | None = plan.resolve(CONFIG_COMPONENT)
    except PlanError:
        config_name = None

    repl = observations.replication
    prot = protection(repl, now) if repl is not None else None
    out: list[ComponentStatus] = []
    for comp in plan.components.values():
        kind = component_kind(comp)
        source = config_name if kind is Kind.REDEPLOYED else comp.name
        backups = by_component.get(source, []) if source is not None else []
        last = _newest(backups)
        last_verified = _newest(b for b in backups if b.verified_at is not None)
        limit = verification_max_age(plan, source) if source is not None else None
        retention = plan.backups_for(source) if source is not None else ()
        v = _Verdict()
        point: datetime | None = None
        exposure: timedelta | None = None
        wal: WalStatus | None = None
        rpo = comp.rpo.delta if comp.rpo is not None else None
        other: Cover | None = None

        if rpo is None or kind is None:
            status = Status.NOT_MANAGED
            v.reasons.append(
                "the plan sets no RPO for it"
                if rpo is None
                else "payapi does not operate it: its owner measures this RPO"
            )
        elif kind is Kind.REDEPLOYED and source is None:
            status = Status.NOT_MANAGED
            v.reasons.append(
                "stateless, but the plan has no configuration component to redeploy it from"
            )
        else:
            other = cover_for(comp, observations.redis, observations.standby_services, now)
            covered: Protection | Cover | None = (
                prot if prot is not None and replicated(comp) else other
            )
            if kind is Kind.DATABASE:
                within = isinstance(covered, Protection) and covered.within(rpo)
                point, exposure, wal = _assess_database(v, observations, backups, now, within)
            else:
                point = last.started_at if last is not None else None
                exposure = _age(now, point)
                if kind is Kind.REDEPLOYED:
                    v.notes.append(
                        f"stateless: redeployed from the {source} backup, so its exposure "
                        "is that backup's age"
                    )
            if covered is not None:
                for reason in covered.at_risk:
                    v.raise_to(Status.AT_RISK, reason)
                exposure, point, notes = covered.combine(exposure, point, now)
                v.notes.extend(notes)
            what = source if kind is Kind.REDEPLOYED else comp.name
            _judge_exposure(v, exposure, rpo, str(what), at_risk_fraction)
            _judge_verification(v, now, backups, last_verified, limit)
            interval = backup_interval(plan, source) if source is not None else None
            if kind is not Kind.DATABASE and interval is not None and interval > rpo:
                v.notes.append(
                    f"the schedule backs {source} up every {human_duration(interval)}, longer "
                    f"than the RPO {human_duration(rpo)}: backups alone cannot meet it "
                    f"(the plan relies on: "
                    f"{comp.recovery.data_protection if comp.recovery else 'nothing stated'})"
                )
            status = v.status

        out.append(
            ComponentStatus(
                name=comp.name,
                title=comp.title,
                status=status,
                kind=kind if status is not Status.NOT_MANAGED else None,
                rpo=rpo,
                exposure=exposure,
                recovery_point_at=point,
                source_component=source,
                last_backup=last,
                last_verified=last_verified,
                last_backup_age=_age(now, last.finished_at if last else None),
                last_verified_age=_age(now, last_verified.finished_at if last_verified else None),
                verification_max_age=limit,
                backup_interval=backup_interval(plan, source) if source is not None else None,
                retention=retention,
                wal=wal,
                reasons=tuple(v.reasons),
                notes=tuple(v.notes),
                replication=prot if prot is not None and replicated(comp) else None,
                cover=other if status is not Status.NOT_MANAGED else None,
            )
        )
    return out


def report(
    plan: Plan,
    observations: Observations,
    now: datetime,
    *,
    at_risk_fraction: float = AT_RISK_FRACTION,
) -> RpoReport:
    """:func:`assess` wrapped with its time and the observation's context."""
    return RpoReport(
        checked_at=now,
        components=tuple(assess(plan, observations, now, at_risk_fraction=at_risk_fraction)),
        observed_at=observations.observed_at,
        repository=observations.repository,
        notes=observations.notes,
        replication=(
            protection(observations.replication, now) if observations.replication else None
        ),
    )


def statuses_by_name(statuses: Iterable[ComponentStatus]) -> Mapping[str, ComponentStatus]:
    return {s.name: s for s in statuses}
