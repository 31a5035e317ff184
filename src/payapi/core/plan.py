"""The DR plan as data: load ``dr-plan.yaml``, validate it, answer questions about it.

Every command that promises something (a backup schedule, a retention period, an RTO or
RPO verdict) takes the promise from here, so the plan people read and the plan the
software enforces cannot drift apart.

Invariants:

- A :class:`Plan` is immutable (frozen models, tuples; mappings are read-only by type) and
  always internally consistent: every backup row names a component of the plan, names and
  aliases are unique, durations parsed.
- A plan that is not valid never becomes a :class:`Plan`: :func:`load_plan` raises
  :class:`PlanError` whose message is ONE line naming the file and the field path, e.g.
  ``dr-plan.yaml: components.vault.rpo: unparseable duration '5 minutes'``.
- Required keys must be present even where their value may be null (a component without
  an objective says ``rpo: null``), so leaving a key out is an error, never a default.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, GetCoreSchemaHandler, ValidationError, model_validator
from pydantic_core import core_schema

from payapi.core.durations import YEAR, parse_amount
from payapi.core.errors import PayapiError

__all__ = [
    "DEFAULT_PLAN_NAME",
    "BackupPolicy",
    "Channel",
    "Channels",
    "Communication",
    "Component",
    "Contact",
    "Described",
    "Duration",
    "Plan",
    "PlanError",
    "RecoveryApproach",
    "RetentionTier",
    "Role",
    "TestCadence",
    "UnknownComponentError",
    "VerificationPolicy",
    "default_plan_text",
    "load_plan",
    "parse_duration",
    "parse_plan",
]

DEFAULT_PLAN_NAME = "dr-plan.yaml"


class PlanError(PayapiError):
    """The plan is unreadable or invalid; the message is one line for the operator."""


class UnknownComponentError(PlanError, LookupError):
    """A caller asked the plan about a component it does not have."""


# --------------------------------------------------------------------------- durations

# Units (and the Julian year) come from payapi.core.durations; monthly/quarterly are exact
# twelfths/quarters of that year.
_YEAR = YEAR
_WORDS: dict[str, timedelta] = {
    "continuous": timedelta(0),
    "hourly": timedelta(hours=1),
    "daily": timedelta(days=1),
    "weekly": timedelta(weeks=1),
    "monthly": _YEAR / 12,
    "quarterly": _YEAR / 4,
    "annually": _YEAR,
    "yearly": _YEAR,
}
_EVENT = re.compile(r"^on [a-z][a-z -]*[a-z]$")

DurationKind = Literal["interval", "continuous", "event", "forever"]


@dataclass(frozen=True, slots=True)
class Duration:
    """A duration as written in the plan (``text``) and what it means (``delta``).

    ``kind`` keeps what a bare timedelta would lose: ``continuous`` and ``event``
    ("on change": a copy is taken whenever the source changes) both have a zero interval,
    because nothing is ever left uncopied for longer than that; ``forever`` ("indefinite")
    has ``timedelta.max``, so ``age > delta`` is never true and nothing expires.
    """

    text: str
    delta: timedelta
    kind: DurationKind

    @classmethod
    def parse(cls, text: str) -> Duration:
        """Parse ``4h``, ``15m``, ``30d``, ``1y``, ``hourly``, ``on change``, ``indefinite``.

        Raises ValueError (one line, quoting the input) for anything else.
        """
        norm = " ".join(text.split()).lower()
        if (amount := parse_amount(norm)) is not None:
            return cls(text, amount, "interval")
        if norm == "continuous":
            return cls(text, timedelta(0), "continuous")
        if norm in _WORDS:
            return cls(text, _WORDS[norm], "interval")
        if norm == "indefinite":
            return cls(text, timedelta.max, "forever")
        if _EVENT.match(norm):
            return cls(text, timedelta(0), "event")
        raise ValueError(f"unparseable duration {text!r}")

    @property
    def forever(self) -> bool:
        return self.kind == "forever"

    @property
    def seconds(self) -> int | float | None:
        """Whole seconds where exact; None for ``indefinite``."""
        if self.forever:
            return None
        total = self.delta.total_seconds()
        return int(total) if total.is_integer() else total

    def to_json(self) -> dict[str, Any]:
        return {"text": self.text, "seconds": self.seconds}

    def __str__(self) -> str:
        return self.text

    @classmethod
    def _validate(cls, value: object) -> Duration:
        if isinstance(value, Duration):
            return value
        if isinstance(value, str):
            return cls.parse(value)
        raise ValueError(f"expected a duration string like '4h', got {value!r}")

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source_type: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(
            cls._validate,
            serialization=core_schema.plain_serializer_function_ser_schema(
                lambda d: d.to_json(), when_used="json"
            ),
        )


def parse_duration(s: str) -> timedelta:
    """``'4h'`` → 4 hours. See :meth:`Duration.parse` for the accepted forms."""
    return Duration.parse(s).delta


# --------------------------------------------------------------------------- models


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


Priority = Literal["critical", "high", "medium", "low"]
BackupType = Literal["full", "incremental", "wal", "snapshot", "export", "git", "registry"]
VerificationKind = Literal["checksum", "test-restore", "full-recovery-test"]
TierName = Literal["daily", "weekly", "monthly", "annual"]

_TIER_PERIOD: dict[str, str] = {
    "daily": "1d",
    "weekly": "1w",
    "monthly": "monthly",
    "annual": "1y",
}
_TIER_ORDER = ("daily", "weekly", "monthly", "annual")
_NAME = re.compile(r"^[a-z][a-z0-9-]*$")


class RecoveryApproach(_Frozen):
    """The seed's "Recovery Approaches" row of one component."""

    primary: str
    alternative: str
    data_protection: str


class Component(_Frozen):
    """One recoverable part of the platform and what the plan promises about it.

    ``rto``/``rpo``/``priority``/``recovery`` are required keys whose value may be null:
    null means the seed sets no objective (not "zero", not "unknown default").
    ``name`` is the key under ``components:``; it is filled in by :class:`Plan`.
    """

    name: str
    title: str
    description: str = ""
    aliases: tuple[str, ...] = ()
    rto: Duration | None
    rpo: Duration | None
    priority: Priority | None
    recovery: RecoveryApproach | None
    replication: str | None = None


class BackupPolicy(_Frozen):
    """One row of the seed's backup strategy: what is copied, how often, kept how long."""

    component: str
    type: BackupType
    description: str = ""
    frequency: Duration
    retention: Duration
    location: str


class VerificationPolicy(_Frozen):
    """How backups are proven restorable; ``component`` None means every component."""

    component: str | None
    kind: VerificationKind
    frequency: Duration
    description: str = ""


class RetentionTier(_Frozen):
    """A grandfather-father-son tier: one backup per ``period`` is kept for ``keep``."""

    name: TierName
    keep: Duration

    @property
    def period(self) -> Duration:
        return Duration.parse(_TIER_PERIOD[self.name])


_PLACEHOLDER = re.compile(r"^\s*\[[^\]]*\]\s*$")


class Contact(_Frozen):
    name: str
    phone: str
    email: str

    @property
    def is_placeholder(self) -> bool:
        """True while any field is still a seed placeholder like ``[Name]``."""
        return any(_PLACEHOLDER.match(v) for v in (self.name, self.phone, self.email))


class Role(_Frozen):
    title: str
    responsibilities: str
    primary: Contact
    secondary: Contact


class Channel(_Frozen):
    name: str
    address: str | None = None


class Channels(_Frozen):
    primary: tuple[Channel, ...]
    backup: tuple[Channel, ...]
    external: tuple[Channel, ...]


class Communication(_Frozen):
    roles: Mapping[str, Role]
    channels: Channels


class TestCadence(_Frozen):
    __test__ = False  # not a pytest test class, despite the name

    title: str
    description: str = ""
    frequency: Duration


class Described(_Frozen):
    title: str
    description: str


def _path(*parts: str | int) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else p)
    return out


class Plan(_Frozen):
    """The whole DR plan. Build it with :func:`load_plan`; query it with the methods."""

    version: Literal[1]
    title: str
    components: Mapping[str, Component]
    backups: tuple[BackupPolicy, ...]
    backup_verification: tuple[VerificationPolicy, ...] = ()
    retention_tiers: tuple[RetentionTier, ...]
    team: Mapping[str, Role]
    communication: Communication
    tests: Mapping[str, TestCadence]
    scenarios: Mapping[str, Described]
    recovery_modes: Mapping[str, Described] = {}

    @model_validator(mode="before")
    @classmethod
    def _inject_component_names(cls, data: Any) -> Any:
        """A component's name is its key; copy it into the model so it travels with it."""
        if not isinstance(data, dict):
            return data
        comps = data.get("components")
        if not isinstance(comps, dict):
            return data
        named: dict[Any, Any] = {}
        for key, value in comps.items():
            if not isinstance(key, str) or not _NAME.match(key):
                raise ValueError(
                    f"components.{key}: component names are lower-case words joined by '-'"
                )
            if isinstance(value, dict):
                if "name" in value:
                    raise ValueError(
                        f"components.{key}.name: unknown key (a component's name is its key)"
                    )
                value = {**value, "name": key}
            named[key] = value
        return {**data, "components": named}

    @model_validator(mode="after")
    def _check_references(self) -> Plan:
        owner: dict[str, str] = {}
        for name, comp in self.components.items():
            for i, word in enumerate((name, *comp.aliases)):
                where = _path("components", name, "aliases", i - 1) if i else name
                if word in owner and owner[word] != name:
                    raise ValueError(
                        f"{where}: {word!r} is already used by component {owner[word]!r}"
                    )
                owner[word] = name
        for i, row in enumerate(self.backups):
            self._check_component_ref(row.component, _path("backups", i, "component"))
        for i, check in enumerate(self.backup_verification):
            if check.component is not None:
                self._check_component_ref(
                    check.component, _path("backup_verification", i, "component")
                )
        seen: set[str] = set()
        for i, tier in enumerate(self.retention_tiers):
            if tier.name in seen:
                raise ValueError(
                    f"{_path('retention_tiers', i, 'name')}: tier {tier.name!r} appears twice"
                )
            seen.add(tier.name)
        return self

    def _check_component_ref(self, ref: str, where: str) -> None:
        if ref in self.components:
            return
        for name, comp in self.components.items():
            if ref in comp.aliases:
                raise ValueError(
                    f"{where}: use the component's name {name!r}, not its alias {ref!r}"
                )
        known = ", ".join(self.components)
        raise ValueError(f"{where}: unknown component {ref!r} (known: {known})")

    # ------------------------------------------------------------------ queries

    def resolve(self, name: str) -> str:
        """The canonical component name for a name or alias (``db`` → ``database``)."""
        want = name.strip().lower()
        if want in self.components:
            return want
        for canonical, comp in self.components.items():
            if want in comp.aliases:
                return canonical
        known = ", ".join(self.components)
        raise UnknownComponentError(f"unknown component {name!r} (known: {known})")

    def component(self, name: str) -> Component:
        """The component called ``name`` (or one of its aliases)."""
        return self.components[self.resolve(name)]

    def backups_for(self, component: str) -> tuple[BackupPolicy, ...]:
        """The backup rows of one component, in plan order (may be empty)."""
        canonical = self.resolve(component)
        return tuple(b for b in self.backups if b.component == canonical)

    def verifications_for(self, component: str) -> tuple[VerificationPolicy, ...]:
        """Verification rows that apply to ``component``, including those for all."""
        canonical = self.resolve(component)
        return tuple(v for v in self.backup_verification if v.component in (None, canonical))

    def tier(self, name: str) -> RetentionTier:
        for t in self.retention_tiers:
            if t.name == name:
                return t
        raise PlanError(f"no retention tier {name!r} in the plan")

    def with_objectives(self) -> tuple[Component, ...]:
        """Components that promise an RTO or RPO (the ones drills and checks judge)."""
        return tuple(c for c in self.components.values() if c.rto is not None or c.rpo is not None)

    def placeholder_contacts(self) -> tuple[str, ...]:
        """Field paths of contacts still holding the seed's ``[Name]`` placeholders."""
        out: list[str] = []
        groups = (("team", self.team), ("communication.roles", self.communication.roles))
        for group, roles in groups:
            for role_id, role in roles.items():
                for which in ("primary", "secondary"):
                    contact: Contact = getattr(role, which)
                    if contact.is_placeholder:
                        out.append(f"{group}.{role_id}.{which}")
        return tuple(out)


# --------------------------------------------------------------------------- loading


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys: YAML would silently keep the last one."""


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=True)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _render_error(err: Mapping[str, Any]) -> str:
    loc = tuple(err.get("loc", ()))
    kind = err.get("type", "")
    msg = str(err.get("msg", "invalid"))
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    if kind == "missing":
        msg = "required key missing"
    elif kind == "extra_forbidden":
        msg = "unknown key"
    elif kind not in ("value_error",) and isinstance(err.get("input"), str | int | float | bool):
        msg = f"{msg} (got {err['input']!r})"
    path = _path(*loc)
    return f"{path}: {msg}" if path else msg


def default_plan_text() -> str:
    """The packaged default plan, as shipped in the wheel."""
    return resources.files("payapi").joinpath("data", DEFAULT_PLAN_NAME).read_text("utf-8")


def parse_plan(text: str, source: str = DEFAULT_PLAN_NAME) -> Plan:
    """Parse and validate plan ``text``; ``source`` names it in error messages."""
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}: " if mark is not None else ""
        problem = " ".join(str(exc.problem or exc.context or "invalid YAML").split())
        raise PlanError(f"{source}: {where}{problem}") from None
    except yaml.YAMLError as exc:
        raise PlanError(f"{source}: invalid YAML: {' '.join(str(exc).split())}") from None
    if not isinstance(data, dict):
        raise PlanError(f"{source}: the plan must be a YAML mapping of sections")
    try:
        return Plan.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        first = _render_error(errors[0])
        more = f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""
        raise PlanError(" ".join(f"{source}: {first}{more}".split())) from None


def load_plan(path: Path | None = None) -> Plan:
    """Load the plan at ``path``, or the packaged default when ``path`` is None.

    Raises PlanError (one line, naming the file and the field) for anything wrong.
    """
    if path is None:
        return parse_plan(default_plan_text(), f"{DEFAULT_PLAN_NAME} (packaged default)")
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise PlanError(f"{path}: cannot read the plan: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise PlanError(f"{path}: the plan is not UTF-8 text") from None
    return parse_plan(text, str(path))
