"""payapi.ops.health: each component's verdict, for an active and for a standby region."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from payapi.ops.health import (
    CHECKS,
    DnsObservation,
    HealthContext,
    HealthObservations,
    ServiceObservation,
    assess,
)
from payapi.replication.observe import PgObservation, RegionObservation, VaultObservation
from payapi.replication.redis_observe import RedisObservation
from payapi.systems.patroni import ClusterView, MemberView
from payapi.systems.redis import ReplicaInfo, ReplicationInfo

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
CTX = HealthContext(rpo_seconds=300.0, maximum_lag_on_failover=1_000_000)


def mv(name: str, role: str, state: str = "streaming", lag: int | None = 0) -> MemberView:
    return MemberView(name, role, state, "127.0.0.1", 1, "", 1, lag)


def pg(name: str, *, writable: bool, lsn: str = "0/3000000", **kw: object) -> PgObservation:
    fields: dict[str, object] = {
        "reachable": True,
        "observed_at": NOW,
        "in_recovery": not writable,
        "current_lsn": lsn if writable else None,
        "replay_lsn": None if writable else lsn,
    }
    fields.update(kw)
    return PgObservation(name, **fields)  # type: ignore[arg-type]


def vault(name: str, role: str | None = "active", healthy: bool = True) -> VaultObservation:
    return VaultObservation(
        name,
        "leader",
        f"http://127.0.0.1/{name}",
        reachable=True,
        healthy=healthy,
        status="ok" if healthy else "unavailable",
        role=role,
        http_status=200 if healthy else 503,
        error=None if healthy else "HTTP 503",
    )


def primary_region(
    members: tuple[MemberView, ...] | None = None,
    postgres: tuple[PgObservation, ...] | None = None,
    vaults: tuple[VaultObservation, ...] = (vault("v1"), vault("v2")),
    **kw: object,
) -> RegionObservation:
    members = members or (mv("pg1", "leader", "running"), mv("pg2", "sync_standby"))
    postgres = postgres or (pg("pg1", writable=True), pg("pg2", writable=False))
    fields: dict[str, object] = {
        "postgres_members": ("pg1", "pg2"),
        "patroni_configured": True,
        "cluster": ClusterView("payapi", members, False),
        "postgres": postgres,
        "vault": vaults,
        "sync_expected": True,
    }
    fields.update(kw)
    return RegionObservation("primary", "primary", NOW, **fields)  # type: ignore[arg-type]


def dr_region(
    *, role: str = "standby_leader", lsn: str = "0/3000000", **kw: object
) -> RegionObservation:
    writable = role == "leader"
    fields: dict[str, object] = {
        "postgres_members": ("dr1",),
        "patroni_configured": True,
        "cluster": ClusterView("payapi-dr", (mv("dr1", role, "running"),), role != "leader"),
        "postgres": (pg("dr1", writable=writable, lsn=lsn),),
        "vault": (vault("v3", role="active" if writable else "standby"),),
    }
    fields.update(kw)
    return RegionObservation("dr", "standby", NOW, **fields)  # type: ignore[arg-type]


def svc(name: str, *, up: bool = True, replicas: int = 1, status: str = "ok") -> ServiceObservation:
    if not up:
        return ServiceObservation(
            name, f"http://127.0.0.1/{name}", replicas, False, error="unreachable"
        )
    return ServiceObservation(name, f"http://127.0.0.1/{name}", replicas, True, 200, status)


def services(**kw: object) -> tuple[ServiceObservation, ...]:
    return (svc("sapi", **kw), svc("eapi", **kw))  # type: ignore[arg-type]


def healthy_primary(**kw: object) -> HealthObservations:
    return HealthObservations("primary", primary_region(**kw), None, services())


def verdict(obs: HealthObservations, name: str) -> tuple[bool, str]:
    c = assess(obs, CTX).components[name]
    return c.healthy, c.detail


def test_a_healthy_primary_has_every_component_healthy_and_the_json_contract() -> None:
    report = assess(healthy_primary(), CTX)
    data = report.to_json()
    assert set(data) == {"environment", "healthy", "components"}
    assert data["healthy"] is True and report.exit_code == 0
    assert list(data["components"]) == list(CHECKS)
    assert all(set(c) == {"healthy", "detail"} for c in data["components"].values())
    assert "synchronous standby pg2 streaming" in data["components"]["replication"]["detail"]


def test_redis_and_dns_unconfigured_do_not_block() -> None:
    report = assess(healthy_primary(), CTX)
    for name in ("redis", "dns"):
        assert report.components[name].healthy
        assert report.components[name].detail == "not configured"


def redis_seen(
    role: str = "master", *, online: int = 1, members: int = 2, error: str | None = None
) -> RedisObservation:
    one: ReplicaInfo = {
        "host": "127.0.0.1",
        "port": 7001,
        "state": "online",
        "offset": 9,
        "lag": 0,
        "lag_bytes": 0,
    }
    replicas = [one][:online]
    info: ReplicationInfo | None = (
        None if error else {"role": role, "offset": 9, "replicas": replicas, "master": None}
    )
    return RedisObservation("primary", NOW, members, 3, "redis-1", info, error)


def test_redis_of_an_active_region_needs_its_primary_and_an_online_replica() -> None:
    def judged(r: RedisObservation, region: str = "primary") -> tuple[bool, str]:
        base = (
            healthy_primary()
            if region == "primary"
            else HealthObservations(
                "dr", dr_region(), primary_region(), services(up=False, replicas=0)
            )
        )
        return verdict(replace(base, redis=r), "redis")

    ok, detail = judged(redis_seen())
    assert ok and "primary redis-1 (Sentinel's choice)" in detail and "0 bytes behind" in detail
    assert judged(redis_seen(online=0)) == (False, "primary redis-1: no replica online")
    assert not judged(redis_seen("replica"))[0]
    assert judged(redis_seen(error="no Sentinel sees a running primary of 'payapi'")) == (
        False,
        "no Sentinel sees a running primary of 'payapi'",
    )
    assert judged(redis_seen(online=0, members=1))[0]  # one Redis: nothing to replicate to
    assert judged(redis_seen(online=0), "dr")[0]  # a standby's Redis only has to answer


def test_dns_must_name_the_active_region_and_not_a_standby() -> None:
    def judged(obs: HealthObservations, region: str | None) -> bool:
        seen = DnsObservation("api.payments.lab.", f"{region}.payments.lab.", region)
        return verdict(replace(obs, dns=seen), "dns")[0]

    standby = HealthObservations("dr", dr_region(), primary_region(), ())
    assert judged(healthy_primary(), "primary") and not judged(healthy_primary(), "dr")
    assert judged(standby, "primary") and not judged(standby, "dr")
    broken = DnsObservation("api.payments.lab.", None, None, "zone payments.lab not found")
    ok, detail = verdict(replace(healthy_primary(), dns=broken), "dns")
    assert not ok and "zone payments.lab not found" in detail


def test_patroni_unreachable_is_unhealthy() -> None:
    obs = healthy_primary(cluster=None, patroni_error="Patroni unreachable (GET /cluster)")
    ok, detail = verdict(obs, "postgres")
    assert not ok and "Patroni unreachable" in detail


def test_a_stopped_member_or_one_missing_from_the_cluster_is_unhealthy() -> None:
    stopped = healthy_primary(
        members=(mv("pg1", "leader", "running"), mv("pg2", "replica", "stopped"))
    )
    assert verdict(stopped, "postgres") == (False, "pg2 is stopped")
    missing = healthy_primary(members=(mv("pg1", "leader", "running"),))
    assert verdict(missing, "postgres") == (False, "pg2 is not in the cluster")


def test_no_leader_or_a_leader_in_recovery_is_unhealthy() -> None:
    no_leader = healthy_primary(members=(mv("pg1", "replica"), mv("pg2", "replica")))
    ok, detail = verdict(no_leader, "postgres")
    assert not ok and "no running leader" in detail
    read_only = healthy_primary(postgres=(pg("pg1", writable=False), pg("pg2", writable=False)))
    ok, detail = verdict(read_only, "postgres")
    assert not ok and "pg1 does not take writes" in detail
    silent = healthy_primary(
        postgres=(PgObservation("pg1", reachable=False, error="refused"), pg("pg2", writable=False))
    )
    assert verdict(silent, "postgres") == (False, "pg1 leads but does not answer (refused)")


def test_without_patroni_each_member_must_answer() -> None:
    region = primary_region(
        patroni_configured=False,
        cluster=None,
        postgres=(pg("pg1", writable=True), PgObservation("pg2", reachable=False, error="x")),
    )
    ok, detail = verdict(HealthObservations("primary", region, None, services()), "postgres")
    assert not ok and "pg2 unreachable (x)" in detail


def test_a_lost_synchronous_standby_is_unhealthy() -> None:
    obs = healthy_primary(members=(mv("pg1", "leader", "running"), mv("pg2", "replica")))
    assert verdict(obs, "replication") == (False, "no synchronous standby is streaming")
    not_expected = healthy_primary(
        members=(mv("pg1", "leader", "running"), mv("pg2", "replica")), sync_expected=False
    )
    assert verdict(not_expected, "replication")[0]


def test_a_replica_beyond_maximum_lag_on_failover_is_unhealthy() -> None:
    obs = healthy_primary(
        members=(mv("pg1", "leader", "running"), mv("pg2", "sync_standby", lag=2_000_000))
    )
    ok, detail = verdict(obs, "replication")
    assert not ok and "pg2 lags 2000000 bytes" in detail


def test_a_standby_region_within_the_rpo_is_healthy_standby() -> None:
    obs = HealthObservations("dr", dr_region(), primary_region(), services(up=False, replicas=0))
    report = assess(obs, CTX)
    assert report.healthy, report.to_json()
    assert "dr1 0.0s behind primary (caught up" in report.components["replication"].detail
    assert report.components["sapi"].detail.startswith("standby: replicas 0, not running")
    assert report.components["vault"].detail == "v3 ok (standby)"


def test_a_standby_region_beyond_the_rpo_or_without_its_primary_is_unhealthy() -> None:
    primary = primary_region(
        postgres=(
            pg("pg1", writable=True, lsn="0/4000000", last_commit_at=NOW),
            pg("pg2", writable=False),
        )
    )
    behind = dr_region(
        postgres=(pg("dr1", writable=False, last_replay_at=NOW - timedelta(minutes=10)),)
    )
    ok, detail = verdict(HealthObservations("dr", behind, primary, ()), "replication")
    assert not ok and "beyond the RPO of 300s" in detail and "commit timestamps" in detail
    ok, detail = verdict(HealthObservations("dr", dr_region(), None, ()), "replication")
    assert not ok and "primary region was not observed" in detail
    lost = primary_region(
        postgres=(PgObservation("pg1", reachable=False), pg("pg2", writable=False))
    )
    ok, detail = verdict(HealthObservations("dr", dr_region(), lost, ()), "replication")
    assert not ok and detail.startswith("DR lag unknown")


def test_a_promoted_dr_region_is_judged_as_active() -> None:
    promoted = dr_region(role="leader")
    obs = HealthObservations("dr", promoted, None, services(up=False, replicas=0))
    assert obs.active
    report = assess(obs, CTX)
    assert report.components["postgres"].healthy
    assert report.components["replication"].detail == "one member: no standby in this region"
    assert not report.components["sapi"].healthy  # active now: it must serve
    running = HealthObservations("dr", promoted, None, services(replicas=0))
    assert assess(running, CTX).healthy


def test_a_standby_leader_in_a_region_that_should_lead_is_named() -> None:
    region = primary_region(members=(mv("pg1", "standby_leader", "running"), mv("pg2", "replica")))
    # Patroni says standby leader: the region is not active, whatever its configured role.
    obs = HealthObservations("primary", region, None, services())
    assert not obs.active
    assert verdict(obs, "postgres")[0]


def test_vault_members_must_be_healthy_and_writable_when_active() -> None:
    down = healthy_primary(vaults=(vault("v1"), vault("v2", healthy=False)))
    assert verdict(down, "vault") == (False, "v2 HTTP 503")
    read_only = healthy_primary(vaults=(vault("v1", role="standby"),))
    assert verdict(read_only, "vault") == (False, "v1 is on a read-only database")
    unreported = healthy_primary(vaults=(vault("v1", role=None),))
    assert verdict(unreported, "vault") == (True, "v1 ok")
    assert verdict(healthy_primary(vaults=()), "vault") == (True, "not configured")


@pytest.mark.parametrize("name", ["sapi", "eapi"])
def test_services_in_the_active_region(name: str) -> None:
    region = primary_region()
    down = HealthObservations("primary", region, None, services(up=False))
    ok, detail = verdict(down, name)
    assert not ok and "unreachable" in detail
    degraded = HealthObservations("primary", region, None, services(status="degraded"))
    assert verdict(degraded, name) == (True, f"http://127.0.0.1/{name}: degraded")
    no_url = HealthObservations(
        "primary", region, None, (ServiceObservation(name, None, 1, False),)
    )
    assert verdict(no_url, name) == (False, "not running: no URL configured")
    unobserved = HealthObservations("primary", region, None, ())
    assert verdict(unobserved, name) == (False, "not observed")


def test_a_warm_standby_region_must_serve_and_a_cold_one_running_is_fine() -> None:
    warm = HealthObservations("dr", dr_region(), primary_region(), services(up=False, replicas=2))
    assert not verdict(warm, "sapi")[0]
    cold_running = HealthObservations("dr", dr_region(), primary_region(), services(replicas=0))
    assert verdict(cold_running, "eapi") == (True, "standby: running although replicas 0 (ok)")


def test_nothing_configured_is_not_configured() -> None:
    region = RegionObservation("primary", "primary", NOW)
    report = assess(HealthObservations("primary", region, None, ()), CTX)
    assert report.components["postgres"].detail == "not configured"
    assert report.components["replication"].detail == "not configured"
