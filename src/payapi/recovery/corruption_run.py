"""``recover corruption --component db`` as the shipped runbook ``corruption-db``: the
procedure of :mod:`payapi.recovery.corruption` split into steps the engine journals, so
that it can be dry-run, approved, resumed after a kill and access-controlled.

Steps (each idempotent; a resumed run re-runs the one that did not end):

1. ``pitr``: point-in-time recovery of a copy just before T into a scratch instance
   beside production, ``<work_dir>/payapi-corruption-<run_id>`` (never in place). An
   attempt that finds its copy up reuses it; one that finds a leftover (a killed attempt)
   removes it and restores anew.
2. ``compare``: the copy and live read by primary key, the pure planner decides, the plan
   file is written (0600): what the approver reviews.
3. ``plan_only``: without ``apply`` the run ends its work here (skips to ``cleanup``).
4. ``apply`` (approval of the DR coordinator for a named operator): the plan is made
   again from the copy and live and must have the same changes as the plan file (else
   live moved on since the review: nothing is changed, make a new plan); then ONE
   transaction with the optimistic row checks, then one audit event. A re-run after a
   commit finds nothing left to change and only audits, if that was not done yet.
5. ``cleanup``: the scratch copy stopped and deleted (also after a failed apply: its
   rollback step).
6. ``verify``: the integrity checks (with ``verify``).

Between steps (and processes), what a step learnt is kept in the run's folder
``<journal_dir>/<run_id>.d/`` (``scratch.json``, ``applied.json``, ``integrity.json``):
never a secret, never row data (that is in the plan file the operator named).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg

from payapi.core.errors import UsageError
from payapi.core.journal import Journal
from payapi.core.settings import Settings
from payapi.recovery import corruption as c
from payapi.recovery.corruption_plan import (
    CorrectionPlan,
    CorrectionPlanError,
    plan_table,
    target_time,
)

RUNBOOK_DB = "corruption-db"
RUNBOOK_VAULT = "corruption-vault"


@dataclass(frozen=True)
class DbParams:
    """The run's parameters, as the runbook passes them to every step."""

    since: str
    component: str = "db"  # or "vault"
    tables: str = "payments"
    drop_ids_file: str = ""
    keep_ids_file: str = ""
    plan_file: str = ""
    work_dir: str = ""
    archive_timeout: float = 120.0
    recovery_timeout: float = 600.0

    def request(self) -> c.CorruptionRequest:
        try:
            since = datetime.fromisoformat(self.since)
        except ValueError:
            raise UsageError(f"since: not an ISO 8601 time: {self.since!r}") from None
        drops, keeps = _ids(self.drop_ids_file), _ids(self.keep_ids_file)
        return c.CorruptionRequest(
            since=since,
            tables=tuple(n.strip() for n in self.tables.split(",") if n.strip()),
            drop_ids=drops,
            keep_ids=keeps,
            plan_file=Path(self.plan_file) if self.plan_file else None,
            work_dir=Path(self.work_dir) if self.work_dir else None,
            archive_timeout=self.archive_timeout,
            recovery_timeout=self.recovery_timeout,
            journal=Journal.silent(),
        )


def _ids(path: str) -> tuple[str, ...]:
    if not path:
        return ()
    text = Path(path).read_text(encoding="utf-8")
    return tuple(s for line in text.splitlines() if (s := line.split("#", 1)[0].strip()))


# --------------------------------------------------------------------------- run folder


def run_dir(settings: Settings, run_id: str) -> Path:
    path = settings.runbook_journal_dir() / f"{run_id}.d"
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def load(settings: Settings, run_id: str, name: str) -> dict[str, Any] | None:
    path = settings.runbook_journal_dir() / f"{run_id}.d" / f"{name}.json"
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data


def save(settings: Settings, run_id: str, name: str, data: dict[str, Any]) -> None:
    folder = run_dir(settings, run_id)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, default=str)
        os.replace(tmp, folder / f"{name}.json")
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


# --------------------------------------------------------------------------- scratch


def scratch_root(settings: Settings, run_id: str, req: c.CorruptionRequest) -> Path:
    work = req.work_dir or settings.backup.work_dir or Path(tempfile.gettempdir())
    return work / f"payapi-corruption-{run_id}"


def _remove(root: Path) -> None:
    from payapi.servers.postgres import stop_server

    with contextlib.suppress(Exception):
        stop_server(root / "data", mode="immediate")
    shutil.rmtree(root, ignore_errors=True)


def scratch_up(settings: Settings, run_id: str, req: c.CorruptionRequest) -> dict[str, Any]:
    """The run's copy just before T, running (reused when it is; else restored anew)."""
    from payapi.backup.postgres import COMPONENT
    from payapi.backup.restore import RestoreRequest, Target, restore
    from payapi.backup.service import component_lock, open_repository, restore_command_for
    from payapi.servers.postgres import server_running

    root = scratch_root(settings, run_id, req)
    st = load(settings, run_id, "scratch")
    if st and st.get("ready") and not st.get("removed") and server_running(root / "data"):
        return st
    _remove(root)  # a leftover of an attempt that did not finish
    root.mkdir(mode=0o700, parents=True)
    with (
        open_repository(settings) as repo,
        component_lock(repo, COMPONENT, "corruption recovery (scratch copy)"),
    ):
        c.check_time(req.since, repo)
        result = restore(
            repo,
            RestoreRequest(
                to=root / "data",
                restore_command=restore_command_for(settings),
                target=Target("time", time=target_time(req.since)),
                start=True,
                source_dsn=settings.postgres.payment_dsn or None,
                archive_timeout=req.archive_timeout,
                recovery_timeout=req.recovery_timeout,
                journal=req.journal,
            ),
        )
    st = {
        "root": str(root),
        "backup_id": result.backup_id,
        "port": result.port,
        "recovered": result.recovered,
        "ready": True,
        "removed": False,
    }
    save(settings, run_id, "scratch", st)
    return st


def scratch_down(settings: Settings, run_id: str, req: c.CorruptionRequest) -> str:
    root = scratch_root(settings, run_id, req)
    _remove(root)
    st = load(settings, run_id, "scratch") or {}
    save(settings, run_id, "scratch", {**st, "removed": True, "ready": False})
    return f"scratch copy {root} stopped and removed"


# --------------------------------------------------------------------------- plan, apply


def make_plan(settings: Settings, run_id: str, req: c.CorruptionRequest) -> CorrectionPlan:
    """Compare the run's copy with live (the copy started if need be): the plan."""
    from datetime import UTC

    dsn = c.payment_dsn(settings)
    st = scratch_up(settings, run_id, req)

    async def read() -> tuple[list[c.TableRef], list[tuple[Any, Any]]]:
        new = await c.connect(dsn)
        try:
            refs = await c.resolve_tables(new, req.tables)
            database = str(await new.fetchval("SELECT current_database()"))
            old = await c.connect(f"postgresql://postgres@127.0.0.1:{st['port']}/{database}")
            try:
                pairs = [
                    (await c.read_rows(old, t.name), await c.read_rows(new, t.name)) for t in refs
                ]
            finally:
                await old.close()
        finally:
            await new.close()
        return refs, pairs

    refs, pairs = c.run(read)
    try:
        tables = [
            plan_table(t.name, t.primary_key, before, now, drop=c.drops_for(t, i, req.drop_ids))
            for i, (t, (before, now)) in enumerate(zip(refs, pairs, strict=True))
        ]
    except CorrectionPlanError as exc:
        raise UsageError(str(exc)) from None
    return CorrectionPlan(
        since=req.since,
        tables=tuple(tables),
        created_at=datetime.now(UTC),
        backup_id=st["backup_id"],
    )


def plan_path(req: c.CorruptionRequest, component: str = "db") -> Path:
    return (req.plan_file or c.default_plan_file(component)).expanduser().absolute()


def compare(settings: Settings, run_id: str, req: c.CorruptionRequest) -> str:
    plan = make_plan(settings, run_id, req)
    path, _ = c.write_plan(plan, plan_path(req))
    return f"plan {path}: " + "; ".join(c.table_summary(t) for t in plan.tables)


def _changes(doc: dict[str, Any]) -> list[Any]:
    """What a plan document would change (not what it keeps: payments go on arriving
    while a plan is reviewed), normalised through JSON."""
    out = [(t["table"], t["changes"]) for t in doc.get("tables", [])]
    return list(json.loads(json.dumps(out, default=str)))


def _reviewed(settings: Settings, run_id: str, path: Path) -> tuple[dict[str, Any], str | None]:
    """The reviewed plan file, and the step's output when this run already applied it
    (a resumed apply whose commit was recorded does nothing again)."""
    try:
        reviewed = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise c.CorruptionError(f"the plan file {path} cannot be read: {exc}") from None
    done = load(settings, run_id, "applied")
    if done is not None and "error" not in (done.get("audit") or {}):
        return reviewed, f"already applied; audit event {(done.get('audit') or {}).get('seq')}"
    return reviewed, None


def apply(settings: Settings, run_id: str, req: c.CorruptionRequest) -> str:
    path = plan_path(req)
    reviewed, already = _reviewed(settings, run_id, path)
    if already is not None:
        return already
    plan = make_plan(settings, run_id, req)
    outcome = c.Outcome(plan=plan, plan_file=path)
    fresh = _changes(json.loads(json.dumps(plan.to_json(), default=str)))
    if fresh != _changes(reviewed):
        if not plan.empty:
            raise c.StalePlanError(
                "live changed since the plan was made (it is not the plan reviewed); nothing "
                "was changed (make a new plan)"
            )
        note = "nothing left to change (applied by an attempt that was interrupted)"
    else:
        if not plan.empty:
            dsn = c.payment_dsn(settings)

            async def go() -> None:
                conn = await c.connect(dsn)
                try:
                    await c.apply_db_on(conn, plan)
                except asyncpg.PostgresError as exc:
                    raise c.CorruptionError(
                        f"the correction was refused by the database and rolled back: "
                        f"{type(exc).__name__}: {exc}"
                    ) from None
                finally:
                    await conn.close()

            c.run(go)
        note = "applied in one transaction"
    # The audit names the reviewed plan file by its SHA-256 (and, after an interrupted
    # attempt that had committed, counts what was left: nothing).
    audit = c.audit_applied(settings, outcome)
    save(settings, run_id, "applied", {"audit": audit})
    if "error" in audit:
        raise c.CorruptionError(f"the correction was applied but not audited: {audit['error']}")
    counts = reviewed
    return (
        f"{note}: {counts['restored_rows']} rows restored ({counts['deleted_rows_restored']} "
        f"re-inserted), {counts['kept_rows']} kept, {counts['dropped_rows']} dropped; audit "
        f"event {audit.get('seq')}"
    )


def verify(settings: Settings, run_id: str, component: str = "db") -> str:
    from payapi.recovery.corruption_checks import verify_db, verify_vault

    report = verify_vault(settings) if component == "vault" else verify_db(settings)
    save(settings, run_id, "integrity", report.to_json())
    if not report.ok:
        bad = report.failed()[0]
        raise c.CorruptionError(f"integrity check {bad.name} failed: {bad.detail}")
    return f"integrity: {len(report.to_json().get('checks', []))} checks pass"


# --------------------------------------------------------------------------- outcome


def outcome_json(settings: Settings, run_id: str, params: dict[str, Any]) -> dict[str, Any]:
    """What ``recover corruption --json`` prints, from the plan file and the run's
    folder: ``{"target_time", "restored_rows", "kept_rows", "deleted_rows_restored",
    "plan_file", "applied"}`` plus details and ``run_id``."""
    p = DbParams(**params)
    req = p.request()
    path = plan_path(req, p.component)
    try:
        doc: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        doc = {}
    applied = load(settings, run_id, "applied")
    st = load(settings, run_id, "scratch") or {}
    integrity = load(settings, run_id, "integrity")
    out: dict[str, Any] = {
        "target_time": doc.get("target_time"),
        "restored_rows": int(doc.get("restored_rows", 0)),
        "kept_rows": int(doc.get("kept_rows", 0)),
        "deleted_rows_restored": int(doc.get("deleted_rows_restored", 0)),
        "plan_file": str(path),
        "applied": applied is not None and "error" not in (applied.get("audit") or {}),
        "component": p.component,
        "since": doc.get("since"),
        "dropped_rows": int(doc.get("dropped_rows", 0)),
        "unchanged_rows": int(doc.get("unchanged_rows", 0)),
        "backup_id": doc.get("backup_id"),
        "scratch": {
            "backup_id": st.get("backup_id"),
            "port": st.get("port"),
            "recovered": st.get("recovered"),
            "removed": bool(st.get("removed")),
        },
        "tables": {
            t["table"]: {
                k: t[k]
                for k in (
                    "restored_rows",
                    "deleted_rows_restored",
                    "kept_rows",
                    "dropped_rows",
                    "unchanged_rows",
                )
            }
            for t in doc.get("tables", [])
        },
        "audit": None if applied is None else applied.get("audit"),
        "integrity": integrity,
        "run_id": run_id,
    }
    if p.component == "vault":
        del out["tables"]
        out["missing_variables"] = list(doc.get("missing", []))
        out["new_versions"] = dict((applied or {}).get("new_versions") or {})
    return out


def table_summary_json(t: dict[str, Any]) -> str:
    """:func:`payapi.recovery.corruption.table_summary` of a plan file's table."""
    return (
        f"{t['table']}: {t['restored_rows']} restored to their pre-T version "
        f"({t['deleted_rows_restored']} of them re-inserted), {t['kept_rows']} created "
        f"after T kept, {t['dropped_rows']} dropped, {t['unchanged_rows']} unchanged"
    )


def _vault_copy(settings: Settings, run_id: str, req: c.CorruptionRequest) -> tuple[Any, Any]:
    from payapi.recovery import corruption_vault as cv

    st = scratch_up(settings, run_id, req)
    database = cv.vault_database(settings)
    dsn = f"postgresql://postgres@127.0.0.1:{st['port']}/{database}"
    return cv.plan_from_copy(settings, req, dsn, st["backup_id"])


def compare_vault(settings: Settings, run_id: str, req: c.CorruptionRequest) -> str:
    from payapi.recovery.corruption_vault import vault_summary

    plan, sealed = _vault_copy(settings, run_id, req)
    sealed.clear()
    path, _ = c.write_plan(plan, plan_path(req, "vault"))
    return f"plan {path}: {vault_summary(plan)}"


def apply_vault(settings: Settings, run_id: str, req: c.CorruptionRequest) -> str:
    """The vault's apply: the plan made again must restore the same versions as the
    reviewed plan file; then one transaction (new versions of the pre-T values) and the
    audit event. A version restored by an attempt that committed and was killed before
    it was recorded is restored again (one more version of the same value)."""
    from payapi.recovery import corruption_vault as cv

    path = plan_path(req, "vault")
    reviewed, already = _reviewed(settings, run_id, path)
    if already is not None:
        return already
    plan, sealed = _vault_copy(settings, run_id, req)
    fresh = json.loads(json.dumps(plan.to_json()["variables"], default=str))
    if fresh != reviewed.get("variables"):
        sealed.clear()
        raise c.StalePlanError(
            "the vault changed since the plan was made (it is not the plan reviewed); "
            "nothing was changed (make a new plan)"
        )
    outcome = c.Outcome(plan=plan, plan_file=path, private=sealed)
    cv.apply_vault(settings, outcome)
    audit = outcome.audit or {}
    save(settings, run_id, "applied", {"audit": audit, "new_versions": outcome.new_versions})
    if "error" in audit:
        raise c.CorruptionError(f"the correction was applied but not audited: {audit['error']}")
    return (
        f"applied in one transaction: {len(outcome.new_versions)} variables got their pre-T "
        f"value as a new version; audit event {audit.get('seq')}"
    )


def precheck(settings: Settings, req: c.CorruptionRequest, component: str = "db") -> None:
    """What makes a request wrong before anything runs (UsageError, exit 2): T in the
    future or before the oldest backup, a table that is not there (or the audit log)."""
    from payapi.backup.service import open_repository

    dsn = c.payment_dsn(settings)
    with open_repository(settings) as repo:
        c.check_time(req.since, repo)
    if component == "vault":
        from payapi.recovery.corruption_vault import vault_database

        vault_database(settings)
        return

    async def tables() -> None:
        conn = await c.connect(dsn)
        try:
            await c.resolve_tables(conn, req.tables)
        finally:
            await conn.close()

    c.run(tables)
