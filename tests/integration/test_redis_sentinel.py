"""Redis HA against real servers: a primary, a replica and three Sentinels.

What Sentinel says (who is primary, how far the replica is), a planned switchover that
loses no acknowledged write, and the servers' own pieces (a replica, a Sentinel's config).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis as redis_sync

from payapi.servers.procs import free_port, pid_alive
from payapi.servers.sentinel import SentinelServer
from payapi.systems.redis import (
    RedisUnavailable,
    SentinelError,
    replication_info,
    sentinel_failover,
    sentinel_master,
)
from tests.redis_ha import RedisHA, redis_ha


@pytest.fixture
def ha(tmp_path: Path) -> Iterator[RedisHA]:
    with redis_ha(tmp_path / "ha") as ha:
        yield ha


def test_sentinel_names_the_primary_and_the_replica_offset(ha: RedisHA) -> None:
    assert ha.primary.pid is not None and pid_alive(ha.primary.pid)
    assert sentinel_master(ha.sentinel_addrs, ha.master_name) == ("127.0.0.1", ha.primary.port)
    # A Sentinel that is down, or one that does not know the name, is skipped / None.
    dead = f"127.0.0.1:{free_port()}"
    assert sentinel_master([dead, *ha.sentinel_addrs], ha.master_name) == (
        "127.0.0.1",
        ha.primary.port,
    )
    assert sentinel_master(ha.sentinel_addrs, "no-such-master") is None
    assert sentinel_master([dead], ha.master_name) is None

    conn = redis_sync.Redis(port=ha.primary.port)
    for i in range(100):
        conn.set(f"k{i}", "x" * 100)
    conn.close()
    written = replication_info(ha.primary.url)["offset"]
    replica = ha.replicas[0]
    # A replica acknowledges once a second, and Sentinel's hello messages keep the
    # primary's offset moving: wait until the acknowledged offset covers our writes.
    deadline = time.monotonic() + 5
    while True:
        info = replication_info(ha.primary.url)
        if info["replicas"] and info["replicas"][0]["offset"] >= written:
            break
        assert time.monotonic() < deadline, info
        time.sleep(0.05)
    assert info["role"] == "master" and written > 10_000
    [r] = info["replicas"]
    assert (r["host"], r["port"], r["state"]) == ("127.0.0.1", replica.port, "online")
    assert r["lag_bytes"] == info["offset"] - r["offset"] and r["lag"] <= 1
    mine = replication_info(replica.url)
    assert mine["role"] == "replica" and mine["offset"] >= written
    assert mine["master"] == {"host": "127.0.0.1", "port": ha.primary.port, "link_up": True}


def test_replication_info_of_a_dead_server_is_one_line() -> None:
    with pytest.raises(RedisUnavailable, match=r"127\.0\.0\.1:\d+/0 did not answer"):
        replication_info(f"redis://:secret@127.0.0.1:{free_port()}/0", timeout=0.2)


def test_planned_switchover_loses_no_acknowledged_write(ha: RedisHA) -> None:
    """Writes keep flowing (to whatever Sentinel names primary) during the switchover;
    every write Redis acknowledged is on the new primary afterwards."""
    acked: list[str] = []
    stop = threading.Event()

    def writer() -> None:
        i = 0
        while not stop.is_set():
            addr = sentinel_master(ha.sentinel_addrs, ha.master_name, timeout=0.2)
            if addr is None:
                time.sleep(0.01)
                continue
            conn = redis_sync.Redis(port=addr[1], socket_timeout=0.3, socket_connect_timeout=0.3)
            try:
                while not stop.is_set():
                    conn.set(f"w{i}", "1")
                    acked.append(f"w{i}")  # only once Redis answered OK
                    i += 1
            except redis_sync.RedisError:
                i += 1  # that write is unknown: not counted either way
            finally:
                conn.close()

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        time.sleep(0.3)
        t0 = time.monotonic()
        new = sentinel_failover(ha.sentinel_addrs, ha.master_name, timeout=15)
        took = time.monotonic() - t0
        time.sleep(0.3)
    finally:
        stop.set()
        thread.join(timeout=10)
    assert new == ("127.0.0.1", ha.replicas[0].port)
    assert took < 10, took
    assert sentinel_master(ha.sentinel_addrs, ha.master_name) == new
    assert replication_info(ha.replicas[0].url)["role"] == "master"
    old = replication_info(ha.primary.url)
    assert old["role"] == "replica" and old["master"] is not None
    assert old["master"]["port"] == new[1]
    conn = redis_sync.Redis(port=new[1])
    try:
        present = conn.mget(acked) if acked else []
    finally:
        conn.close()
    missing = [k for k, v in zip(acked, present, strict=True) if v is None]
    assert len(acked) > 50 and missing == []


def test_switchover_of_an_unknown_master_or_without_sentinels_is_refused(ha: RedisHA) -> None:
    with pytest.raises(SentinelError, match="no Sentinel monitors a master named 'nope'"):
        sentinel_failover(ha.sentinel_addrs, "nope")
    with pytest.raises(SentinelError, match="no Sentinel answered"):
        sentinel_failover([f"127.0.0.1:{free_port()}"], ha.master_name, timeout=2)


def test_a_sentinel_keeps_the_config_it_rewrote(tmp_path: Path, ha: RedisHA) -> None:
    """After a restart a Sentinel still knows its peers (its own rewritten file)."""
    s = ha.sentinels[0]
    s.stop()
    assert not s.is_running()
    text = s.conffile.read_text()
    assert "known-sentinel" in text and "known-replica" in text
    s.start()
    assert s.is_running() and s.conffile.read_text().count("known-sentinel") >= 2
    bad = SentinelServer(tmp_path / "bad", free_port(), "payapi", "127.0.0.1", 1, quorum=0)
    with pytest.raises(Exception, match="quorum"):
        bad.start()
