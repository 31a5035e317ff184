"""`payapi drill run|monitor|restore-normal`: run a DR drill against the lab, watch it,
and finish one whose runner was killed.

    payapi drill run --component C --scenario S [--yes] [--tabletop] [--checklist F]
                     [--answers F] [--report-dir DIR] [--json]
    payapi drill monitor ID [--once] [--json]
    payapi drill restore-normal [--json]

Exit codes of ``run``: 0 every verdict MET (tabletop: it completed), 1 any verdict
BREACHED or the drill failed or aborted, 2 bad usage, a checklist or steady state that
refused (nothing was injected). Drills act only on the lab unless ``--environment``
names another environment, and then only when the config says it is that environment
(:mod:`payapi.drills.environment_system`: the component failures its controls can cause).
"""

from __future__ import annotations

import contextlib
import sys
import time
from pathlib import Path
from typing import Any

import typer
import yaml

from payapi.cli.context import get_ctx
from payapi.cli.output import EXIT_USAGE, console, emit, fail, warn
from payapi.core.errors import PayapiError, UsageError
from payapi.core.settings import Settings

app = typer.Typer(help="DR drills: run, monitor, restore-normal.", no_args_is_help=True)

JsonOpt = typer.Option(False, "--json", help="Machine-readable output.")
EXIT_FAILED = 1
_PAINT = {"MET": "green", "BREACHED": "red", "NOT MEASURED": "yellow"}


def drills_dir(settings: Settings) -> Path:
    return settings.drill_journal_dir()


def _spec_dirs(settings: Settings) -> list[Path]:
    return list(settings.drills.spec_dirs)


def _lab_system(settings: Settings, environment: str) -> Any:
    """The lab's drill system; for ``--environment NAME``, that environment's, but only
    when the config says it is NAME (a wrong --config never reaches another one)."""
    from payapi.lab.drill_system import LabDrillSystem
    from payapi.lab.regions import TwoRegionLab, lab_dir_of

    if environment != "lab":
        from payapi.drills.environment_system import EnvironmentDrillSystem

        if settings.environment != environment:
            raise UsageError(
                f"--environment {environment}: this config is for environment"
                f" {settings.environment!r} (its `environment` setting); refusing to act"
            )
        if settings.config_path is None:
            raise UsageError(f"--environment {environment}: name its config with --config")
        return EnvironmentDrillSystem(settings.config_path, environment)
    folder = lab_dir_of(settings.config_path)
    if folder is None:
        raise UsageError(
            "drills run only against the two-region lab (payapi lab up --regions primary,dr),"
            " and this config is not one; name another environment with --environment"
        )
    return LabDrillSystem(TwoRegionLab(folder))


def load_checklist(path: Path | None) -> Any:
    """The checklist file (``items: [{item, done, by}]``, ``go``), or None."""
    from payapi.drills.model import Checklist, ChecklistItem

    if path is None:
        return None
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise UsageError(f"--checklist {path}: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict) or not isinstance(data.get("items"), list):
        raise UsageError(f"--checklist {path}: expected items: [{{item, done, by}}] and go")
    items = []
    for i, raw in enumerate(data["items"]):
        if not isinstance(raw, dict) or not isinstance(raw.get("item"), str):
            raise UsageError(f"--checklist {path}: items[{i}] needs item, done and by")
        by = raw.get("by")
        items.append(ChecklistItem(raw["item"], raw.get("done") is True, str(by) if by else None))
    return Checklist(tuple(items), data.get("go") is True)


def _answers(path: Path | None) -> dict[str, str]:
    if path is None:
        return {}
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise UsageError(f"--answers {path}: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise UsageError(f"--answers {path}: expected a mapping of step name to notes")
    return {str(k): str(v) for k, v in data.items()}


def _verdict_table(record: Any, result: dict[str, Any]) -> None:
    from rich.table import Table

    table = Table(title=f"drill {record.drill_id}: {record.status}")
    for col in ("component", "RTO objective", "RTO", "RPO objective", "RPO window", "verdict",
                "margin"):  # fmt: skip
        table.add_column(col)

    def secs(x: float | None) -> str:
        return "NOT MEASURED" if x is None else f"{x:.1f}s"

    for v in record.verdicts:
        colour = _PAINT.get(str(v.verdict), "yellow")
        table.add_row(
            v.component,
            secs(v.rto_objective_seconds),
            secs(v.rto_seconds),
            secs(v.rpo_objective_seconds),
            secs(v.rpo_window_seconds),
            f"[{colour}]{v.verdict}[/{colour}]",
            "" if v.margin_seconds is None else f"{v.margin_seconds:+.1f}s",
        )
    console.print(table)
    rpo = record.measurements.rpo
    if rpo is not None:
        console.print(f"payments acknowledged {rpo.acknowledged}, missing {rpo.missing}")
    if record.reason:
        console.print(f"reason: {record.reason}")
    if result.get("reports"):
        console.print(f"report: {result['reports']['html']} (and .md, .json, JUnit beside it)")


def exit_code(record: Any) -> int:
    from payapi.drills.model import DrillStatus, VerdictKind

    if record.status is not DrillStatus.COMPLETED:
        return EXIT_FAILED
    if record.tabletop:
        return 0
    if all(v.verdict is VerdictKind.MET for v in record.verdicts):
        return 0
    return EXIT_FAILED


def _result(settings: Settings, record: Any, report_dir: Path | None) -> dict[str, Any]:
    """Write the four reports (in ``report_dir``, else the drill's report folder) with
    the improvement actions open now; the result of ``drill run --json``."""
    from payapi.drills import actions as actions_mod
    from payapi.drills import report

    folder = drills_dir(settings)
    open_now = actions_mod.open_actions(folder)
    out = report_dir if report_dir is not None else settings.drill_report_dir(record.drill_id)
    try:
        paths = report.write_reports(record, out, actions=open_now)
    except OSError as exc:
        fail(f"drill {record.drill_id}: cannot write its reports in {out}: {exc.strerror or exc}")
    return report.result_json(record, paths=paths, actions=open_now)


def _incident(settings: Settings, *args: str) -> str | None:
    """``payapi incident …`` for the drill's [DRILL] incident; a failure to declare or
    complete it is a warning, never the drill's failure (its figures are in the journal)."""
    import json
    import subprocess

    argv = [sys.executable, "-m", "payapi"]
    if settings.config_path is not None:
        argv += ["--config", str(settings.config_path)]
    res = subprocess.run([*argv, "incident", *args, "--json"], capture_output=True, text=True,
                         timeout=120, check=False)  # fmt: skip
    try:
        return str(json.loads(res.stdout)["incident_id"])
    except (ValueError, KeyError, TypeError):
        why = (res.stderr.strip().splitlines() or [f"exit {res.returncode}"])[-1]
        warn(f"drill incident ({args[0]}): {why}")
        return None


def _outcomes(record: Any) -> list[str]:
    """The drill's measured figures, as the incident's outcome lines."""

    def secs(x: float | None) -> str:
        return "NOT MEASURED" if x is None else f"{x:.1f}s"

    m = record.measurements
    lines = [f"Drill {record.drill_id} {record.status}: RTO {secs(m.rto_seconds)}"]
    if m.rpo is not None:
        lines.append(
            f"RPO: {m.rpo.missing} of {m.rpo.acknowledged} acknowledged payments missing,"
            f" window {m.rpo.window_seconds:.1f}s"
        )
    for v in record.verdicts:
        lines.append(f"{v.component}: {v.verdict} (RTO {secs(v.rto_seconds)} of"
                     f" {secs(v.rto_objective_seconds)}, RPO window {secs(v.rpo_window_seconds)}"
                     f" of {secs(v.rpo_objective_seconds)})")  # fmt: skip
    out: list[str] = []
    for line in lines:
        out += ["--outcome", line]
    return out


@app.command("run")
def run(
    ctx: typer.Context,
    component: str | None = typer.Option(None, "--component", help="eapi|sapi|vault|redis|db"),
    scenario: str = typer.Option(..., "--scenario", help="failure, corruption, region-outage…"),
    yes: bool = typer.Option(False, "--yes", help="Do not ask before injecting the failure."),
    tabletop: bool = typer.Option(False, "--tabletop", help="Walk through; execute nothing."),
    checklist: Path | None = typer.Option(None, "--checklist", help="The Pre-Test Checklist."),
    answers: Path | None = typer.Option(
        None, "--answers", help="Tabletop: the participants' notes per step (YAML)."
    ),
    participants: str = typer.Option("", "--participants", help="Comma-separated names."),
    environment: str = typer.Option("lab", "--environment", help="Where the drill acts."),
    report_dir: Path | None = typer.Option(None, "--report-dir", help="Write the reports here."),
    as_json: bool = JsonOpt,
) -> None:
    """Run one drill: steady state, inject, recover, restore normal, measure RTO/RPO."""
    from payapi.core.plan import load_plan
    from payapi.drills import runner
    from payapi.drills import spec as specs

    settings = get_ctx(ctx).settings
    plan = load_plan(settings.plan_file)
    chosen = specs.find(specs.load_all(_spec_dirs(settings)), scenario=scenario,
                        component=component)  # fmt: skip
    marks = load_checklist(checklist)
    notes = _answers(answers)
    system = _lab_system(settings, environment)
    refusal = getattr(system, "refusal", None)
    why = refusal(chosen) if refusal is not None else None
    if why is not None:
        raise UsageError(f"--environment {environment}: {why}")
    if not tabletop and not yes:
        if not sys.stdin.isatty():
            raise UsageError(f"drill {chosen.name} injects a real failure: confirm with --yes")
        if not typer.confirm(f"inject {chosen.title} into the {environment}?", default=False):
            raise UsageError("not confirmed")
    folder = drills_dir(settings)

    def ask(step: runner.TabletopStep) -> str:
        if step.name in notes:
            return notes[step.name]
        if as_json or not sys.stdin.isatty():
            return ""
        expected = f" (expected {step.expected_seconds:g}s)" if step.expected_seconds else ""
        console.print(f"[bold]{step.phase}[/bold] {step.name}: {step.what}{expected}")
        return str(typer.prompt("notes", default="", show_default=False))

    def started(drill_id: str) -> str | None:
        if not as_json:
            console.print(f"drill {drill_id}: {chosen.title} (payapi drill monitor {drill_id})")
        if tabletop:
            return None
        incident_id = _incident(settings, "declare", "--drill", "--description",
                                f"DR drill {drill_id}: {chosen.title}", "--impact",
                                "None expected: a planned drill in the lab", "--services",
                                ",".join(sorted({j.component for j in chosen.judge})))  # fmt: skip
        system.incident_id = incident_id  # a drill with a channel down sends an update of it
        return incident_id

    # No spinner in tabletop mode: it asks the participants at the terminal.
    status = None if as_json or tabletop else console.status(f"drill {chosen.name}: starting")

    def progress(rec: dict[str, Any]) -> None:
        if status is None:
            return
        if rec.get("type") == "step_started":
            status.update(f"drill {chosen.name}: {rec['phase']}: {rec['name']}")
        elif rec.get("type") == "step":
            took = rec.get("duration_seconds") or 0.0
            console.print(
                f"  {rec['name']}: {rec['status']} in {took:.1f}s  {rec.get('output', '')}"
            )

    try:
        with (
            runner.sigterm_interrupts(),
            status if status is not None else contextlib.nullcontext(),
        ):
            record = runner.run(
                chosen,
                system,
                plan,
                folder,
                checklist=marks,
                tabletop=tabletop,
                ask=ask,
                participants=[p.strip() for p in participants.split(",") if p.strip()],
                on_start=started,
                listener=progress,
            )
    except runner.DrillRefused as exc:
        fail(str(exc), EXIT_USAGE)
    if record.incident_id:
        _incident(settings, "complete", record.incident_id, *_outcomes(record))
    result = _result(settings, record, report_dir)
    emit(result, as_json=as_json, human=lambda d: _verdict_table(record, d))
    raise typer.Exit(exit_code(record))


@app.command("restore-normal")
def restore_normal(
    ctx: typer.Context,
    environment: str = typer.Option("lab", "--environment", help="Where the drill acted."),
    as_json: bool = JsonOpt,
) -> None:
    """Restore normal operation after a drill whose runner was killed (idempotent): the
    primary region serves with its normal roles; such drills' journals are ended."""
    from payapi.drills import runner
    from payapi.drills import spec as specs

    settings = get_ctx(ctx).settings
    system = _lab_system(settings, environment)
    known = {s.name: s for s in specs.load_all(_spec_dirs(settings))}

    def spec_of(name: str) -> Any:
        if name not in known:
            raise UsageError(f"drill spec {name!r} is gone; cannot restore its drill")
        return known[name]

    finished = runner.restore_normal(spec_of, system, drills_dir(settings))
    detail = ""
    if not finished:
        try:
            detail = system.restore_normal(next(iter(known.values())))
        except PayapiError as exc:
            fail(f"restore-normal: {exc}")
    ok = all(f["ok"] for f in finished)
    data = {"ok": ok, "drills": finished, "detail": detail}

    def human(d: dict[str, Any]) -> None:
        for f in d["drills"]:
            console.print(
                f"drill {f['drill_id']}: {'restored' if f['ok'] else 'FAILED'}: {f['detail']}"
            )
        if d["detail"]:
            console.print(d["detail"])

    emit(data, as_json=as_json, human=human)
    raise typer.Exit(0 if ok else EXIT_FAILED)


@app.command("monitor")
def monitor(
    ctx: typer.Context,
    drill_id: str = typer.Argument(..., help="The drill (see payapi drill history)."),
    once: bool = typer.Option(False, "--once", help="One snapshot, then exit."),
    as_json: bool = JsonOpt,
) -> None:
    """Live view of a drill: phase, probe success rate, elapsed vs the RTO objective."""
    from payapi.core.plan import load_plan
    from payapi.drills.monitor import snapshot

    settings = get_ctx(ctx).settings
    plan = load_plan(settings.plan_file)
    folder = drills_dir(settings)
    if as_json or once:
        emit(snapshot(folder, drill_id, plan), as_json=as_json, human=_show_snapshot)
        return
    from rich.live import Live

    with Live(console=console, refresh_per_second=2) as live:
        while True:
            snap = snapshot(folder, drill_id, plan)
            live.update(_render_snapshot(snap))
            if snap["status"] != "running":
                break
            time.sleep(0.5)


def _render_snapshot(s: dict[str, Any]) -> Any:
    from rich.table import Table

    table = Table(title=f"drill {s['drill_id']} ({s['drill']}): {s['status']}, phase {s['phase']}")
    for col in ("probe", "attempts", "success rate", "last"):
        table.add_column(col)
    for name, p in s["probes"].items():
        rate = "-" if p["success_rate"] is None else f"{p['success_rate']:.0%}"
        table.add_row(name, str(p["attempts"]), rate, "ok" if p["last_ok"] else "failing")
    rto = s["rto_objective_seconds"]
    table.caption = f"elapsed since injection {s['elapsed_since_injection_seconds'] or 0:.1f}s" + (
        f" of an RTO objective of {rto:g}s" if rto else ""
    )
    return table


def _show_snapshot(s: dict[str, Any]) -> None:
    console.print(_render_snapshot(s))
