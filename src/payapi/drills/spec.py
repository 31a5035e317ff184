"""Drill specs: YAML, validated with pydantic, shipped in the wheel (``payapi/data/drills``)
or the operator's own (``[drills] spec_dirs``).

A spec says what a drill does, never how: the steady state that must hold before it
starts, the injection, the recovery (a runbook of the recovery issue, or ``automatic``
when Patroni or Sentinel recover by themselves), the abort condition, the restore-normal
steps, the verification, and which component each probe judges. The runner
(:mod:`payapi.drills.runner`) reads it; the system it acts on (the lab, by default) is
behind :class:`payapi.drills.runner.DrillSystem`.
"""

from __future__ import annotations

from collections.abc import Iterable
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from payapi.core.errors import PayapiError, UsageError

__all__ = [
    "PROBES",
    "Abort",
    "DrillSpec",
    "DrillSpecError",
    "Injection",
    "Judge",
    "Recovery",
    "SteadyState",
    "find",
    "load_all",
    "parse",
]

PROBES = ("payments", "tokens", "vault")
Probe = Literal["payments", "tokens", "vault"]
InjectionKind = Literal[
    "kill", "region-outage", "corrupt-payments", "leak-credentials", "store-outage"
]
Component = Literal["eapi", "sapi", "vault", "redis", "db"]


class DrillSpecError(PayapiError):
    """A drill spec does not parse or validate (the message names the file and field)."""


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SteadyState(_Frozen):
    """Before the injection: for ``seconds``, every probe listed succeeds at least at
    ``min_success_rate``, and (``health``) ``payapi health check`` passes (within
    ``health_wait_seconds``)."""

    probes: tuple[Probe, ...] = ("payments",)
    seconds: float = Field(3.0, gt=0, le=600)
    min_success_rate: float = Field(1.0, ge=0, le=1)
    health: bool = True
    # The health check must pass within this long (a standby still catching up after the
    # previous drill is not a refusal yet); 0 asks once.
    health_wait_seconds: float = Field(20.0, ge=0, le=600)


class Injection(_Frozen):
    """``kill``: kill -9 of the component's processes in the active region (for db and
    redis, the primary only); ``region-outage``: every process of the primary region;
    ``corrupt-payments``: ``updated`` payments get their amounts changed and ``deleted``
    are deleted, at a recorded time; ``leak-credentials``: a client's secret and a bearer
    token of it are taken as leaked (a client made for the drill); ``store-outage``: the
    backup repository (the object store) becomes unreachable and stays so until the
    recovery brings it back. ``channel_down``: besides, the plan's primary
    communication channels (every ``tier = "primary"`` incident channel) are down until
    normal operation is restored, so the drill's messages must go through the backup
    channels."""

    kind: InjectionKind
    component: Component | None = None
    updated: int = Field(10, ge=0)
    deleted: int = Field(5, ge=0)
    channel_down: bool = False


class Recovery(_Frozen):
    """``automatic``: nothing is run, the engines recover (the drill measures them).
    ``runbook``: the named runbook with ``params``. ``region-failover``: ``payapi region
    failover --to dr --yes``. ``breach``: ``payapi recover breach`` of the leaked client,
    then the leaked secret and token must fail. ``restored_by``: ``probe`` (service is
    back at the first successful probe write after the failure) or ``recovery`` (when the
    recovery step ends: a corruption leaves the service up but wrong until it is
    corrected, a breach is open until it is contained). ``store-return``: the object
    store comes back after ``delay_seconds``; the recovery holds only when the WAL that
    PostgreSQL kept meanwhile drains into it and a backup is accepted again.
    ``component_failure``: during a region failover, once the other region serves, that
    component's processes there are killed as well and recovered by its runbook
    (``payapi recover component C --region R``): the annual exercise's "multiple
    component failures"."""

    kind: Literal["automatic", "runbook", "region-failover", "breach", "store-return"] = "automatic"
    runbook: str | None = None
    params: dict[str, str] = Field(default_factory=dict)
    restored_by: Literal["probe", "recovery"] = "probe"
    delay_seconds: float = Field(0.0, ge=0, le=3600)  # a drill that tests a slow recovery
    component_failure: Component | None = None

    @field_validator("runbook")
    @classmethod
    def _name(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("must not be empty")
        return value


class Abort(_Frozen):
    """Stop the drill (and restore normal operation) when the judged probes are still
    down ``rto_factor`` times the component's RTO objective after the injection, or
    ``max_seconds`` after it, whichever comes first."""

    rto_factor: float = Field(2.0, gt=0)
    max_seconds: float = Field(300.0, gt=0)


class Judge(_Frozen):
    """Judge ``component`` (a name or alias of ``dr-plan.yaml``) by what ``probe`` saw."""

    component: str
    probe: Probe


class DrillSpec(_Frozen):
    name: str = Field(pattern=r"^[a-z][a-z0-9-]{0,40}$")
    title: str
    description: str = ""
    scenario: str = Field(pattern=r"^[a-z][a-z0-9-]{0,40}$")
    component: str | None = None
    probes: tuple[Probe, ...] = ("payments",)
    steady_state: SteadyState = SteadyState()
    injection: Injection
    recovery: Recovery = Recovery()
    abort: Abort = Abort()
    judge: tuple[Judge, ...]
    settle_seconds: float = Field(2.0, ge=0, le=120)  # after recovery, before the RPO count
    # What a tabletop walk-through shows as each phase's expected duration (seconds).
    expected_seconds: dict[str, float] = Field(default_factory=dict)

    @field_validator("judge")
    @classmethod
    def _some(cls, value: tuple[Judge, ...]) -> tuple[Judge, ...]:
        if not value:
            raise ValueError("a drill judges at least one component")
        return value

    def all_probes(self) -> tuple[str, ...]:
        wanted = {*self.probes, *self.steady_state.probes, *(j.probe for j in self.judge)}
        return tuple(p for p in PROBES if p in wanted)


def parse(text: str, where: str) -> DrillSpec:
    try:
        data: Any = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise DrillSpecError(f"drill {where}: not YAML: {str(exc).splitlines()[0]}") from None
    try:
        return DrillSpec.model_validate(data)
    except ValidationError as exc:
        e = exc.errors()[0]
        loc = ".".join(str(x) for x in e["loc"]) or "(top)"
        msg = str(e["msg"]).removeprefix("Value error, ")
        raise DrillSpecError(f"drill {where}: {loc}: {msg}") from None


def _shipped() -> Iterable[tuple[str, str]]:
    folder = resources.files("payapi") / "data" / "drills"
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".yaml"):
            yield f"shipped/{entry.name}", entry.read_text(encoding="utf-8")


def load_all(extra_dirs: Iterable[Path] = ()) -> list[DrillSpec]:
    """The shipped specs, then each operator folder's; a name defined twice is an error
    (an operator's drill never silently replaces a shipped one)."""
    sources = list(_shipped())
    for folder in extra_dirs:
        for path in sorted(Path(folder).glob("*.yaml")):
            sources.append((str(path), path.read_text(encoding="utf-8")))
    specs: dict[str, tuple[str, DrillSpec]] = {}
    for where, text in sources:
        spec = parse(text, where)
        if spec.name in specs:
            raise DrillSpecError(
                f"drill {where}: the name {spec.name!r} is already defined by {specs[spec.name][0]}"
            )
        specs[spec.name] = (where, spec)
    return [s for _, s in specs.values()]


def find(
    specs: Iterable[DrillSpec],
    *,
    scenario: str,
    component: str | None = None,
    name: str | None = None,
) -> DrillSpec:
    """The one spec of ``--scenario S [--component C]`` (or ``--drill NAME``)."""
    specs = list(specs)
    if name is not None:
        hit = [s for s in specs if s.name == name]
    else:
        hit = [s for s in specs if s.scenario == scenario and s.component == component]
    if len(hit) == 1:
        return hit[0]
    known = ", ".join(
        f"--scenario {s.scenario}" + (f" --component {s.component}" if s.component else "")
        for s in specs
    )
    what = (
        f"--drill {name}"
        if name
        else f"--scenario {scenario}" + (f" --component {component}" if component else "")
    )
    raise UsageError(f"no drill for {what}; known: {known}")
