"""Retention: which backups and WAL segments to keep, decided by a pure function.

Deciding is separate from doing (Patroni's ``decide(state)``): :func:`decide` takes the
backups and WAL segments that exist, a :class:`RetentionPolicy` and the time ``now``, and
returns a :class:`RetentionPlan` — one :class:`Decision` per backup, with the reasons — and
the WAL names to remove. It does no I/O and reads no clock, so every rule is unit-tested
with an injected ``now``. ``payapi retention purge`` is the part that acts.

Policies are small classes that parse and print their own config string (Barman style)::

    WINDOW(30d)                                         every backup within 30 days
    GFS(daily=30d, weekly=90d, monthly=1y, annual=7y)   grandfather-father-son tiers
    PITR(7d)                                            WAL: a 7-day point-in-time window
    FOREVER                                             never remove

A series (component + backup type) ORs its rules: ``WINDOW(30d) + GFS(...)``.
:meth:`RetentionPolicy.from_plan` builds one series policy per row of the plan's backup
table: a ``full`` row gets ``WINDOW(<retention>) + GFS(<the plan's tiers>)``, a ``wal`` row
``PITR(<retention>)``, an ``indefinite`` row ``FOREVER``, every other row ``WINDOW(...)``.

Invariants (each one a unit test):

- Windows and tiers count back from the series' *anchor*: the newest verified backup (the
  newest backup when none is verified), never the clock — a stalled backup job purges
  nothing that the tiers kept on the day it stalled.
- In each tier, one backup per calendar period (UTC day, ISO week, month, year) is kept:
  the newest *verified* one. Unverified backups never count for a tier.
- The newest backup and the newest verified backup of each series are always kept, and so
  is every backup newer than the newest verified one (it is still waiting for verification).
- A kept backup keeps its whole chain (an incremental keeps its parents up to the full); a
  backup whose chain is broken (a parent is not in the repository) is removed, so no
  orphan chains remain.
- WAL is kept from the start of the base backup of the point-in-time window onwards, plus
  the range each kept backup needs to be consistent (``wal_start``..``wal_end``).
- A backup whose series has no rule in the policy is kept ("unmanaged"): retention never
  removes what the plan does not talk about.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

from payapi.plan import Duration, Plan

__all__ = [
    "GFS",
    "TIER_ORDER",
    "BackupRef",
    "Decision",
    "Forever",
    "PointInTime",
    "PolicyError",
    "RetentionPlan",
    "RetentionPolicy",
    "Rule",
    "SeriesPolicy",
    "Tier",
    "WalRef",
    "Window",
    "decide",
    "parse_rule",
    "period_of",
    "simulate",
    "synthetic_daily_history",
    "wal_position",
]

TIER_ORDER: tuple[str, ...] = ("daily", "weekly", "monthly", "annual")


class PolicyError(ValueError):
    """A retention policy string is invalid; the message is one line quoting it."""


# --------------------------------------------------------------------------- inputs


_WAL_NAME = re.compile(
    r"^([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})(\.partial|\.[0-9A-F]{8}\.backup)?$", re.IGNORECASE
)
_WAL_HISTORY = re.compile(r"^[0-9A-F]{8}\.history$", re.IGNORECASE)
_LSN = re.compile(r"^([0-9A-F]{1,8})/([0-9A-F]{1,8})$", re.IGNORECASE)
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
    if m := _LSN.match(t):
        return int(m.group(1), 16), int(m.group(2), 16) >> _SEG_BITS
    return None


def _aware(value: datetime | None, what: str) -> None:
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
        _aware(self.finished_at, f"backup {self.backup_id}: finished_at")
        _aware(self.verified_at, f"backup {self.backup_id}: verified_at")
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


def _stamp(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%d %H:%MZ")


def _newest(items: Iterable[BackupRef]) -> BackupRef:
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
                    f"window: older than {self.keep.text} (cutoff {_stamp(cutoff)})"
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
                winner = _newest(members)
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
            return _newest(verified)
        if before:
            return _newest(before)
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


# --------------------------------------------------------------------------- outputs


@dataclass(frozen=True)
class Decision:
    """Keep or remove one backup, and why.

    Every reason starts with the key of what decided it and a colon: a tier (``daily``,
    ``weekly``, ``monthly``, ``annual``), ``window``, ``newest``, ``newest-verified``,
    ``pending``, ``chain``, ``pitr``, ``forever``, ``unmanaged``; for a removal ``expired``,
    ``orphan`` or the rule that looked at it and passed.
    """

    backup_id: str
    keep: bool
    reasons: list[str]
    component: str = ""
    type: str = ""
    finished_at: datetime | None = None
    verified: bool = False

    @property
    def rules(self) -> frozenset[str]:
        """The keys of the reasons (``{"daily", "window"}``)."""
        return frozenset(r.split(":", 1)[0] for r in self.reasons)

    def to_json(self) -> dict[str, Any]:
        return {
            "backup_id": self.backup_id,
            "component": self.component,
            "type": self.type,
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
            "verified": self.verified,
            "action": "keep" if self.keep else "remove",
            "reasons": list(self.reasons),
        }


@dataclass(frozen=True)
class RetentionPlan:
    """What :func:`decide` chose. ``decisions`` are ordered by component, then age."""

    now: datetime
    decisions: tuple[Decision, ...]
    wal_keep: tuple[str, ...] = ()
    wal_remove: tuple[str, ...] = ()
    anchors: Mapping[str, datetime] = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    @property
    def kept(self) -> tuple[Decision, ...]:
        return tuple(d for d in self.decisions if d.keep)

    @property
    def removed(self) -> tuple[Decision, ...]:
        return tuple(d for d in self.decisions if not d.keep)

    def decision(self, backup_id: str) -> Decision:
        for d in self.decisions:
            if d.backup_id == backup_id:
                return d
        raise KeyError(backup_id)

    def to_json(self) -> dict[str, Any]:
        return {
            "now": self.now.isoformat(),
            "kept": len(self.kept),
            "removed": len(self.removed),
            "anchors": {k: v.isoformat() for k, v in self.anchors.items()},
            "backups": [d.to_json() for d in self.decisions],
            "wal": {
                "kept": len(self.wal_keep),
                "removed": len(self.wal_remove),
                "remove": list(self.wal_remove),
            },
            "notes": list(self.notes),
        }


# --------------------------------------------------------------------------- decide


def _chains(by_id: Mapping[str, BackupRef]) -> tuple[dict[str, list[str]], dict[str, str]]:
    """Ancestors (nearest first) of every backup whose chain is whole; why the rest are not."""
    ancestors: dict[str, list[str]] = {}
    broken: dict[str, str] = {}
    for b in by_id.values():
        chain: list[str] = []
        seen = {b.backup_id}
        cur = b
        while cur.parent is not None:
            parent = by_id.get(cur.parent)
            if parent is None:
                broken[b.backup_id] = (
                    f"orphan: parent {cur.parent} of {cur.backup_id} is not in the repository"
                )
                break
            if parent.backup_id in seen:
                broken[b.backup_id] = (
                    f"orphan: the chain of {b.backup_id} loops at {parent.backup_id}"
                )
                break
            seen.add(parent.backup_id)
            chain.append(parent.backup_id)
            cur = parent
        else:
            ancestors[b.backup_id] = chain
    return ancestors, broken


def decide(
    backups: Sequence[BackupRef],
    wal: Sequence[WalRef],
    policy: RetentionPolicy,
    now: datetime,
) -> RetentionPlan:
    """Decide what to keep. Pure: the same inputs always give the same plan.

    ``now`` is only used to report and to keep backups stamped in the future (a clock
    that jumped); windows and tiers are anchored on the backups themselves.
    """
    _aware(now, "now")
    by_id: dict[str, BackupRef] = {}
    for b in backups:
        if b.backup_id in by_id:
            raise ValueError(f"backup id {b.backup_id} appears twice")
        by_id[b.backup_id] = b
    ancestors, broken = _chains(by_id)

    keep: dict[str, list[str]] = defaultdict(list)
    miss: dict[str, list[str]] = defaultdict(list)
    anchors: dict[str, datetime] = {}
    notes: list[str] = []

    series: dict[tuple[str, str], list[BackupRef]] = defaultdict(list)
    for b in by_id.values():
        if b.backup_id not in broken:
            series[(b.component, b.type)].append(b)

    for (component, type_), members in sorted(series.items()):
        key = f"{component}/{type_}"
        sp = policy.for_series(component, type_)
        if sp is None:
            for b in members:
                keep[b.backup_id].append(f"unmanaged: the policy has no rule for {key}")
            continue
        verified = [b for b in members if b.verified]
        newest = _newest(members)
        anchor = _newest(verified).finished_at if verified else newest.finished_at
        anchors[key] = anchor
        if not verified and sp.rule(GFS) is not None:
            notes.append(f"{key}: no verified backup, so the GFS tiers keep nothing yet")
        for rule in sp.rules:
            result = rule.apply(members, anchor)
            for bid, reasons in result.keep.items():
                keep[bid].extend(reasons)
            for bid, reasons in result.miss.items():
                miss[bid].extend(reasons)
        keep[newest.backup_id].append(f"newest: the newest backup of {key}")
        if verified:
            nv = _newest(verified)
            keep[nv.backup_id].append(f"newest-verified: the newest verified backup of {key}")
            for b in members:
                if b.finished_at > nv.finished_at and not b.verified:
                    keep[b.backup_id].append("pending: newer than the newest verified backup")
        for b in members:
            if b.finished_at > now:
                keep[b.backup_id].append(f"future: finished after now ({_stamp(now)})")

    # The base backup of each component's point-in-time window.
    wal_floor: dict[str, tuple[int, int]] = {}
    components = sorted({c for c, _ in series} | {w.component for w in wal})
    for component in components:
        pitr = policy.pitr(component)
        if pitr is None:
            continue
        restorable = [b for (c, _), ms in series.items() if c == component for b in ms]
        with_wal = [b for b in restorable if b.wal_start is not None]
        if not with_wal:
            if any(w.component == component for w in wal):
                notes.append(f"{component}: no backup records a WAL range, so all its WAL is kept")
            continue
        verified = [b for b in with_wal if b.verified]
        anchor = _newest(verified or with_wal).finished_at
        anchors[f"{component}/wal"] = anchor
        base = pitr.base(with_wal, anchor)
        assert base is not None and base.wal_start is not None
        keep[base.backup_id].append(
            f"pitr: base backup of the {pitr.window.text} point-in-time window"
        )
        pos = wal_position(base.wal_start)
        assert pos is not None
        wal_floor[component] = pos

    # A kept backup keeps its whole chain.
    needed_by: dict[str, list[str]] = defaultdict(list)
    for bid in list(keep):
        if bid in broken:
            continue
        for parent in ancestors.get(bid, ()):
            needed_by[parent].append(bid)
    for parent, children in needed_by.items():
        newest_child = _newest(by_id[c] for c in children)
        more = f" and {len(children) - 1} more" if len(children) > 1 else ""
        keep[parent].append(f"chain: parent of kept {newest_child.backup_id}{more}")

    decisions: list[Decision] = []
    for b in sorted(by_id.values(), key=lambda b: (b.component, b.finished_at, b.backup_id)):
        if b.backup_id in broken:
            kept, reasons = False, [broken[b.backup_id]]
        elif keep.get(b.backup_id):
            kept, reasons = True, list(keep[b.backup_id])
        else:
            kept = False
            reasons = [
                f"expired: no rule of {b.series} keeps it",
                *miss.get(b.backup_id, []),
            ]
        decisions.append(
            Decision(
                backup_id=b.backup_id,
                keep=kept,
                reasons=reasons,
                component=b.component,
                type=b.type,
                finished_at=b.finished_at,
                verified=b.verified,
            )
        )

    wal_keep, wal_remove = _decide_wal(wal, policy, wal_floor, by_id, keep, broken, notes)
    return RetentionPlan(
        now=now,
        decisions=tuple(decisions),
        wal_keep=tuple(wal_keep),
        wal_remove=tuple(wal_remove),
        anchors=anchors,
        notes=tuple(notes),
    )


def _decide_wal(
    wal: Sequence[WalRef],
    policy: RetentionPolicy,
    floor: Mapping[str, tuple[int, int]],
    by_id: Mapping[str, BackupRef],
    keep: Mapping[str, list[str]],
    broken: Mapping[str, str],
    notes: list[str],
) -> tuple[list[str], list[str]]:
    """WAL to keep: from the PITR base on, plus each kept backup's own range."""
    ranges: dict[str, list[tuple[tuple[int, int], tuple[int, int] | None]]] = defaultdict(list)
    for bid, reasons in keep.items():
        b = by_id.get(bid)
        if b is None or not reasons or bid in broken or b.wal_start is None:
            continue
        start = wal_position(b.wal_start)
        end = wal_position(b.wal_end) if b.wal_end is not None else None
        assert start is not None
        ranges[b.component].append((start, end))

    keep_names: list[str] = []
    remove_names: list[str] = []
    unknown: list[str] = []
    for w in sorted(wal, key=lambda w: (w.component, w.name)):
        if policy.pitr(w.component) is None or w.component not in floor:
            keep_names.append(w.name)
            continue
        if _WAL_HISTORY.match(w.name):
            keep_names.append(w.name)  # tiny, and needed to follow a timeline switch
            continue
        pos = wal_position(w.name)
        if pos is None or _LSN.match(w.name.strip()):
            unknown.append(w.name)
            keep_names.append(w.name)
            continue
        needed = pos >= floor[w.component] or any(
            start <= pos and (end is None or pos <= end) for start, end in ranges[w.component]
        )
        (keep_names if needed else remove_names).append(w.name)
    if unknown:
        notes.append(f"{len(unknown)} WAL files with unrecognised names kept (first: {unknown[0]})")
    return keep_names, remove_names


# --------------------------------------------------------------------------- simulate


def synthetic_daily_history(
    days: int,
    end: datetime,
    *,
    component: str = "database",
    type_: str = "full",
    hour: int = 1,
) -> list[BackupRef]:
    """One verified backup a day for ``days`` days, the last one at or before ``end``.

    Each backup finishes at ``hour``:00 UTC; ids are ``<component>-<type>-YYYYMMDD``.
    """
    if days < 1:
        raise ValueError("a history needs at least one day")
    last = end.astimezone(UTC).replace(hour=hour, minute=0, second=0, microsecond=0)
    if last > end:
        last -= timedelta(days=1)  # today's backup has not run yet
    out: list[BackupRef] = []
    for i in range(days - 1, -1, -1):
        at = last - timedelta(days=i)
        out.append(
            BackupRef(
                backup_id=f"{component}-{type_}-{at:%Y%m%d}",
                component=component,
                type=type_,
                finished_at=at,
                verified_at=at + timedelta(minutes=30),
            )
        )
    return out


def simulate(
    history: Sequence[BackupRef],
    policy: RetentionPolicy,
    now: datetime,
) -> dict[str, Any]:
    """Run the policy over ``history`` and say what each GFS tier keeps.

    ``kept``/``removed`` count backups (a backup kept by several tiers counts once). Per
    tier: ``keep`` (its duration), ``kept`` (backups the tier keeps), ``adds`` (those no
    shorter tier keeps), ``oldest`` (the oldest it keeps). ``rules`` counts every reason.
    """
    plan = decide(history, (), policy, now)
    tiers: dict[str, dict[str, Any]] = {}
    seen: set[str] = set()
    gfs_tiers: dict[str, Tier] = {}
    for sp in policy.series.values():
        gfs = sp.rule(GFS)
        if isinstance(gfs, GFS):
            for t in gfs.tiers:
                gfs_tiers.setdefault(t.name, t)
    for name in TIER_ORDER:
        if name not in gfs_tiers:
            continue
        mine = [d for d in plan.kept if name in d.rules]
        ids = {d.backup_id for d in mine}
        oldest = min((d.finished_at for d in mine if d.finished_at), default=None)
        tiers[name] = {
            "keep": gfs_tiers[name].keep.text,
            "kept": len(ids),
            "adds": len(ids - seen),
            "oldest": oldest.isoformat() if oldest else None,
        }
        seen |= ids
    rules: dict[str, int] = defaultdict(int)
    for d in plan.kept:
        for r in d.rules:
            rules[r] += 1
    first = min((b.finished_at for b in history), default=None)
    last = max((b.finished_at for b in history), default=None)
    return {
        "policy": str(policy),
        "history": {
            "backups": len(history),
            "first": first.isoformat() if first else None,
            "last": last.isoformat() if last else None,
        },
        "kept": len(plan.kept),
        "removed": len(plan.removed),
        "tiers": tiers,
        "rules": dict(sorted(rules.items())),
        "notes": list(plan.notes),
    }
