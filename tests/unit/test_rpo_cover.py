"""The RPO check's other covers (ops.rpo_cover), pure: Redis judged on its replicas'
offsets, the stateless services on their standby deployments."""

from __future__ import annotations

from datetime import timedelta

from payapi.ops.rpo import Observations, Status, assess, statuses_by_name
from payapi.ops.rpo_cover import StandbyServices, redis_cover, stateless_cover
from payapi.replication.redis_observe import RedisObservation
from payapi.systems.redis import ReplicaInfo, ReplicationInfo
from tests.unit.test_rpo import NOW, PLAN, healthy


def replica(lag_bytes: int, lag: int = 0, state: str = "online") -> ReplicaInfo:
    return {
        "host": "127.0.0.1",
        "port": 7001,
        "state": state,
        "offset": 1000 - lag_bytes,
        "lag": lag,
        "lag_bytes": lag_bytes,
    }


def redis(*replicas: ReplicaInfo, members: int = 2, error: str | None = None) -> RedisObservation:
    info: ReplicationInfo | None = (
        None
        if error
        else {"role": "master", "offset": 1000, "replicas": list(replicas), "master": None}
    )
    return RedisObservation("primary", NOW, members, 3, "redis-1", info, error)


BOTH = StandbyServices(("dr",), {"eapi": frozenset({"dr"}), "sapi": frozenset({"dr"})})


def judged(**fields: object) -> dict[str, Status]:
    """Statuses with no backup at all: only the covers can keep a component OK."""
    obs = Observations(observed_at=NOW, **fields)  # type: ignore[arg-type]
    return {n: s.status for n, s in statuses_by_name(assess(PLAN, obs, NOW)).items()}


def test_a_caught_up_replica_loses_nothing() -> None:
    cover = redis_cover(redis(replica(0)), NOW)
    assert cover is not None and cover.exposure == timedelta(0)
    assert "loses nothing" in cover.notes[0]


def test_a_replica_behind_loses_the_seconds_since_its_acknowledgement() -> None:
    cover = redis_cover(redis(replica(0, state="wait_bgsave"), replica(396, lag=1)), NOW)
    assert cover is not None and cover.exposure == timedelta(seconds=2)


def test_an_old_observation_adds_its_age() -> None:
    cover = redis_cover(redis(replica(0)), NOW + timedelta(minutes=3))
    assert cover is not None and cover.exposure == timedelta(minutes=3)


def test_no_online_replica_is_at_risk_and_covers_nothing() -> None:
    cover = redis_cover(redis(replica(0, state="wait_bgsave")), NOW)
    assert cover is not None and cover.exposure is None and cover.at_risk
    single = redis_cover(redis(members=1), NOW)
    assert single is not None and single.exposure is None and not single.at_risk


def test_an_unanswered_redis_is_at_risk() -> None:
    cover = redis_cover(redis(error="Redis at 127.0.0.1:7000 did not answer"), NOW)
    assert cover is not None and cover.exposure is None
    assert "did not answer" in cover.at_risk[0]


def test_stateless_services_are_covered_only_when_every_standby_has_them() -> None:
    assert stateless_cover("eapi", BOTH) is not None
    partial = StandbyServices(("dr", "dr2"), {"eapi": frozenset({"dr"})})
    assert stateless_cover("eapi", partial) is None
    assert stateless_cover("eapi", StandbyServices((), {})) is None
    assert stateless_cover("sapi", None) is None


def test_plan_check_passes_on_replicas_and_standby_deployments_without_backups() -> None:
    before = judged()
    assert before["redis"] is Status.VIOLATION and before["payment-eapi"] is Status.VIOLATION
    after = judged(redis=redis(replica(0)), standby_services=BOTH)
    assert after["redis"] is Status.OK
    assert after["payment-eapi"] is Status.OK and after["payment-sapi"] is Status.OK


def test_a_redis_without_replica_falls_back_on_its_snapshots() -> None:
    fresh = healthy(redis=redis(replica(0, state="wait_bgsave")))
    status = statuses_by_name(assess(PLAN, fresh, NOW))["redis"]
    assert status.status is Status.AT_RISK  # a fresh snapshot, but no replica online
    assert status.exposure == timedelta(minutes=2, seconds=30)  # since the snapshot began
    assert status.to_json()["cover"]["by"] == "redis replication"
