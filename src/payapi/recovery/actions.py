"""The registry of runbook actions: what a step's ``action:`` may name.

As Dispatch's plugins sit behind small bases, an action is a class with a ``name``, a
pydantic model of its parameters (``Params``, unknown keys forbidden) and two methods:
``describe`` (what it would do, for ``--dry-run`` and the approver: may *read* the live
state, never change it) and ``run`` (do it; return one line of output or raise
:class:`ActionFailed`). ``@register`` adds a class by its name.

Actions must be idempotent: a run killed in the middle of a step re-runs that step from
its start on ``resume`` (the journal cannot know how far it got), so running an action
twice must leave the world as running it once would.

The generic actions live in :mod:`payapi.recovery.actions_generic`; the component
recoveries of later issues register theirs the same way (add the module to
``_BUILTIN_MODULES``).
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel, ValidationError

from payapi.core.errors import PayapiError
from payapi.core.settings import Settings

P = TypeVar("P", bound=BaseModel)

_BUILTIN_MODULES = (
    "payapi.recovery.actions_generic",
    "payapi.recovery.actions_component",
    "payapi.recovery.actions_system",
    "payapi.recovery.actions_breach",
    "payapi.recovery.actions_corruption",
)
_REGISTRY: dict[str, type[Action[Any]]] = {}
_loaded = False


class ActionFailed(PayapiError):
    """The action ran and did not achieve what it is for (the message is its output)."""


class ActionSkipped(PayapiError):
    """The action does not apply here (e.g. no standby to fail over to): the step is
    skipped, neither ok nor failed, and its verification does not run. The message says
    why."""


class UnknownAction(PayapiError):
    """No action of that name is registered."""


class ActionParamsError(PayapiError):
    """A step's params do not fit its action's parameter model."""


@dataclass(frozen=True)
class ActionContext:
    """What an action is told about the attempt it runs in. ``timeout`` is the step's:
    an action must give up by then (the executor stops waiting for it at that point).
    ``settings`` is the configuration of the platform the run acts on (None in the
    engine's own tests; actions that need it fail with one line then)."""

    run_id: str
    step_id: str
    attempt: int
    timeout: float
    settings: Settings | None = None

    def require_settings(self) -> Settings:
        if self.settings is None:
            raise ActionFailed("this action needs the platform's configuration (--config)")
        return self.settings


class Action(ABC, Generic[P]):
    name: ClassVar[str]
    Params: ClassVar[type[BaseModel]]

    @abstractmethod
    def run(self, params: P, ctx: ActionContext) -> str:
        """Do it; return one line about what was done, or raise :class:`ActionFailed`
        (or :class:`ActionSkipped` when it does not apply here)."""

    def describe(self, params: P, ctx: ActionContext) -> str:
        """What ``run`` would do, read against the live state, changing nothing."""
        shown = ", ".join(f"{k}={v!r}" for k, v in params.model_dump().items())
        return f"{self.name}({shown})"


A = TypeVar("A", bound=type[Action[Any]])


def register(cls: A) -> A:
    """Class decorator: make ``cls`` available to runbooks as ``action: <cls.name>``."""
    existing = _REGISTRY.get(cls.name)
    if existing is not None and existing is not cls:
        raise ValueError(f"action {cls.name!r} is registered twice")
    _REGISTRY[cls.name] = cls
    return cls


def _load_builtins() -> None:
    global _loaded
    if not _loaded:
        for module in _BUILTIN_MODULES:
            importlib.import_module(module)
        _loaded = True


def names() -> list[str]:
    _load_builtins()
    return sorted(_REGISTRY)


def get(name: str) -> Action[Any]:
    _load_builtins()
    cls = _REGISTRY.get(name)
    if cls is None:
        raise UnknownAction(f"no action {name!r} (actions: {', '.join(sorted(_REGISTRY))})")
    return cls()


def validate(action: Action[Any], params: Mapping[str, Any]) -> BaseModel:
    """``params`` (already rendered) as ``action``'s model; one line naming the field."""
    try:
        return action.Params.model_validate(dict(params))
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "params"
        raise ActionParamsError(f"action {action.name}: {where}: {first['msg']}") from None
