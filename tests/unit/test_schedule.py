"""The backup schedule: jobs from the plan, next runs, due jobs, and the scheduler loop
driven by an injected clock and a fake runner (no subprocess)."""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from payapi.core.plan import load_plan, parse_plan
from payapi.ops.schedule import Job, backup_interval, due_jobs, jobs_from_plan
from payapi.ops.scheduler import JobResult, Scheduler, SchedulerState, SubprocessRunner

PLAN = load_plan()
# The backup jobs; the minutely incident sweep is tested on its own below.
SCHEDULE = jobs_from_plan(PLAN, incident_sweep=False)
T0 = datetime(2026, 6, 15, 10, 30, tzinfo=UTC)


def job(name: str) -> Job:
    return SCHEDULE.job(name)


def test_the_plans_jobs() -> None:
    got = {j.name: (j.every, j.args) for j in SCHEDULE.jobs}
    assert set(got) == {
        "vault-full",
        "vault-incremental",
        "database-full",
        "redis-snapshot",
        "configuration-git",
        "verify",
        "restore-test",
        "purge",
    }
    day, hour = timedelta(days=1), timedelta(hours=1)
    assert got["vault-full"][0] == day
    assert got["vault-incremental"][0] == hour
    assert got["database-full"][0] == day
    assert got["redis-snapshot"][0] == hour
    assert got["configuration-git"][0] == day  # "on change", swept daily
    assert got["verify"][0] == day and got["purge"][0] == day
    assert got["restore-test"][0] == timedelta(weeks=1)  # the plan's weekly test restore
    assert got["vault-full"][1] == ("backup", "run", "--component", "vault", "--full", "--json")
    assert got["vault-incremental"][1][-2] == "--incremental"
    assert got["database-full"][1][3] == "database"
    # A snapshot or a Git copy is the engine's one kind of backup: its default, no flag.
    assert got["redis-snapshot"][1] == ("backup", "run", "--component", "redis", "--json")
    assert got["restore-test"][1] == ("backup", "verify", "--restore-test", "--json")


def test_rows_payapi_does_not_run_are_listed_with_the_reason() -> None:
    skipped = {(n.component, n.backup_type): n.reason for n in SCHEDULE.not_scheduled}
    assert "archive_command" in skipped[("database", "wal")]
    assert "no backup engine" in skipped[("kubernetes", "export")]
    assert "no backup engine" in skipped[("container-images", "registry")]


@pytest.mark.parametrize(
    ("name", "after", "expected"),
    [
        ("vault-incremental", T0, datetime(2026, 6, 15, 11, 5, tzinfo=UTC)),
        (
            "vault-incremental",
            datetime(2026, 6, 15, 11, 5, tzinfo=UTC),
            T0.replace(hour=12, minute=5),
        ),
        ("redis-snapshot", datetime(2026, 6, 15, 10, 9, 59, tzinfo=UTC), T0.replace(minute=10)),
        ("database-full", T0, datetime(2026, 6, 16, 1, 0, tzinfo=UTC)),
        ("database-full", datetime(2026, 6, 15, 0, 59, tzinfo=UTC), T0.replace(hour=1, minute=0)),
        ("vault-full", T0, datetime(2026, 6, 16, 1, 20, tzinfo=UTC)),
        ("verify", T0, datetime(2026, 6, 16, 3, 0, tzinfo=UTC)),
        ("purge", datetime(2026, 12, 31, 23, 0, tzinfo=UTC), datetime(2027, 1, 1, 4, tzinfo=UTC)),
    ],
)
def test_next_run(name: str, after: datetime, expected: datetime) -> None:
    assert job(name).next_run(after) == expected


def test_next_runs_are_one_period_apart() -> None:
    runs = job("vault-incremental").next_runs(T0, 3)
    assert [t.strftime("%H:%M") for t in runs] == ["11:05", "12:05", "13:05"]


def test_next_run_accepts_other_timezones() -> None:
    from datetime import timezone

    paris = T0.astimezone(timezone(timedelta(hours=2)))
    assert job("database-full").next_run(paris) == datetime(2026, 6, 16, 1, 0, tzinfo=UTC)


def test_naive_times_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        job("verify").next_run(datetime(2026, 1, 1))


def test_cron_expressions_match_the_slots() -> None:
    assert job("vault-incremental").cron == "5 * * * *"
    assert job("redis-snapshot").cron == "10 * * * *"
    assert job("database-full").cron == "0 1 * * *"
    assert job("vault-full").cron == "20 1 * * *"
    assert job("configuration-git").cron == "40 1 * * *"
    assert job("verify").cron == "0 3 * * *"
    assert job("purge").cron == "0 4 * * *"
    assert job("restore-test").cron == "0 5 * * 6"  # Saturdays


def test_the_incident_sweep_runs_every_minute_before_anything_else() -> None:
    schedule = jobs_from_plan(PLAN)
    sweep = schedule.job("incident-sweep")
    assert sweep.every == timedelta(minutes=1) and sweep.cron == "* * * * *"
    assert sweep.args == ("incident", "sweep", "--json")
    assert sweep.timeout == timedelta(minutes=1)
    assert due_jobs(schedule.jobs, T0, {})[0].name == "incident-sweep"
    assert {j.name for j in schedule.jobs} - {j.name for j in SCHEDULE.jobs} == {"incident-sweep"}


def test_weekly_restore_test_runs_on_saturdays() -> None:
    nxt = job("restore-test").next_run(T0)  # T0 is Monday 2026-06-15
    assert nxt == datetime(2026, 6, 20, 5, 0, tzinfo=UTC)
    assert nxt.strftime("%A") == "Saturday"


def test_due_never_run_jobs_are_due_in_slot_order() -> None:
    due = [j.name for j in due_jobs(SCHEDULE.jobs, T0, {})]
    assert due == [
        "database-full",
        "vault-full",
        "configuration-git",
        "vault-incremental",
        "redis-snapshot",
        "verify",
        "restore-test",
        "purge",
    ]


def test_due_after_a_slot_passes_and_missed_slots_coalesce() -> None:
    inc = job("vault-incremental")
    started = datetime(2026, 6, 15, 10, 5, 1, tzinfo=UTC)
    assert not inc.is_due(T0, started)
    assert inc.is_due(datetime(2026, 6, 15, 11, 5, tzinfo=UTC), started)
    # Down for a day: due once (not 24 times); after it runs, not due until the next slot.
    later = datetime(2026, 6, 16, 10, 30, tzinfo=UTC)
    assert [j.name for j in due_jobs([inc], later, {inc.name: started})] == [inc.name]
    assert due_jobs([inc], later, {inc.name: later}) == []


def test_backup_interval_is_the_most_frequent_job_of_the_component() -> None:
    assert backup_interval(PLAN, "vault") == timedelta(hours=1)
    assert backup_interval(PLAN, "conjur") == timedelta(hours=1)
    assert backup_interval(PLAN, "db") == timedelta(days=1)
    assert backup_interval(PLAN, "config") == timedelta(days=1)
    assert backup_interval(PLAN, "monitoring") is None
    assert backup_interval(PLAN, "nonsense") is None


def test_a_plan_with_other_frequencies_schedules_them() -> None:
    text = Path(__file__).parents[2].joinpath("src/payapi/data/dr-plan.yaml").read_text()
    text = text.replace(
        "  - component: redis\n    type: snapshot\n    description: RDB snapshot\n"
        "    frequency: hourly",
        "  - component: redis\n    type: snapshot\n    description: RDB snapshot\n"
        "    frequency: 15m",
    )
    redis = jobs_from_plan(parse_plan(text)).job("redis-snapshot")
    assert redis.every == timedelta(minutes=15)
    assert redis.cron == "10-59/15 * * * *"
    assert redis.next_run(T0) == T0.replace(minute=40)


def test_a_standby_region_redis_is_seeded_after_each_snapshot() -> None:
    schedule = jobs_from_plan(PLAN, ["dr"])
    snapshot, seed = schedule.job("redis-snapshot"), schedule.job("redis-seed-dr")
    assert seed.kind == "seed" and seed.every == snapshot.every
    assert seed.offset == snapshot.offset + timedelta(minutes=5)
    assert seed.args == ("region", "seed-redis", "--region", "dr", "--json")
    order = [j.name for j in due_jobs(schedule.jobs, T0.replace(minute=15), {})]
    assert order.index("redis-seed-dr") > order.index("redis-snapshot")
    assert "redis-seed-dr" not in {j.name for j in SCHEDULE.jobs}  # no regions: no seeding


# ---------------------------------------------------------------- the loop


class FakeClock:
    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


class FakeRunner:
    """Records argv; 'fails' the jobs named in ``fail``; advances the clock per run."""

    def __init__(self, clock: FakeClock, fail: Sequence[str] = (), raise_on: str = "") -> None:
        self.clock = clock
        self.fail = set(fail)
        self.raise_on = raise_on
        self.calls: list[list[str]] = []

    def __call__(self, argv: Sequence[str], timeout: timedelta, stop: threading.Event) -> JobResult:
        self.calls.append(list(argv))
        self.clock.advance(timedelta(seconds=7))
        joined = " ".join(argv)
        if self.raise_on and self.raise_on in joined:
            raise RuntimeError("runner exploded")
        if any(f in joined for f in self.fail):
            return JobResult(3, "line one\nerror: repository unreachable\n")
        return JobResult(0, "{}")


def make(
    tmp_path: Path, clock: FakeClock, runner: FakeRunner, **kw: object
) -> tuple[Scheduler, list[dict[str, object]]]:
    events: list[dict[str, object]] = []
    s = Scheduler(
        SCHEDULE,
        ["payapi", "--config", "/etc/payapi.toml"],
        runner=runner,
        clock=clock,
        emit=events.append,
        state_file=tmp_path / "state.json",
        **kw,  # type: ignore[arg-type]
    )
    return s, events


def test_run_once_runs_everything_due_with_the_same_config(tmp_path: Path) -> None:
    clock = FakeClock(T0)
    runner = FakeRunner(clock)
    s, events = make(tmp_path, clock, runner)
    runs = s.run_once()
    assert len(runs) == 8 and all(r.ok for r in runs)
    assert runner.calls[0] == [
        "payapi",
        "--config",
        "/etc/payapi.toml",
        "backup",
        "run",
        "--component",
        "database",
        "--full",
        "--json",
    ]
    finished = [e for e in events if e["event"] == "job_finished"]
    assert len(finished) == 8
    assert finished[0]["duration_seconds"] is not None and finished[0]["exit_code"] == 0
    # Nothing more is due until the next slot (vault-incremental at 11:05).
    assert s.run_once() == []
    clock.now = datetime(2026, 6, 15, 11, 5, tzinfo=UTC)
    assert [r.job for r in s.run_once()] == ["vault-incremental"]


def test_a_failing_job_is_logged_and_the_others_still_run(tmp_path: Path) -> None:
    clock = FakeClock(T0)
    runner = FakeRunner(clock, fail=["--component vault --full"], raise_on="redis")
    s, events = make(tmp_path, clock, runner)
    runs = s.run_once()
    assert len(runs) == 8
    bad = {r.job: r.exit_code for r in runs if not r.ok}
    assert bad == {"vault-full": 3, "redis-snapshot": -1}
    failed = [e for e in events if e["event"] == "job_failed"]
    assert failed[0]["job"] == "vault-full"
    assert failed[0]["output_tail"] == ["line one", "error: repository unreachable"]
    assert "runner exploded" in str(failed[1]["output_tail"])
    # A failed job waits for its next slot (no hot retry loop).
    assert s.run_once() == []


def test_state_survives_a_restart(tmp_path: Path) -> None:
    clock = FakeClock(T0)
    s, _ = make(tmp_path, clock, FakeRunner(clock, fail=["verify"]))
    s.run_once()
    state = json.loads((tmp_path / "state.json").read_text())
    assert state["jobs"]["verify"]["last_exit"] == 3
    assert state["jobs"]["verify"]["last_success"] is None
    assert state["jobs"]["purge"]["last_exit"] == 0
    runner2 = FakeRunner(clock)
    s2, _ = make(tmp_path, clock, runner2)
    assert s2.run_once() == []
    assert s2.state.last_exit["verify"] == 3


def test_an_unreadable_state_file_means_everything_is_due(tmp_path: Path) -> None:
    (tmp_path / "state.json").write_text("{not json")
    loaded = SchedulerState.load(tmp_path / "state.json")
    assert loaded.last_started == {}


def test_run_forever_stops_cleanly_and_ticks(tmp_path: Path) -> None:
    clock = FakeClock(T0)
    runner = FakeRunner(clock)
    ticks: list[datetime] = []
    s, events = make(tmp_path, clock, runner, max_sleep=0.01)

    def tick(now: datetime) -> None:
        ticks.append(now)
        if len(ticks) == 1:
            raise RuntimeError("repository down")  # a failing check never stops the loop
        s.stop()

    s.on_tick = tick
    s.tick_every = timedelta(seconds=0)
    done = threading.Event()

    def loop() -> None:
        s.run_forever()
        done.set()

    t = threading.Thread(target=loop)
    t.start()
    assert done.wait(10), "the scheduler did not stop"
    names = [e["event"] for e in events]
    assert names[0] == "scheduler_started"
    assert names[-1] == "scheduler_stopped"
    assert "check_failed" in names
    assert len(ticks) == 2


def test_subprocess_runner_reports_exit_code_output_and_timeouts() -> None:
    import sys

    run = SubprocessRunner(grace=5)
    never = threading.Event()
    ok = run(
        [sys.executable, "-c", "print('hello'); raise SystemExit(4)"], timedelta(seconds=30), never
    )
    assert ok.exit_code == 4 and "hello" in ok.output_tail
    slow = run([sys.executable, "-c", "import time; time.sleep(30)"], timedelta(seconds=0.5), never)
    assert slow.timed_out and slow.exit_code != 0
    stop = threading.Event()
    stop.set()
    stopped = run(
        [sys.executable, "-c", "import time; time.sleep(30)"], timedelta(seconds=30), stop
    )
    assert stopped.stopped and not stopped.timed_out
    missing = run(["/nonexistent/payapi"], timedelta(seconds=5), never)
    assert missing.exit_code == 127
