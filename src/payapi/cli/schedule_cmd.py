"""`payapi schedule`: the plan's backup schedule — see the next runs, or run it.

- ``show``: every job (vault full daily and incremental hourly, database full daily,
  Redis hourly, configuration daily, verification and purge daily) with its next runs,
  and the plan rows that are not scheduled, with the reason.
- ``run``: a long-running process that runs each job when due (``payapi backup run ...``
  as a subprocess, with the same ``--config``), one JSON line per event on stdout, the RPO
  check every minute, and optionally ``/metrics`` on ``--metrics-port``. SIGTERM stops it
  cleanly; ``--once`` runs what is due now and exits.

The schedule itself is :func:`payapi.ops.schedule.jobs_from_plan` (pure); the Kubernetes
CronJobs in ``deploy/kubernetes/cronjobs.yaml`` use the same slots.
"""

from __future__ import annotations

import shlex
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from payapi.cli.context import get_ctx
from payapi.cli.options import parse_now
from payapi.cli.output import EXIT_USAGE, console, emit, fail, info
from payapi.cli.plan_cmd import PLAN_OPTION, load_for_cli
from payapi.core.plan import Plan
from payapi.core.settings import ConfigError, Settings
from payapi.ops.schedule import Schedule, jobs_from_plan, payapi_command
from payapi.ops.scheduler import Scheduler

app = typer.Typer(help="The plan's backup schedule: show, run.", no_args_is_help=True)


def schedule_json(schedule: Schedule, now: datetime, count: int) -> dict[str, Any]:
    return {
        "now": now.isoformat(),
        "timezone": "UTC",
        "jobs": [
            {**j.to_json(), "next_runs": [t.isoformat() for t in j.next_runs(now, count)]}
            for j in sorted(schedule.jobs, key=lambda j: (j.next_run(now), j.name))
        ],
        "not_scheduled": [n.to_json() for n in schedule.not_scheduled],
    }


def _print_schedule(data: dict[str, Any]) -> None:
    table = Table(title=f"Backup schedule (UTC) after {data['now'][:19]}Z", title_justify="left")
    for col in ("Job", "Frequency", "Cron", "Next runs"):
        table.add_column(col, no_wrap=col != "Frequency")
    for j in data["jobs"]:
        table.add_row(
            j["name"],
            j["frequency"],
            j["cron"],
            "\n".join(t[:16].replace("T", " ") for t in j["next_runs"]),
        )
    console.print(table)
    for j in data["jobs"]:
        console.print(f"{j['name']}: payapi {' '.join(j['args'])}", highlight=False)
    for n in data["not_scheduled"]:
        what = f"{n['component']} {n['backup_type']} ({n['frequency']})"
        info(f"not scheduled: {what}: {n['reason']}")


@app.command("show")
def show(
    ctx: typer.Context,
    plan: Path | None = PLAN_OPTION,
    as_json: bool = typer.Option(False, "--json", help="Print JSON (for automation)."),
    now: str | None = typer.Option(
        None, "--now", help="Show the runs after this time (ISO 8601; default: now)."
    ),
    count: int = typer.Option(3, "--count", min=1, max=100, help="Next runs per job."),
) -> None:
    """Print every scheduled job with its next runs (UTC)."""
    loaded = load_for_cli(ctx, plan)
    try:
        regions = seed_regions(get_ctx(ctx).settings)
    except ConfigError:
        regions = []
    data = schedule_json(jobs_from_plan(loaded, regions), parse_now(now), count)
    emit(data, as_json=as_json, human=_print_schedule)


def seed_regions(settings: Settings) -> list[str]:
    """The standby regions with a Redis to seed from the primary's snapshots."""
    return [n for n, r in settings.regions.items() if r.role != "primary" and r.redis]


class _RpoTick:
    """The scheduler's periodic RPO check: observe, feed ``/metrics``, log what changed."""

    def __init__(self, settings: Settings, plan: Plan, scheduler_log: Any, collector: Any) -> None:
        self.settings = settings
        self.plan = plan
        self.log = scheduler_log
        self.collector = collector
        self.last: dict[str, str] = {}

    def __call__(self, now: datetime) -> None:
        from payapi.ops import rpo, rpo_observe

        try:
            observations = rpo_observe.observe(self.settings, self.plan)
        except rpo.CheckError as exc:
            self.collector.update(None, str(exc))
            if self.last.get("__check__") != "failed":
                self.log("rpo_check_failed", error=str(exc))
            self.last["__check__"] = "failed"
            return
        self.last["__check__"] = "ok"
        self.collector.update(observations)
        result = rpo.report(self.plan, observations, self.collector.clock())
        for c in result.components:
            before = self.last.get(c.name)
            if before != c.status.value:
                self.log(
                    "rpo_status",
                    component=c.name,
                    status=c.status.value,
                    previous=before,
                    exposure_seconds=c.to_json()["exposure_seconds"],
                    rpo_seconds=c.to_json()["rpo_seconds"],
                    reasons=list(c.reasons),
                )
                self.last[c.name] = c.status.value


@app.command("run")
def run(
    ctx: typer.Context,
    plan: Path | None = PLAN_OPTION,
    once: bool = typer.Option(False, "--once", help="Run what is due now, then exit."),
    state_file: Path | None = typer.Option(
        None,
        "--state-file",
        help="Remember when each job last ran (so a restart does not rerun the day's jobs).",
    ),
    metrics_port: int | None = typer.Option(
        None, "--metrics-port", min=0, max=65535, help="Serve /metrics on this port."
    ),
    metrics_host: str = typer.Option(
        "127.0.0.1", "--metrics-host", help="Address /metrics listens on."
    ),
    check_every: float = typer.Option(
        60.0, "--check-every", min=0.0, help="Seconds between RPO checks (0: no check)."
    ),
    job_command: str | None = typer.Option(
        None,
        "--job-command",
        hidden=True,
        help="Command that stands for `payapi` in jobs (tests, wrappers); default: this "
        "Python with -m payapi and the same --config.",
    ),
) -> None:
    """Run the plan's backup schedule until SIGTERM; one JSON line per event on stdout.

    A failing job is logged (exit code, the end of its output) and never stops the
    scheduler. Exit 0 after a clean stop; with --once, 1 if a job failed.
    """
    from prometheus_client import CollectorRegistry, start_http_server

    from payapi.ops.metrics import JobCollector, RpoCollector

    loaded = load_for_cli(ctx, plan)
    try:
        settings = get_ctx(ctx).settings
    except ConfigError as exc:
        fail(str(exc))
    schedule = jobs_from_plan(loaded, seed_regions(settings))
    collector = RpoCollector(loaded)
    command = shlex.split(job_command) if job_command else payapi_command(settings.config_path)
    if not command:
        fail("--job-command is empty", EXIT_USAGE)
    scheduler = Scheduler(
        schedule,
        command,
        state_file=state_file,
        tick_every=timedelta(seconds=check_every or 60.0),
    )
    if check_every > 0:
        scheduler.on_tick = _RpoTick(settings, loaded, scheduler.log, collector)
    server = None
    if metrics_port is not None:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(collector)
        registry.register(JobCollector(scheduler))
        try:
            server, _thread = start_http_server(metrics_port, addr=metrics_host, registry=registry)
        except OSError as exc:
            fail(f"cannot serve /metrics on {metrics_host}:{metrics_port}: {exc.strerror or exc}")
        host, port = server.server_address[:2]
        shown = host.decode() if isinstance(host, bytes) else str(host)
        scheduler.log("metrics_listening", url=f"http://{shown}:{port}/metrics")
    failed: list[str] = []
    try:
        with scheduler.signals_stop():
            if once:
                runs = scheduler.run_once()
                failed = [r.job for r in runs if not r.ok]
                scheduler.log("once_done", ran=[r.job for r in runs], failed=failed)
            else:
                scheduler.run_forever()
    finally:
        if server is not None:
            server.shutdown()
            server.server_close()
    if failed:
        raise typer.Exit(1)
