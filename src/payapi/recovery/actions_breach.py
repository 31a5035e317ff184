"""The actions of the ``security-breach`` runbook (seed "Security Breach Recovery"):
thin wrappers of :mod:`payapi.recovery.breach`, one per step, each idempotent.

The security check and the clean deployment live in ``ops``, which ``recovery`` may not
import: they are providers the CLI injects (:mod:`payapi.recovery.providers`).
"""

from __future__ import annotations

from collections.abc import Callable

from pydantic import BaseModel, ConfigDict, Field

from payapi.core.errors import PayapiError
from payapi.recovery import breach, providers
from payapi.recovery.actions import Action, ActionContext, ActionFailed, ActionSkipped, register


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Clients(_Strict):
    clients: str = ""  # comma-separated names
    all_clients: bool = False

    def names(self) -> list[str] | None:
        try:
            return breach.client_names(self.clients, self.all_clients)
        except PayapiError as exc:
            raise ActionFailed(str(exc)) from None

    def who(self) -> str:
        names = breach.client_names(self.clients, self.all_clients)
        return "every client" if names is None else ", ".join(names)


class RotateParams(Clients):
    reason: str = Field(min_length=1)


class DeployParams(_Strict):
    version: str = ""
    releases: str = ""


class SecurityParams(_Strict):
    comprehensive: bool = False


class RulesParams(_Strict):
    rules_dir: str = ""


def _do(fn: Callable[[], str]) -> str:
    try:
        return fn()
    except ActionFailed:
        raise
    except PayapiError as exc:
        raise ActionFailed(str(exc)) from None


@register
class BreachBlock(Action[Clients]):
    name = "breach_block"
    Params = Clients

    def run(self, params: Clients, ctx: ActionContext) -> str:
        settings = ctx.require_settings()
        return _do(lambda: breach.block(settings, params.names()))

    def describe(self, params: Clients, ctx: ActionContext) -> str:
        return f"block {params.who()} at EAPI (their credentials refused at once)"


@register
class BreachRevokeTokens(Action[Clients]):
    name = "breach_revoke_tokens"
    Params = Clients

    def run(self, params: Clients, ctx: ActionContext) -> str:
        settings = ctx.require_settings()
        return _do(lambda: breach.revoke(settings, params.names()))

    def describe(self, params: Clients, ctx: ActionContext) -> str:
        return f"revoke every token of {params.who()}"


@register
class BreachRotate(Action[RotateParams]):
    name = "breach_rotate"
    Params = RotateParams

    def run(self, params: RotateParams, ctx: ActionContext) -> str:
        settings = ctx.require_settings()
        return _do(lambda: breach.rotate(settings, params.reason, params.names()))

    def describe(self, params: RotateParams, ctx: ActionContext) -> str:
        return (
            f"emergency rotation of {params.who()}'s secrets in the vault "
            f"(reason: {params.reason}); their tokens revoked again"
        )


@register
class BreachDeploy(Action[DeployParams]):
    name = "breach_deploy"
    Params = DeployParams

    def run(self, params: DeployParams, ctx: ActionContext) -> str:
        if not params.version:
            raise ActionSkipped("no --version given: not redeployed")
        return _provided(providers.CLEAN_DEPLOYMENT, params.model_dump(), ctx)

    def describe(self, params: DeployParams, ctx: ActionContext) -> str:
        if not params.version:
            return "nothing (no --version given: not redeployed)"
        return f"clean deployment of the recorded release {params.version}, services restarted"


@register
class SecurityCheck(Action[SecurityParams]):
    name = "security_check"
    Params = SecurityParams

    def run(self, params: SecurityParams, ctx: ActionContext) -> str:
        return _provided(providers.SECURITY_CHECK, params.model_dump(), ctx)

    def describe(self, params: SecurityParams, ctx: ActionContext) -> str:
        extra = " --comprehensive" if params.comprehensive else ""
        return f"payapi security check{extra} (reads only)"


@register
class BreachMonitoring(Action[RulesParams]):
    name = "breach_monitoring"
    Params = RulesParams

    def run(self, params: RulesParams, ctx: ActionContext) -> str:
        from pathlib import Path

        folder = Path(params.rules_dir) if params.rules_dir else None
        return _do(lambda: breach.write_rules(folder))

    def describe(self, params: RulesParams, ctx: ActionContext) -> str:
        if not params.rules_dir:
            return "nothing to write (no rules folder given)"
        return f"write the security alert rules to {params.rules_dir}/{breach.ALERT_RULES}"


@register
class BreachUnblock(Action[Clients]):
    name = "breach_unblock"
    Params = Clients

    def run(self, params: Clients, ctx: ActionContext) -> str:
        settings = ctx.require_settings()
        return _do(lambda: breach.unblock(settings, params.names()))

    def describe(self, params: Clients, ctx: ActionContext) -> str:
        return f"lift the block on {params.who()} (their new secrets in force)"


def _provided(name: str, params: dict[str, object], ctx: ActionContext) -> str:
    provider = providers.get(name)
    if provider is None:
        raise ActionFailed(f"no {name} provider here (run it through the payapi CLI)")
    settings = ctx.require_settings()
    try:
        ok, line = provider(settings, params)
    except PayapiError as exc:
        raise ActionFailed(str(exc)) from None
    if not ok:
        raise ActionFailed(line)
    return line
