"""Prometheus metrics of the DR toolkit: the RPO check's figures and the scheduler's jobs.

One function renders them, :func:`rpo_families`, and two places use it:

- ``payapi plan check --metrics-file PATH`` writes them once, atomically, for
  node_exporter's textfile collector (:func:`write_textfile`);
- ``payapi schedule run --metrics-port P`` serves them on ``/metrics``
  (:class:`RpoCollector` re-judges the latest observation at every scrape, so exposure
  grows between two observations exactly as it does in the world).

Everything lives in a dedicated registry (never the process-global one), so these gauges
cannot collide with a service's own metrics. The alert rules that read them are in
``deploy/prometheus/alerts.yml``.

Conventions: ages and exposures are seconds; "no backup at all" is ``+Inf`` (so every
``age > threshold`` alert fires on it), never a missing series; a component with no
backups expected (NOT MANAGED, nothing scheduled) has no age series.
"""

from __future__ import annotations

import contextlib
import math
import os
import secrets
import threading
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from payapi.core.plan import Plan
from payapi.ops.rpo import ComponentStatus, Observations, RpoReport, Status, report
from payapi.ops.scheduler import Scheduler

__all__ = [
    "JobCollector",
    "RpoCollector",
    "StaticCollector",
    "render",
    "replication_families",
    "rpo_families",
    "write_textfile",
]

INF = math.inf


def _ts(value: datetime) -> float:
    return value.timestamp()


def _gauge(name: str, doc: str, labels: Iterable[str] = ()) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, labels=list(labels))


def _age_value(seconds: float | None) -> float:
    return INF if seconds is None else seconds


def rpo_families(rep: RpoReport | None) -> list[Metric]:
    """The RPO check as metric families; ``rep`` None means the check could not run."""
    up = _gauge("payapi_rpo_check_up", "1 if the last RPO check could read what it needs.")
    up.add_metric([], 0.0 if rep is None else 1.0)
    families: list[Metric] = [up]
    if rep is None:
        return families
    checked = _gauge(
        "payapi_rpo_check_timestamp_seconds", "When the RPO figures were computed (Unix time)."
    )
    checked.add_metric([], _ts(rep.checked_at))
    families.append(checked)
    if rep.observed_at is not None:
        observed = _gauge(
            "payapi_rpo_observation_timestamp_seconds",
            "When the repository and database were last read (Unix time).",
        )
        observed.add_metric([], _ts(rep.observed_at))
        families.append(observed)

    c = ["component"]
    objective = _gauge("payapi_rpo_objective_seconds", "The plan's RPO of the component.", c)
    exposure = _gauge(
        "payapi_rpo_exposure_seconds",
        "Data that would be lost if the component were lost now (+Inf: no backup).",
        c,
    )
    status = _gauge(
        "payapi_rpo_status",
        "1 for the component's current status (ok, at_risk, violation, not_managed).",
        ["component", "status"],
    )
    backup_age = _gauge("payapi_backup_age_seconds", "Age of the newest backup (+Inf: none).", c)
    verified_age = _gauge(
        "payapi_backup_verified_age_seconds", "Age of the newest verified backup (+Inf: none).", c
    )
    verify_max = _gauge(
        "payapi_backup_verification_max_age_seconds",
        "How old the newest verified backup may be (the plan's verification cadence).",
        c,
    )
    interval = _gauge(
        "payapi_backup_interval_seconds", "How often the schedule backs the component up.", c
    )
    wal_lag = _gauge(
        "payapi_wal_archive_lag_seconds",
        "Time since the last WAL segment was archived (+Inf: never).",
        c,
    )
    wal_failing = _gauge(
        "payapi_wal_archiving_failing", "1 if WAL archiving is failing or off, else 0.", c
    )
    wal_failed = _gauge(
        "payapi_wal_archive_failed_count",
        "Failed archive attempts since the database's statistics were reset.",
        c,
    )
    db_up = _gauge("payapi_database_reachable", "1 if the RPO check could query the database.", c)

    for cs in rep.components:
        _component_samples(
            cs,
            objective=objective,
            exposure=exposure,
            status=status,
            backup_age=backup_age,
            verified_age=verified_age,
            verify_max=verify_max,
            interval=interval,
            wal_lag=wal_lag,
            wal_failing=wal_failing,
            wal_failed=wal_failed,
            db_up=db_up,
        )
    families += [
        objective,
        exposure,
        status,
        backup_age,
        verified_age,
        verify_max,
        interval,
        wal_lag,
        wal_failing,
        wal_failed,
        db_up,
    ]
    return families + replication_families(rep)


def replication_families(rep: RpoReport) -> list[Metric]:
    """Replication's figures (with ``[regions]`` configured; none otherwise): each member's
    lag within its region, the DR regions' lag behind the primary (+Inf: unknown), whether
    the primary region's synchronous standby streams (exported where one is configured or
    present), and the tightest RPO of the replicated data, which the DR alert compares with."""
    prot = rep.replication
    if prot is None:
        return []
    m = ["region", "member", "role"]
    up = _gauge("payapi_replication_member_up", "1 if the member runs (Patroni) or answers.", m)
    lag_bytes = _gauge(
        "payapi_replication_lag_bytes", "WAL bytes the member is behind its region's leader.", m
    )
    lag_seconds = _gauge(
        "payapi_replication_lag_seconds", "Replay lag behind the region's leader (seconds).", m
    )
    for lag in prot.members:
        labels = [lag.region, lag.member, lag.role]
        up.add_metric(labels, 1.0 if lag.up else 0.0)
        if lag.lag_bytes is not None:
            lag_bytes.add_metric(labels, float(lag.lag_bytes))
        if lag.lag_seconds is not None:
            lag_seconds.add_metric(labels, lag.lag_seconds)
    d = ["region", "member"]
    dr_seconds = _gauge(
        "payapi_replication_dr_lag_seconds",
        "How far the DR region's database is behind the primary's (+Inf: unknown).",
        d,
    )
    dr_bytes = _gauge(
        "payapi_replication_dr_lag_bytes", "WAL bytes the DR region has not replayed.", d
    )
    for dr in prot.dr:
        labels = [dr.region, dr.member or ""]
        dr_seconds.add_metric(labels, _age_value(dr.seconds))
        if dr.lag_bytes is not None:
            dr_bytes.add_metric(labels, float(dr.lag_bytes))
    sync = _gauge(
        "payapi_replication_sync_standby",
        "1 if a synchronous standby streams in the region, 0 if the one configured does not.",
        ["region"],
    )
    if prot.sync_expected or prot.sync_standby is not None:
        sync.add_metric([prot.primary], 1.0 if prot.sync_standby is not None else 0.0)
    objective = _gauge(
        "payapi_replication_rpo_objective_seconds",
        "The tightest RPO of the data in the replicated database (database, vault).",
    )
    rpos = [c.rpo.total_seconds() for c in rep.components if c.replication and c.rpo]
    if rpos:
        objective.add_metric([], min(rpos))
    return [up, lag_bytes, lag_seconds, dr_seconds, dr_bytes, sync, objective]


def _component_samples(
    cs: ComponentStatus,
    *,
    objective: GaugeMetricFamily,
    exposure: GaugeMetricFamily,
    status: GaugeMetricFamily,
    backup_age: GaugeMetricFamily,
    verified_age: GaugeMetricFamily,
    verify_max: GaugeMetricFamily,
    interval: GaugeMetricFamily,
    wal_lag: GaugeMetricFamily,
    wal_failing: GaugeMetricFamily,
    wal_failed: GaugeMetricFamily,
    db_up: GaugeMetricFamily,
) -> None:
    name = [cs.name]
    if cs.rpo is not None:
        objective.add_metric(name, cs.rpo.total_seconds())
    if cs.status is not Status.NOT_MANAGED:
        exposure.add_metric(
            name, _age_value(cs.exposure.total_seconds() if cs.exposure is not None else None)
        )
    for s in Status:
        status.add_metric([cs.name, s.metric_label], 1.0 if s is cs.status else 0.0)
    expected = cs.last_backup is not None or cs.backup_interval is not None
    if expected:
        backup_age.add_metric(
            name,
            _age_value(
                cs.last_backup_age.total_seconds() if cs.last_backup_age is not None else None
            ),
        )
        verified_age.add_metric(
            name,
            _age_value(
                cs.last_verified_age.total_seconds() if cs.last_verified_age is not None else None
            ),
        )
    if cs.verification_max_age is not None and expected:
        verify_max.add_metric(name, cs.verification_max_age.total_seconds())
    if cs.backup_interval is not None:
        interval.add_metric(name, cs.backup_interval.total_seconds())
    wal = cs.wal
    if wal is not None:
        if wal.lag is not None:
            wal_lag.add_metric(name, wal.lag.total_seconds())
        elif wal.database_reachable:
            wal_lag.add_metric(name, INF)
        if wal.archiving in ("ok", "failing", "off"):
            wal_failing.add_metric(name, 0.0 if wal.archiving == "ok" else 1.0)
        if wal.database_reachable:
            wal_failed.add_metric(name, float(wal.failed_count))
        if wal.database_reachable is not None:
            db_up.add_metric(name, 1.0 if wal.database_reachable else 0.0)


class StaticCollector(Collector):
    """Serves a fixed list of families (for rendering one report)."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self._families)


def render(rep: RpoReport | None) -> bytes:
    """The RPO figures in Prometheus' text exposition format."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StaticCollector(rpo_families(rep)))
    return generate_latest(registry)


def write_textfile(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temp file in the same folder, then rename),
    so node_exporter never reads half a file. The file is world-readable (metrics only)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "xb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


class RpoCollector(Collector):
    """The latest observation, judged afresh at every scrape (assess is pure and cheap)."""

    def __init__(
        self, plan: Plan, clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    ) -> None:
        self.plan = plan
        self.clock = clock
        self._lock = threading.Lock()
        self._observations: Observations | None = None
        self._error: str | None = "not checked yet"

    def update(self, observations: Observations | None, error: str | None = None) -> None:
        """The newest observation; None (with why) when the check could not read it, so
        ``payapi_rpo_check_up`` drops to 0 rather than serving stale figures."""
        with self._lock:
            self._observations = observations
            self._error = None if observations is not None else (error or "check failed")

    @property
    def error(self) -> str | None:
        return self._error

    def current(self) -> RpoReport | None:
        with self._lock:
            obs = self._observations
        return report(self.plan, obs, self.clock()) if obs is not None else None

    def collect(self) -> Iterator[Metric]:
        return iter(rpo_families(self.current()))


class JobCollector(Collector):
    """The scheduler's jobs: last run, last success, exit code, duration, next run."""

    def __init__(self, scheduler: Scheduler) -> None:
        self.scheduler = scheduler

    def collect(self) -> Iterator[Metric]:
        s = self.scheduler
        labels = ["job", "kind", "component"]
        last_run = _gauge(
            "payapi_schedule_job_last_run_timestamp_seconds", "When the job last started.", labels
        )
        last_ok = _gauge(
            "payapi_schedule_job_last_success_timestamp_seconds",
            "When the job last finished with exit code 0.",
            labels,
        )
        exit_code = _gauge(
            "payapi_schedule_job_last_exit_code", "Exit code of the job's last run.", labels
        )
        duration = _gauge(
            "payapi_schedule_job_last_duration_seconds", "How long the last run took.", labels
        )
        next_run = _gauge(
            "payapi_schedule_job_next_run_timestamp_seconds", "The job's next slot.", labels
        )
        runs = _gauge(
            "payapi_schedule_job_runs",
            "Runs since the scheduler started, by result (success, failure).",
            [*labels, "result"],
        )
        now = s.clock()
        for job in s.schedule.jobs:
            lv = [job.name, job.kind, job.component or ""]
            next_run.add_metric(lv, _ts(job.next_run(now)))
            if (started := s.state.last_started.get(job.name)) is not None:
                last_run.add_metric(lv, _ts(started))
            if (ok_at := s.state.last_success.get(job.name)) is not None:
                last_ok.add_metric(lv, _ts(ok_at))
            if (code := s.state.last_exit.get(job.name)) is not None:
                exit_code.add_metric(lv, float(code))
            if (run := s.last_runs.get(job.name)) is not None:
                duration.add_metric(lv, run.duration.total_seconds())
            for result in ("success", "failure"):
                runs.add_metric([*lv, result], float(s.run_counts.get((job.name, result), 0)))
        return iter([last_run, last_ok, exit_code, duration, next_run, runs])
