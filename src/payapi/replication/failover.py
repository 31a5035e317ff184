"""Asking for an in-region failover: the acting half of :mod:`payapi.replication.decide`.

``payapi failover --component db|vault|redis`` comes here. For the database: observe the
cluster through Patroni, decide the target (refused with one line when it does not exist,
is not in sync for a switchover, or lags beyond the limit), ask Patroni for the switchover
or failover, then wait until Patroni names the target as leader and the target itself
accepts writes (``pg_is_in_recovery()`` is false). Each step is timed in a
:class:`~payapi.core.journal.Journal`.

For the vault: the vault servers keep their data in the region's database and follow its
leader (a multi-host DSN with ``target_session_attrs=read-write``), so the standby vault
"takes over with the database": the database fails over as above, then the standby vault
members (all vault members when none is configured as standby) must answer ``/health``
with status ok, on a writable database (``role`` active, where the vault reports it).

For Redis: Sentinel promotes a replica (:mod:`payapi.replication.redis_failover`).
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from payapi.core.errors import PayapiError, UsageError
from payapi.core.journal import Journal, Status
from payapi.core.plan import Plan
from payapi.core.topology import Member, Region, Service
from payapi.replication import redis_failover
from payapi.replication.decide import (
    Refusal,
    choose_failover_target,
    lag_limit_bytes,
    replicated_rpo_seconds,
)
from payapi.replication.observe import DEFAULT_TIMEOUT, observe_postgres, observe_vault
from payapi.replication.redis_failover import PreparedRedis
from payapi.systems.patroni import ClusterView, PatroniClient, PatroniError
from payapi.systems.redis import SentinelError

__all__ = [
    "COMPONENTS",
    "FailoverFailed",
    "FailoverRefused",
    "FailoverResult",
    "Prepared",
    "prepare",
    "run",
]

COMPONENTS = ("db", "vault", "redis")
POLL_SECONDS = 0.2


class FailoverRefused(UsageError):
    """The failover was not attempted: the request or the cluster's state forbids it."""


class FailoverFailed(PayapiError):
    """The failover was attempted and did not complete; ``result`` has the steps so far."""

    def __init__(self, message: str, result: FailoverResult) -> None:
        super().__init__(message)
        self.result = result


@dataclass(frozen=True)
class FailoverResult:
    component: str
    region: str
    from_member: str | None
    to_member: str | None
    seconds: float
    steps: tuple[dict[str, Any], ...]
    vault: tuple[str, ...] = field(default=())  # the vault members serving afterwards

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "component": self.component,
            "region": self.region,
            "from": self.from_member,
            "to": self.to_member,
            "seconds": round(self.seconds, 3),
            "steps": list(self.steps),
        }
        if self.component == "vault":
            out["vault"] = list(self.vault)
        return out


def _steps(journal: Journal) -> tuple[dict[str, Any], ...]:
    return tuple(
        {"name": s.name, "status": str(s.status), "seconds": round(s.duration or 0.0, 3)}
        for s in journal.steps
    )


def _wait(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise PayapiError(f"{what}: not after {timeout:g}s")
        time.sleep(POLL_SECONDS)


def _leader_is(client: PatroniClient, name: str) -> bool:
    try:
        view = client.cluster()
    except (PatroniError, ValueError):
        return False  # the cluster is between leaders: ask again
    leader = view.leader
    return leader is not None and leader.name == name and leader.state == "running"


def _writable(member: Member) -> bool:
    obs = asyncio.run(observe_postgres(member.name, member.url, timeout=DEFAULT_TIMEOUT))
    return obs.writable


def _vault_serves(member: Member) -> bool:
    obs = asyncio.run(observe_vault(member, timeout=DEFAULT_TIMEOUT))
    return obs.healthy and obs.role in (None, "active")


@dataclass(frozen=True)
class Prepared:
    """A failover decided and not yet done: what :func:`run` will ask Patroni for."""

    component: str
    region: Region
    patroni_urls: tuple[str, ...]
    switchover: bool
    leader: str | None
    target: Member
    target_role: str
    timeout: float
    started: float  # time.monotonic() when preparing began (the total counts from there)
    steps: tuple[dict[str, Any], ...]  # observing and deciding, timed


def prepare(
    region: Region,
    component: str,
    plan: Plan,
    *,
    to: str | None = None,
    switchover: bool = False,
    maximum_lag_on_failover: int,
    write_rate_bytes_per_second: float | None = None,
    timeout: float = 60.0,
) -> Prepared | PreparedRedis:
    """Observe the cluster (Sentinel, for Redis) and decide; nothing is changed. Raises
    :class:`FailoverRefused` (one line, exit 2) when the request cannot be carried out,
    :class:`FailoverFailed` when Patroni cannot be asked at all."""
    started = time.monotonic()
    if component not in COMPONENTS:
        raise FailoverRefused(f"unknown component {component!r}; one of {', '.join(COMPONENTS)}")
    if timeout <= 0:
        raise FailoverRefused("--timeout must be a positive number of seconds")
    if component == "redis":
        try:
            return redis_failover.prepare(
                region, to=to, switchover=switchover, timeout=timeout, refused=FailoverRefused
            )
        except SentinelError as exc:
            failed = FailoverResult(component, region.name, None, None, 0.0, ())
            raise FailoverFailed(f"failover failed (ask Sentinel): {exc}", failed) from None
    if component == "vault" and not region.members_of(Service.VAULT):
        # Refused before the database moves: a vault failover without a vault to wait for
        # would be a database failover under another name.
        raise FailoverRefused(f"region {region.name} has no vault member configured")
    members = region.members_of(Service.POSTGRES)
    urls = tuple(m.patroni_url for m in members if m.patroni_url)
    if not urls:
        raise FailoverRefused(
            f"region {region.name}: no postgres member has a patroni_url, so there is no "
            "Patroni to ask for a failover"
        )
    limit = lag_limit_bytes(
        maximum_lag_on_failover,
        rpo_seconds=replicated_rpo_seconds(plan),
        write_rate_bytes_per_second=write_rate_bytes_per_second,
    )
    j = Journal.silent()
    try:
        with j.step("observe the cluster"):
            view: ClusterView = PatroniClient(urls).cluster()
    except (PatroniError, ValueError) as exc:
        shown = exc if isinstance(exc, PatroniError) else "an answer that is not JSON"
        result = FailoverResult(
            component, region.name, None, None, time.monotonic() - started, _steps(j)
        )
        raise FailoverFailed(f"failover failed (observe the cluster): {shown}", result) from None
    with j.step("choose the target"):
        decision = choose_failover_target(view, to=to, switchover=switchover, max_lag_bytes=limit)
        if isinstance(decision, Refusal):
            raise FailoverRefused(f"failover refused: {decision.reason}")
        target = next((m for m in members if m.name == decision.name), None)
        if target is None:
            raise FailoverRefused(
                f"failover refused: {decision.name} is not among "
                f"[regions.{region.name}.postgres] (its DSN is needed to check that it "
                "accepts writes)"
            )
        j.note(f"{decision.name} ({decision.role})")
    return Prepared(
        component,
        region,
        urls,
        switchover,
        decision.leader,
        target,
        decision.role,
        timeout,
        started,
        _steps(j),
    )


def _database(p: Prepared, journal: Journal) -> None:
    client = PatroniClient(p.patroni_urls)
    name = p.target.name
    kind = "switchover" if p.switchover else "failover"
    with journal.step(f"{kind} {p.leader or '(no leader)'} -> {name}"):
        if p.switchover:
            assert p.leader is not None  # decide refuses a switchover without one
            client.switchover(p.leader, name)
        else:
            client.failover(name)
    with journal.step(f"{name} leads (Patroni)"):
        _wait(lambda: _leader_is(client, name), p.timeout, f"{name} leading")
    with journal.step(f"{name} accepts writes"):
        _wait(lambda: _writable(p.target), p.timeout, f"{name} accepting writes")


def _vault(p: Prepared, journal: Journal) -> tuple[str, ...]:
    vaults = p.region.members_of(Service.VAULT)
    standby = tuple(m for m in vaults if m.role.value == "standby") or vaults
    for m in standby:
        with journal.step(f"vault {m.name} serves on the new leader"):
            _wait(functools.partial(_vault_serves, m), p.timeout, f"vault {m.name} serving")
    return tuple(m.name for m in standby)


def _run_redis(p: PreparedRedis, j: Journal) -> FailoverResult:
    def result(old: str | None, new: str | None) -> FailoverResult:
        seconds = time.monotonic() - p.started
        return FailoverResult("redis", p.region.name, old, new, seconds, p.steps + _steps(j))

    try:
        old, new = redis_failover.run(p, j)
    except PayapiError as exc:
        old = redis_failover.member_at(p.region, p.old)
        raise FailoverFailed(f"failover failed (Sentinel): {exc}", result(old, None)) from None
    return result(old, new)


def run(prepared: Prepared | PreparedRedis, journal: Journal | None = None) -> FailoverResult:
    """Carry out a prepared failover, each step timed in ``journal``. Raises
    :class:`FailoverFailed` (exit 1, with the steps so far) when it does not complete."""
    j = journal or Journal.silent()
    if isinstance(prepared, PreparedRedis):
        return _run_redis(prepared, j)
    p = prepared
    vault: tuple[str, ...] = ()

    def result() -> FailoverResult:
        return FailoverResult(
            p.component,
            p.region.name,
            p.leader,
            p.target.name,
            time.monotonic() - p.started,
            p.steps + _steps(j),
            vault,
        )

    try:
        _database(p, j)
        if p.component == "vault":
            vault = _vault(p, j)
    except PayapiError as exc:
        failed = next((s.name for s in reversed(j.steps) if s.status is Status.FAILED), None)
        where = f" ({failed})" if failed else ""
        raise FailoverFailed(f"failover failed{where}: {exc}", result()) from None
    return result()
