"""payapi.replication.lag: the synchronous standby, each member's lag, and the DR lag by
each way it can be measured."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from payapi.replication import lag
from payapi.replication.observe import PgObservation, RegionObservation, StreamObservation
from payapi.systems.patroni import ClusterView, MemberView

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def pg(name: str, *, leader: bool, lsn: str = "0/3000000", **kw: object) -> PgObservation:
    fields: dict[str, object] = {
        "reachable": True,
        "observed_at": NOW,
        "in_recovery": not leader,
        "current_lsn": lsn if leader else None,
        "replay_lsn": None if leader else lsn,
    }
    fields.update(kw)
    return PgObservation(name, **fields)  # type: ignore[arg-type]


def stream(name: str, *, sync: str = "sync", replay: float | None = None, behind: int = 0):
    return StreamObservation(name, "streaming", sync, None, None, replay, behind)


def region(
    name: str, role: str, *members: PgObservation, cluster: ClusterView | None = None
) -> RegionObservation:
    return RegionObservation(
        name,
        role,
        NOW,
        postgres_members=tuple(m.member for m in members),
        cluster=cluster,
        postgres=members,
    )


def mv(name: str, role: str, state: str = "streaming", lag_bytes: int | None = 0) -> MemberView:
    return MemberView(name, role, state, "127.0.0.1", 1, "", 1, lag_bytes)


def test_lsn_bytes() -> None:
    assert lag.lsn_bytes("0/10") == 16
    assert lag.lsn_bytes("1/0") == 1 << 32
    assert lag.lsn_bytes(None) is None
    assert lag.lsn_bytes("nonsense") is None
    assert lag.lsn_bytes("zz/1") is None


def test_the_sync_standby_from_patroni_must_be_streaming() -> None:
    cluster = ClusterView("s", (mv("pg1", "leader", "running"), mv("pg2", "sync_standby")), False)
    assert lag.sync_standby(region("p", "primary", cluster=cluster)) == "pg2"
    stopped = ClusterView(
        "s", (mv("pg1", "leader", "running"), mv("pg2", "sync_standby", "stopped")), False
    )
    assert lag.sync_standby(region("p", "primary", cluster=stopped)) is None


def test_the_sync_standby_without_patroni_from_pg_stat_replication() -> None:
    leader = pg("pg1", leader=True, streams=(stream("pg2", sync="async"), stream("pg3")))
    assert lag.sync_standby(region("p", "primary", leader)) == "pg3"
    alone = pg("pg1", leader=True, streams=(stream("pg2", sync="async"),))
    assert lag.sync_standby(region("p", "primary", alone)) is None
    assert lag.sync_standby(region("p", "primary")) is None


def test_member_lags_from_patroni_and_pg_stat_replication() -> None:
    leader = pg("pg1", leader=True, streams=(stream("pg2", replay=0.25, behind=64),))
    cluster = ClusterView(
        "s", (mv("pg1", "leader", "running"), mv("pg2", "sync_standby", lag_bytes=64)), False
    )
    got = lag.member_lags(region("p", "primary", leader, pg("pg2", leader=False), cluster=cluster))
    assert [(m.member, m.role, m.lag_bytes, m.lag_seconds, m.up) for m in got] == [
        ("pg1", "leader", 0, 0.0, True),
        ("pg2", "sync_standby", 64, 0.25, True),
    ]


def test_member_lags_without_patroni_and_an_unreachable_member() -> None:
    leader = pg("pg1", leader=True, streams=(stream("pg2", replay=None, behind=0),))
    down = PgObservation("pg3", reachable=False, error="refused")
    obs = region("p", "primary", leader, pg("pg2", leader=False), down)
    got = {m.member: m for m in lag.member_lags(obs)}
    assert got["pg2"].role == "replica" and got["pg2"].lag_seconds == 0.0
    assert got["pg3"].role == "unknown" and not got["pg3"].up and got["pg3"].lag_bytes is None


def primary_with(**kw: object) -> RegionObservation:
    return region("primary", "primary", pg("pg1", leader=True, lsn="0/3000100", **kw))


def dr_with(**kw: object) -> RegionObservation:
    return region("dr", "standby", pg("dr1", leader=False, lsn="0/3000000", **kw))


def test_dr_caught_up_is_zero() -> None:
    got = lag.dr_lag(
        region("primary", "primary", pg("pg1", leader=True)),
        region("dr", "standby", pg("dr1", leader=False)),
    )
    assert (got.seconds, got.lag_bytes, got.measured_by, got.member) == (
        0.0,
        0,
        lag.CAUGHT_UP,
        "dr1",
    )


def test_a_standby_ahead_of_an_earlier_primary_reading_counts_as_caught_up() -> None:
    got = lag.dr_lag(
        region("primary", "primary", pg("pg1", leader=True, lsn="0/100")),
        region("dr", "standby", pg("dr1", leader=False, lsn="0/200")),
    )
    assert got.seconds == 0.0 and got.lag_bytes == 0


def test_dr_lag_by_commit_timestamps_first() -> None:
    got = lag.dr_lag(
        primary_with(
            last_commit_at=NOW - timedelta(seconds=1),
            streams=(stream("dr1", sync="async", replay=9.0),),
        ),
        dr_with(last_replay_at=NOW - timedelta(seconds=4)),
    )
    assert (got.seconds, got.lag_bytes, got.measured_by) == (3.0, 256, lag.COMMIT_TIMES)


def test_dr_lag_by_replay_lag_then_write_rate_then_since_the_last_replay() -> None:
    by_replay = lag.dr_lag(
        primary_with(streams=(stream("dr1", sync="async", replay=2.5),)), dr_with()
    )
    assert (by_replay.seconds, by_replay.measured_by) == (2.5, lag.REPLAY_LAG)
    by_rate = lag.dr_lag(primary_with(), dr_with(), write_rate_bytes_per_second=128.0)
    assert (by_rate.seconds, by_rate.measured_by) == (2.0, lag.WRITE_RATE)
    since = lag.dr_lag(primary_with(), dr_with(last_replay_at=NOW - timedelta(seconds=30)))
    assert (since.seconds, since.measured_by) == (30.0, lag.SINCE_REPLAY)


def test_dr_lag_unknown_says_why() -> None:
    nothing = lag.dr_lag(primary_with(), dr_with())
    assert not nothing.known and nothing.lag_bytes == 256
    assert "write_rate_bytes_per_second" in (nothing.why or "")
    down = region("dr", "standby", PgObservation("dr1", reachable=False, error="x"))
    assert "no database of region dr answered" in (lag.dr_lag(primary_with(), down).why or "")
    no_writer = region("primary", "primary", pg("pg1", leader=False))
    assert "no writable database" in (lag.dr_lag(no_writer, dr_with()).why or "")
    no_position = region("dr", "standby", pg("dr1", leader=False, replay_lsn=None))
    assert "no replay position" in (lag.dr_lag(primary_with(), no_position).why or "")
