"""Retention policies: the inputs they judge and the rules, each parsing and printing its
own config string (Barman style)::

    WINDOW(30d)                                         every backup within 30 days
    GFS(daily=30d, weekly=90d, monthly=1y, annual=7y)   grandfather-father-son tiers
    PITR(7d)                                            WAL: a 7-day point-in-time window
    FOREVER                                             never remove

A series (component + backup type) ORs its rules: ``WINDOW(30d) + GFS(...)``.
:meth:`RetentionPolicy.from_plan` builds one series policy per row of the plan's backup
table: a ``full`` row gets ``WINDOW(<retention>) + GFS(<the plan's tiers>)``, a ``wal`` row
``PITR(<retention>)``, an ``indefinite`` row ``FOREVER``, every other row ``WINDOW(...)``.
:mod:`payapi.backup.retention` decides with them and carries the decision out.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import ClassVar

from payapi.core.errors import PayapiError
from payapi.core.plan import Duration, Plan

TIER_ORDER: tuple[str, ...] = ("daily", "weekly", "monthly", "annual")


class PolicyError(PayapiError, ValueError):
    """A retention policy string is invalid; the message is one line quoting it."""


# --------------------------------------------------------------------------- inputs


_WAL_NAME = re.compile(
    r"^([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})(\.partial|\.[0-9A-F]{8}\.backup)?$", re.IGNORECASE
)
WAL_HISTORY_PATTERN = re.compile(r"^[0-9A-F]{8}\.history$", re.IGNORECASE)
LSN_PATTERN = re.compile(r"^([0-9A-F]{1,8})/([0-9A-F]{1,8})$", re.IGNORECASE)
_SEG_BITS = 24  # 16 MiB segments: the default, and what an LSN is converted with


def wal_position(text: str) -> tuple[int, int] | None:
    """The position ``(log, seg)`` of a WAL segment name or an LSN; None if neither.

    ``000000010000000A000000FF`` → ``(10, 255)``; ``A/FF000028`` → ``(10, 255)``; the
    ``.partial`` and ``.XXXXXXXX.backup`` suffixes are positions of their segment. The
    timeline is ignored: ordering by position alone can only keep more WAL, never less.
    """
    t = text.strip()
    if m := _WAL_NAME.match(t):
        return int(m.group(2), 16), int(m.group(3), 16)
    if m := LSN_PATTERN.match(t):
        return int(m.group(1), 16), int(m.group(2), 16) >> _SEG_BITS
    return None


def require_aware(value: datetime | None, what: str) -> None:
    if value is not None and value.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware, got {value.isoformat()}")


@dataclass(frozen=True, slots=True)
class BackupRef:
    """What retention needs to know about one backup (adapted from the repository).

    ``parent`` is the backup an incremental is taken against (None for a full).
    ``wal_start``/``wal_end`` are WAL segment names or LSNs: the WAL the backup needs to
    be consistent. ``verified_at`` is None until the backup has been verified.
    """

    backup_id: str
    component: str
    type: str
    finished_at: datetime
    parent: str | None = None
    verified_at: datetime | None = None
    wal_start: str | None = None
    wal_end: str | None = None

    def __post_init__(self) -> None:
        if not self.backup_id:
            raise ValueError("a backup needs an id")
        if self.parent == self.backup_id:
            raise ValueError(f"backup {self.backup_id} names itself as its parent")
        require_aware(self.finished_at, f"backup {self.backup_id}: finished_at")
        require_aware(self.verified_at, f"backup {self.backup_id}: verified_at")
        for what, value in (("wal_start", self.wal_start), ("wal_end", self.wal_end)):
            if value is not None and wal_position(value) is None:
                raise ValueError(
                    f"backup {self.backup_id}: {what} {value!r} is not a WAL name or an LSN"
                )

    @property
    def verified(self) -> bool:
        return self.verified_at is not None

    @property
    def series(self) -> str:
        return f"{self.component}/{self.type}"


@dataclass(frozen=True, slots=True)
class WalRef:
    """One archived WAL file of ``component`` (a segment, ``.partial``, ``.backup`` or
    ``.history`` file, named as PostgreSQL names it)."""

    name: str
    component: str = "database"


# --------------------------------------------------------------------------- periods


def period_of(tier: str, when: datetime) -> str:
    """The calendar period of ``when`` (taken in UTC) for a tier.

    daily ``2026-12-31``; weekly ``2026-W53`` (ISO week, whose year may differ from the
    calendar year: 2027-01-01 is in 2026-W53); monthly ``2026-12``; annual ``2026``.
    """
    t = when.astimezone(UTC)
    if tier == "daily":
        return t.date().isoformat()
    if tier == "weekly":
        iso = t.isocalendar()
        return f"{iso.year}-W{iso.week:02d}"
    if tier == "monthly":
        return f"{t.year:04d}-{t.month:02d}"
    if tier == "annual":
        return f"{t.year:04d}"
    raise PolicyError(f"unknown retention tier {tier!r} (known: {', '.join(TIER_ORDER)})")


def stamp(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%d %H:%MZ")


def newest_of(items: Iterable[BackupRef]) -> BackupRef:
    return max(items, key=lambda b: (b.finished_at, b.backup_id))


# --------------------------------------------------------------------------- rules


@dataclass
class RuleResult:
    """Reasons a rule keeps backups, and (for the report) why it did not keep others."""

    keep: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    miss: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))


class Rule(ABC):
    """One retention rule of a series. Subclasses parse and print their config string.

    ``apply`` sees the restorable backups of one series and its anchor; every reason it
    returns starts with the rule's key and a colon (``window: …``, ``weekly: …``), so
    reports can count what each rule keeps.
    """

    keyword: ClassVar[str]

    @classmethod
    @abstractmethod
    def parse_args(cls, args: str | None) -> Rule:
        """Build the rule from the text between the parentheses (None: no parentheses)."""

    @abstractmethod
    def __str__(self) -> str: ...

    @abstractmethod
    def apply(self, series: Sequence[BackupRef], anchor: datetime) -> RuleResult: ...

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self}>"

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and str(other) == str(self)

    def __hash__(self) -> int:
        return hash(str(self))


def _duration_arg(keyword: str, args: str | None) -> Duration:
    if not args or not args.strip():
        raise PolicyError(f"{keyword}(…) needs a duration, e.g. {keyword}(30d)")
    try:
        return Duration.parse(args.strip())
    except ValueError as exc:
        raise PolicyError(f"{keyword}({args}): {exc}") from None


class Window(Rule):
    """``WINDOW(30d)``: keep every backup finished less than 30 days before the anchor.

    This is the retention the plan's backup table gives a backup type. Unverified backups
    count too: a recent backup may simply not have been verified yet.
    """

    keyword = "WINDOW"

    def __init__(self, keep: Duration) -> None:
        if keep.kind != "interval" or keep.delta <= timedelta(0):
            raise PolicyError(f"WINDOW({keep.text}): needs a positive duration like 30d")
        self.keep = keep

    @classmethod
    def parse_args(cls, args: str | None) -> Window:
        return cls(_duration_arg(cls.keyword, args))

    def __str__(self) -> str:
        return f"WINDOW({self.keep.text})"

    def apply(self, series: Sequence[BackupRef], anchor: datetime) -> RuleResult:
        out = RuleResult()
        cutoff = anchor - self.keep.delta
        for b in series:
            if b.finished_at > cutoff:
                out.keep[b.backup_id].append(f"window: within {self.keep.text} of the anchor")
            else:
                out.miss[b.backup_id].append(
                    f"window: older than {self.keep.text} (cutoff {stamp(cutoff)})"
                )
        return out


@dataclass(frozen=True, slots=True)
class Tier:
    """A GFS tier: the newest verified backup of each ``name`` period is kept for ``keep``."""

    name: str
    keep: Duration

    def __post_init__(self) -> None:
        if self.name not in TIER_ORDER:
            raise PolicyError(
                f"unknown retention tier {self.name!r} (known: {', '.join(TIER_ORDER)})"
            )
        if self.keep.kind != "interval" or self.keep.delta <= timedelta(0):
            raise PolicyError(f"{self.name}={self.keep.text}: needs a positive duration")


class GFS(Rule):
    """``GFS(daily=30d, weekly=90d, monthly=1y, annual=7y)``: grandfather-father-son.

    Tiers are ORed. A tier keeps, for every calendar period (UTC day, ISO week, month,
    year) that has a verified backup finished less than ``keep`` before the anchor, the
    newest verified backup of that period.
    """

    keyword = "GFS"

    def __init__(self, tiers: Iterable[Tier]) -> None:
        ordered = sorted(tiers, key=lambda t: TIER_ORDER.index(t.name))
        names = [t.name for t in ordered]
        if not ordered:
            raise PolicyError("GFS(…) needs at least one tier, e.g. GFS(daily=30d)")
        if len(set(names)) != len(names):
            raise PolicyError(f"GFS: a tier appears twice ({', '.join(names)})")
        self.tiers: tuple[Tier, ...] = tuple(ordered)

    @classmethod
    def parse_args(cls, args: str | None) -> GFS:
        if not args or not args.strip():
            raise PolicyError("GFS(…) needs tiers, e.g. GFS(daily=30d, weekly=90d)")
        tiers: list[Tier] = []
        for part in args.split(","):
            name, eq, value = part.partition("=")
            if not eq:
                raise PolicyError(f"GFS({args}): {part.strip()!r} is not tier=duration")
            try:
                keep = Duration.parse(value.strip())
            except ValueError as exc:
                raise PolicyError(f"GFS({args}): {name.strip()}: {exc}") from None
            tiers.append(Tier(name.strip().lower(), keep))
        return cls(tiers)

    def __str__(self) -> str:
        return "GFS(" + ", ".join(f"{t.name}={t.keep.text}" for t in self.tiers) + ")"

    def apply(self, series: Sequence[BackupRef], anchor: datetime) -> RuleResult:
        out = RuleResult()
        verified = [b for b in series if b.verified]
        for b in series:
            if not b.verified:
                out.miss[b.backup_id].append(
                    "gfs: not verified (tiers count verified backups only)"
                )
        for tier in self.tiers:
            cutoff = anchor - tier.keep.delta
            periods: dict[str, list[BackupRef]] = defaultdict(list)
            for b in verified:
                if b.finished_at > cutoff:
                    periods[period_of(tier.name, b.finished_at)].append(b)
            for period, members in periods.items():
                winner = newest_of(members)
                out.keep[winner.backup_id].append(f"{tier.name}: newest verified of {period}")
                for b in members:
                    if b is not winner:
                        out.miss[b.backup_id].append(
                            f"{tier.name}: {winner.backup_id} is newer in {period}"
                        )
        return out


class Forever(Rule):
    """``FOREVER``: the plan keeps this series indefinitely (``retention: indefinite``)."""

    keyword = "FOREVER"

    @classmethod
    def parse_args(cls, args: str | None) -> Forever:
        if args is not None and args.strip():
            raise PolicyError(f"FOREVER takes no arguments, got FOREVER({args})")
        return cls()

    def __str__(self) -> str:
        return "FOREVER"

    def apply(self, series: Sequence[BackupRef], anchor: datetime) -> RuleResult:
        out = RuleResult()
        for b in series:
            out.keep[b.backup_id].append("forever: the plan keeps this series indefinitely")
        return out


class PointInTime(Rule):
    """``PITR(7d)``: the WAL rule — recovery to any point of the last 7 days.

    It keeps the *base* backup of the window (the newest verified backup of the component
    finished at or before ``anchor - window``; the newest such backup if none is verified;
    the oldest backup if history is shorter than the window) and every WAL segment from
    that backup's ``wal_start`` on. It keeps no backup by itself in :meth:`apply`;
    :func:`decide` applies it across the component's series.
    """

    keyword = "PITR"

    def __init__(self, window: Duration) -> None:
        if window.kind != "interval" or window.delta <= timedelta(0):
            raise PolicyError(f"PITR({window.text}): needs a positive duration like 7d")
        self.window = window

    @classmethod
    def parse_args(cls, args: str | None) -> PointInTime:
        return cls(_duration_arg(cls.keyword, args))

    def __str__(self) -> str:
        return f"PITR({self.window.text})"

    def apply(self, series: Sequence[BackupRef], anchor: datetime) -> RuleResult:
        return RuleResult()

    def base(self, backups: Sequence[BackupRef], anchor: datetime) -> BackupRef | None:
        """The backup PITR of the window starts from (backups with a ``wal_start`` only)."""
        usable = [b for b in backups if b.wal_start is not None]
        if not usable:
            return None
        start = anchor - self.window.delta
        before = [b for b in usable if b.finished_at <= start]
        verified = [b for b in before if b.verified]
        if verified:
            return newest_of(verified)
        if before:
            return newest_of(before)
        return min(usable, key=lambda b: (b.finished_at, b.backup_id))


_RULES: dict[str, type[Rule]] = {r.keyword: r for r in (Window, GFS, Forever, PointInTime)}
_RULE_TEXT = re.compile(r"^\s*([A-Za-z]+)\s*(?:\((.*)\))?\s*$", re.DOTALL)


def parse_rule(text: str) -> Rule:
    """``'WINDOW(30d)'`` → :class:`Window`; the factory is keyed by the keyword."""
    m = _RULE_TEXT.match(text)
    if not m:
        raise PolicyError(f"unparseable retention rule {text.strip()!r}")
    keyword = m.group(1).upper()
    rule = _RULES.get(keyword)
    if rule is None:
        known = ", ".join(_RULES)
        raise PolicyError(
            f"unknown retention rule {m.group(1)!r} in {text.strip()!r} (known: {known})"
        )
    return rule.parse_args(m.group(2))


@dataclass(frozen=True)
class SeriesPolicy:
    """The ORed rules of one series: ``WINDOW(30d) + GFS(daily=30d, …)``."""

    rules: tuple[Rule, ...]

    def __post_init__(self) -> None:
        if not self.rules:
            raise PolicyError("a series policy needs at least one rule")
        kinds = [type(r) for r in self.rules]
        if len(set(kinds)) != len(kinds):
            raise PolicyError(f"{self}: a rule appears twice")
        if PointInTime in kinds and len(kinds) > 1:
            raise PolicyError(f"{self}: PITR is the WAL rule and stands alone")

    @classmethod
    def parse(cls, text: str) -> SeriesPolicy:
        parts = text.split("+")
        if any(not p.strip() for p in parts):
            raise PolicyError(f"unparseable retention policy {text.strip()!r}")
        return cls(tuple(parse_rule(p) for p in parts))

    def __str__(self) -> str:
        return " + ".join(str(r) for r in self.rules)

    def rule(self, kind: type[Rule]) -> Rule | None:
        return next((r for r in self.rules if isinstance(r, kind)), None)


_SERIES_KEY = re.compile(r"^[a-z][a-z0-9-]*/[a-z][a-z0-9-]*$")


@dataclass(frozen=True)
class RetentionPolicy:
    """The policy of every series, keyed ``component/type`` (``database/full``).

    Printed and parsed as one ``series: rules`` line per series, e.g.::

        database/full: WINDOW(30d) + GFS(daily=30d, weekly=90d, monthly=1y, annual=7y)
        database/wal: PITR(7d)
    """

    series: Mapping[str, SeriesPolicy]

    def __post_init__(self) -> None:
        for key in self.series:
            if not _SERIES_KEY.match(key):
                raise PolicyError(f"series {key!r}: write it as component/type, e.g. database/full")

    @classmethod
    def parse(cls, text: str) -> RetentionPolicy:
        """Parse lines (or ``;``-separated entries) of ``component/type: rules``."""
        out: dict[str, SeriesPolicy] = {}
        for raw in re.split(r"[;\n]", text):
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            key, colon, rules = line.partition(":")
            key = key.strip()
            if not colon:
                raise PolicyError(f"{line!r}: expected 'component/type: rules'")
            if key in out:
                raise PolicyError(f"series {key!r} appears twice")
            out[key] = SeriesPolicy.parse(rules)
        return cls(out)

    @classmethod
    def from_plan(cls, plan: Plan) -> RetentionPolicy:
        """One series per row of the plan's backup table (see the module docstring)."""
        tiers = [Tier(t.name, t.keep) for t in plan.retention_tiers]
        out: dict[str, SeriesPolicy] = {}
        for row in plan.backups:
            rules: tuple[Rule, ...]
            if row.retention.forever:
                rules = (Forever(),)
            elif row.type == "wal":
                rules = (PointInTime(row.retention),)
            elif row.type == "full" and tiers:
                rules = (Window(row.retention), GFS(tiers))
            else:
                rules = (Window(row.retention),)
            out[f"{row.component}/{row.type}"] = SeriesPolicy(rules)
        return cls(out)

    def __str__(self) -> str:
        return "\n".join(f"{k}: {v}" for k, v in self.series.items())

    def for_series(self, component: str, type_: str) -> SeriesPolicy | None:
        return self.series.get(f"{component}/{type_}")

    def pitr(self, component: str) -> PointInTime | None:
        sp = self.for_series(component, "wal")
        rule = sp.rule(PointInTime) if sp is not None else None
        return rule if isinstance(rule, PointInTime) else None

    def only(self, component: str) -> RetentionPolicy:
        """The policy restricted to one component's series."""
        prefix = f"{component}/"
        return RetentionPolicy({k: v for k, v in self.series.items() if k.startswith(prefix)})
