"""Patroni on etcd, from the pip wheels: a synchronous pair, a planned switchover, and a
standby cluster (the DR region's) that streams from it and is promoted through the REST
API. The kill -9 failovers run on the two-region lab (tests/scenarios)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from payapi.servers.etcd import EtcdServer
from payapi.servers.patroni import PatroniMember, StandbyOf
from payapi.servers.postgres import psql
from payapi.servers.procs import free_port, wait_for
from payapi.systems.patroni import ClusterView, PatroniClient, PatroniError

pytestmark = pytest.mark.timeout(180)


def _roles(client: PatroniClient) -> dict[str, str]:
    try:
        view = client.cluster()
    except PatroniError:
        return {}
    return {m.name: m.role for m in view.members if m.state in ("running", "streaming")}


@pytest.fixture(scope="module")
def cluster(session_dir: Path) -> Iterator[tuple[list[PatroniMember], list[EtcdServer]]]:
    base = session_dir / "patroni"
    etcd = EtcdServer(base / "etcd", free_port(), free_port())
    etcd.start()
    members = [
        PatroniMember(base / f"pg{i}", "payapi-test", f"pg{i}", free_port(), free_port(), etcd.url)
        for i in (1, 2)
    ]
    etcds = [etcd]
    try:
        members[0].start()
        members[0].wait_running()
        members[1].start()
        client = PatroniClient([m.rest_url for m in members])
        wait_for(
            lambda: sorted(_roles(client).values()) == ["leader", "sync_standby"],
            timeout=60,
            what="leader and sync standby",
            interval=0.3,
        )
        yield members, etcds
    finally:
        for m in members:
            m.stop()
        for e in etcds:
            e.stop()


def test_cluster_view_names_the_leader_and_the_sync_standby(cluster) -> None:
    members, _ = cluster
    view: ClusterView = PatroniClient([m.rest_url for m in members]).cluster()
    assert view.leader is not None and view.leader.name == "pg1"
    sync = view.member("pg2")
    assert sync is not None and sync.role == "sync_standby" and sync.lag_bytes is not None
    assert not view.standby_cluster


def test_switchover_to_the_sync_standby_keeps_every_row(cluster) -> None:
    members, _ = cluster
    leader = members[0]
    psql(leader.dsn(), "CREATE TABLE IF NOT EXISTS acked (n int)")
    psql(leader.dsn(), "INSERT INTO acked SELECT generate_series(1, 100)")
    client = PatroniClient([m.rest_url for m in members])
    client.switchover("pg1", "pg2")
    wait_for(
        lambda: _roles(client) == {"pg2": "leader", "pg1": "sync_standby"},
        timeout=60,
        what="pg2 leading",
        interval=0.3,
    )
    assert psql(members[1].dsn(), "SELECT count(*) FROM acked") == [["100"]]
    with pytest.raises(PatroniError, match="switchover refused"):
        client.switchover("pg2", "nobody")


def test_standby_cluster_streams_and_is_promoted(cluster, session_dir: Path) -> None:
    members, etcds = cluster
    writer = members[1]  # the leader since the switchover test; either works (multi-host)
    dr_etcd = EtcdServer(session_dir / "patroni" / "dr-etcd", free_port(), free_port())
    dr_etcd.start()
    etcds.append(dr_etcd)
    hosts = tuple(("127.0.0.1", m.pg_port) for m in members)
    dr = PatroniMember(
        session_dir / "patroni" / "dr1",
        "payapi-test-dr",
        "dr1",
        free_port(),
        free_port(),
        dr_etcd.url,
        standby_of=StandbyOf(hosts),
    )
    members.append(dr)
    dr.start()
    client = PatroniClient([dr.rest_url])
    wait_for(
        lambda: _roles(client) == {"dr1": "standby_leader"},
        timeout=90,
        what="the DR standby leader",
        interval=0.3,
    )
    assert client.cluster().standby_cluster
    psql(writer.dsn(), "INSERT INTO acked VALUES (101)")
    wait_for(
        lambda: psql(dr.dsn(), "SELECT count(*) FROM acked") == [["101"]],
        timeout=30,
        what="the row replayed in DR",
    )
    assert psql(dr.dsn(), "SELECT pg_is_in_recovery()") == [["t"]]
    started = time.monotonic()
    client.promote_standby_cluster()
    wait_for(
        lambda: psql(dr.dsn(), "SELECT pg_is_in_recovery()") == [["f"]],
        timeout=60,
        what="DR promoted",
        interval=0.2,
    )
    assert time.monotonic() - started < 30
    wait_for(lambda: _roles(client) == {"dr1": "leader"}, timeout=30, what="DR leader")
    psql(dr.dsn(), "INSERT INTO acked VALUES (102)")
