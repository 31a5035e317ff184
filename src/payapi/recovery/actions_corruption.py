"""The actions of the ``corruption-db`` runbook (seed "Data Corruption Recovery"), one
per step of :mod:`payapi.recovery.corruption_run`, each idempotent."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from payapi.core.errors import PayapiError
from payapi.recovery import corruption_run as cr
from payapi.recovery.actions import Action, ActionContext, ActionFailed, ActionSkipped, register
from payapi.recovery.corruption import CorruptionRequest


class CorruptionParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    since: str = Field(min_length=1)
    component: Literal["db", "vault"] = "db"
    tables: str = "payments"
    drop_ids_file: str = ""
    keep_ids_file: str = ""
    plan_file: str = ""
    work_dir: str = ""
    archive_timeout: float = 120.0
    recovery_timeout: float = 600.0


class FlagParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    enabled: bool = False
    component: Literal["db", "vault"] = "db"


def _do(fn: Callable[[], str]) -> str:
    try:
        return fn()
    except (ActionFailed, ActionSkipped):
        raise
    except PayapiError as exc:
        raise ActionFailed(str(exc)) from None
    except OSError as exc:
        raise ActionFailed(f"{type(exc).__name__}: {exc.strerror or exc}") from None


def _req(params: CorruptionParams) -> CorruptionRequest:
    return cr.DbParams(**params.model_dump()).request()


@register
class CorruptionScratch(Action[CorruptionParams]):
    name = "corruption_scratch"
    Params = CorruptionParams

    def run(self, params: CorruptionParams, ctx: ActionContext) -> str:
        settings = ctx.require_settings()

        def go() -> str:
            st = cr.scratch_up(settings, ctx.run_id, _req(params))
            return (
                f"copy of backup {st['backup_id']} recovered to just before {params.since} "
                f"on port {st['port']}, beside production"
            )

        return _do(go)

    def describe(self, params: CorruptionParams, ctx: ActionContext) -> str:
        where = params.work_dir or "[backup] work_dir"
        return (
            f"point-in-time recovery of a copy of the database just before {params.since} "
            f"into a scratch instance under {where} (production untouched)"
        )


@register
class CorruptionCompare(Action[CorruptionParams]):
    name = "corruption_compare"
    Params = CorruptionParams

    def run(self, params: CorruptionParams, ctx: ActionContext) -> str:
        settings = ctx.require_settings()
        if params.component == "vault":
            return _do(lambda: cr.compare_vault(settings, ctx.run_id, _req(params)))
        return _do(lambda: cr.compare(settings, ctx.run_id, _req(params)))

    def describe(self, params: CorruptionParams, ctx: ActionContext) -> str:
        if params.component == "vault":
            return (
                "compare the copy's secret versions with live (ids, versions, digests) and "
                f"write the correction plan to {params.plan_file or 'its file'}"
            )
        return (
            f"compare tables {params.tables} of the copy with live by primary key and write "
            f"the correction plan to {params.plan_file or 'correction-plan-db-<time>.json'}"
        )


@register
class CorruptionPlanOnly(Action[FlagParams]):
    """``enabled``: the run applies; this step then does not apply (skipped, and the run
    goes on to the apply). Without it the step succeeds and skips to the cleanup."""

    name = "corruption_plan_only"
    Params = FlagParams

    def run(self, params: FlagParams, ctx: ActionContext) -> str:
        if params.enabled:
            raise ActionSkipped("--apply given: the plan is applied next")
        return "not applied (review the plan, then run again with --apply)"

    def describe(self, params: FlagParams, ctx: ActionContext) -> str:
        return "go on to the apply" if params.enabled else "stop after the plan (no --apply)"


@register
class CorruptionApply(Action[CorruptionParams]):
    name = "corruption_apply"
    Params = CorruptionParams

    def run(self, params: CorruptionParams, ctx: ActionContext) -> str:
        settings = ctx.require_settings()
        if params.component == "vault":
            return _do(lambda: cr.apply_vault(settings, ctx.run_id, _req(params)))
        return _do(lambda: cr.apply(settings, ctx.run_id, _req(params)))

    def describe(self, params: CorruptionParams, ctx: ActionContext) -> str:
        return (
            f"apply the plan {params.plan_file or '(its file)'} to live in one transaction "
            "(every row re-checked first; nothing changes if one moved), then audit it"
        )


@register
class CorruptionCleanup(Action[CorruptionParams]):
    name = "corruption_cleanup"
    Params = CorruptionParams

    def run(self, params: CorruptionParams, ctx: ActionContext) -> str:
        settings = ctx.require_settings()
        return _do(lambda: cr.scratch_down(settings, ctx.run_id, _req(params)))

    def describe(self, params: CorruptionParams, ctx: ActionContext) -> str:
        return "stop and delete the scratch copy"


@register
class CorruptionVerify(Action[FlagParams]):
    name = "corruption_verify_db"
    Params = FlagParams

    def run(self, params: FlagParams, ctx: ActionContext) -> str:
        if not params.enabled:
            raise ActionSkipped("no --verify")
        settings = ctx.require_settings()
        return _do(lambda: cr.verify(settings, ctx.run_id, params.component))

    def describe(self, params: FlagParams, ctx: ActionContext) -> str:
        if not params.enabled:
            return "nothing (no --verify)"
        if params.component == "vault":
            return "the vault's integrity checks"
        return "the integrity checks: audit chain, positive amounts, idempotency, references"
