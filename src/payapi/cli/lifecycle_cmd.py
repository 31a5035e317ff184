"""`payapi retention lifecycle`: the S3 bucket lifecycle rules the plan implies.

    payapi retention lifecycle [--apply] [--repository NAME|URL] [--margin DAYS] [--json]

Without ``--apply`` it shows the planned rules and how they differ from the bucket's
current ones; with ``--apply`` it replaces this repository's rules (those named
``payapi:<prefix>:…``) and keeps every other rule of the bucket. The rules are
:func:`payapi.backup.lifecycle.lifecycle_plan` (see there, and
``docs/copies-and-lifecycle.md``, for why each one is what it is).

A ``file://`` repository has no lifecycle: the command says so and exits 0 (there is
nothing to do, and a schedule may run it for every repository). Exit 1: the bucket's
rules could not be read or written; 2: bad usage.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.table import Table

from payapi.cli.context import get_ctx
from payapi.cli.output import console, emit, fail, info
from payapi.cli.plan_cmd import PLAN_OPTION, load_for_cli

if TYPE_CHECKING:
    from payapi.backup.lifecycle import LifecyclePlan, RuleDiff


def _describe_rules(lp: LifecyclePlan) -> Table:
    table = Table(title=f"Lifecycle of {lp.prefix or '(bucket root)'}", title_justify="left")
    for col in ("Series", "Colder storage", "Expires after", "Why"):
        table.add_column(col)
    for s in lp.to_json()["series"]:
        moves = ", ".join(f"{t['storage_class']} at {t['days']} d" for t in s["transitions"])
        expires = "never" if s["expires_after_days"] is None else f"{s['expires_after_days']} d"
        table.add_row(s["series"], moves or "-", expires, s["why"])
    return table


def _print(out: dict[str, Any], lp: LifecyclePlan, diff: RuleDiff) -> None:
    console.print(_describe_rules(lp))
    for rid in diff.added:
        console.print(f"[green]+ {rid}[/green]", highlight=False)
    for rid in diff.changed:
        console.print(f"[yellow]~ {rid}[/yellow]", highlight=False)
    for rid in diff.removed:
        console.print(f"[red]- {rid}[/red]", highlight=False)
    changes = len(diff.added) + len(diff.changed) + len(diff.removed)
    if out["applied"]:
        console.print(f"applied: {changes} rules changed in bucket {out['bucket']}")
    elif diff.in_sync:
        console.print(f"bucket {out['bucket']} is in sync ({len(diff.unchanged)} rules)")
    else:
        console.print(f"{changes} rules differ: run with --apply to put them in place")
    for rid in diff.overlapping:
        info(f"note: the bucket's rule {rid} also covers {out['prefix'] or 'this repository'}")
    for note in lp.notes:
        info(f"note: {note}")


def lifecycle_cmd(
    ctx: typer.Context,
    apply: bool = typer.Option(False, "--apply", help="Put the rules on the bucket."),
    repository: str | None = typer.Option(
        None,
        "--repository",
        help="A configured repository (primary, or a secondary's name) or an s3:// URL "
        "(default: the primary).",
    ),
    margin: int = typer.Option(
        90,
        "--margin",
        min=0,
        max=3650,
        help="Days beyond a series' longest retention before objects expire.",
    ),
    plan: Path | None = PLAN_OPTION,
    as_json: bool = typer.Option(False, "--json", help="Print JSON (for automation)."),
) -> None:
    """Show (or --apply) the S3 lifecycle rules the plan implies: colder storage classes
    for long-kept backups, expiry beyond each series' retention (a safety net beside
    the GFS purge, never before it), cleanup of unfinished uploads."""
    from payapi.backup.errors import RepositoryError
    from payapi.backup.lifecycle import apply_rules, current_rules, diff_rules, lifecycle_plan
    from payapi.backup.repository import repository_scheme
    from payapi.backup.service import repository_location
    from payapi.core.errors import PayapiError
    from payapi.systems.objectstore import open_store
    from payapi.systems.objectstore.s3 import S3Store

    loaded = load_for_cli(ctx, plan)
    try:
        where = repository_location(get_ctx(ctx).settings, repository)
    except PayapiError as exc:
        fail(str(exc), exc.exit_code)
    if not where.url:
        fail("no backup repository: set [backup] repository in the config, or --repository")
    if repository_scheme(where.url) != "s3":
        out = {"repository": where.url, "s3": False, "applied": False, "rules": []}
        emit(
            out,
            as_json=as_json,
            human=lambda _: console.print(
                f"{where.url} is not in S3: lifecycle rules apply to S3 repositories only; "
                "nothing to do (retention purge removes what the plan lets go)",
                highlight=False,
            ),
        )
        return
    options: dict[str, Any] = {"endpoint_url": where.s3_endpoint_url, "sse": where.s3_sse}
    if where.s3_region:
        options["region"] = where.s3_region
    try:
        store = open_store(where.url, **options)
    except RepositoryError as exc:
        fail(str(exc))
    assert isinstance(store, S3Store)
    try:
        lp = lifecycle_plan(loaded, store.prefix, margin_days=margin)
        if apply:
            diff = apply_rules(store, lp.rules)
        else:
            diff = diff_rules(current_rules(store), lp.rules, store.prefix)
    except RepositoryError as exc:
        fail(str(exc))
    finally:
        store.close()
    out = {
        "repository": where.url,
        "s3": True,
        "bucket": store.bucket,
        "applied": apply and not diff.in_sync,
        **lp.to_json(),
        "diff": diff.to_json(),
    }
    emit(out, as_json=as_json, human=lambda d: _print(d, lp, diff))
