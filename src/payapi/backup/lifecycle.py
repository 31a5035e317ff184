"""S3 bucket lifecycle rules that the plan implies (seed: "Backup Lifecycle Rules").

The seed asks for three things of the bucket: older backups move to cheaper storage
classes, Glacier holds the long-term ones, and backups beyond their retention expire.
Deciding is :func:`lifecycle_plan` (pure: the plan in, S3 ``Rules`` out); acting is
:func:`current_rules` / :func:`apply_rules` on an :class:`~payapi.systems.objectstore.s3.S3Store`.

GFS purge (``payapi retention purge``) decides what to delete, backup by backup; the
lifecycle rules are a *safety net* beside it, and must never remove what retention keeps.
So, per series (``<component>/<type>``, the ``payapi-series`` tag every object is stored
with, see :func:`payapi.backup.repository.object_tags`):

- **Expiry** only for series the plan bounds, at the series' longest keep (its own
  retention, or the longest GFS tier for a full backup; for WAL, the longest keep of the
  database's backups, whose WAL ranges retention keeps with them) plus ``margin`` days
  (default 90), counted from the object's creation. Retention counts from its anchor
  (the newest verified backup), never later than creation + keep while backups run; the
  margin covers an anchor that stalls that long. ``indefinite`` series (the
  configuration) and series the plan does not name (retention keeps them: "unmanaged")
  are never expired. Manifests (and verification records, WAL index entries) expire
  first, the data a week later: like a purge, the manifest goes before the data, so a
  backup is never listed with its data gone.
- **Transitions** only for series kept beyond the first tier: to ``STANDARD_IA`` once
  only the backups of the longer tiers remain (first tier + a week, at least 30 days),
  then to ``GLACIER_IR`` once only the monthly and annual ones remain (second tier + a
  week). Glacier *Instant Retrieval*, not Flexible Retrieval or Deep Archive: restore
  and verification read objects directly, and an archived object would need a restore
  request first. Manifests, verification records, WAL index entries and ``config``
  stay in STANDARD: every listing reads every manifest, and they are small (S3 does not
  transition objects under 128 KiB anyway). WAL within the PITR window stays hot.
- **Housekeeping** for the whole repository prefix: unfinished multipart uploads are
  aborted after 3 days (a backup job runs at most a day), noncurrent versions (when the
  bucket is versioned) expire after 30 days, expired delete markers are removed.

Rules are named ``payapi:<prefix>:<series>:<part>``; applying replaces only the rules of
this repository's prefix, and keeps every other rule of the bucket.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from payapi.backup.repository import SERIES_TAG, WAL_SERIES
from payapi.core.plan import Plan, PlanError

if TYPE_CHECKING:
    from payapi.systems.objectstore.s3 import S3Store

__all__ = [
    "DEFAULT_MARGIN_DAYS",
    "LifecyclePlan",
    "RuleDiff",
    "apply_rules",
    "current_rules",
    "diff_rules",
    "lifecycle_plan",
    "rule_prefix",
    "rules_from_plan",
]

DEFAULT_MARGIN_DAYS = 90
TRANSITION_SLACK_DAYS = 7  # purge runs daily: a week of slack before moving survivors
DATA_AFTER_MANIFEST_DAYS = 7  # data expires this long after its manifest
ABORT_MULTIPART_DAYS = 3
NONCURRENT_DAYS = 30
IA_MIN_DAYS = 30  # S3: no transition to STANDARD_IA before 30 days
IA_MIN_STORAGE_DAYS = 30  # ... and 30 days are billed once there
GLACIER_IR_MIN_STORAGE_DAYS = 90

# Components whose backups live in the repository (payapi has an engine for them).
STORED_COMPONENTS = ("database", "vault", "redis", "configuration")
_RULE_KEYS = (
    "ID",
    "Status",
    "Filter",
    "Transitions",
    "Expiration",
    "NoncurrentVersionExpiration",
    "AbortIncompleteMultipartUpload",
)


def _days(delta: timedelta) -> int:
    return math.ceil(delta.total_seconds() / 86400)


def rule_prefix(prefix: str) -> str:
    """The ID prefix of this repository's rules (``prefix`` is the store's key prefix)."""
    return f"payapi:{prefix or '/'}:"


@dataclass(frozen=True)
class SeriesLifecycle:
    """What the plan implies for one stored series (``keep_days`` None: never expires)."""

    series: str
    keep_days: int | None
    transitions: tuple[tuple[int, str], ...]
    why: str


@dataclass
class LifecyclePlan:
    prefix: str
    margin_days: int
    series: list[SeriesLifecycle] = field(default_factory=list)
    rules: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "prefix": self.prefix,
            "margin_days": self.margin_days,
            "series": [
                {
                    "series": s.series,
                    "keep_days": s.keep_days,
                    "expires_after_days": (
                        None if s.keep_days is None else s.keep_days + self.margin_days
                    ),
                    "transitions": [{"days": d, "storage_class": c} for d, c in s.transitions],
                    "why": s.why,
                }
                for s in self.series
            ],
            "rules": self.rules,
            "notes": self.notes,
        }


def _stored(plan: Plan) -> dict[str, str]:
    """Canonical plan component → the label its backups are stored under."""
    out: dict[str, str] = {}
    for engine in STORED_COMPONENTS:
        try:
            out[plan.resolve(engine)] = engine
        except PlanError:
            continue
    return out


def _transitions(keep_days: int | None, tiers: Sequence[int]) -> tuple[tuple[int, str], ...]:
    """IA after the first tier, Glacier IR after the second: only where the objects stay
    long enough there to be worth it (minimum storage durations)."""
    out: list[tuple[int, str]] = []
    if not tiers:
        return ()
    ia = max(IA_MIN_DAYS, tiers[0] + TRANSITION_SLACK_DAYS)
    if keep_days is None or keep_days >= ia + IA_MIN_STORAGE_DAYS:
        out.append((ia, "STANDARD_IA"))
    if len(tiers) > 1:
        gir = max(tiers[1] + TRANSITION_SLACK_DAYS, ia + IA_MIN_STORAGE_DAYS)
        if keep_days is None or keep_days >= gir + GLACIER_IR_MIN_STORAGE_DAYS:
            out.append((gir, "GLACIER_IR"))
    return tuple(out)


def _filter(prefix: str, series: str | None) -> dict[str, Any]:
    if series is None:
        return {"Prefix": prefix}
    return {"And": {"Prefix": prefix, "Tags": [{"Key": SERIES_TAG, "Value": series}]}}


def lifecycle_plan(
    plan: Plan, prefix: str = "", *, margin_days: int = DEFAULT_MARGIN_DAYS
) -> LifecyclePlan:
    """The lifecycle rules for a repository at key ``prefix`` (``""`` or ``"a/b/"``) of
    a bucket, from the plan's backup table and retention tiers. Pure."""
    if margin_days < 0:
        raise ValueError("the expiry margin cannot be negative")
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    out = LifecyclePlan(prefix=prefix, margin_days=margin_days)
    tiers = sorted(_days(t.keep.delta) for t in plan.retention_tiers if not t.keep.forever)
    longest_tier = tiers[-1] if tiers else 0
    stored = _stored(plan)

    def keep_of(row_type: str, retention_days: int | None) -> int | None:
        if retention_days is None:
            return None
        if row_type == "full" and tiers:
            return max(retention_days, longest_tier)
        return retention_days

    by_component: dict[str, list[tuple[str, int | None]]] = {}
    for row in plan.backups:
        label = stored.get(row.component)
        if label is None:
            continue
        days = None if row.retention.forever else _days(row.retention.delta)
        by_component.setdefault(label, []).append((row.type, days))

    for row in plan.backups:
        label = stored.get(row.component)
        if label is None:
            out.notes.append(
                f"{row.component}/{row.type}: not stored in the backup repository "
                f"({row.location}); no rule"
            )
            continue
        series = f"{label}/{row.type}"
        if row.type == "wal":
            if series != WAL_SERIES:
                out.notes.append(f"{series}: the repository's WAL archive is {WAL_SERIES}")
                continue
            others = [keep_of(t, d) for t, d in by_component.get(label, []) if t != "wal"]
            own = None if row.retention.forever else _days(row.retention.delta)
            if own is None or any(k is None for k in others):
                keep: int | None = None
                why = "WAL ranges of backups kept forever: never expires"
            else:
                keep = max([own, *(k for k in others if k is not None)])
                why = (
                    f"PITR {row.retention}; kept backups keep their WAL ranges, "
                    f"so as long as the longest {label} backup ({keep} days)"
                )
        else:
            keep = keep_of(row.type, None if row.retention.forever else _days(row.retention.delta))
            if keep is None:
                why = f"retention {row.retention}: never expires"
            elif row.type == "full" and tiers:
                why = f"window {row.retention} + GFS tiers up to {longest_tier} days"
            else:
                why = f"window {row.retention}"
        out.series.append(SeriesLifecycle(series, keep, _transitions(keep, tiers), why))

    for s in out.series:
        out.rules.extend(_series_rules(prefix, s, margin_days))
    out.rules.append(
        {
            "ID": f"{rule_prefix(prefix)}housekeeping",
            "Status": "Enabled",
            "Filter": _filter(prefix, None),
            "Expiration": {"ExpiredObjectDeleteMarker": True},
            "NoncurrentVersionExpiration": {"NoncurrentDays": NONCURRENT_DAYS},
            "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": ABORT_MULTIPART_DAYS},
        }
    )
    out.notes.append(
        "series the plan does not name (e.g. database/incremental) are kept by retention "
        "('unmanaged') and have no expiry rule"
    )
    return out


def _series_rules(prefix: str, s: SeriesLifecycle, margin: int) -> list[dict[str, Any]]:
    wal = s.series == WAL_SERIES
    big, small = (("wal/",), ("wal-index/",)) if wal else (("data/",), ("manifests/", "verified/"))
    rules: list[dict[str, Any]] = []
    expire = None if s.keep_days is None else s.keep_days + margin
    for sub in big:
        rule: dict[str, Any] = {
            "ID": f"{rule_prefix(prefix)}{s.series}:{sub.rstrip('/')}",
            "Status": "Enabled",
            "Filter": _filter(prefix + sub, s.series),
        }
        if s.transitions:
            rule["Transitions"] = [{"Days": d, "StorageClass": c} for d, c in s.transitions]
        if expire is not None:
            rule["Expiration"] = {"Days": expire + DATA_AFTER_MANIFEST_DAYS}
        if len(rule) > 3:
            rules.append(rule)
    if expire is not None:
        for sub in small:
            rules.append(
                {
                    "ID": f"{rule_prefix(prefix)}{s.series}:{sub.rstrip('/')}",
                    "Status": "Enabled",
                    "Filter": _filter(prefix + sub, s.series),
                    "Expiration": {"Days": expire},
                }
            )
    return rules


def rules_from_plan(
    plan: Plan, prefix: str = "", *, margin_days: int = DEFAULT_MARGIN_DAYS
) -> list[dict[str, Any]]:
    """The S3 ``Rules`` of :func:`lifecycle_plan`."""
    return lifecycle_plan(plan, prefix, margin_days=margin_days).rules


# --------------------------------------------------------------------------- comparing


def normalize(rule: dict[str, Any]) -> dict[str, Any]:
    """The parts of a rule we set, in a canonical form (S3 echoes rules back with extra
    or reshaped fields: an empty ``Prefix``, an ``And`` of one condition...)."""
    out = {k: rule[k] for k in _RULE_KEYS if rule.get(k) not in (None, [], {})}
    flt = out.get("Filter")
    if isinstance(flt, dict) and "And" in flt:
        conds = dict(flt["And"])
        tags = sorted((t["Key"], t["Value"]) for t in conds.get("Tags", []))
        if not conds.get("Prefix") and len(tags) == 1:
            out["Filter"] = {"Tag": {"Key": tags[0][0], "Value": tags[0][1]}}
        elif not tags:
            out["Filter"] = {"Prefix": conds.get("Prefix", "")}
        else:
            out["Filter"] = {
                "And": {
                    "Prefix": conds.get("Prefix", ""),
                    "Tags": [{"Key": k, "Value": v} for k, v in tags],
                }
            }
    elif flt is None and "Prefix" in rule:
        out["Filter"] = {"Prefix": rule["Prefix"]}
    if "Transitions" in out:
        out["Transitions"] = sorted(
            ({"Days": t.get("Days"), "StorageClass": t.get("StorageClass")}
             for t in out["Transitions"]),
            key=lambda t: (t["Days"] or 0, t["StorageClass"] or ""),
        )  # fmt: skip
    return out


@dataclass
class RuleDiff:
    """Current vs. planned rules of one repository prefix (by rule ID)."""

    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    foreign: list[str] = field(default_factory=list)  # other rules of the bucket, kept
    overlapping: list[str] = field(default_factory=list)  # ... of which cover our prefix

    @property
    def in_sync(self) -> bool:
        return not (self.added or self.changed or self.removed)

    def to_json(self) -> dict[str, Any]:
        return {
            "in_sync": self.in_sync,
            "added": self.added,
            "changed": self.changed,
            "removed": self.removed,
            "unchanged": self.unchanged,
            "foreign": self.foreign,
            "overlapping": self.overlapping,
        }


def _rule_prefix_of(rule: dict[str, Any]) -> str | None:
    flt = rule.get("Filter")
    if isinstance(flt, dict):
        if "Prefix" in flt:
            return str(flt["Prefix"])
        if "And" in flt:
            return str(flt["And"].get("Prefix", ""))
        return ""  # a tag or size filter over the whole bucket
    return str(rule.get("Prefix", ""))


def diff_rules(
    current: Iterable[dict[str, Any]], planned: Iterable[dict[str, Any]], prefix: str
) -> RuleDiff:
    mine = rule_prefix(prefix)
    now = {r.get("ID", ""): normalize(r) for r in current}
    want = {r["ID"]: normalize(r) for r in planned}
    diff = RuleDiff()
    for rid, rule in sorted(now.items()):
        if rid.startswith(mine):
            if rid not in want:
                diff.removed.append(rid)
            continue
        diff.foreign.append(rid)
        theirs = _rule_prefix_of(rule)
        if theirs is not None and (prefix.startswith(theirs) or theirs.startswith(prefix)):
            diff.overlapping.append(rid)
    for rid, rule in want.items():
        if rid not in now:
            diff.added.append(rid)
        elif json.dumps(now[rid], sort_keys=True) != json.dumps(rule, sort_keys=True):
            diff.changed.append(rid)
        else:
            diff.unchanged.append(rid)
    return diff


# --------------------------------------------------------------------------- acting


def current_rules(store: S3Store) -> list[dict[str, Any]]:
    """The bucket's lifecycle rules now (all of them; [] when it has none)."""
    import botocore.exceptions as bexc

    try:
        resp = store.client.get_bucket_lifecycle_configuration(Bucket=store.bucket)
    except bexc.ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "NoSuchLifecycleConfiguration":
            return []
        store.raise_error(exc, "read lifecycle of", store.bucket)
    except bexc.BotoCoreError as exc:
        store.raise_error(exc, "read lifecycle of", store.bucket)
    return [dict(r) for r in resp.get("Rules", [])]


def apply_rules(store: S3Store, planned: Sequence[dict[str, Any]]) -> RuleDiff:
    """Replace this repository's rules (by ID prefix) with ``planned``, keep every other
    rule of the bucket; returns what changed. Nothing is written when nothing would."""
    import botocore.exceptions as bexc

    current = current_rules(store)
    diff = diff_rules(current, planned, store.prefix)
    if diff.in_sync:
        return diff
    mine = rule_prefix(store.prefix)
    merged = [r for r in current if not str(r.get("ID", "")).startswith(mine)] + list(planned)
    try:
        if merged:
            config: Any = {"Rules": merged}
            store.client.put_bucket_lifecycle_configuration(
                Bucket=store.bucket, LifecycleConfiguration=config
            )
        else:
            store.client.delete_bucket_lifecycle(Bucket=store.bucket)
    except (bexc.ClientError, bexc.BotoCoreError) as exc:
        store.raise_error(exc, "write lifecycle of", store.bucket)
    return diff
