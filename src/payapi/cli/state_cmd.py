"""`payapi state document|compare`: the state drills compare (the seed's
``./scripts/document-state.sh --output pre-test-state.json``).

Reading is :mod:`payapi.ops.state_observe`, the document's shape and the comparison
:mod:`payapi.ops.state`; this module prints. ``document`` exits 0 when every part was
read, 1 when a part could not be (the document is written anyway, with ``errors``);
``compare`` exits 0 when the documents agree beyond the fields allowed to move, 1 when
they do not, 2 for a file that is not a state document.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.table import Table
from rich.text import Text

from payapi.cli.context import get_ctx
from payapi.cli.output import EXIT_USAGE, console, emit, fail
from payapi.core.errors import PayapiError
from payapi.core.plan import PlanError, load_plan

app = typer.Typer(help="state", no_args_is_help=True)


def _print_document(data: dict[str, Any]) -> None:
    doc = data["document"]
    p, v, r = doc.get("payments") or {}, doc.get("vault") or {}, doc.get("redis") or {}
    console.print(
        f"state of {doc['environment']} at {doc['taken_at']} → {data['output']}",
        markup=False,
        highlight=False,
    )
    lines = [
        f"payments: {p.get('count', '?')} (checksum {str(p.get('checksum', '?'))[:16]}…)",
        f"vault: {v.get('variables', '?')} variables, {v.get('versions', '?')} versions",
        f"redis: {r.get('keys', '?')} keys",
        f"audit: head seq {(doc.get('audit') or {}).get('head_seq', '?')}",
    ]
    healthy = [n for n, c in doc["components"].items() if c["healthy"]]
    sick = [n for n, c in doc["components"].items() if not c["healthy"]]
    lines.append(f"healthy: {', '.join(healthy) or 'none'}")
    if sick:
        lines.append(f"NOT healthy: {', '.join(sick)}")
    for part, why in (doc.get("errors") or {}).items():
        lines.append(f"{part}: not read ({why})")
    for line in lines:
        console.print("  " + line, markup=False, highlight=False)


@app.command("document")
def document_cmd(
    ctx: typer.Context,
    output: Path = typer.Option(..., "--output", "-o", help="Where to write the JSON document."),
    environment: str | None = typer.Option(
        None, "--environment", "-e", help="The region (primary, dr, ...; default: the primary)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the document as JSON too."),
) -> None:
    """Write the platform's state (payments count and checksum, vault variables and
    versions, Redis keys, audit head, component health, replication positions, versions)
    to FILE, atomically."""
    from payapi.ops import state_observe

    try:
        settings = get_ctx(ctx).settings
        plan = load_plan(settings.plan_file)
        doc = state_observe.document(settings, plan, environment)
    except PlanError as exc:
        fail(f"state document: {exc}", EXIT_USAGE)
    except PayapiError as exc:
        fail(f"state document: {exc}", exc.exit_code)
    try:
        state_observe.write_document(output, doc)
    except OSError as exc:
        fail(f"state document: cannot write {output}: {exc.strerror or exc}")
    emit({"output": str(output), "document": doc}, as_json=as_json, human=_print_document)
    raise typer.Exit(1 if doc.get("errors") else 0)


def _load(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        fail(f"state compare: cannot read {path}: {exc.strerror or exc}", EXIT_USAGE)
    except ValueError:
        fail(f"state compare: {path} is not JSON", EXIT_USAGE)
    if not isinstance(data, dict) or "taken_at" not in data or "payments" not in data:
        fail(f"state compare: {path} is not a state document", EXIT_USAGE)
    return data


def _print_comparison(data: dict[str, Any]) -> None:
    if not data["differences"]:
        console.print("identical (beyond taken_at)", highlight=False)
        return
    table = Table(title="Differences", title_justify="left")
    for col in ("Field", "Before", "After", "Allowed"):
        table.add_column(col, overflow="fold")
    for d in data["differences"]:
        mark = Text("moves", "dim") if d["allowed"] else Text("NO", "bold red")
        table.add_row(d["path"], str(d["before"]), str(d["after"]), mark)
    console.print(table)
    verdict = "same" if data["same"] else f"DIFFERENT: {data['unexpected']} unexpected"
    console.print(verdict, markup=False, highlight=False)


@app.command("compare")
def compare_cmd(
    before: Path = typer.Argument(..., help="The earlier state document."),
    after: Path = typer.Argument(..., help="The later state document."),
    allow: list[str] = typer.Option(
        [], "--allow", help="More fields allowed to differ (dotted path, * wildcards)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON (for automation)."),
) -> None:
    """Differences between two state documents. Exit 0 when they agree beyond the fields
    that legitimately move (taken_at, replication positions, health details, expiring
    Redis counters) and any --allow, 1 otherwise."""
    from payapi.ops.state import compare

    result = compare(_load(before), _load(after), allow=allow)
    emit(result.to_json(), as_json=as_json, human=_print_comparison)
    raise typer.Exit(result.exit_code)
