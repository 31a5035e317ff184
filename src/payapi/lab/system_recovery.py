"""The lab's side of the ``system-recovery`` runbook: the provider the CLI installs into
:mod:`payapi.recovery.actions_system`.

Each step of a run is one stage of :mod:`payapi.lab.rebuild` (into a folder) or of
:mod:`payapi.lab.region_rebuild` (into a region). What the stages found is kept in the
target's ``system-recovery.json`` (written before the first stage runs, rewritten after
each one), so that a run resumed in another process continues from it; it holds paths,
ports and counts, never a secret. The first step refuses a target that is not empty
unless that file says this run began it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from payapi.core.errors import UsageError
from payapi.core.settings import Settings
from payapi.lab.rebuild import (
    RebuildRequest,
    RebuildResult,
    fresh_result,
    preflight,
    result_from_json,
    run_stage,
)
from payapi.lab.regions import TwoRegionLab, lab_dir_of
from payapi.recovery.actions import ActionFailed
from payapi.recovery.actions_system import SystemParams

STATE_FILE = "system-recovery.json"

__all__ = ["STATE_FILE", "LabSystemRecovery", "state_of", "target_dir"]


def target_dir(params: SystemParams, settings: Settings | None) -> Path:
    """The folder a run builds in: ``into``, or the region's folder of the lab."""
    if params.into:
        return Path(params.into).expanduser().absolute()
    return _two_region_lab(settings).region_dir(params.region)


def state_of(folder: Path) -> RebuildResult | None:
    """What the run building in ``folder`` found so far (None before its first step)."""
    path = folder / STATE_FILE
    if not path.is_file():
        return None
    return result_from_json(json.loads(path.read_text(encoding="utf-8")))


def _save(folder: Path, result: RebuildResult) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{STATE_FILE}.tmp"
    tmp.write_text(json.dumps(result.to_json(), indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, folder / STATE_FILE)


def _two_region_lab(settings: Settings | None) -> TwoRegionLab:
    lab_dir = lab_dir_of(settings.config_path if settings is not None else None)
    if lab_dir is None:
        raise UsageError("region: not a two-region lab's config (payapi --config DIR/payapi.toml)")
    return TwoRegionLab(lab_dir)


def _request(params: SystemParams) -> RebuildRequest:
    def path(value: str, what: str) -> Path:
        if not value:
            raise UsageError(f"{what}: not given")
        return Path(value).expanduser()

    return RebuildRequest(
        into=Path(params.into).expanduser().absolute(),
        repository=params.repository,
        key_file=path(params.key_file, "key_file"),
        vault_key_file=path(params.vault_key_file, "vault_key_file"),
        audit_head_file=Path(params.audit_head_file) if params.audit_head_file else None,
        vault=params.vault,
        redis_rebuild=params.redis_rebuild,
    )


@dataclass(frozen=True)
class LabSystemRecovery:
    """:class:`payapi.recovery.actions_system.SystemRecovery` on the lab's rebuilds."""

    def run(self, params: SystemParams, settings: Settings | None) -> str:
        try:
            return self._run(params, settings)
        except UsageError as exc:
            raise ActionFailed(str(exc)) from None

    def _run(self, params: SystemParams, settings: Settings | None) -> str:
        folder = target_dir(params, settings)
        result = state_of(folder)
        if result is None and params.step != "configuration":
            raise UsageError(f"{folder}: no {STATE_FILE}: the run's first step has not run")
        if params.into:
            req = _request(params)
            if result is None:
                preflight(req)  # an empty folder, the right keys: before anything is made
                result = fresh_result(req)
                _save(folder, result)
            result = run_stage(req, params.step, result)
        else:
            from payapi.lab.region_rebuild import (
                RegionRebuildRequest,
                check_region,
                fresh_region_result,
                run_region_stage,
            )

            lab = _two_region_lab(settings)
            rreq = RegionRebuildRequest(
                lab=lab, region=params.region, redis_rebuild=params.redis_rebuild
            )
            if result is None:
                check_region(lab, params.region)
                result = fresh_region_result(rreq)
                _save(folder, result)
            result = run_region_stage(rreq, params.step, result)
        _save(folder, result)
        return _line(result, params.step)

    def describe(self, params: SystemParams, settings: Settings | None) -> str:
        folder = target_dir(params, settings)
        began = state_of(folder) is not None
        if params.into:
            req = _request(params)
            if not began and params.step == "configuration":
                preflight(req)  # reads the repository; refuses as the run would
            where = f"in {folder}"
            url, key = req.repository, req.key_file
        else:
            from payapi.lab.region_rebuild import check_region

            lab = _two_region_lab(settings)
            if not began and params.step == "configuration":
                check_region(lab, params.region)
            where = f"in region {params.region} (a standby of {lab.active_region})"
            url, key = lab.repository_url, lab.repository_key_file
        return _would(params, where, _newest(url, key))


def _newest(url: str, key_file: Path) -> dict[str, str]:
    """The newest backup of each component in the repository (read, nothing written)."""
    from payapi.backup.repository import Repository

    out = {}
    with Repository.open_configured(url, key_file=key_file, key_env="", create=False) as repo:
        for component in ("configuration", "database", "vault", "redis"):
            backups = repo.list_backups(component)
            out[component] = backups[-1].backup_id if backups else "none"
    return out


def _line(result: RebuildResult, step: str) -> str:
    names = {
        "configuration": ("configuration", "backup repository"),
        "database": ("database", "audit"),
        "services": ("sapi", "eapi", "services"),
    }.get(step, (step,))
    done = [s for s in result.steps if s.name in names]
    line = "; ".join(f"{s.name}: {s.detail}" for s in done if s.detail) or f"{step}: done"
    if step == "verify" and not result.verified:
        bad = next((c for c in result.checks if not c["ok"]), None)
        raise ActionFailed(f"verify: {bad['name']} failed: {bad['detail']}" if bad else line)
    return line


def _would(params: SystemParams, where: str, newest: dict[str, str]) -> str:
    """What the step would do, from the repository's listing (changing nothing)."""
    step = params.step
    if step == "configuration":
        return (
            f"check out configuration export {newest['configuration']} and write the config {where}"
        )
    if step == "database":
        return f"restore backup {newest['database']} and every archived WAL segment {where}"
    if step == "vault":
        how = (
            "the region's vault on the standby's vault_db"
            if params.region
            else (f"{params.vault}: the database's vault or backup {newest['vault']}, the newer")
        )
        return f"rebuild the vault {where} ({how}); re-issue the services' API keys"
    if step == "redis":
        how = (
            "empty"
            if params.redis_rebuild or newest["redis"] == "none"
            else (f"snapshot {newest['redis']}")
        )
        return f"start Redis {where}: {how}"
    if step == "services":
        if params.region:
            return f"configure SAPI and EAPI {where} with 0 replicas (fenced)"
        return f"start SAPI and EAPI {where}"
    return f"verify {where}: each component's health, the seed's curls (authenticate, a payment)"
