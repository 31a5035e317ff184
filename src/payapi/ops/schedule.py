"""The plan's backup schedule: which jobs run when (pure), and a loop that runs them.

Deciding is separate from doing. The pure half — :func:`jobs_from_plan`, :meth:`Job.next_run`,
:func:`due_jobs` — reads no clock and does no I/O: every question ("when does the vault's
incremental run next?", "what is due at 01:07 if the scheduler last ran at 23:00?") is a
unit test with an injected ``now``. :class:`payapi.ops.scheduler.Scheduler` is the half that acts:
it runs each due job as a ``payapi`` subprocess, logs one JSON line per event, and never
lets a failing job stop it.

Slots. A job runs every ``every`` (hourly, daily), at ``offset`` into each period, counted
from the Unix epoch in UTC: the database's daily full at 01:00 UTC, the vault's hourly
incremental at hh:05, and so on (:data:`TIMES`). The same times are the Kubernetes
CronJobs' ``schedule`` (:attr:`Job.cron`), so both ways of running the plan agree.

Invariants:

- A job is *due* at ``now`` when it has never run, or when a slot has passed
  (``slot <= now``) since it last started. Missed slots coalesce: a scheduler that was
  down for a day runs each job once when it comes back, not once per missed slot.
- Jobs run one at a time: due backups first (in the order of their slots, so a full
  before the incremental that follows it), then verification, the restore test, the
  purge. A job that fails is logged with its exit code and is not retried before its
  next slot; the scheduler itself carries on.
- A job never runs longer than its period (:attr:`Job.timeout`): a hung hourly backup is
  stopped before the next hour's is due. A killed backup leaves no valid manifest (see
  ``docs/repository-format.md``), so stopping one is always safe.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from payapi.core.plan import Duration, Plan, PlanError

__all__ = [
    "EPOCH",
    "TIMES",
    "Job",
    "NotScheduled",
    "Schedule",
    "backup_interval",
    "due_jobs",
    "jobs_from_plan",
    "payapi_command",
]


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
"""Slots are counted from here (a Thursday, 00:00 UTC)."""

JobKind = Literal["incident", "backup", "seed", "verify", "restore-test", "purge"]
_KIND_ORDER: Mapping[str, int] = {
    "incident": -1,  # escalations and overdue updates first: a person is waiting
    "backup": 0,
    "seed": 1,
    "verify": 2,
    "restore-test": 3,
    "purge": 4,
}

# Components payapi has a backup engine for, by the canonical names of the packaged plan
# (a plan of your own may rename them; aliases resolve). Their WAL is not scheduled: it is
# archived continuously by PostgreSQL's archive_command (``payapi wal push %p``).
ENGINE_COMPONENTS: tuple[str, ...] = ("vault", "database", "redis", "configuration")

# When each job runs, as an offset into its period (UTC). Daily fulls go first, an hour
# after midnight, spread out so that they do not compete; verification follows them and
# the purge comes last, so it never removes what verification has not yet looked at.
TIMES: Mapping[str, timedelta] = {
    "database-full": timedelta(hours=1),
    "vault-full": timedelta(hours=1, minutes=20),
    "configuration-git": timedelta(hours=1, minutes=40),
    "vault-incremental": timedelta(minutes=5),
    "redis-snapshot": timedelta(minutes=10),
    "verify": timedelta(hours=3),
    "purge": timedelta(hours=4),
    # Weekly, counted from the epoch (a Thursday): Saturday 05:00 UTC.
    "restore-test": timedelta(days=2, hours=5),
}
# A standby region's Redis is seeded this long after each Redis snapshot (the seed's
# "periodic snapshots to the DR region"), when the snapshot has surely finished.
SEED_AFTER_SNAPSHOT = timedelta(minutes=5)
# Hourly-or-slower jobs not named above start at this offset.
DEFAULT_OFFSET = timedelta(minutes=30)
# "on change" rows (configuration in Git) are swept daily: a change is copied at most a
# day after it was made.
EVENT_SWEEP = timedelta(days=1)
VERIFY_EVERY = timedelta(days=1)
PURGE_EVERY = timedelta(days=1)
# Open incidents are swept (escalations due, overdue "Next Update" reminders) this often.
INCIDENT_SWEEP_EVERY = timedelta(minutes=1)
# The purge waits this long for a running backup of the same component to let go.
PURGE_LOCK_WAIT_SECONDS = 600


@dataclass(frozen=True, slots=True)
class Job:
    """One scheduled job: ``payapi <args>`` every ``every``, at ``offset`` into the period.

    ``component`` and ``backup_type`` are the plan's (canonical component name, type of the
    backup row) for backup jobs, None for verification and purge.
    """

    name: str
    kind: JobKind
    every: timedelta
    offset: timedelta
    args: tuple[str, ...]
    frequency: str
    component: str | None = None
    backup_type: str | None = None

    def __post_init__(self) -> None:
        if self.every <= timedelta(0):
            raise ValueError(f"job {self.name}: its period must be positive")
        if not timedelta(0) <= self.offset < self.every:
            raise ValueError(f"job {self.name}: offset must be within its period")

    @property
    def timeout(self) -> timedelta:
        """The longest a run may take: one period (a run never overlaps the next slot)."""
        return self.every

    def slot_at_or_before(self, when: datetime) -> datetime:
        """The newest slot ``<= when``."""
        _aware(when)
        k = (when - EPOCH - self.offset) // self.every
        return EPOCH + self.offset + k * self.every

    def next_run(self, after: datetime) -> datetime:
        """The first slot strictly after ``after``."""
        return self.slot_at_or_before(after) + self.every

    def next_runs(self, after: datetime, count: int) -> list[datetime]:
        first = self.next_run(after)
        return [first + i * self.every for i in range(count)]

    def is_due(self, now: datetime, last_started: datetime | None) -> bool:
        """Never run, or a slot passed since the last start (missed slots coalesce)."""
        if last_started is None:
            return True
        _aware(last_started)
        return self.slot_at_or_before(now) > last_started

    @property
    def cron(self) -> str:
        """The same slots as a cron expression (UTC), for Kubernetes CronJobs.

        Supported periods: n minutes dividing an hour, n hours dividing a day, one day,
        one week (slots count from the epoch, a Thursday).
        """
        minutes = int(self.every.total_seconds()) // 60
        off = int(self.offset.total_seconds()) // 60
        if self.every.total_seconds() % 60 or self.offset.total_seconds() % 60:
            raise ValueError(f"job {self.name}: cron needs whole minutes")
        if minutes < 60 and 60 % minutes == 0:
            return f"{off}-59/{minutes} * * * *" if minutes > 1 else "* * * * *"
        if minutes % 60 == 0 and 1440 % minutes == 0:
            hours = minutes // 60
            h, m = divmod(off, 60)
            if hours == 1:
                return f"{m} * * * *"
            if hours == 24:
                return f"{m} {h} * * *"
            return f"{m} {h}-23/{hours} * * *"
        if minutes == 7 * 1440:
            days, rest = divmod(off, 1440)
            h, m = divmod(rest, 60)
            return f"{m} {h} * * {(4 + days) % 7}"  # the epoch is a Thursday (4)
        raise ValueError(f"job {self.name}: no cron expression for a period of {self.every}")

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "component": self.component,
            "backup_type": self.backup_type,
            "frequency": self.frequency,
            "every_seconds": int(self.every.total_seconds()),
            "offset_seconds": int(self.offset.total_seconds()),
            "cron": self.cron,
            "args": list(self.args),
        }


@dataclass(frozen=True, slots=True)
class NotScheduled:
    """A row of the plan's backup table that the schedule does not run, and why."""

    component: str
    backup_type: str
    frequency: str
    reason: str

    def to_json(self) -> dict[str, str]:
        return {
            "component": self.component,
            "backup_type": self.backup_type,
            "frequency": self.frequency,
            "reason": self.reason,
        }


@dataclass(frozen=True, slots=True)
class Schedule:
    jobs: tuple[Job, ...]
    not_scheduled: tuple[NotScheduled, ...] = ()

    def job(self, name: str) -> Job:
        for j in self.jobs:
            if j.name == name:
                return j
        raise KeyError(name)


def _aware(when: datetime) -> None:
    if when.utcoffset() is None:
        raise ValueError(f"times must be timezone-aware, got {when.isoformat()}")


def _engine_names(plan: Plan) -> dict[str, str]:
    """Canonical plan name → engine name, for the components payapi can back up."""
    out: dict[str, str] = {}
    for engine in ENGINE_COMPONENTS:
        try:
            out[plan.resolve(engine)] = engine
        except PlanError:
            continue
    return out


def _backup_flags(backup_type: str) -> tuple[str, ...]:
    """``payapi backup run`` takes ``--full`` or ``--incremental``; a snapshot (Redis) or a
    Git copy (configuration) is the engine's one kind of backup: no flag, its default."""
    if backup_type in ("full", "incremental"):
        return (f"--{backup_type}",)
    return ()


def jobs_from_plan(
    plan: Plan, seed_regions: Sequence[str] = (), *, incident_sweep: bool = True
) -> Schedule:
    """The schedule the plan asks for: one job per backup row payapi can run, plus the
    daily verification and purge, and (``incident_sweep``) the minutely
    ``incident sweep`` (escalations and overdue updates of open incidents, so nothing
    depends on a person remembering). Rows it cannot run are listed with the reason.

    ``seed_regions``: the standby regions whose Redis is seeded from each Redis snapshot
    (``payapi region seed-redis``), a few minutes after it."""
    engines = _engine_names(plan)
    jobs: list[Job] = []
    skipped: list[NotScheduled] = []
    for row in plan.backups:
        freq = row.frequency
        if row.component not in engines:
            skipped.append(
                NotScheduled(
                    row.component,
                    row.type,
                    freq.text,
                    "payapi has no backup engine for it (kept by the platform around it)",
                )
            )
            continue
        if freq.kind == "continuous":
            skipped.append(
                NotScheduled(
                    row.component,
                    row.type,
                    freq.text,
                    "continuous: PostgreSQL's archive_command ships it ('payapi wal push %p')",
                )
            )
            continue
        if freq.kind == "event":
            every = EVENT_SWEEP
        elif freq.kind == "interval" and freq.delta > timedelta(0):
            every = freq.delta
        else:
            skipped.append(
                NotScheduled(row.component, row.type, freq.text, "no interval to schedule")
            )
            continue
        name = f"{row.component}-{row.type}"
        offset = TIMES.get(name, DEFAULT_OFFSET if every >= timedelta(hours=1) else timedelta(0))
        offset %= every
        args = ("backup", "run", "--component", row.component, *_backup_flags(row.type), "--json")
        jobs.append(
            Job(
                name=name,
                kind="backup",
                every=every,
                offset=offset,
                args=args,
                frequency=freq.text if freq.kind == "interval" else f"{freq.text} (swept daily)",
                component=row.component,
                backup_type=row.type,
            )
        )
    jobs.extend(_seed_jobs(jobs, engines, seed_regions))
    jobs.append(
        Job(
            name="verify",
            kind="verify",
            every=VERIFY_EVERY,
            offset=TIMES["verify"],
            args=("backup", "verify", "--json"),
            frequency="daily",
        )
    )
    restore = _restore_test_row(plan, engines)
    if restore is not None:
        canonical, freq = restore
        jobs.append(
            Job(
                name="restore-test",
                kind="restore-test",
                every=freq.delta,
                offset=TIMES["restore-test"] % freq.delta,
                args=("backup", "verify", "--restore-test", "--json"),
                frequency=freq.text,
                component=canonical,
            )
        )
    jobs.append(
        Job(
            name="purge",
            kind="purge",
            every=PURGE_EVERY,
            offset=TIMES["purge"],
            args=("retention", "purge", "--lock-wait", str(PURGE_LOCK_WAIT_SECONDS), "--json"),
            frequency="daily",
        )
    )
    if incident_sweep:
        jobs.append(
            Job(
                name="incident-sweep",
                kind="incident",
                every=INCIDENT_SWEEP_EVERY,
                offset=timedelta(0),
                args=("incident", "sweep", "--json"),
                frequency="every minute",
            )
        )
    names = [j.name for j in jobs]
    if len(set(names)) != len(names):
        raise PlanError("the plan has two backup rows of the same component and type")
    return Schedule(tuple(jobs), tuple(skipped))


def _seed_jobs(jobs: list[Job], engines: Mapping[str, str], regions: Sequence[str]) -> list[Job]:
    snapshot = next((j for j in jobs if engines.get(j.component or "") == "redis"), None)
    if snapshot is None:
        return []
    return [
        Job(
            name=f"redis-seed-{region}",
            kind="seed",
            every=snapshot.every,
            offset=(snapshot.offset + SEED_AFTER_SNAPSHOT) % snapshot.every,
            args=("region", "seed-redis", "--region", region, "--json"),
            frequency=f"{snapshot.frequency}, after the snapshot",
            component=snapshot.component,
        )
        for region in regions
    ]


_DATABASE = "database"


def _restore_test_row(plan: Plan, engines: Mapping[str, str]) -> tuple[str, Duration] | None:
    """The plan's test-restore cadence of the database (``backup verify --restore-test``
    boots the newest database backup; other components have no restore test yet)."""
    canonical = next((c for c, e in engines.items() if e == _DATABASE), None)
    if canonical is None:
        return None
    rows = [
        v.frequency
        for v in plan.verifications_for(canonical)
        if v.kind == "test-restore"
        and v.component == canonical
        and v.frequency.kind == "interval"
        and v.frequency.delta > timedelta(0)
    ]
    if not rows:
        return None
    return canonical, min(rows, key=lambda d: d.delta)


def backup_interval(plan: Plan, component: str) -> timedelta | None:
    """How often the schedule backs ``component`` up (its most frequent job), or None."""
    try:
        canonical = plan.resolve(component)
    except PlanError:
        return None
    periods = [
        j.every
        for j in jobs_from_plan(plan).jobs
        if j.component == canonical and j.kind == "backup"
    ]
    return min(periods) if periods else None


def due_jobs(jobs: Iterable[Job], now: datetime, last_started: Mapping[str, datetime]) -> list[Job]:
    """The jobs due at ``now``: backups first, then verification, restore tests and the
    purge (so a catch-up verifies what it just made, and purges last); within a kind, in
    the order of their slots."""
    due = [j for j in jobs if j.is_due(now, last_started.get(j.name))]
    return sorted(due, key=lambda j: (_KIND_ORDER[j.kind], j.slot_at_or_before(now), j.name))


def payapi_command(config: Path | None) -> list[str]:
    """How a job invokes payapi: this interpreter, the same package, the same config."""
    argv = [sys.executable, "-m", "payapi"]
    if config is not None:
        argv += ["--config", str(config)]
    return argv
