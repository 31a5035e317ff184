"""The seed's "Regional Failure Recovery" as one procedure, and its way back.

``region_failover(to="dr")``: assess (is the serving region really gone?), fence it when
it is not and ``force`` says go on anyway, move the DNS record, promote the DR database
(Patroni's standby cluster becomes a normal one), wait for the DR vault to take writes,
restore the newest Redis snapshot into the DR Redis (:mod:`payapi.recovery.regional_redis`),
start SAPI and EAPI, verify. ``region_failback(to="primary")``: make
the old region a standby of the serving one (Patroni rewinds or re-clones it), wait until
it has everything, pause writes, hand over with zero data loss.

Never two writable regions: a region is fenced (its writers stopped, its cluster demoted
to a standby cluster) before the other is promoted, and a reachable serving region is
never failed away from without ``force``. Every step is a journal step, timed.

Deciding is in :mod:`payapi.recovery.regional_plan` (pure); this module acts.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from payapi.core.errors import PayapiError
from payapi.core.journal import Journal
from payapi.core.settings import RegionSettings, Settings
from payapi.recovery.regional_plan import (
    RefusedError,
    RegionProbe,
    choose_source,
    refuse_failover,
)
from payapi.recovery.regional_redis import seed_redis
from payapi.servers.postgres import psql
from payapi.servers.procs import ToolError
from payapi.systems.patroni import ClusterView, PatroniClient, PatroniError
from payapi.systems.services import ServiceControlError, service_control

Verifier = Callable[[str], tuple[bool, str]]  # region -> (healthy, one line)


class RegionalError(PayapiError):
    """A step of a regional failover or failback failed (exit 1)."""


@dataclass
class Outcome:
    """What ``--json`` prints: ``{"from", "to", "steps", "total_seconds",
    "data_window_seconds"}`` (plus the window's ends and whether it succeeded)."""

    source: str
    target: str
    journal: Journal
    started: float = field(default_factory=time.monotonic)
    ok: bool = False
    error: str | None = None
    data_window_seconds: float | None = None
    window_from: datetime | None = None
    window_to: datetime | None = None
    total_seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "from": self.source,
            "to": self.target,
            "ok": self.ok,
            "error": self.error,
            "steps": [
                {
                    "name": s.name,
                    "status": str(s.status),
                    "seconds": round(s.duration or 0, 3),
                    "detail": s.output,
                }
                for s in self.journal.steps
            ],
            "total_seconds": round(self.total_seconds, 3),
            "data_window_seconds": (
                None if self.data_window_seconds is None else round(self.data_window_seconds, 3)
            ),
            "data_window": {
                "from": self.window_from.isoformat() if self.window_from else None,
                "to": self.window_to.isoformat() if self.window_to else None,
            },
        }


# --------------------------------------------------------------------------- observing


def _patroni(region: RegionSettings) -> PatroniClient:
    urls = [m.patroni_url for m in region.postgres if m.patroni_url]
    return PatroniClient(urls, timeout=2.0)


def _view(region: RegionSettings) -> ClusterView | None:
    try:
        return _patroni(region).cluster()
    except PatroniError:
        return None


def _member_dsns(region: RegionSettings) -> list[str]:
    return [m.url for m in region.postgres]


def _query(dsn: str, sql: str) -> list[list[str]] | None:
    try:
        return psql(dsn, sql, timeout=5)
    except ToolError:
        return None


def _writable_dsn(region: RegionSettings) -> str | None:
    """The DSN of a member of ``region`` that is out of recovery, if any."""
    for dsn in _member_dsns(region):
        rows = _query(dsn, "SELECT pg_is_in_recovery()")
        if rows and rows[0][0] == "f":
            return dsn
    return None


def probe(name: str, region: RegionSettings) -> RegionProbe:
    """Is the region there, and does it write? Never raises."""
    view = _view(region)
    writable = _writable_dsn(region)
    leader = view.leader.name if view and view.leader else None
    return RegionProbe(
        name=name,
        patroni_answers=view is not None,
        leader=leader,
        standby_cluster=bool(view and view.standby_cluster),
        writable=writable is not None,
    )


def _last_replayed_commit(region: RegionSettings) -> datetime | None:
    for dsn in _member_dsns(region):
        rows = _query(dsn, "SELECT pg_last_xact_replay_timestamp()")
        if rows and rows[0][0]:
            return datetime.fromisoformat(rows[0][0])
    return None


def _current_lsn(dsn: str) -> str | None:
    rows = _query(dsn, "SELECT pg_current_wal_lsn()")
    return rows[0][0] if rows else None


def _replayed_lsn(region: RegionSettings) -> list[str]:
    out = []
    for dsn in _member_dsns(region):
        rows = _query(dsn, "SELECT pg_last_wal_replay_lsn()")
        if rows and rows[0][0]:
            out.append(rows[0][0])
    return out


def _lsn(text: str) -> int:
    hi, lo = text.split("/")
    return (int(hi, 16) << 32) + int(lo, 16)


def _wait(check: Callable[[], bool], timeout: float, what: str, interval: float = 0.3) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RegionalError(f"{what}: not done after {timeout:.0f}s")
        time.sleep(interval)


# --------------------------------------------------------------------------- acting


def _scale(region_name: str, region: RegionSettings, replicas: int) -> list[str]:
    done = []
    # EAPI first when stopping (no new requests), SAPI first when starting (EAPI needs it).
    order = ("sapi", "eapi") if replicas > 0 else ("eapi", "sapi")
    for name in order:
        conf = getattr(region, name)
        try:
            service_control(name, conf).scale(replicas)
        except ServiceControlError as exc:
            raise RegionalError(f"{region_name} {name}: {exc}") from None
        done.append(f"{name}={replicas}")
    return done


def _hosts(region: RegionSettings) -> list[tuple[str, int]]:
    from urllib.parse import urlsplit

    hosts = []
    for m in region.postgres:
        parts = urlsplit(m.url)
        hosts.append((parts.hostname or "127.0.0.1", parts.port or 5432))
    return hosts


def _demote(name: str, region: RegionSettings, upstream: RegionSettings) -> str:
    """Make ``region``'s cluster a standby cluster of ``upstream`` and wait until no
    member of it writes (the fence)."""
    try:
        _patroni(region).demote_to_standby_cluster(_hosts(upstream))
    except PatroniError as exc:
        raise RegionalError(f"cannot demote region {name}: {exc}") from None
    _wait(lambda: _writable_dsn(region) is None, 60, f"region {name} read-only")
    return f"region {name} is a standby cluster of the other region (read-only)"


def _promote(name: str, region: RegionSettings) -> str:
    try:
        _patroni(region).promote_standby_cluster()
    except PatroniError as exc:
        raise RegionalError(f"cannot promote region {name}: {exc}") from None
    _wait(lambda: _writable_dsn(region) is not None, 60, f"region {name}'s database writable")
    return "pg_is_in_recovery() = false"


def _vault_active(region: RegionSettings, timeout: float = 60) -> str:
    import httpx

    urls = [m.url for m in region.vault]
    if not urls:
        return "no vault configured in this region"

    def active() -> bool:
        for u in urls:
            try:
                r = httpx.get(u.rstrip("/") + "/health", timeout=2.0)
            except httpx.HTTPError:
                continue
            if r.status_code == 200 and r.json().get("role", "active") == "active":
                return True
        return False

    _wait(active, timeout, "the vault taking writes", interval=0.5)
    return "vault active (takes writes)"


def _dns_configured(settings: Settings) -> bool:
    return bool(settings.topology.dns_zone and settings.topology.dns_record)


def serving_region(settings: Settings) -> str | None:
    """The region the DNS record names now (None without DNS configured)."""
    from payapi.systems.dns import show_record

    if not _dns_configured(settings):
        return None
    return show_record(settings).region


def _point_dns(settings: Settings, target: str) -> str:
    from payapi.systems.dns import point_at, show_record

    if not _dns_configured(settings):
        return "no DNS record configured ([topology] dns_zone, dns_record)"
    change = point_at(settings, target)
    seen = show_record(settings)  # the seed's `dig`
    if seen.region != target:
        raise RegionalError(f"the DNS record still names {seen.target}")
    return f"{seen.record} → {seen.target} (TTL {seen.ttl}s, in sync after {change.seconds:.1f}s)"


def _regions(settings: Settings, to: str) -> tuple[str, RegionSettings, RegionSettings]:
    if to not in settings.regions:
        known = ", ".join(sorted(settings.regions)) or "none configured"
        raise RefusedError(f"unknown region {to!r} (regions: {known})")
    serving = serving_region_or_none(settings)
    writable = probe(to, settings.regions[to]).writable if serving == to else None
    source = choose_source(settings, to, serving, writable)
    return source, settings.regions[source], settings.regions[to]


def serving_region_or_none(settings: Settings) -> str | None:
    try:
        return serving_region(settings)
    except PayapiError:
        return None


# --------------------------------------------------------------------------- procedures


def region_failover(
    settings: Settings,
    *,
    to: str,
    force: bool = False,
    journal: Journal | None = None,
    verify: Verifier | None = None,
) -> Outcome:
    journal = journal or Journal()
    source_name, source, target = _regions(settings, to)
    out = Outcome(source=source_name, target=to, journal=journal)
    step = journal.step
    try:
        assessed_at = datetime.now(UTC)
        seen = probe(source_name, source)
        why = refuse_failover(seen, force=force)
        if why:
            raise RefusedError(why)
        out.window_to = datetime.now(UTC)
        journal.record("assess", assessed_at, seen.describe())
        caught_up = False
        if seen.reachable:
            with step("fence"):
                journal.note(", ".join(_scale(source_name, source, 0)))
                caught_up = _try_catch_up(source, target, journal)
                journal.note(_demote(source_name, source, target))
                out.window_to = datetime.now(UTC)
        # Caught up with writers stopped: nothing to lose. Else what the DR database had
        # replayed last, read before promotion ends recovery.
        out.window_from = out.window_to if caught_up else _last_replayed_commit(target)
        _take_over(settings, to, target, max(1, source.sapi.replicas), journal, verify)
        out.ok = True
    except RefusedError:
        raise
    except PayapiError as exc:
        out.error = str(exc)
    finally:
        out.total_seconds = time.monotonic() - out.started
        if out.window_from and out.window_to:
            out.data_window_seconds = max(0.0, (out.window_to - out.window_from).total_seconds())
    return out


def _try_catch_up(source: RegionSettings, target: RegionSettings, journal: Journal) -> bool:
    """With the fenced region's writers stopped, let the standby region replay everything
    it wrote (a forced failover then loses nothing); a region that cannot is noted."""
    try:
        lsn = _wait_caught_up(source, target, timeout=30.0)
    except PayapiError as exc:
        journal.note(f"not caught up ({exc}): the data window is what it had not replayed")
        return False
    journal.note(f"the standby region has replayed {lsn}: nothing to lose")
    return True


def _take_over(
    settings: Settings,
    to: str,
    target: RegionSettings,
    replicas: int,
    journal: Journal,
    verify: Verifier | None,
) -> None:
    """The steps both directions share once the old region no longer writes: DNS,
    database, vault, Redis, application, verification."""
    step = journal.step
    with step("dns"):
        journal.note(_point_dns(settings, to))
    with step("database"):
        journal.note(_promote(to, target))
    with step("vault"):
        journal.note(_vault_active(target))
    with step("redis"):
        journal.note(seed_redis(target))
    with step("application"):
        journal.note(", ".join(_scale(to, target, replicas)))
    with step("verification"):
        _verify(verify, to, journal)


def _verify(verify: Verifier | None, region: str, journal: Journal) -> None:
    if verify is None:
        journal.note("no verification configured")
        return
    deadline = time.monotonic() + 60
    while True:
        healthy, detail = verify(region)
        if healthy:
            journal.note(detail)
            return
        if time.monotonic() > deadline:
            raise RegionalError(f"health check of {region} failed: {detail}")
        time.sleep(1.0)


def region_failback(
    settings: Settings,
    *,
    to: str,
    journal: Journal | None = None,
    verify: Verifier | None = None,
    sync_timeout: float = 300.0,
) -> Outcome:
    journal = journal or Journal()
    source_name, source, target = _regions(settings, to)
    out = Outcome(source=source_name, target=to, journal=journal)
    step = journal.step
    try:
        assessed_at = datetime.now(UTC)
        seen = probe(to, target)
        if not seen.patroni_answers:
            raise RefusedError(f"region {to} is not running: start it first (it comes back fenced)")
        if seen.writable:
            raise RefusedError(
                f"region {to} writes (leader {seen.leader}): two writable regions; "
                "fence it before a failback"
            )
        if not probe(source_name, source).writable:
            raise RefusedError(f"region {source_name} does not serve: nothing to fail back")
        journal.record("assess", assessed_at, f"{to}: {seen.describe()}; {source_name} serves")
        with step("rebuild"):
            if not seen.standby_cluster:
                journal.note(_demote(to, target, source))
            _wait(lambda: bool(_replayed_lsn(target)), sync_timeout, f"region {to} streaming")
            journal.note(f"region {to} streams from {source_name} (Patroni rewound or re-cloned)")
        with step("sync"):
            _wait_caught_up(source, target, sync_timeout)
        with step("pause writes"):
            journal.note(", ".join(_scale(source_name, source, 0)))
        with step("final sync"):
            lsn = _wait_caught_up(source, target, sync_timeout)
            out.window_from = out.window_to = datetime.now(UTC)
            journal.note(f"region {to} has replayed {lsn}: nothing to lose")
        with step("demote"):
            journal.note(_demote(source_name, source, target))
        _take_over(settings, to, target, max(1, target.sapi.replicas), journal, verify)
        out.ok = True
        out.data_window_seconds = 0.0
    except RefusedError:
        raise
    except PayapiError as exc:
        out.error = str(exc)
    finally:
        out.total_seconds = time.monotonic() - out.started
    return out


def _wait_caught_up(source: RegionSettings, target: RegionSettings, timeout: float) -> str:
    """Wait until ``target`` has replayed the serving region's current WAL position."""
    dsn = _writable_dsn(source)
    if dsn is None:
        raise RegionalError("the serving region has no writable member")
    lsn = _current_lsn(dsn)
    if lsn is None:
        raise RegionalError("cannot read the serving region's WAL position")
    goal = _lsn(lsn)
    _wait(
        lambda: any(_lsn(x) >= goal for x in _replayed_lsn(target)),
        timeout,
        "the standby region catching up",
    )
    return lsn
