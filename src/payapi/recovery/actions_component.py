"""The actions of the component-failure runbooks (seed "Component Failure Recovery").

The rungs of the seed's ladder, each an idempotent action over one component
(``eapi``, ``sapi``, ``vault``, ``redis``, ``db``) of one region (``""``: the primary):

- ``component_health``: the seed's check (:mod:`payapi.recovery.component_targets`);
- ``component_restart``: ``kubectl rollout restart`` / the lab's process, Redis's and
  PostgreSQL's local control (a PostgreSQL under Patroni is Patroni's to restart);
- ``component_scale``: scale to 0 and back up (SAPI, EAPI, the vault server);
- ``component_config``: the component's configuration file put back from the newest
  configuration backup (rewritten only when it differs), then a restart;
- ``component_failover``: to the standby/replica through Patroni or Sentinel
  (:mod:`payapi.replication.failover`), skipped when the region has none;
- ``component_restore``: the existing restores in place (database, vault, Redis);
- ``invalidate_verifications``: EAPI's verification cache dropped, the generation bumped
  (the vault runbook's step after its restore).

Controls come from the settings (``[eapi] control``, ``[postgres] control``, …), never
from the lab's code: the same runbook restarts a lab process or a Deployment.
"""

from __future__ import annotations

import contextlib
import filecmp
import shutil
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field

from payapi.core.errors import PayapiError
from payapi.core.journal import Journal
from payapi.core.settings import Settings
from payapi.recovery import component_targets as targets
from payapi.recovery.actions import Action, ActionContext, ActionFailed, ActionSkipped, register
from payapi.systems.services import ServiceControl, listen_control, service_control

if TYPE_CHECKING:
    from payapi.backup.repository import Repository

Component = Literal["eapi", "sapi", "vault", "redis", "db"]
HEALTHY_WAIT_SECONDS = 20.0  # after a restart, how long a component may take to answer


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    region: str = Field(default="", pattern=r"^([a-z][a-z0-9-]{0,31})?$")


class ComponentParams(_Params):
    component: Component


def _fail(what: str, exc: BaseException) -> ActionFailed:
    return ActionFailed(f"{what}: {targets._one_line(exc)}")


def _wait_healthy(settings: Settings, p: ComponentParams, timeout: float) -> str:
    """Poll the component's health until it answers (or ``timeout``): one line."""
    deadline = time.monotonic() + timeout
    while True:
        h = targets.health(settings, p.component, p.region, timeout=min(5.0, timeout))
        if h.ok or time.monotonic() >= deadline:
            return h.detail if h.ok else f"still unhealthy: {h.detail}"
        time.sleep(0.5)


# --------------------------------------------------------------------------- health


@register
class ComponentHealth(Action[ComponentParams]):
    name = "component_health"
    Params = ComponentParams

    def run(self, params: ComponentParams, ctx: ActionContext) -> str:
        h = targets.health(ctx.require_settings(), params.component, params.region)
        if not h.ok:
            raise ActionFailed(f"{params.component} is unhealthy: {h.detail}")
        return f"{params.component} is healthy: {h.detail}"

    def describe(self, params: ComponentParams, ctx: ActionContext) -> str:
        h = targets.health(ctx.require_settings(), params.component, params.region)
        return f"check {params.component} (now: {'healthy' if h.ok else 'unhealthy'}: {h.detail})"


# --------------------------------------------------------------------------- restart / scale


def _service_control(settings: Settings, component: str, region: str) -> ServiceControl:
    """The control of a service (eapi, sapi, vault): the region's ``[regions.R.eapi]``
    when a region is named in a regions config, else ``[eapi]`` itself."""
    if region and settings.regions and component in ("eapi", "sapi"):
        conf = settings.regions[region]
        return service_control(component, conf.eapi if component == "eapi" else conf.sapi)
    section = {"eapi": settings.eapi, "sapi": settings.sapi, "vault": settings.vault}[component]
    return listen_control(component, section, settings.config_path)


def _patroni_managed(settings: Settings, region: str) -> bool:
    from payapi.core.topology import Service

    where = targets.region_of(settings, region)
    return any(m.patroni_url for m in where.members_of(Service.POSTGRES))


class _Restartable:
    """How one component is restarted, and what that is in words."""

    def __init__(self, settings: Settings, p: ComponentParams) -> None:
        self.settings = settings
        self.p = p

    def describe(self) -> str:
        c = self.p.component
        try:
            if c in ("eapi", "sapi", "vault"):
                control = _service_control(self.settings, c, self.p.region)
                return f"{control.describe()}, {control.running()} running now"
            if c == "redis":
                from payapi.systems.redis import redis_control

                return redis_control(self.settings.redis).describe()
            if _patroni_managed(self.settings, self.p.region):
                raise ActionSkipped("Patroni restarts its PostgreSQL members itself")
            from payapi.backup.service import postgres_control

            return postgres_control(self.settings).describe()
        except ActionSkipped:
            raise
        except PayapiError as exc:
            raise ActionFailed(str(exc)) from None

    def restart(self, timeout: float) -> None:
        c = self.p.component
        try:
            if c in ("eapi", "sapi", "vault"):
                _service_control(self.settings, c, self.p.region).restart(timeout=timeout)
            elif c == "redis":
                from payapi.systems.redis import redis_control

                control = redis_control(self.settings.redis)
                control.stop()
                control.start()
            else:
                self._restart_postgres()
        except (ActionSkipped, ActionFailed):
            raise
        except PayapiError as exc:
            raise ActionFailed(f"restart {c}: {exc}") from None

    def _restart_postgres(self) -> None:
        from payapi.backup.service import postgres_control
        from payapi.servers.procs import ServerError

        if _patroni_managed(self.settings, self.p.region):
            raise ActionSkipped("Patroni restarts its PostgreSQL members itself")
        control = postgres_control(self.settings)
        # A server killed with -9 leaves a stale postmaster.pid that pg_ctl stop refuses;
        # pg_ctl start copes with it.
        with contextlib.suppress(ServerError):
            control.stop()
        control.start()


@register
class ComponentRestart(Action[ComponentParams]):
    name = "component_restart"
    Params = ComponentParams

    def run(self, params: ComponentParams, ctx: ActionContext) -> str:
        settings = ctx.require_settings()
        r = _Restartable(settings, params)
        what = r.describe()
        r.restart(ctx.timeout)
        return f"restarted {what.split(',')[0]}; {_wait_healthy(settings, params, 10.0)}"

    def describe(self, params: ComponentParams, ctx: ActionContext) -> str:
        return f"restart {_Restartable(ctx.require_settings(), params).describe()}"


class ScaleParams(_Params):
    component: Literal["eapi", "sapi", "vault"]
    replicas: int = Field(default=1, ge=1, le=100)


@register
class ComponentScale(Action[ScaleParams]):
    """``kubectl scale --replicas=0`` then ``--replicas=N``: the seed's rung after a
    restart that did not help (in the lab: stop the process, start a new one)."""

    name = "component_scale"
    Params = ScaleParams

    def run(self, params: ScaleParams, ctx: ActionContext) -> str:
        settings = ctx.require_settings()
        try:
            control = _service_control(settings, params.component, params.region)
            control.scale(0, timeout=ctx.timeout / 2)
            control.scale(params.replicas, timeout=ctx.timeout / 2)
        except PayapiError as exc:
            raise ActionFailed(f"scale {params.component}: {exc}") from None
        return f"scaled {params.component} to 0 and back to {params.replicas}"

    def describe(self, params: ScaleParams, ctx: ActionContext) -> str:
        try:
            control = _service_control(ctx.require_settings(), params.component, params.region)
        except PayapiError as exc:
            raise ActionFailed(str(exc)) from None
        return (
            f"scale {control.describe()} to 0, then to {params.replicas} "
            f"({control.running()} running now)"
        )


# --------------------------------------------------------------------------- configuration


def _config_from_backup(settings: Settings, work: Path) -> tuple[str, Path]:
    """The newest configuration backup's copy of the config file, checked out under
    ``work``: (backup id, path). :class:`ActionSkipped` when there is none."""
    from payapi.backup.config_restore import restore_config
    from payapi.backup.errors import NotFound, RepositoryError
    from payapi.backup.service import open_repository

    if settings.config_path is None:
        raise ActionSkipped("no configuration file: nothing to put back")
    try:
        with open_repository(settings) as repo:
            result = restore_config(repo, None, work / "export")
    except NotFound as exc:
        raise ActionSkipped(f"{exc}: nothing to put back") from None
    except (RepositoryError, PayapiError) as exc:
        raise ActionFailed(f"configuration backup: {exc}") from None
    copy = work / "export" / "files" / settings.config_path.name
    if not copy.is_file():
        raise ActionSkipped(
            f"configuration backup {result.backup_id} holds no {settings.config_path.name}"
        )
    return result.backup_id, copy


@register
class ComponentConfig(Action[ComponentParams]):
    """The seed's "reapply from backup": the config file the component runs with is
    compared with the newest configuration backup's copy and rewritten from it when they
    differ (the current one is kept beside it), then the component is restarted."""

    name = "component_config"
    Params = ComponentParams

    def run(self, params: ComponentParams, ctx: ActionContext) -> str:
        settings = ctx.require_settings()
        if _kubernetes(settings, params.component):
            raise ActionSkipped(
                "reapplying a Deployment from the export (kubectl apply) is not automated "
                "yet: apply kubernetes/<namespace>/deployment/… of the newest export"
            )
        with tempfile.TemporaryDirectory(prefix="payapi-config-") as tmp:
            backup_id, copy = _config_from_backup(settings, Path(tmp))
            live = settings.config_path
            assert live is not None
            if filecmp.cmp(copy, live, shallow=False):
                done = f"{live.name} matches configuration backup {backup_id}"
            else:
                stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
                kept = live.with_name(f"{live.name}.before-recover-{stamp}")
                shutil.copy2(live, kept)
                staged = live.with_name(f".{live.name}.recover")
                shutil.copyfile(copy, staged)
                shutil.copymode(live, staged)
                staged.replace(live)
                done = (
                    f"{live.name} rewritten from configuration backup {backup_id} "
                    f"(the previous one is kept as {kept.name})"
                )
        _Restartable(settings, params).restart(ctx.timeout)
        return f"{done}; restarted {params.component}; {_wait_healthy(settings, params, 10.0)}"

    def describe(self, params: ComponentParams, ctx: ActionContext) -> str:
        settings = ctx.require_settings()
        if _kubernetes(settings, params.component):
            return "kubernetes: not automated (apply the Deployment of the newest export)"
        from payapi.backup.config_format import COMPONENT
        from payapi.backup.service import open_repository

        try:
            with open_repository(settings) as repo:
                backups = repo.list_backups(COMPONENT)
        except PayapiError as exc:
            return f"no configuration backup can be read ({exc}): the step will fail"
        if not backups or settings.config_path is None:
            return "no configuration backup: the step will be skipped"
        return (
            f"compare {settings.config_path.name} with configuration backup "
            f"{backups[-1].backup_id}, rewrite it if it differs, then restart "
            f"{_Restartable(settings, params).describe()}"
        )


def _kubernetes(settings: Settings, component: str) -> bool:
    section = {"eapi": settings.eapi, "sapi": settings.sapi, "vault": settings.vault}.get(component)
    return section is not None and section.control == "kubernetes"


# --------------------------------------------------------------------------- failover


class FailoverParams(_Params):
    component: Literal["vault", "redis", "db"]


def _no_standby(settings: Settings, params: FailoverParams) -> str | None:
    where = targets.region_of(settings, params.region)
    if not targets.has_standby(where, params.component):
        return (
            f"region {where.name} has no standby/replica of {params.component}: nothing to "
            "fail over to (a one-region configuration)"
        )
    if params.component == "vault" and not targets.vault_standby_answers(where):
        return f"no standby vault of region {where.name} answers: nothing to take over"
    return None


@register
class ComponentFailover(Action[FailoverParams]):
    """Fail over to the standby (Patroni for the database and the vault's, Sentinel for
    Redis) through :mod:`payapi.replication.failover`; skipped without a standby."""

    name = "component_failover"
    Params = FailoverParams

    def run(self, params: FailoverParams, ctx: ActionContext) -> str:
        from payapi.core.plan import load_plan
        from payapi.replication import failover as fo

        settings = ctx.require_settings()
        why = _no_standby(settings, params)
        if why is not None:
            raise ActionSkipped(why)
        where = targets.region_of(settings, params.region)
        try:
            prepared = fo.prepare(
                where,
                params.component,
                load_plan(settings.plan_file),
                maximum_lag_on_failover=settings.patroni.maximum_lag_on_failover,
                write_rate_bytes_per_second=settings.patroni.write_rate_bytes_per_second,
                timeout=max(1.0, ctx.timeout - 5.0),
            )
            result = fo.run(prepared, Journal.silent())
        except PayapiError as exc:
            raise ActionFailed(str(exc)) from None
        d = result.to_json()
        return f"{params.component} failed over in {where.name}: {d.get('from')} -> {d.get('to')}"

    def describe(self, params: FailoverParams, ctx: ActionContext) -> str:
        settings = ctx.require_settings()
        why = _no_standby(settings, params)
        if why is not None:
            return f"skip: {why}"
        where = targets.region_of(settings, params.region)
        return f"fail {params.component} over to its standby in region {where.name}"


# --------------------------------------------------------------------------- restore


class RestoreParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    component: Literal["vault", "redis", "db"]


_BACKUP_COMPONENT = {"vault": "vault", "redis": "redis", "db": "database"}


@register
class ComponentRestore(Action[RestoreParams]):
    """The last rung: the component's newest backup restored in place with the existing
    restore functions (the database with its WAL to the latest point; the vault, whose
    runbook then drops EAPI's verification cache; Redis from its newest snapshot, or rebuilt empty
    when there is none: it is a cache)."""

    name = "component_restore"
    Params = RestoreParams

    def run(self, params: RestoreParams, ctx: ActionContext) -> str:
        from payapi.backup.errors import RepositoryError
        from payapi.backup.service import open_repository

        settings = ctx.require_settings()
        try:
            with open_repository(settings) as repo:
                if params.component == "db":
                    return _restore_db(settings, repo, ctx.timeout)
                if params.component == "vault":
                    return _restore_vault(settings, repo)
                return _restore_redis(settings, repo)
        except (ActionFailed, ActionSkipped):
            raise
        except (RepositoryError, PayapiError, OSError) as exc:
            raise _fail(f"restore {params.component}", exc) from None

    def describe(self, params: RestoreParams, ctx: ActionContext) -> str:
        from payapi.backup.service import open_repository

        settings = ctx.require_settings()
        try:
            with open_repository(settings) as repo:
                backups = repo.list_backups(_BACKUP_COMPONENT[params.component])
        except PayapiError as exc:
            return f"no backup can be read ({exc}): the step will fail"
        if not backups:
            if params.component == "redis":
                return "no Redis snapshot: rebuild Redis empty (clients re-authenticate)"
            return f"no {params.component} backup: the step will fail"
        newest = backups[-1]
        extra = ""
        latest = " and replay the WAL archive to its end" if params.component == "db" else ""
        return f"restore {params.component} in place from backup {newest.backup_id}{latest}{extra}"


def _restore_db(settings: Settings, repo: Repository, timeout: float) -> str:
    from payapi.backup.postgres import COMPONENT
    from payapi.backup.restore import RestoreRequest, restore_in_place
    from payapi.backup.service import component_lock, postgres_control, restore_command_for

    control = postgres_control(settings)
    req = RestoreRequest(
        to=Path("."),
        restore_command=restore_command_for(settings),
        source_dsn=None,  # the server is gone: no coverage check against it
        recovery_timeout=timeout,
        journal=Journal.silent(),
    )
    with component_lock(repo, COMPONENT, "component recovery (restore in place)"):
        out = restore_in_place(repo, req, control)
    data = out if isinstance(out, dict) else out.to_json()
    return f"restored database backup {data.get('backup_id')} in place"


def _restore_vault(settings: Settings, repo: Repository) -> str:
    from payapi.backup.engines import restore_lock
    from payapi.backup.vault_format import COMPONENT
    from payapi.backup.vault_restore import restore_vault

    with restore_lock(repo, COMPONENT, "component recovery (vault restore)") as held:
        result = restore_vault(repo, settings, keep_alive=held.renew)
    # EAPI's verification cache is the runbook's next step (invalidate_verifications).
    return f"restored vault backup {result.backup_id} in place"


def _restore_redis(settings: Settings, repo: Repository) -> str:
    from datetime import timedelta

    from payapi.backup.redis_backup import COMPONENT
    from payapi.backup.redis_restore import restore_redis
    from payapi.backup.service import component_lock
    from payapi.systems.redis import redis_control

    control = redis_control(settings.redis)
    rebuild = not repo.list_backups(COMPONENT)
    with component_lock(repo, COMPONENT, "component recovery", wait=timedelta(seconds=30)):
        result = restore_redis(repo, settings.redis, control, rebuild=rebuild)
    d = result.to_json()
    return f"redis {d['mode']}: {d['final_keys']} keys"


# --------------------------------------------------------------------------- cache


class InvalidateParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


@register
class InvalidateVerifications(Action[InvalidateParams]):
    """EAPI's verification cache dropped (``payapi:ver:*``) and its generation bumped, so
    that a secret restored to an older version is checked against the vault at once."""

    name = "invalidate_verifications"
    Params = InvalidateParams

    def run(self, params: InvalidateParams, ctx: ActionContext) -> str:
        try:
            n = targets.invalidate_eapi_verifications(ctx.require_settings())
        except ActionFailed:
            raise
        except Exception as exc:  # redis-py's errors: one line
            raise _fail("drop EAPI's cached verifications", exc) from None
        return f"dropped the cached verifications of {n} client(s); generation bumped"

    def describe(self, params: InvalidateParams, ctx: ActionContext) -> str:
        return "drop EAPI's cached verifications (payapi:ver:*) and bump payapi:gen"
