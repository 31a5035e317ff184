"""`payapi runbook list|run|show|resume|approve|runs`: the runbook engine (payapi.recovery).

Exit 0 when the run succeeded (or the dry run resolved every step), 1 when it failed,
was rolled back, waits for an approval or a dry-run step cannot be resolved, 2 for a bad
request (unknown runbook or parameter, a value of the wrong type, no confirmation), 3
when access control refuses (no ``execute`` on the runbook, an approver who is the
requester or does not hold the role, a refuser who does not hold it).
``runbook approve --refuse`` exits 0 when the run is aborted as asked. ``payapi --as
LOGIN`` names the operator.
"""

from __future__ import annotations

import sys
from typing import Any

import typer
from rich.table import Table

from payapi.cli.context import get_ctx
from payapi.cli.output import console, emit, info, journal
from payapi.core.errors import UsageError

app = typer.Typer(
    help="Runbooks: list, run (or dry-run), show, resume, approve, runs.", no_args_is_help=True
)

JsonOpt = typer.Option(False, "--json", help="Machine-readable output.")


@app.callback()
def _install_providers() -> None:
    # The lab's code some runbooks run (a run, a resume or an approval of any of them).
    from payapi.cli.recovery_providers import install_system_recovery

    install_system_recovery()


_COLOURS = {
    "ok": "green",
    "succeeded": "green",
    "failed": "red",
    "aborted": "red",
    "interrupted": "yellow",
    "skipped": "cyan",
}


def _paint(status: str) -> str:
    colour = _COLOURS.get(status, "yellow")
    return f"[{colour}]{status}[/{colour}]"


def _params(pairs: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--param {pair!r}: expected NAME=VALUE")
        out[key.strip()] = value
    return out


def _providers() -> None:
    """What the recovery actions need from ``ops`` (security check, clean deployment)."""
    from payapi.cli.recovery_providers import install

    install()


def _confirm(what: str, yes: bool) -> None:
    if yes:
        return
    if not sys.stdin.isatty():
        raise UsageError(f"{what}: confirm with --yes (no terminal to ask on)")
    if not typer.confirm(f"{what}?", default=False):
        raise UsageError(f"{what}: not confirmed")


@app.command("list")
def list_(ctx: typer.Context, as_json: bool = JsonOpt) -> None:
    """The runbooks there are: shipped with payapi and the operator's ([recovery] runbook_dirs)."""
    from payapi.recovery import service

    entries = [e.to_json() for e in service.list_runbooks(get_ctx(ctx).settings)]

    def human(data: list[dict[str, Any]]) -> None:
        table = Table(title="runbooks")
        for col in ("name", "title", "steps", "parameters", "source"):
            table.add_column(col)
        for e in data:
            params = ", ".join(
                n + ("" if p["required"] is False else " (required)")
                for n, p in e["parameters"].items()
            )
            table.add_row(e["name"], e["title"], str(len(e["steps"])), params, e["source"])
        console.print(table)

    emit(entries, as_json=as_json, human=human)


def _show_dry_run(data: dict[str, Any]) -> None:
    table = Table(title=f"dry run of {data['runbook']}: nothing will be changed")
    for col in ("step", "action", "would", "approval"):
        table.add_column(col, overflow="fold")
    for s in data["steps"]:
        name = s["step"] if s["phase"] == "main" else f"{s['step']} (rollback)"
        would = f"[red]{s['problem']}[/red]" if s["problem"] else s["would"]
        if s["verify"]:
            v = s["verify"]
            seen = f"[red]{v['problem']}[/red]" if v["problem"] else v["would"]
            would += f"; then verify: {seen}"
        table.add_row(name, s["action"], would, s["approval"] or "")
    console.print(table)
    verdict = "every step resolves" if data["ok"] else "[red]some steps do not resolve[/red]"
    console.print(f"{verdict}; parameters: {data['params']}")


def _show_run(data: dict[str, Any]) -> None:
    table = Table(title=f"run {data['run_id']} of {data['runbook']}")
    for col in ("step", "status", "attempts", "seconds", "approved by", "output"):
        table.add_column(col, overflow="fold")
    rows = [(s, "") for s in data["steps"]] + [(s, " (rollback)") for s in data["rollbacks"]]
    for s, suffix in rows:
        seconds = "" if s["duration"] is None else f"{s['duration']:.1f}"
        table.add_row(
            s["step"] + suffix,
            _paint(s["status"]),
            str(s["attempts"]),
            seconds,
            s["approved_by"] or "",
            s["output"],
        )
    console.print(table)
    reason = f": {data['reason']}" if data["reason"] else ""
    console.print(f"{_paint(data['status'])}{reason}", highlight=False)
    console.print(f"journal: {data['journal']}", markup=False, highlight=False)
    p = data.get("pending_approval")
    if p:
        would = f"[red]{p['problem']}[/red]" if p["problem"] else p["would"]
        console.print(
            f"[yellow]waiting for approval[/yellow] of step {p['step']} by a holder of "
            f"{p['role']} other than {p['requested_by']} (requested {p['waiting_since']}, "
            f"expires after {p['timeout']:g}s)",
            highlight=False,
        )
        console.print(f"  it would: {would}", highlight=False)
        console.print(
            f"  approve: payapi --as LOGIN runbook approve {data['run_id']} --step {p['step']}",
            markup=False,
            highlight=False,
        )
    if data["damaged_lines"]:
        console.print(f"[yellow]{data['damaged_lines']} damaged journal line(s) skipped[/yellow]")


def _finish(result: Any, as_json: bool) -> None:
    from payapi.recovery import service

    data = service.view(result.path).to_json()
    emit(data, as_json=as_json, human=_show_run)
    if data["status"] == "waiting_approval" and not as_json:
        info(f"run {data['run_id']} is waiting_approval: {data['reason']}")
    if not result.ok:
        raise typer.Exit(1)


@app.command("run")
def run(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="The runbook (see: payapi runbook list)."),
    param: list[str] = typer.Option([], "--param", "-p", help="A parameter, NAME=VALUE."),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Resolve every step and say what it would do; change nothing."
    ),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
    as_json: bool = JsonOpt,
) -> None:
    """Run a runbook (journaled; resumable), or with --dry-run show what it would do."""
    from payapi.recovery import service

    settings = get_ctx(ctx).settings
    given = _params(param)
    _providers()
    if dry_run:
        plan = service.plan_dry_run(settings, name=name, given=given)
        emit(plan.to_json(), as_json=as_json, human=_show_dry_run)
        if not plan.ok:
            raise typer.Exit(1)
        return
    service.resolve(settings, name=name, given=given)  # a bad request fails before asking
    operator = get_ctx(ctx).operator()
    _confirm(f"run runbook {name}", yes)
    with journal(quiet=as_json) as j:
        result = service.start_run(
            settings, name=name, given=given, journal=j, operator=operator, yes=yes
        )
    _finish(result, as_json)


@app.command("resume")
def resume(
    ctx: typer.Context,
    run_id: str = typer.Argument(..., help="The run (see: payapi runbook runs)."),
    as_json: bool = JsonOpt,
) -> None:
    """Continue a run that was killed, failed or is waiting: at the step that did not
    finish, without repeating the steps that completed."""
    from payapi.recovery import service

    c = get_ctx(ctx)
    _providers()
    with journal(quiet=as_json) as j:
        result = service.resume_run(c.settings, run_id=run_id, journal=j, operator=c.operator())
    _finish(result, as_json)


@app.command("approve")
def approve(
    ctx: typer.Context,
    run_id: str = typer.Argument(..., help="The waiting run (see: payapi runbook show)."),
    step: str = typer.Option(..., "--step", help="The step that waits for the approval."),
    yes: bool = typer.Option(
        False, "--yes", "-y", help="Approve your own run (only a self-approve role may)."
    ),
    refuse: bool = typer.Option(
        False, "--refuse", help="Refuse the step instead: the run ends aborted (for good)."
    ),
    reason: str | None = typer.Option(
        None, "--reason", help="With --refuse: why (journaled and audited)."
    ),
    as_json: bool = JsonOpt,
) -> None:
    """Approve a waiting step as the operator (payapi --as LOGIN): a holder of its role
    other than the requester. Review it first with: payapi runbook show RUN_ID. With
    --refuse, a holder of the role (the requester too) refuses it and the run aborts."""
    from payapi.recovery import service

    if reason is not None and not refuse:
        raise UsageError("--reason goes with --refuse (an approval takes no reason)")
    if refuse and yes:
        raise UsageError("--yes is for approving your own run; a refusal needs no --yes")
    c = get_ctx(ctx)
    _providers()
    with journal(quiet=as_json) as j:
        if refuse:
            result = service.refuse_run(
                c.settings,
                run_id=run_id,
                step=step,
                journal=j,
                operator=c.operator(),
                reason=reason or "",
            )
        else:
            result = service.approve_run(
                c.settings, run_id=run_id, step=step, journal=j, operator=c.operator(), yes=yes
            )
    if refuse:
        data = service.view(result.path).to_json()
        emit(data, as_json=as_json, human=_show_run)
        if data["status"] != "aborted":
            raise typer.Exit(1)
        return
    _finish(result, as_json)


@app.command("show")
def show(
    ctx: typer.Context,
    run_id: str = typer.Argument(..., help="The run (see: payapi runbook runs)."),
    as_json: bool = JsonOpt,
) -> None:
    """One run: its steps, attempts, outputs, approvals (--json: every journal record)."""
    from payapi.recovery import service

    v = service.show_run(get_ctx(ctx).settings, run_id=run_id)
    emit(v.to_json(events=as_json), as_json=as_json, human=_show_run)


@app.command("runs")
def runs(ctx: typer.Context, as_json: bool = JsonOpt) -> None:
    """Past runs, oldest first, with their status."""
    from payapi.recovery import service

    data = [
        {k: v.to_json()[k] for k in ("run_id", "runbook", "status", "started", "ended", "reason")}
        for v in service.list_runs(get_ctx(ctx).settings)
    ]

    def human(rows: list[dict[str, Any]]) -> None:
        table = Table(title="runbook runs")
        for col in ("run", "runbook", "status", "started", "ended"):
            table.add_column(col, overflow="fold")
        for r in rows:
            table.add_row(
                r["run_id"], r["runbook"], _paint(r["status"]), r["started"] or "", r["ended"] or ""
            )
        console.print(table)

    emit(data, as_json=as_json, human=human)
