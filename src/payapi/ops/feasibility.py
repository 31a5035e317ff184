"""Objective feasibility: are the plan's RTO and RPO achievable at all with the HA
configuration as it is set?

Pure: plan + settings → one :class:`Feasibility` per component and failure scenario. No
server is asked; the figures are the worst case the *configuration* allows (Patroni's
``ttl``/``loop_wait``/``retry_timeout``/``maximum_lag_on_failover``/``synchronous_mode``,
Sentinel's ``down-after-milliseconds``/``failover-timeout``, the DNS record's TTL, the
global endpoint's refresh, the step estimates of ``[failover]``). ``why`` carries the
arithmetic. The rules, with their reasoning, are in ``docs/feasibility.md``.

A worst case of None means the configuration does not bound it (async replication with
no configured limit, a lag bounded in bytes with no write rate to turn it into seconds):
such a scenario is not feasible against an objective, because nothing shows it is met.
A component without an objective (null in the plan) is feasible for that objective.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from payapi.core.plan import Component, Plan, UnknownComponentError
from payapi.core.settings import Settings
from payapi.servers.endpoint_route import staleness_seconds

__all__ = ["Feasibility", "assess", "exit_code"]


@dataclass(frozen=True, slots=True)
class Feasibility:
    """One component in one failure scenario: objectives, worst cases, verdict, why."""

    component: str
    scenario: str
    rto_objective_seconds: float | None
    rto_worst_case_seconds: float | None
    rpo_objective_seconds: float | None
    rpo_worst_case_seconds: float | None
    feasible: bool
    why: str

    def to_json(self) -> dict[str, Any]:
        return {
            "component": self.component,
            "scenario": self.scenario,
            "rto_objective_seconds": _num(self.rto_objective_seconds),
            "rto_worst_case_seconds": _num(self.rto_worst_case_seconds),
            "rpo_objective_seconds": _num(self.rpo_objective_seconds),
            "rpo_worst_case_seconds": _num(self.rpo_worst_case_seconds),
            "feasible": self.feasible,
            "why": self.why,
        }


def exit_code(results: Sequence[Feasibility]) -> int:
    """0 when every scenario is feasible, 1 otherwise."""
    return 0 if all(r.feasible for r in results) else 1


# --------------------------------------------------------------------------- arithmetic


def _num(value: float | None) -> int | float | None:
    if value is None:
        return None
    return int(value) if float(value).is_integer() else round(value, 3)


def _fmt(value: float) -> str:
    n = _num(value)
    return f"{n}s"


@dataclass(frozen=True, slots=True)
class _Bound:
    """A worst case and how it was computed (None: the configuration does not bound it)."""

    seconds: float | None
    how: str


def _sum(terms: Sequence[tuple[str, float]]) -> _Bound:
    total = sum(v for _, v in terms)
    parts = " + ".join(f"{name} {_fmt(v)}" for name, v in terms)
    return _Bound(total, f"{parts} = {_fmt(total)}")


def _min_bound(bounds: Sequence[tuple[str, float]], unbounded: str) -> _Bound:
    """The smallest of the available bounds (the data survives through whichever is newer)."""
    if not bounds:
        return _Bound(None, unbounded)
    name, best = min(bounds, key=lambda b: b[1])
    if len(bounds) == 1:
        return _Bound(best, f"{name} {_fmt(best)}")
    others = ", ".join(f"{n} {_fmt(v)}" for n, v in bounds)
    return _Bound(best, f"the smaller of {others} = {_fmt(best)} ({name})")


def _objective_seconds(comp: Component, which: str) -> float | None:
    d = comp.rto if which == "rto" else comp.rpo
    if d is None or d.seconds is None:
        return None
    return float(d.seconds)


def _verdict(which: str, objective: float | None, bound: _Bound) -> tuple[bool, str]:
    label = which.upper()
    if objective is None:
        return True, f"{label}: no objective in the plan; worst case {bound.how}"
    if bound.seconds is None:
        return False, f"{label} {_fmt(objective)}: not shown achievable: {bound.how}"
    ok = bound.seconds <= objective
    sign = "<=" if ok else ">"
    word = "achievable" if ok else "NOT achievable"
    return ok, f"{label} {_fmt(objective)}: {word}: {bound.how} {sign} {_fmt(objective)}"


def _judge(comp: Component, scenario: str, rto: _Bound, rpo: _Bound, *notes: str) -> Feasibility:
    rto_obj = _objective_seconds(comp, "rto")
    rpo_obj = _objective_seconds(comp, "rpo")
    rto_ok, rto_why = _verdict("rto", rto_obj, rto)
    rpo_ok, rpo_why = _verdict("rpo", rpo_obj, rpo)
    why = "; ".join([rto_why, rpo_why, *notes])
    return Feasibility(
        component=comp.name,
        scenario=scenario,
        rto_objective_seconds=rto_obj,
        rto_worst_case_seconds=rto.seconds,
        rpo_objective_seconds=rpo_obj,
        rpo_worst_case_seconds=rpo.seconds,
        feasible=rto_ok and rpo_ok,
        why=why,
    )


# --------------------------------------------------------------------------- the bounds


def _patroni_failover_rto(s: Settings) -> _Bound:
    """The leader dies just after renewing its lock: the key expires after ``ttl``; a
    replica notices on its next cycle (``loop_wait``); a DCS call in the race may retry for
    ``retry_timeout``; then the winner promotes."""
    p = s.patroni
    return _sum(
        [
            ("ttl", p.ttl),
            ("loop_wait", p.loop_wait),
            ("retry_timeout", p.retry_timeout),
            ("promote", p.promote_seconds),
        ]
    )


def _patroni_failover_rpo(s: Settings) -> _Bound:
    p = s.patroni
    if p.synchronous_mode:
        return _Bound(0.0, "0s (synchronous_mode: only a synchronous standby is promoted)")
    lag = p.maximum_lag_on_failover
    if p.write_rate_bytes_per_second is None:
        return _Bound(
            None,
            f"asynchronous (synchronous_mode off): a replica up to maximum_lag_on_failover "
            f"{lag} bytes behind may be promoted, a bound in bytes, not time (set [patroni] "
            "write_rate_bytes_per_second, or synchronous_mode)",
        )
    rate = p.write_rate_bytes_per_second
    secs = lag / rate
    return _Bound(
        secs,
        f"maximum_lag_on_failover {lag} B / write rate {_num(rate)} B/s = {_fmt(secs)}",
    )


def _dr_rpo(s: Settings) -> _Bound:
    """The DR standby cluster has the stream and the WAL archive: it loses at most the
    smaller of the two bounds that the configuration states."""
    bounds: list[tuple[str, float]] = []
    if s.failover.dr_lag_seconds is not None:
        bounds.append(("DR replication lag bound", s.failover.dr_lag_seconds))
    if s.patroni.archive_timeout > 0:
        bounds.append(("archive_timeout", float(s.patroni.archive_timeout)))
    return _min_bound(
        bounds,
        "asynchronous replication to the DR region with no stated lag bound "
        "([failover] dr_lag_seconds unset) and archive_timeout 0 (a quiet database may "
        "leave a WAL segment unarchived indefinitely)",
    )


def _regional_prefix(s: Settings) -> list[tuple[str, float]]:
    # The endpoint caches each read for max(TTL, refresh), like a resolver: the two
    # overlap, they do not add up (payapi.servers.endpoint_route).
    ttl, refresh = float(s.topology.dns_ttl_seconds), s.topology.endpoint_refresh_seconds
    return [
        ("detection", s.failover.detection_seconds),
        (f"DNS max(TTL {_fmt(ttl)}, refresh {_fmt(refresh)})", staleness_seconds(ttl, refresh)),
    ]


def _db_promotion(s: Settings) -> list[tuple[str, float]]:
    # The standby cluster's leader sees the configuration change on its next cycle.
    return [("loop_wait", s.patroni.loop_wait), ("promote", s.patroni.promote_seconds)]


def _redis_snapshot_interval(plan: Plan) -> float | None:
    try:
        rows = plan.backups_for("redis")
    except UnknownComponentError:
        return None
    secs = [
        float(r.frequency.seconds)
        for r in rows
        if r.frequency.kind == "interval" and r.frequency.seconds is not None
    ]
    return min(secs) if secs else None


def _redis_rpo(s: Settings, plan: Plan, *, in_region: bool) -> _Bound:
    bounds: list[tuple[str, float]] = []
    snap = _redis_snapshot_interval(plan)
    if snap is not None:
        bounds.append(("snapshot interval", snap))
    if in_region and s.sentinel.min_replicas_to_write >= 1:
        bounds.append(("min-replicas-max-lag", float(s.sentinel.min_replicas_max_lag)))
    why = (
        "asynchronous replication, min-replicas-to-write 0 (a replica's lag is unbounded) "
        "and no snapshot in the plan"
        if in_region
        else "the DR region's Redis is seeded from snapshots, and the plan has none"
    )
    return _min_bound(bounds, why)


_ZERO_STATELESS = _Bound(0.0, "0s (stateless: redeployed from its configuration)")
_ZERO_VAULT = _Bound(0.0, "0s (the vault keeps its state in its database, not the server)")


# --------------------------------------------------------------------------- scenarios


def _database(plan: Plan, s: Settings, comp: Component) -> list[Feasibility]:
    notes = _patroni_rule(s)
    return [
        _judge(
            comp,
            "leader-failure",
            _patroni_failover_rto(s),
            _patroni_failover_rpo(s),
            *notes,
        ),
        _judge(
            comp,
            "regional-failover",
            _sum([*_regional_prefix(s), *_db_promotion(s), *_services(s)]),
            _dr_rpo(s),
        ),
    ]


def _services(s: Settings) -> list[tuple[str, float]]:
    return [("service start-up", s.failover.service_startup_seconds)]


def _vault(plan: Plan, s: Settings, comp: Component) -> list[Feasibility]:
    db_rto = _patroni_failover_rto(s)
    return [
        _judge(
            comp,
            "server-failure",
            _sum([("standby vault takeover", s.failover.vault_takeover_seconds)]),
            _ZERO_VAULT,
        ),
        _judge(
            comp, "database-leader-failure", db_rto, _patroni_failover_rpo(s), *_patroni_rule(s)
        ),
        _judge(
            comp,
            "regional-failover",
            _sum(
                [
                    *_regional_prefix(s),
                    *_db_promotion(s),
                    ("vault promotion", s.failover.vault_takeover_seconds),
                ]
            ),
            _dr_rpo(s),
        ),
    ]


def _redis(plan: Plan, s: Settings, comp: Component) -> list[Feasibility]:
    sen = s.sentinel
    return [
        _judge(
            comp,
            "primary-failure",
            _sum(
                [
                    ("down-after-milliseconds", sen.down_after_milliseconds / 1000),
                    ("failover-timeout", sen.failover_timeout / 1000),
                ]
            ),
            _redis_rpo(s, plan, in_region=True),
        ),
        _judge(
            comp,
            "regional-failover",
            _sum([*_regional_prefix(s), ("snapshot restore", s.failover.redis_restore_seconds)]),
            _redis_rpo(s, plan, in_region=False),
        ),
    ]


def _stateless(plan: Plan, s: Settings, comp: Component) -> list[Feasibility]:
    return [
        _judge(
            comp,
            "regional-failover",
            _sum([*_regional_prefix(s), *_services(s)]),
            _ZERO_STATELESS,
        )
    ]


def _patroni_rule(s: Settings) -> tuple[str, ...]:
    p = s.patroni
    if p.loop_wait + 2 * p.retry_timeout <= p.ttl:
        return ()
    return (
        f"note: Patroni requires loop_wait + 2 x retry_timeout <= ttl, here "
        f"{p.loop_wait} + 2 x {p.retry_timeout} = {p.loop_wait + 2 * p.retry_timeout} > "
        f"{p.ttl}: a short DCS outage may demote a healthy leader",
    )


_Scenarios = Callable[[Plan, Settings, Component], list[Feasibility]]

# Plan component name -> its scenarios, in report order.
_BY_COMPONENT: tuple[tuple[str, _Scenarios], ...] = (
    ("database", _database),
    ("vault", _vault),
    ("redis", _redis),
    ("payment-sapi", _stateless),
    ("payment-eapi", _stateless),
)


def assess(plan: Plan, settings: Settings) -> list[Feasibility]:
    """Every scenario of every HA-protected component the plan has, in a fixed order."""
    out: list[Feasibility] = []
    for name, scenarios in _BY_COMPONENT:
        comp = plan.components.get(name)
        if comp is None:
            continue
        out.extend(scenarios(plan, settings, comp))
    return out
