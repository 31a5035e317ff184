"""A runbook as data: typed parameters and ordered steps, validated strictly.

Every model forbids unknown keys (a misspelt ``on_faillure`` is an error, not a default),
and the checks that span fields are here too: step ids are unique, a ``rollback`` names a
step that exists, every ``{{ name }}`` names a declared parameter, a parameter never looks
like a secret (runbooks and their journals never hold one: a step names *where* a secret
is, e.g. a vault id). Which actions exist is the registry's business
(:mod:`payapi.recovery.actions`); the catalogue checks the names when it loads a file.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from payapi.core.durations import DurationError, parse_duration
from payapi.core.errors import UsageError
from payapi.core.logs import _SENSITIVE as _SECRET_NAME
from payapi.recovery import templating

ParamType = Literal["str", "int", "bool", "duration", "choice"]
OnFailure = Literal["abort", "continue", "rollback"]
_ID = r"^[a-z][a-z0-9_-]{0,62}$"
# ``skip_to: end``: when the step succeeds, every later step is skipped (so no step may be
# named ``end``).
SKIP_TO_END = "end"
_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


def seconds(value: Any) -> float:
    """A duration as runbooks write it: a number of seconds or ``90s``/``15m``/``1h``."""
    if isinstance(value, bool):
        raise ValueError("a duration is a number of seconds or e.g. 30s, 5m")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            pass
        try:
            return parse_duration(value).total_seconds()
        except DurationError as exc:
            raise ValueError(str(exc)) from None
    raise ValueError("a duration is a number of seconds or e.g. 30s, 5m")


Seconds = Annotated[float, BeforeValidator(seconds)]


class ParameterError(UsageError):
    """A ``--param`` the runbook does not declare, a missing one, or a value of the wrong
    type (exit 2: the request is wrong, nothing ran)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Parameter(_Strict):
    """One input of a runbook. No ``default`` means the operator must give it."""

    type: ParamType = "str"
    description: str = ""
    default: str | bool | int | float | None = None
    choices: list[str] | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Parameter:
        if self.type == "choice" and not self.choices:
            raise ValueError("a choice parameter needs its choices")
        if self.type != "choice" and self.choices is not None:
            raise ValueError("choices are only for a choice parameter")
        if self.default is not None:
            self.coerce(self.default)  # a default that is not of its type is an error
        return self

    @property
    def required(self) -> bool:
        return self.default is None

    def coerce(self, value: Any) -> Any:
        """``value`` (text from ``--param``, or YAML's value) as this parameter's type."""
        text = value.strip() if isinstance(value, str) else value
        if self.type == "str":
            if not isinstance(text, str):
                raise ValueError(f"expected text, got {text!r}")
            return text
        if self.type == "int":
            if isinstance(text, bool) or not isinstance(text, int | str):
                raise ValueError(f"expected an integer, got {text!r}")
            try:
                return int(text)
            except ValueError:
                raise ValueError(f"expected an integer, got {text!r}") from None
        if self.type == "bool":
            if isinstance(text, bool):
                return text
            if isinstance(text, str) and text.lower() in _TRUE | _FALSE:
                return text.lower() in _TRUE
            raise ValueError(f"expected true or false, got {text!r}")
        if self.type == "duration":
            return seconds(text)
        assert self.choices is not None
        if str(text) not in self.choices:
            raise ValueError(f"expected one of {', '.join(self.choices)}, got {text!r}")
        return str(text)


class Backoff(_Strict):
    """The wait before retry ``n`` (1-based): ``initial * multiplier**(n-1)``, at most ``max``."""

    initial: Seconds = 1.0
    multiplier: float = Field(default=2.0, ge=1.0)
    max: Seconds = 60.0

    def delay(self, retry: int) -> float:
        return float(min(self.max, self.initial * self.multiplier ** max(0, retry - 1)))


def _backoff(value: Any) -> Any:
    # ``backoff: 5s`` is short for a constant wait of 5 s between attempts.
    if isinstance(value, str | int | float) and not isinstance(value, bool):
        return {"initial": value, "multiplier": 1.0, "max": value}
    return value


def _approval(value: Any) -> Any:
    return {"role": value} if isinstance(value, str) else value


class Approval(_Strict):
    """The role whose holder must approve the step before it runs (item 2 checks who)."""

    role: str = Field(min_length=1)
    # How long the step waits for it, from the first request; then the run aborts.
    timeout: Seconds = Field(default=3600.0, gt=0)


class Check(_Strict):
    """A verification: another action that must succeed after the step's action."""

    action: str = Field(min_length=1)
    params: dict[str, Any] = Field(default_factory=dict)
    timeout: Seconds = 60.0


class Step(_Strict):
    id: str = Field(pattern=_ID)
    title: str = ""
    action: str = Field(min_length=1)
    params: dict[str, Any] = Field(default_factory=dict)
    timeout: Seconds = 300.0
    retries: int = Field(default=0, ge=0, le=100)
    backoff: Annotated[Backoff, BeforeValidator(_backoff)] = Field(default_factory=Backoff)
    on_failure: OnFailure = "abort"
    rollback: str | None = None  # the id of the step to run when on_failure is rollback
    approval: Annotated[Approval | None, BeforeValidator(_approval)] = None
    verify: Check | None = None
    # When this step ends ok, the steps after it are skipped up to (not including) this
    # one, or all of them (``end``): a ladder of remedies stops at the first that works.
    skip_to: str | None = None

    @model_validator(mode="after")
    def _rollback_named(self) -> Step:
        if self.on_failure == "rollback" and not self.rollback:
            raise ValueError("on_failure: rollback needs rollback: STEP_ID (the step to run)")
        if self.rollback and self.on_failure != "rollback":
            raise ValueError("rollback is set but on_failure is not rollback")
        return self

    @property
    def label(self) -> str:
        return self.title or self.id


class Runbook(_Strict):
    name: str = Field(pattern=_ID)
    title: str = Field(min_length=1)
    description: str = ""
    parameters: dict[str, Parameter] = Field(default_factory=dict)
    steps: list[Step] = Field(min_length=1)
    # Steps that run only as some step's rollback, never in the sequence.
    rollback_steps: list[Step] = Field(default_factory=list)

    @model_validator(mode="after")
    def _references(self) -> Runbook:
        for name in self.parameters:
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
                raise ValueError(f"parameters.{name}: a name is letters, digits and _")
            if _SECRET_NAME.search(name):
                raise ValueError(
                    f"parameters.{name}: looks like a secret; runbooks never hold secrets "
                    "(name where it is, e.g. a vault variable id)"
                )
        ids = [s.id for s in [*self.steps, *self.rollback_steps]]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"step ids must be unique: {', '.join(dupes)}")
        known = set(ids)
        if SKIP_TO_END in known:
            raise ValueError(f"no step may be named {SKIP_TO_END!r} (skip_to: end means the end)")
        main = [s.id for s in self.steps]
        for i, step in enumerate(self.steps):
            target = step.skip_to
            if target is not None and target != SKIP_TO_END and target not in main[i + 1 :]:
                raise ValueError(
                    f"steps[{i}] ({step.id}).skip_to: {target!r} is not a later step (or end)"
                )
        for i, step in enumerate(self.rollback_steps):
            if step.skip_to is not None:
                raise ValueError(f"rollback_steps[{i}] ({step.id}).skip_to: only for steps")
        for where, step in self._all_steps():
            if step.rollback and step.rollback not in known:
                raise ValueError(f"{where}.rollback: no step {step.rollback!r}")
            if step.rollback == step.id:
                raise ValueError(f"{where}.rollback: a step cannot be its own rollback")
            for field, value in (("params", step.params), ("verify", step.verify)):
                data = value.params if isinstance(value, Check) else value
                try:
                    used = templating.references(data)
                except templating.TemplateError as exc:
                    raise ValueError(f"{where}.{field}: {exc}") from None
                unknown = sorted(used - set(self.parameters))
                if unknown:
                    raise ValueError(
                        f"{where}.{field}: {{{{ {unknown[0]} }}}} is not a parameter of "
                        "this runbook"
                    )
        return self

    def _all_steps(self) -> list[tuple[str, Step]]:
        return [(f"steps[{i}] ({s.id})", s) for i, s in enumerate(self.steps)] + [
            (f"rollback_steps[{i}] ({s.id})", s) for i, s in enumerate(self.rollback_steps)
        ]

    def resolve(self, given: Mapping[str, Any]) -> dict[str, Any]:
        """The run's parameter values: ``given`` (``--param k=v``) over the defaults, each
        of its declared type; :class:`ParameterError` names the first problem."""
        unknown = sorted(set(given) - set(self.parameters))
        if unknown:
            known = ", ".join(sorted(self.parameters)) or "none"
            raise ParameterError(
                f"runbook {self.name}: no parameter {unknown[0]!r} (parameters: {known})"
            )
        values: dict[str, Any] = {}
        for name, spec in self.parameters.items():
            raw = given.get(name, spec.default)
            if raw is None:
                raise ParameterError(
                    f"runbook {self.name}: parameter {name} is required (--param {name}=…)"
                )
            try:
                values[name] = spec.coerce(raw)
            except ValueError as exc:
                raise ParameterError(f"runbook {self.name}: parameter {name}: {exc}") from None
        return values

    def step(self, step_id: str) -> Step:
        for s in [*self.steps, *self.rollback_steps]:
            if s.id == step_id:
                return s
        raise KeyError(step_id)

    def actions(self) -> set[str]:
        """Every action name the runbook uses (steps, rollbacks, verifications)."""
        out: set[str] = set()
        for _, s in self._all_steps():
            out.add(s.action)
            if s.verify is not None:
                out.add(s.verify.action)
        return out
