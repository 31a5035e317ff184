"""The providers the recovery actions need from above their layer, installed by every CLI
command that drives a runbook: :mod:`payapi.recovery` may import neither :mod:`payapi.ops`
(the security check, the clean deployment: see :mod:`payapi.recovery.providers`) nor
:mod:`payapi.lab` (the system recovery's rebuilds). One function per provider family, so
that each is installed only where it is needed.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from payapi.core.settings import Settings


def _security_check(settings: Settings, params: Mapping[str, Any]) -> tuple[bool, str]:
    """``payapi security check [--comprehensive]``: ok when every check passes."""
    from payapi.ops import security_scan

    report = security_scan.check(
        settings, comprehensive=bool(params.get("comprehensive"))
    ).to_json()
    bad = [f"{c['name']}: {c['detail']}" for c in report["checks"] if not c["ok"]]
    if bad:
        return False, "; ".join(bad)
    return True, f"security check: {len(report['checks'])} checks pass"


def _clean_deployment(settings: Settings, params: Mapping[str, Any]) -> tuple[bool, str]:
    """``payapi deploy --clean-deployment --version V``: the installed release checked
    against its record, the services restarted."""
    from payapi.cli.deploy_cmd import _restart
    from payapi.ops import deploy as d

    version = str(params["version"])
    given = str(params.get("releases") or "")
    config = settings.config_path
    releases = (
        Path(given)
        if given
        else (config.parent if config is not None else Path.cwd()) / "releases.json"
    )
    d.release_of(d.load_releases(releases), version)
    installed = d.installed_check(version)
    return True, f"{installed}; {_restart(settings.config_path)}"


def install() -> None:
    from payapi.recovery import providers

    providers.provide(providers.SECURITY_CHECK, _security_check)
    providers.provide(providers.CLEAN_DEPLOYMENT, _clean_deployment)


def install_system_recovery() -> None:
    """The ``system_recovery`` action of the ``system-recovery`` runbook: the lab's
    rebuilds (into a folder, into a region) as :mod:`payapi.lab.system_recovery`."""
    from payapi.lab.system_recovery import LabSystemRecovery
    from payapi.recovery import actions_system

    actions_system.install(LabSystemRecovery())
