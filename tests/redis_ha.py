"""A Redis primary, its replicas and three Sentinels on free loopback ports, for tests.

A context manager, so that any test module (the two-region lab's too) can make it a
fixture of the scope it needs::

    @pytest.fixture
    def ha(tmp_path: Path) -> Iterator[RedisHA]:
        with redis_ha(tmp_path / "ha") as ha:
            yield ha

It returns once every Sentinel knows the replicas and the other Sentinels (they find each
other through hello messages every two seconds), so a failover can win its election from
the first second of the test. Timings are the lab's: down after 2 s, failover timeout 10 s.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import redis as redis_sync

from payapi.core.errors import PayapiError
from payapi.core.settings import RedisSettings
from payapi.servers.procs import free_port
from payapi.servers.redis import RedisServer
from payapi.servers.sentinel import DOWN_AFTER_MS, FAILOVER_TIMEOUT_MS, SentinelServer
from payapi.systems.redis import _as_state, replication_info

MASTER_NAME = "payapi"


@dataclass
class RedisHA:
    primary: RedisServer  # the one started as primary; Sentinel may have promoted another
    replicas: list[RedisServer]
    sentinels: list[SentinelServer]
    master_name: str = MASTER_NAME

    @property
    def sentinel_addrs(self) -> list[str]:
        return [s.addr for s in self.sentinels]

    @property
    def servers(self) -> list[RedisServer]:
        return [self.primary, *self.replicas]

    def server_at(self, port: int) -> RedisServer:
        for s in self.servers:
            if s.port == port:
                return s
        raise KeyError(port)

    def settings(self, db: int = 0, timeout: float = 0.5) -> RedisSettings:
        """``[redis]`` as EAPI would have it: the URL gives the db, Sentinel the server."""
        return RedisSettings(
            url=f"redis://127.0.0.1:{self.primary.port}/{db}",
            socket_timeout_seconds=timeout,
            sentinels=self.sentinel_addrs,
            sentinel_master=self.master_name,
        )

    def sentinel_view(self, sentinel: SentinelServer) -> dict[str, str]:
        conn = redis_sync.Redis(port=sentinel.port, socket_timeout=1, decode_responses=True)
        try:
            raw = conn.execute_command("SENTINEL", "MASTER", self.master_name)  # type: ignore[no-untyped-call]
        finally:
            conn.close()
        return _as_state(raw)

    def wait_ready(self, timeout: float = 15.0) -> None:
        """Until each Sentinel sees every replica and the other Sentinels, and every
        replica's link to the primary is up."""
        want_replicas, want_others = len(self.replicas), len(self.sentinels) - 1
        deadline = time.monotonic() + timeout
        while True:
            try:
                views = [self.sentinel_view(s) for s in self.sentinels]
                ready = all(
                    int(v["num-slaves"]) >= want_replicas
                    and int(v["num-other-sentinels"]) >= want_others
                    for v in views
                ) and all(
                    (m := replication_info(r.url)["master"]) is not None and m["link_up"]
                    for r in self.replicas
                )
            except (redis_sync.RedisError, OSError, PayapiError, KeyError, ValueError):
                ready = False
            if ready:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"Redis HA not ready after {timeout:.0f}s")
            time.sleep(0.1)

    def stop(self) -> None:
        for s in self.sentinels:
            with contextlib.suppress(Exception):
                s.stop()
        for r in self.servers:
            with contextlib.suppress(Exception):
                r.stop()


@contextlib.contextmanager
def redis_ha(
    workdir: Path,
    *,
    replicas: int = 1,
    sentinels: int = 3,
    master_name: str = MASTER_NAME,
    down_after_ms: int = DOWN_AFTER_MS,
    failover_timeout_ms: int = FAILOVER_TIMEOUT_MS,
) -> Iterator[RedisHA]:
    """Start a primary, ``replicas`` replicas and ``sentinels`` Sentinels (quorum: a
    majority) in ``workdir``; stop them all on exit, whatever a test killed."""
    ports: set[int] = set()

    def port() -> int:
        p = free_port()
        while p in ports:
            p = free_port()
        ports.add(p)
        return p

    primary = RedisServer(workdir / "redis-0", port())
    ha = RedisHA(
        primary=primary,
        replicas=[
            RedisServer(workdir / f"redis-{i + 1}", port(), replicaof=("127.0.0.1", primary.port))
            for i in range(replicas)
        ],
        sentinels=[
            SentinelServer(
                workdir / f"sentinel-{i}",
                port(),
                master_name,
                "127.0.0.1",
                primary.port,
                quorum=sentinels // 2 + 1,
                down_after_ms=down_after_ms,
                failover_timeout_ms=failover_timeout_ms,
            )
            for i in range(sentinels)
        ],
        master_name=master_name,
    )
    try:
        for server in ha.servers:
            server.start()
        for sentinel in ha.sentinels:
            sentinel.start()
        ha.wait_ready()
        yield ha
    finally:
        ha.stop()
