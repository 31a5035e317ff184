"""`payapi drill history|report|action`: what drills measured, their reports, and the
improvement actions their findings became (payapi.drills). This is the one ``drill``
group: the runner's commands (``run``, ``monitor``, ``restore-normal``:
:mod:`payapi.cli.drill_run_cmd`) are merged into it.

Everything here reads and writes the drills folder on local disk (``[drills]
journal_dir``, default ``drills/`` beside the config file), so it works with every
server down. ``drill report ID`` is the seed's ``document-results.sh --test-id ID
--output test-results.json``: it (re)writes the drill's four reports (JSON journal,
Markdown, HTML with the timeline chart, JUnit XML) into ``--report-dir`` (default: ID/
in ``[drills] report_dir``, else in the drills folder, where ``drill run`` writes them),
with the improvement actions open now; ``--output`` also writes the drill's result as
JSON; ``--json`` prints it.

Exit codes: 0 done (a report of a breached drill is still a report: its verdicts are in
the JUnit file and the result), 1 a file could not be written, 2 bad input (an unknown
drill or action id, an invalid date, an unreadable config or plan), one line on stderr.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import typer
from rich.table import Table
from rich.text import Text

from payapi.cli import drill_run_cmd
from payapi.cli.context import get_ctx
from payapi.cli.options import parse_now
from payapi.cli.output import EXIT_FAILED, EXIT_USAGE, console, emit, fail, info, to_json, warn
from payapi.core.errors import PayapiError
from payapi.core.plan import PlanError
from payapi.core.settings import ConfigError

app = typer.Typer(help="drill", no_args_is_help=True)
# One `payapi drill` group: the runner's commands (run, monitor, restore-normal) and these.
app.add_typer(drill_run_cmd.app)
action_app = typer.Typer(
    help="Improvement actions from drill findings: add, list, close.", no_args_is_help=True
)
app.add_typer(action_app, name="action")

JSON_OPTION = typer.Option(False, "--json", help="Print JSON (for automation).")
NOW_OPTION = typer.Option(None, "--now", hidden=True, help="An injected clock (ISO 8601).")
_STYLE = {
    "MET": "green",
    "BREACHED": "bold red",
    "NOT MEASURED": "yellow",
    "improving": "green",
    "worsening": "bold red",
    "COMPLETED": "green",
    "ABORTED": "red",
    "FAILED": "red",
}


@contextlib.contextmanager
def _known() -> Iterator[None]:
    """A known failure is one line and its exit code (2 for bad input, the config or
    the plan; 1 for the rest), here as under ``payapi``'s main."""
    try:
        yield
    except (ConfigError, PlanError) as exc:
        fail(str(exc), EXIT_USAGE)
    except PayapiError as exc:
        fail(str(exc), exc.exit_code)


def _folder(ctx: typer.Context) -> Path:
    with _known():
        return get_ctx(ctx).settings.drill_journal_dir()


def _cell(text: object) -> Text:
    word = str(text)
    return Text(word, style=_STYLE.get(word, ""))


def _secs(value: float | None) -> str:
    from payapi.drills.report_text import duration

    return duration(value)


# --------------------------------------------------------------------------- history


@app.command("history")
def history_(ctx: typer.Context, as_json: bool = JSON_OPTION, now: str | None = NOW_OPTION) -> None:
    """Every drill, the RTO trend per drill, and the overdue tests of the calendar.

    Per drill: scenario, test type, status, RTO, RPO, verdicts. Per test type of the
    plan's calendar: the last completed drill and whether the next one is overdue."""
    from payapi.core.plan import load_plan
    from payapi.drills import history, journal

    when = parse_now(now)
    folder = _folder(ctx)
    with _known():
        plan = load_plan(get_ctx(ctx).settings.plan_file)
        records = journal.load_all(folder)
        unreadable = len(journal.drill_ids(folder)) - len(records)
    result = history.history(records, plan=plan, now=when, unreadable=unreadable)
    emit(result.to_json(), as_json=as_json, human=_print_history)
    if unreadable:
        warn(f"{unreadable} unreadable drill journal(s) left out")


def _print_history(data: dict[str, Any]) -> None:
    drills = Table(title="drills", title_justify="left")
    drills.add_column("drill id", no_wrap=True)
    for col in ("type", "status", "RTO", "RPO missing (window)", "verdict"):
        drills.add_column(col)
    for d in data["drills"]:
        rpo = d["rpo"]
        missing = "NOT MEASURED"
        if rpo["missing"] is not None:
            missing = f"{rpo['missing']} of {rpo['acknowledged']} ({_secs(rpo['window_seconds'])})"
        drills.add_row(
            _cell(d["drill_id"]),
            _cell(d["test_type"]),
            _cell(d["status"].upper()),
            _cell(_secs(d["rto_seconds"])),
            _cell(missing),
            _cell(d["overall_verdict"]),
        )
    if data["drills"]:
        console.print(drills)
    else:
        console.print("no drills yet", markup=False, highlight=False)

    trends = Table(title="RTO trend per drill", title_justify="left")
    for col in ("drill", "drills", "measured", "first", "last", "best", "trend", "why"):
        trends.add_column(col)
    for t in data["trends"]:
        trends.add_row(
            _cell(t["drill"]),
            _cell(t["drills"]),
            _cell(t["measured"]),
            *(
                _cell(_secs(t[k]["rto_seconds"] if t[k] else None))
                for k in ("first", "last", "best")
            ),
            _cell(t["direction"]),
            _cell(t["why"]),
        )
    if data["trends"]:
        console.print(trends)
    _print_calendar(data["calendar"])


def _print_calendar(calendar: list[dict[str, Any]]) -> None:
    table = Table(title="test calendar", title_justify="left")
    for col in ("test", "frequency", "last completed drill", "due", "overdue"):
        table.add_column(col)
    for c in calendar:
        last = f"{c['last_drill_id']} ({c['last_at'][:10]})" if c["last_drill_id"] else "never"
        overdue = Text("OVERDUE", style="bold red") if c["overdue"] else Text("no", style="green")
        table.add_row(
            _cell(c["test_type"]),
            _cell(c["frequency"]),
            _cell(last),
            _cell(c["due_at"][:10] if c["due_at"] else ("now" if c["overdue"] else "-")),
            overdue,
        )
    console.print(table)


# --------------------------------------------------------------------------- report


@app.command("report")
def report_(
    ctx: typer.Context,
    drill_id: str = typer.Argument(..., help="The drill (see: payapi drill history)."),
    output: Path | None = typer.Option(
        None, "--output", help="Also write the drill's result as JSON to this file."
    ),
    report_dir: Path | None = typer.Option(
        None,
        "--report-dir",
        help="Write the four reports here (default: ID/ in the drills folder).",
    ),
    as_json: bool = JSON_OPTION,
) -> None:
    """Write a drill's four reports and print its result (document-results.sh).

    The JSON journal, Markdown, HTML with the timeline chart and JUnit XML, with the
    improvement actions open now."""
    from payapi.core.atomic import write_atomic
    from payapi.drills import actions, journal, report

    folder = _folder(ctx)
    with _known():
        try:
            record = journal.load(folder, drill_id, with_samples=True)
        except (KeyError, ValueError, TypeError) as exc:  # a damaged start/end record
            fail(f"drill {drill_id}: its journal cannot be read ({type(exc).__name__}: {exc})")
        open_actions = actions.open_actions(folder)
        target = report_dir or get_ctx(ctx).settings.drill_report_dir(record.drill_id)
    try:
        paths = report.write_reports(record, target, actions=open_actions)
    except OSError as exc:
        fail(f"cannot write the reports of {drill_id} in {target}: {exc.strerror or exc}")
    result = report.result_json(record, paths=paths, actions=open_actions)
    if output is not None:
        try:
            write_atomic(output, (to_json(result) + "\n").encode("utf-8"))
        except OSError as exc:
            fail(f"cannot write {output}: {exc.strerror or exc}", EXIT_FAILED)
    emit(result, as_json=as_json, human=_print_result)
    if output is not None and not as_json:
        info(f"result: {output}")


def _print_result(data: dict[str, Any]) -> None:
    title = f"drill {data['drill_id']} ({data['drill']}): {data['status'].upper()}"
    if data["tabletop"]:
        title += " TABLETOP"
    table = Table(title=title, title_justify="left")
    for col in ("component", "RTO objective", "RTO", "RPO objective", "RPO window"):
        table.add_column(col)
    table.add_column("verdict")
    table.add_column("margin")
    for v in data["verdicts"]:
        margin = v["margin_seconds"]
        table.add_row(
            _cell(v["component"]),
            _cell(_secs(v["rto_objective_seconds"])),
            _cell(_secs(v["rto_seconds"])),
            _cell(_secs(v["rpo_objective_seconds"])),
            _cell(_secs(v["rpo_window_seconds"])),
            _cell(v["verdict"]),
            _cell(("+" if margin is not None and margin >= 0 else "") + _secs(margin)),
        )
    console.print(table)
    if data["reason"]:
        console.print(f"reason: {data['reason']}", markup=False, highlight=False)
    console.print(f"overall: {data['overall_verdict']}", markup=False, highlight=False)
    for kind, path in data["reports"].items():
        console.print(f"{kind}: {path}", markup=False, highlight=False, soft_wrap=True)


# --------------------------------------------------------------------------- actions


def _print_actions(rows: list[dict[str, Any]]) -> None:
    if not rows:
        console.print("no actions", markup=False, highlight=False)
        return
    table = Table(title="improvement actions", title_justify="left")
    for col in ("id", "status", "title", "owner", "drill", "due", "note"):
        table.add_column(col, overflow="fold")
    today = datetime.now(UTC).date()
    for a in rows:
        due = a["due"] or "-"
        late = a["status"] == "open" and a["due"] and date.fromisoformat(a["due"]) < today
        table.add_row(
            _cell(a["id"]),
            _cell(a["status"]),
            _cell(a["title"]),
            _cell(a["owner"]),
            _cell(a["drill_id"] or "-"),
            Text(due + (" (overdue)" if late else ""), style="bold red" if late else ""),
            _cell(a["note"]),
        )
    console.print(table)


@action_app.command("add")
def action_add(
    ctx: typer.Context,
    title: str = typer.Option(..., "--title", help="What is to be done (one line)."),
    owner: str = typer.Option(..., "--owner", help="Who does it."),
    drill: str | None = typer.Option(None, "--drill", help="The drill whose finding it is."),
    due: str | None = typer.Option(None, "--due", help="Due date (YYYY-MM-DD)."),
    as_json: bool = JSON_OPTION,
    now: str | None = NOW_OPTION,
) -> None:
    """Record an improvement action; it appears in every later drill report until closed."""
    from payapi.drills import actions

    when = parse_now(now)
    folder = _folder(ctx)
    with _known():
        action = actions.add(
            folder,
            title=title,
            owner=owner,
            now=when,
            drill_id=drill,
            due=actions.parse_due(due) if due is not None else None,
        )
    emit(action.to_json(), as_json=as_json, human=lambda a: _print_actions([a]))


@action_app.command("list")
def action_list(
    ctx: typer.Context,
    all_: bool = typer.Option(False, "--all", help="Closed actions too."),
    as_json: bool = JSON_OPTION,
) -> None:
    """The open improvement actions (with --all, the closed ones too)."""
    from payapi.drills import actions

    folder = _folder(ctx)
    with _known():
        rows = [a.to_json() for a in actions.list_actions(folder, open_only=not all_)]
    emit(rows, as_json=as_json, human=_print_actions)


@action_app.command("close")
def action_close(
    ctx: typer.Context,
    action_id: str = typer.Argument(..., help="The action (e.g. ACT-001)."),
    note: str = typer.Option("", "--note", help="What was done (one line)."),
    as_json: bool = JSON_OPTION,
    now: str | None = NOW_OPTION,
) -> None:
    """Close an open improvement action."""
    from payapi.drills import actions

    when = parse_now(now)
    folder = _folder(ctx)
    with _known():
        action = actions.close(folder, action_id, now=when, note=note)
    emit(action.to_json(), as_json=as_json, human=lambda a: _print_actions([a]))
