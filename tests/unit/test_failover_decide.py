"""payapi.replication.decide: every way a failover request is judged, on Patroni views."""

from __future__ import annotations

import pytest

from payapi.replication.decide import Refusal, Target, choose_failover_target, lag_limit_bytes
from payapi.systems.patroni import ClusterView, MemberView

LIMIT = 1_048_576


def member(name: str, role: str, state: str = "streaming", lag: int | None = 0) -> MemberView:
    if role == "leader":
        state = "running" if state == "streaming" else state
    return MemberView(name, role, state, "127.0.0.1", 5000, f"http://x/{name}", 1, lag)


def view(*members: MemberView) -> ClusterView:
    return ClusterView("payapi", tuple(members), standby_cluster=False)


PAIR = view(member("pg1", "leader"), member("pg2", "sync_standby", lag=100))
TRIO = view(
    member("pg1", "leader"),
    member("pg2", "sync_standby", lag=500),
    member("pg3", "replica", lag=10),
)


def refused(result: Target | Refusal) -> str:
    assert isinstance(result, Refusal), result
    assert "\n" not in result.reason
    return result.reason


def test_an_empty_cluster_is_refused() -> None:
    assert "no member" in refused(choose_failover_target(view(), switchover=False, max_lag_bytes=1))


def test_a_switchover_needs_a_running_leader() -> None:
    no_leader = view(member("pg2", "sync_standby"))
    reason = refused(choose_failover_target(no_leader, switchover=True, max_lag_bytes=LIMIT))
    assert "no running leader" in reason and "failover" in reason
    stopped = view(member("pg1", "leader", state="stopped"), member("pg2", "sync_standby"))
    assert "no running leader" in refused(
        choose_failover_target(stopped, to="pg2", switchover=True, max_lag_bytes=LIMIT)
    )


def test_a_target_that_does_not_exist_is_refused_with_the_members() -> None:
    reason = refused(choose_failover_target(PAIR, to="pg9", switchover=False, max_lag_bytes=LIMIT))
    assert reason == "no member named 'pg9' in the cluster (members: pg1, pg2)"


def test_the_leader_is_no_target() -> None:
    reason = refused(choose_failover_target(PAIR, to="pg1", switchover=False, max_lag_bytes=LIMIT))
    assert "already leads" in reason


def test_a_stopped_target_is_refused() -> None:
    v = view(member("pg1", "leader"), member("pg2", "replica", state="stopped"))
    reason = refused(choose_failover_target(v, to="pg2", switchover=False, max_lag_bytes=LIMIT))
    assert reason.startswith("pg2 is stopped")


def test_a_switchover_target_must_be_in_sync() -> None:
    reason = refused(choose_failover_target(TRIO, to="pg3", switchover=True, max_lag_bytes=LIMIT))
    assert "pg3 is replica, not a synchronous standby" in reason


def test_an_unknown_lag_is_refused() -> None:
    v = view(member("pg1", "leader"), member("pg2", "replica", lag=None))
    reason = refused(choose_failover_target(v, to="pg2", switchover=False, max_lag_bytes=LIMIT))
    assert "unknown lag" in reason


def test_a_target_lagging_beyond_the_limit_is_refused() -> None:
    v = view(member("pg1", "leader"), member("pg2", "replica", lag=2_000_000))
    reason = refused(choose_failover_target(v, to="pg2", switchover=False, max_lag_bytes=LIMIT))
    assert "pg2 lags 2000000 bytes behind, beyond the limit of 1048576 bytes" in reason


def test_a_switchover_to_the_sync_standby() -> None:
    got = choose_failover_target(PAIR, to="pg2", switchover=True, max_lag_bytes=LIMIT)
    assert got == Target("pg2", "pg1", "sync_standby", 100)


def test_a_failover_to_a_replica_within_the_limit() -> None:
    got = choose_failover_target(TRIO, to="pg3", switchover=False, max_lag_bytes=LIMIT)
    assert got == Target("pg3", "pg1", "replica", 10)


def test_a_failover_without_a_leader_has_no_leader_to_name() -> None:
    v = view(member("pg1", "leader", state="stopped"), member("pg2", "sync_standby", lag=0))
    got = choose_failover_target(v, to="pg2", switchover=False, max_lag_bytes=LIMIT)
    assert got == Target("pg2", None, "sync_standby", 0)


def test_without_a_target_a_lone_leader_has_no_candidate() -> None:
    reason = refused(
        choose_failover_target(view(member("pg1", "leader")), switchover=False, max_lag_bytes=1)
    )
    assert "no member besides the leader" in reason


def test_without_a_target_a_switchover_needs_a_sync_standby() -> None:
    v = view(member("pg1", "leader"), member("pg3", "replica"))
    reason = refused(choose_failover_target(v, switchover=True, max_lag_bytes=LIMIT))
    assert "no synchronous standby to switch over to" in reason


def test_without_a_target_the_sync_standby_comes_first_then_the_least_lag() -> None:
    got = choose_failover_target(TRIO, switchover=False, max_lag_bytes=LIMIT)
    assert isinstance(got, Target) and got.name == "pg2"  # in sync beats a smaller lag
    v = view(
        member("pg1", "leader", state="stopped"),
        member("pg2", "replica", lag=900),
        member("pg3", "replica", lag=10),
        member("pg4", "replica", state="stopped", lag=0),
    )
    got = choose_failover_target(v, switchover=False, max_lag_bytes=LIMIT)
    assert got == Target("pg3", None, "replica", 10)


def test_without_a_target_the_best_candidate_may_still_lag_too_far() -> None:
    v = view(member("pg1", "leader"), member("pg2", "replica", lag=5_000_000))
    assert "beyond the limit" in refused(
        choose_failover_target(v, switchover=False, max_lag_bytes=LIMIT)
    )


@pytest.mark.parametrize(
    ("rpo", "rate", "expected"),
    [(None, None, LIMIT), (300.0, None, LIMIT), (300.0, 1000.0, 300_000), (3600.0, 1e6, LIMIT)],
)
def test_the_lag_limit_is_patronis_or_the_rpo_at_the_write_rate(
    rpo: float | None, rate: float | None, expected: int
) -> None:
    assert lag_limit_bytes(LIMIT, rpo_seconds=rpo, write_rate_bytes_per_second=rate) == expected
