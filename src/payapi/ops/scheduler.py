"""Running the plan's backup schedule: a loop that runs each due job (as decided by
:mod:`payapi.ops.schedule`) as a ``payapi`` subprocess, one at a time, with a timeout, a
JSON line per event and its state in a file; a failing job never stops it."""

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
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from payapi.ops.schedule import Job, Schedule, due_jobs

log = logging.getLogger("payapi.ops.schedule")


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
