"""Deciding a database failover: which member to promote, or why not (pure functions).

:func:`choose_failover_target` judges Patroni's view of the cluster against what the
operator asked for; :mod:`payapi.replication.failover` acts on its answer. A refusal is
one line that names the members and the figures, never a URL.

Two kinds of request, as Patroni has them:

- a **switchover** is planned: there is a healthy leader to hand over from, and the target
  must be in sync (a streaming synchronous standby), so no acknowledged commit is lost;
- a **failover** works without a healthy leader: the target may be any running replica
  whose lag is within ``max_lag_bytes`` (Patroni's ``maximum_lag_on_failover``, tightened
  to the plan's RPO at the peak write rate when that is configured:
  :func:`lag_limit_bytes`).
"""

from __future__ import annotations

from dataclasses import dataclass

from payapi.core.plan import Plan, PlanError
from payapi.systems.patroni import ClusterView, MemberView

__all__ = [
    "Refusal",
    "Target",
    "choose_failover_target",
    "lag_limit_bytes",
    "replicated_rpo_seconds",
]

UP_STATES = frozenset({"running", "streaming"})
SYNC_ROLES = frozenset({"sync_standby", "quorum_standby"})


@dataclass(frozen=True)
class Target:
    """The member to promote, and the leader it takes over from (None: no leader)."""

    name: str
    leader: str | None
    role: str
    lag_bytes: int | None


@dataclass(frozen=True)
class Refusal:
    """Why the request is refused: one line for the operator."""

    reason: str


def lag_limit_bytes(
    maximum_lag_on_failover: int,
    *,
    rpo_seconds: float | None = None,
    write_rate_bytes_per_second: float | None = None,
) -> int:
    """The most a failover target may lag: Patroni's limit, or less when the plan's RPO at
    the peak write rate allows less (a target further behind would lose more than the RPO)."""
    limit = maximum_lag_on_failover
    if rpo_seconds is not None and write_rate_bytes_per_second:
        limit = min(limit, int(rpo_seconds * write_rate_bytes_per_second))
    return limit


def replicated_rpo_seconds(plan: Plan) -> float | None:
    """The tightest RPO of the data in the region's database: the payment database's and
    the vault's (the vault keeps its secrets there); None when the plan sets neither."""
    found: list[float] = []
    for label in ("database", "vault"):
        try:
            comp = plan.components[plan.resolve(label)]
        except (PlanError, KeyError):
            continue
        if comp.rpo is not None:
            found.append(comp.rpo.delta.total_seconds())
    return min(found) if found else None


def _names(members: tuple[MemberView, ...]) -> str:
    return ", ".join(m.name for m in members) or "none"


def _check(m: MemberView, *, switchover: bool, limit: int) -> Refusal | None:
    """Why ``m`` cannot take over, or None when it can."""
    if m.state not in UP_STATES:
        return Refusal(f"{m.name} is {m.state}: only a running member can take over")
    if switchover and m.role not in SYNC_ROLES:
        return Refusal(
            f"{m.name} is {m.role}, not a synchronous standby: a switchover needs a target "
            "in sync (a failover accepts a replica within the lag limit)"
        )
    if m.lag_bytes is None:
        return Refusal(
            f"{m.name} reports an unknown lag: cannot tell whether it is within "
            f"{limit} bytes of the leader"
        )
    if m.lag_bytes > limit:
        return Refusal(
            f"{m.name} lags {m.lag_bytes} bytes behind, beyond the limit of {limit} bytes "
            "(maximum_lag_on_failover, or the plan's RPO at the peak write rate): promoting "
            "it would lose more than the plan allows"
        )
    return None


def choose_failover_target(
    view: ClusterView,
    *,
    to: str | None = None,
    switchover: bool,
    max_lag_bytes: int,
) -> Target | Refusal:
    """The member to promote (``to``, or the best candidate), or a :class:`Refusal`.

    Refused: an empty cluster; ``to`` is no member of it or already leads; a switchover
    without a running leader to switch from; a target that is not running, not in sync
    (switchover), or lags beyond ``max_lag_bytes`` (or cannot say how far it lags).
    Without ``to`` the candidate is the least-lagging eligible member (a synchronous
    standby first), so that the refusal, if any, is about the best there is.
    """
    if not view.members:
        return Refusal("Patroni reports no member in the cluster")
    leader = view.leader
    running_leader = leader if leader is not None and leader.state in UP_STATES else None
    if switchover and running_leader is None:
        return Refusal(
            "no running leader to switch over from: ask for a failover instead "
            "(without --switchover)"
        )
    if to is not None:
        target = view.member(to)
        if target is None:
            return Refusal(
                f"no member named {to!r} in the cluster (members: {_names(view.members)})"
            )
        if target.leads:
            return Refusal(f"{to} already leads the cluster: nothing to fail over to")
        refusal = _check(target, switchover=switchover, limit=max_lag_bytes)
        if refusal is not None:
            return refusal
        return Target(
            target.name,
            running_leader.name if running_leader else None,
            target.role,
            target.lag_bytes,
        )
    candidates = [m for m in view.members if not m.leads]
    if not candidates:
        return Refusal(f"no member besides the leader (members: {_names(view.members)})")

    def rank(m: MemberView) -> tuple[int, int, int, str]:
        return (
            0 if m.state in UP_STATES else 1,
            0 if m.role in SYNC_ROLES else 1,
            m.lag_bytes if m.lag_bytes is not None else 2**62,
            m.name,
        )

    best = min(candidates, key=rank)
    if switchover and best.role not in SYNC_ROLES:
        return Refusal(
            f"no synchronous standby to switch over to (members: {_names(view.members)}); "
            "name one with --to, or ask for a failover"
        )
    refusal = _check(best, switchover=switchover, limit=max_lag_bytes)
    if refusal is not None:
        return refusal
    return Target(
        best.name, running_leader.name if running_leader else None, best.role, best.lag_bytes
    )
