"""The action of the ``system-recovery`` runbook (seed "Complete System Recovery").

One action, ``system_recovery``, whose ``step`` says which part of the rebuild it is
(``configuration``, ``database``, ``vault``, ``redis``, ``services``, ``verify``). The
rebuild itself is the lab's (:mod:`payapi.lab.rebuild` into an empty folder,
:mod:`payapi.lab.region_rebuild` into an empty region), a layer this package may not
import: the CLI installs it as the :class:`SystemRecovery` provider
(:func:`install`) before it runs or resumes a run. Without one, ``describe`` says so
(a dry-run problem) and ``run`` fails with one line.

Each step keeps what it found in the target's state file (the provider's business), so
a run killed mid-step resumes with ``payapi runbook resume RUN_ID`` at that step: every
step can run again from its start (it clears what a killed attempt left).
"""

from __future__ import annotations

from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from payapi.core.settings import Settings
from payapi.recovery.actions import Action, ActionContext, ActionFailed, register

RUNBOOK = "system-recovery"
Step = Literal["configuration", "database", "vault", "redis", "services", "verify"]
STEPS: tuple[Step, ...] = ("configuration", "database", "vault", "redis", "services", "verify")


class SystemParams(BaseModel):
    """Where to rebuild (``into`` a folder or a ``region`` of the lab: one of them) and
    from what. Paths only: the keys stay in their files."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    step: Step
    into: str = ""
    region: str = Field(default="", pattern=r"^([a-z][a-z0-9-]{0,31})?$")
    repository: str = ""
    key_file: str = ""
    vault_key_file: str = ""
    audit_head_file: str = ""
    vault: Literal["auto", "backup", "database"] = "auto"
    redis_rebuild: bool = False


class SystemRecovery(Protocol):
    """What the lab provides: each step done (one line of output; raise to fail) or
    described against the live state (changing nothing)."""

    def run(self, params: SystemParams, settings: Settings | None) -> str: ...

    def describe(self, params: SystemParams, settings: Settings | None) -> str: ...


_provider: SystemRecovery | None = None


def install(provider: SystemRecovery | None) -> None:
    """Make ``provider`` the one the ``system_recovery`` action calls (None: none)."""
    global _provider
    _provider = provider


def _require() -> SystemRecovery:
    if _provider is None:
        raise ActionFailed(
            "no system-recovery provider here: run it with payapi recover system "
            "--from-backups (or payapi runbook resume RUN_ID)"
        )
    return _provider


def _check_target(params: SystemParams) -> None:
    if bool(params.into) == bool(params.region):
        raise ActionFailed("give the target: into (an empty folder) or region (one of them)")


@register
class SystemRecoveryStep(Action[SystemParams]):
    name = "system_recovery"
    Params = SystemParams

    def run(self, params: SystemParams, ctx: ActionContext) -> str:
        _check_target(params)
        return _require().run(params, ctx.settings)

    def describe(self, params: SystemParams, ctx: ActionContext) -> str:
        _check_target(params)
        return _require().describe(params, ctx.settings)
