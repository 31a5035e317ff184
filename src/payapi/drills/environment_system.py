"""A named environment (staging, a pre-production region…) as the system a drill acts on.

Drills act on the lab unless the operator names another environment explicitly
(``payapi drill run --environment NAME``), and then only on a config that says it *is*
that environment (``environment = "NAME"``): a typo or the wrong ``--config`` cannot
turn a drill on production.

Outside the lab, payapi knows only what the config tells it, so it injects only the
failures its controls can cause: ``kill`` of EAPI, SAPI or the vault server through the
control configured for it (``[eapi] control = "local"``: ``kill -9`` of the pid in its
pid file; ``"kubernetes"``: the Deployment's pods deleted with no grace period, as
LitmusChaos' pod-delete does). The database and Redis primaries are Patroni's and
Sentinel's, a region outage is the cloud's: those drills run on the lab, and anywhere
else are refused before anything is done (:meth:`refusal`). Recovery is the spec's
runbook (``payapi recover component C``); restore-normal starts whatever of the killed
service is not running and waits until ``payapi health check`` passes (idempotent).
"""

from __future__ import annotations

import time
from pathlib import Path

from payapi.core.errors import PayapiError
from payapi.drills.cli_system import CliDrillError, CliDrillSystem
from payapi.drills.spec import DrillSpec
from payapi.systems.services import ServiceControl, listen_control

__all__ = ["KILLABLE", "EnvironmentDrillSystem"]

KILLABLE = ("eapi", "sapi", "vault")
HEALTH_TIMEOUT = 120.0


class EnvironmentDrillSystem(CliDrillSystem):
    restore_what = "start the killed service if it is not running; wait for payapi health check"

    def __init__(self, config: Path, environment: str) -> None:
        super().__init__(config, environment)

    def refusal(self, spec: DrillSpec) -> str | None:
        """Why ``spec`` cannot run here (None: it can)."""
        inj, rec = spec.injection, spec.recovery
        if inj.kind != "kill" or inj.component not in KILLABLE or inj.channel_down:
            return (
                f"drill {spec.name} runs only on the lab: outside it payapi injects only"
                f" kill -9 of {', '.join(KILLABLE)} through their configured control"
            )
        if rec.kind not in ("automatic", "runbook") or rec.component_failure is not None:
            return f"drill {spec.name}: its recovery ({rec.kind}) runs only on the lab"
        try:
            self._control(inj.component)
        except PayapiError as exc:
            return f"drill {spec.name}: {exc}"
        return None

    def _control(self, component: str) -> ServiceControl:
        s = self.settings()
        section = {"eapi": s.eapi, "sapi": s.sapi, "vault": s.vault}[component]
        return listen_control(component, section, self.config)

    def inject(self, spec: DrillSpec) -> str:
        why = self.refusal(spec)
        if why is not None:
            raise CliDrillError(why)
        component = spec.injection.component
        assert component is not None
        control = self._control(component)
        killed = control.kill()
        if killed == 0:
            raise CliDrillError(f"no running {component} to kill ({control.describe()})")
        return f"killed {killed} of {component} with no grace ({control.describe()})"

    def recover(self, spec: DrillSpec) -> str:
        if spec.recovery.kind == "runbook":
            return self.run_runbook(spec)
        return "automatic"

    def restore_normal(self, spec: DrillSpec) -> str:
        done = []
        component = spec.injection.component
        if component in KILLABLE:
            control = self._control(component)
            if control.running() == 0:
                control.scale(1, timeout=90)
                done.append(f"started {control.describe()}")
        deadline = time.monotonic() + HEALTH_TIMEOUT
        while True:
            healthy, detail = self.health()
            if healthy:
                break
            if time.monotonic() > deadline:
                raise CliDrillError(f"not normal after {HEALTH_TIMEOUT:g}s: {detail}")
            time.sleep(1.0)
        return "; ".join(done) or "nothing to do: the environment was normal"
