"""The plan's backup schedule: which jobs run when (pure), and a loop that runs them.

Deciding is separate from doing. The pure half — :func:`jobs_from_plan`, :meth:`Job.next_run`,
:func:`due_jobs` — reads no clock and does no I/O: every question ("when does the vault's
incremental run next?", "what is due at 01:07 if the scheduler last ran at 23:00?") is a
unit test with an injected ``now``. :class:`Scheduler` is the half that acts: it runs each
due job as a ``payapi`` subprocess, logs one JSON line per event, and never lets a failing
job stop it.

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

import contextlib
import json
import logging
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from payapi.plan import Duration, Plan, PlanError

__all__ = [
    "EPOCH",
    "TIMES",
    "Job",
    "JobResult",
    "JobRun",
    "NotScheduled",
    "Runner",
    "Schedule",
    "Scheduler",
    "SchedulerState",
    "SubprocessRunner",
    "backup_interval",
    "due_jobs",
    "jobs_from_plan",
    "payapi_command",
]

log = logging.getLogger(__name__)

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
"""Slots are counted from here (a Thursday, 00:00 UTC)."""

JobKind = Literal["backup", "verify", "restore-test", "purge"]
_KIND_ORDER: Mapping[str, int] = {"backup": 0, "verify": 1, "restore-test": 2, "purge": 3}

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
# Hourly-or-slower jobs not named above start at this offset.
DEFAULT_OFFSET = timedelta(minutes=30)
# "on change" rows (configuration in Git) are swept daily: a change is copied at most a
# day after it was made.
EVENT_SWEEP = timedelta(days=1)
VERIFY_EVERY = timedelta(days=1)
PURGE_EVERY = timedelta(days=1)
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


def jobs_from_plan(plan: Plan) -> Schedule:
    """The schedule the plan asks for: one job per backup row payapi can run, plus the
    daily verification and purge. Rows it cannot run are listed with the reason."""
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
    names = [j.name for j in jobs]
    if len(set(names)) != len(names):
        raise PlanError("the plan has two backup rows of the same component and type")
    return Schedule(tuple(jobs), tuple(skipped))


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


# --------------------------------------------------------------------------- running


@dataclass(frozen=True, slots=True)
class JobResult:
    """How a job's process ended. ``exit_code`` is negative for a signal (as Popen says)."""

    exit_code: int
    output_tail: str = ""
    timed_out: bool = False
    stopped: bool = False


Runner = Callable[[Sequence[str], timedelta, threading.Event], JobResult]
"""Runs ``argv`` for at most the timeout, ending it early when the event is set."""

OUTPUT_TAIL_CHARS = 2000


class SubprocessRunner:
    """Runs a job as a child process; stops it with SIGTERM (then SIGKILL) when asked."""

    def __init__(self, grace: float = 30.0, env: Mapping[str, str] | None = None) -> None:
        self.grace = grace
        self.env = dict(env) if env is not None else None

    def __call__(self, argv: Sequence[str], timeout: timedelta, stop: threading.Event) -> JobResult:
        try:
            proc = subprocess.Popen(
                list(argv),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                text=True,
                errors="replace",
                env=self.env,
            )
        except OSError as exc:
            return JobResult(127, f"cannot start {argv[0]}: {exc.strerror or exc}")
        deadline = time.monotonic() + timeout.total_seconds()
        timed_out = stopped = False
        while True:
            try:
                out, _ = proc.communicate(timeout=0.25)
                break
            except subprocess.TimeoutExpired:
                pass
            if stop.is_set() or time.monotonic() > deadline:
                stopped, timed_out = stop.is_set(), not stop.is_set()
                out = self._end(proc)
                break
        return JobResult(proc.returncode, out[-OUTPUT_TAIL_CHARS:], timed_out, stopped)

    def _end(self, proc: subprocess.Popen[str]) -> str:
        proc.terminate()
        try:
            out, _ = proc.communicate(timeout=self.grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
        return out or ""


@dataclass
class JobRun:
    """One run of a job, as logged: a journal entry (start, end, duration, exit code)."""

    job: str
    slot: datetime
    started_at: datetime
    finished_at: datetime
    exit_code: int
    output_tail: str = ""
    timed_out: bool = False
    stopped: bool = False

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    @property
    def duration(self) -> timedelta:
        return self.finished_at - self.started_at


@dataclass
class SchedulerState:
    """When each job last started, and how its last run ended (persisted across restarts
    when the scheduler is given a state file, so a restart does not rerun the day's jobs)."""

    last_started: dict[str, datetime] = field(default_factory=dict)
    last_exit: dict[str, int] = field(default_factory=dict)
    last_success: dict[str, datetime] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path | None) -> SchedulerState:
        if path is None or not path.exists():
            return cls()
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            jobs = data["jobs"]
            state = cls()
            for name, rec in jobs.items():
                state.last_started[name] = datetime.fromisoformat(rec["last_started"])
                if rec.get("last_exit") is not None:
                    state.last_exit[name] = int(rec["last_exit"])
                if rec.get("last_success"):
                    state.last_success[name] = datetime.fromisoformat(rec["last_success"])
            return state
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            # A damaged state file must not stop backups: start afresh (everything is due).
            log.warning("ignoring unreadable scheduler state %s: %s", path, exc)
            return cls()

    def save(self, path: Path | None) -> None:
        if path is None:
            return
        jobs = {
            name: {
                "last_started": started.isoformat(),
                "last_exit": self.last_exit.get(name),
                "last_success": (
                    self.last_success[name].isoformat() if name in self.last_success else None
                ),
            }
            for name, started in sorted(self.last_started.items())
        }
        body = json.dumps({"jobs": jobs}, indent=2) + "\n"
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
        try:
            tmp.write_text(body, encoding="utf-8")
            os.replace(tmp, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _print_json_line(event: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(event, default=str) + "\n")
    sys.stdout.flush()


class Scheduler:
    """Runs a :class:`Schedule`: the due jobs, one at a time, until :meth:`stop`.

    Every event is one JSON line through ``emit`` (``scheduler_started``, ``job_started``,
    ``job_finished``, ``job_failed``, ``scheduler_stopped``...). ``on_tick`` (the RPO
    check that feeds ``/metrics``) is called between jobs; its failure is logged, never
    raised. ``listeners`` hear about every finished run (metrics), and their failures
    are logged too: nothing a hook does stops the schedule.
    """

    def __init__(
        self,
        schedule: Schedule,
        command: Sequence[str],
        *,
        runner: Runner | None = None,
        clock: Callable[[], datetime] = _utcnow,
        emit: Callable[[dict[str, Any]], None] = _print_json_line,
        state_file: Path | None = None,
        on_tick: Callable[[datetime], None] | None = None,
        tick_every: timedelta = timedelta(seconds=60),
        listeners: Sequence[Callable[[JobRun], None]] = (),
        max_sleep: float = 60.0,
    ) -> None:
        self.schedule = schedule
        self.command = list(command)
        self.runner: Runner = runner or SubprocessRunner()
        self.clock = clock
        self._emit = emit
        self.state_file = state_file
        self.state = SchedulerState.load(state_file)
        self.on_tick = on_tick
        self.tick_every = tick_every
        self.listeners = list(listeners)
        self.max_sleep = max_sleep
        self._stop = threading.Event()
        self._last_tick: datetime | None = None
        # The newest run of each job and how many runs ended each way (bounded: one
        # entry per job, however long the scheduler runs).
        self.last_runs: dict[str, JobRun] = {}
        self.run_counts: dict[tuple[str, str], int] = {}

    # --- control ----------------------------------------------------------------------

    def stop(self) -> None:
        """Ask the loop to end; a running job is stopped (SIGTERM, then SIGKILL)."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    @contextlib.contextmanager
    def signals_stop(self) -> Iterator[None]:
        """While inside, SIGTERM and SIGINT stop the scheduler cleanly (main thread only);
        the previous handlers are put back on the way out."""

        def handler(signum: int, _frame: object) -> None:
            self.log("signal", signal=signal.Signals(signum).name)
            self.stop()

        previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield
        finally:
            for sig, old in previous.items():
                signal.signal(sig, old)

    # --- events -----------------------------------------------------------------------

    def log(self, event: str, **fields: Any) -> None:
        record = {"ts": self.clock().isoformat(), "event": event, **fields}
        try:
            self._emit(record)
        except Exception:  # a broken log sink must not stop backups
            log.exception("cannot write scheduler event %s", event)

    # --- the loop ---------------------------------------------------------------------

    def due(self, now: datetime | None = None) -> list[Job]:
        return due_jobs(self.schedule.jobs, now or self.clock(), self.state.last_started)

    def next_wakeup(self, now: datetime) -> datetime:
        times = [j.next_run(now) for j in self.schedule.jobs]
        if self.on_tick is not None:
            last = self._last_tick or now
            times.append(last + self.tick_every)
        return min(times) if times else now + timedelta(seconds=self.max_sleep)

    def run_job(self, job: Job, now: datetime) -> JobRun:
        slot = job.slot_at_or_before(now)
        argv = [*self.command, *job.args]
        started = self.clock()
        late = max((started - slot).total_seconds(), 0.0)
        self.state.last_started[job.name] = started
        self.log(
            "job_started",
            job=job.name,
            kind=job.kind,
            component=job.component,
            slot=slot.isoformat(),
            late_seconds=round(late, 3),
            argv=argv,
        )
        t0 = time.monotonic()
        try:
            result = self.runner(argv, job.timeout, self._stop)
        except Exception as exc:  # the runner itself failed: the job failed, we go on
            result = JobResult(-1, f"runner error: {type(exc).__name__}: {exc}")
        duration = time.monotonic() - t0
        finished = max(self.clock(), started)
        run = JobRun(
            job=job.name,
            slot=slot,
            started_at=started,
            finished_at=finished,
            exit_code=result.exit_code,
            output_tail=result.output_tail,
            timed_out=result.timed_out,
            stopped=result.stopped,
        )
        self.state.last_exit[job.name] = result.exit_code
        if run.ok:
            self.state.last_success[job.name] = finished
        try:
            self.state.save(self.state_file)
        except OSError as exc:
            self.log("state_not_saved", path=str(self.state_file), error=str(exc))
        self.last_runs[job.name] = run
        outcome = "success" if run.ok else "failure"
        self.run_counts[(job.name, outcome)] = self.run_counts.get((job.name, outcome), 0) + 1
        fields: dict[str, Any] = {
            "job": job.name,
            "kind": job.kind,
            "component": job.component,
            "exit_code": result.exit_code,
            "ok": run.ok,
            "duration_seconds": round(duration, 3),
            "started_at": started.isoformat(),
            "finished_at": finished.isoformat(),
            "next_run": job.next_run(finished).isoformat(),
        }
        if result.timed_out:
            fields["timed_out_after_seconds"] = int(job.timeout.total_seconds())
        if result.stopped:
            fields["stopped"] = True
        if not run.ok:
            fields["output_tail"] = _tail_lines(result.output_tail)
        self.log("job_finished" if run.ok else "job_failed", **fields)
        for listener in self.listeners:
            try:
                listener(run)
            except Exception as exc:
                self.log("listener_failed", job=job.name, error=f"{type(exc).__name__}: {exc}")
        return run

    def tick(self, now: datetime, *, force: bool = False) -> None:
        if self.on_tick is None:
            return
        if not force and self._last_tick is not None and now < self._last_tick + self.tick_every:
            return
        self._last_tick = now
        try:
            self.on_tick(now)
        except Exception as exc:
            self.log("check_failed", error=f"{type(exc).__name__}: {exc}")

    def run_once(self) -> list[JobRun]:
        """Run every job due now, then the check; return the runs (``--once``)."""
        runs: list[JobRun] = []
        for job in self.due():
            if self.stopping:
                break
            runs.append(self.run_job(job, self.clock()))
        self.tick(self.clock(), force=True)
        return runs

    def run_forever(self) -> None:
        """Loop until :meth:`stop` (SIGTERM): run what is due, sleep until the next slot."""
        self.log(
            "scheduler_started",
            jobs=[
                {"job": j.name, "every_seconds": int(j.every.total_seconds()), "cron": j.cron}
                for j in self.schedule.jobs
            ],
            state_file=str(self.state_file) if self.state_file else None,
        )
        self.tick(self.clock(), force=True)  # /metrics has figures before the first job ends
        while not self.stopping:
            for job in self.due():
                if self.stopping:
                    break
                self.run_job(job, self.clock())
            if self.stopping:
                break
            now = self.clock()
            self.tick(now)
            wake = self.next_wakeup(now)
            delay = min(max((wake - self.clock()).total_seconds(), 0.05), self.max_sleep)
            self._stop.wait(delay)
        self.log("scheduler_stopped", runs=sum(self.run_counts.values()))


def _tail_lines(text: str, lines: int = 10) -> list[str]:
    return [line for line in text.strip().splitlines()[-lines:] if line.strip()]
