"""One region of the two-region lab: its servers, its ports and its configuration.

A region is etcd, PostgreSQL members under Patroni, Redis (with Sentinels in the primary
region), vault servers, SAPI and EAPI, all on 127.0.0.1 and all owned by one folder,
``DIR/regions/NAME``. :class:`LabRegion` knows where each server lives and how to start,
stop, kill and describe it; :mod:`payapi.lab.regions` starts regions in order and writes the
configuration that ties them together.

The primary region: two Patroni members in ``synchronous_mode`` (a leader and a synchronous
standby), a Redis primary with a replica and three Sentinels, two vault servers on the
region's database (the second one is the standby that takes over with the database), SAPI
and EAPI. The DR region: one Patroni member of a *standby cluster* streaming from the
primary region (with the WAL archive as its fallback), a Redis of its own, one vault on the
standby database (reads only until promotion), and SAPI/EAPI configured but not running.
"""

from __future__ import annotations

import contextlib
import os
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from payapi.servers.etcd import EtcdServer
from payapi.servers.patroni import DcsTimings, PatroniMember, StandbyOf
from payapi.servers.procs import free_port, pid_alive, read_pid
from payapi.servers.redis import RedisServer
from payapi.servers.sentinel import SentinelServer
from payapi.servers.service import ServiceProcess

PRIMARY = "primary"
DR = "dr"
REGIONS = (PRIMARY, DR)
SENTINEL_MASTER = "payapi"
# The lab's Patroni timings: a leader key that expires 20 s after its holder died (Patroni
# 4 raises a smaller ttl to 20), checked every 2 s.
LAB_TIMINGS = DcsTimings(ttl=20, loop_wait=2, retry_timeout=3, synchronous_mode=True)
SENTINEL_DOWN_AFTER_MS = 2000
SENTINEL_FAILOVER_TIMEOUT_MS = 10000


def region_shape(name: str) -> dict[str, int]:
    """How many of each server a region runs (a pure function of its name)."""
    if name == PRIMARY:
        return {"postgres": 2, "redis": 2, "sentinel": 3, "vault": 2}
    return {"postgres": 1, "redis": 1, "sentinel": 0, "vault": 1}


def allocate_ports(name: str, taken: set[int]) -> dict[str, int]:
    """Free loopback ports for every server of region ``name`` (chosen once, kept)."""
    shape = region_shape(name)
    keys = ["etcd", "etcd_peer", "sapi", "eapi"]
    for i in range(1, shape["postgres"] + 1):
        keys += [f"pg{i}", f"pg{i}_rest"]
    keys += [f"redis{i}" for i in range(1, shape["redis"] + 1)]
    keys += [f"sentinel{i}" for i in range(1, shape["sentinel"] + 1)]
    keys += [f"vault{i}" for i in range(1, shape["vault"] + 1)]
    ports: dict[str, int] = {}
    for key in keys:
        port = free_port()
        while port in taken:
            port = free_port()
        taken.add(port)
        ports[key] = port
    return ports


def url(port: int) -> str:
    return f"http://127.0.0.1:{port}"


HEALTH_PATHS = {"vault": "/health", "sapi": "/api/internal-health", "eapi": "/api/health"}


@dataclass
class LabRegion:
    name: str
    dir: Path
    ports: dict[str, int]
    # Where this region's standby cluster streams from (None: it leads; see regions.py).
    standby_of: StandbyOf | None = None
    archive: dict[str, str] | None = None

    @property
    def shape(self) -> dict[str, int]:
        return region_shape(self.name)

    @property
    def config_path(self) -> Path:
        return self.dir / "payapi.toml"

    @property
    def scope(self) -> str:
        return f"payapi-{self.name}"

    # -- servers -------------------------------------------------------------------

    @property
    def etcd(self) -> EtcdServer:
        return EtcdServer(self.dir / "etcd", self.ports["etcd"], self.ports["etcd_peer"])

    @property
    def members(self) -> list[PatroniMember]:
        return [
            PatroniMember(
                workdir=self.dir / f"pg{i}",
                scope=self.scope,
                name=f"{self.name}-pg{i}",
                pg_port=self.ports[f"pg{i}"],
                rest_port=self.ports[f"pg{i}_rest"],
                etcd_url=self.etcd.url,
                parameters=self.archive or {},
                timings=LAB_TIMINGS,
                standby_of=self.standby_of,
            )
            for i in range(1, self.shape["postgres"] + 1)
        ]

    def pg_hosts(self) -> tuple[tuple[str, int], ...]:
        return tuple(("127.0.0.1", m.pg_port) for m in self.members)

    def dsn(self, database: str, attrs: str = "read-write") -> str:
        hosts = ",".join(f"{h}:{p}" for h, p in self.pg_hosts())
        return f"postgresql://postgres@{hosts}/{database}?target_session_attrs={attrs}"

    @property
    def redis_servers(self) -> list[RedisServer]:
        servers = []
        for i in range(1, self.shape["redis"] + 1):
            replicaof = ("127.0.0.1", self.ports["redis1"]) if i > 1 else None
            servers.append(
                RedisServer(
                    workdir=self.dir / f"redis{i}",
                    port=self.ports[f"redis{i}"],
                    replicaof=replicaof,
                )
            )
        return servers

    @property
    def sentinels(self) -> list[SentinelServer]:
        return [
            SentinelServer(
                workdir=self.dir / f"sentinel{i}",
                port=self.ports[f"sentinel{i}"],
                master_name=SENTINEL_MASTER,
                master_host="127.0.0.1",
                master_port=self.ports["redis1"],
                quorum=2,
                down_after_ms=SENTINEL_DOWN_AFTER_MS,
                failover_timeout_ms=SENTINEL_FAILOVER_TIMEOUT_MS,
            )
            for i in range(1, self.shape["sentinel"] + 1)
        ]

    def sentinel_addrs(self) -> list[str]:
        return [
            f"127.0.0.1:{self.ports[f'sentinel{i}']}" for i in range(1, self.shape["sentinel"] + 1)
        ]

    def service(self, name: str, index: int = 1) -> ServiceProcess:
        """``vault`` (index 1 the active server, 2 the standby), ``sapi`` or ``eapi``."""
        key = f"vault{index}" if name == "vault" else name
        port = self.ports[key]
        return ServiceProcess(
            name=name,
            config=self.config_path,
            port=port,
            health_url=url(port) + HEALTH_PATHS[name],
            pidfile=self.dir / "run" / f"{key}.pid",
            logfile=self.dir / "logs" / f"{key}.log",
        )

    def vaults(self) -> list[ServiceProcess]:
        return [self.service("vault", i) for i in range(1, self.shape["vault"] + 1)]

    def all_pids(self) -> list[int]:
        """Every process of the region we know of (servers and services)."""
        pids: list[int | None] = [self.etcd.pid]
        for m in self.members:
            pids += [m.patroni_pid, m.postmaster_pid]
        pids += [r.pid for r in self.redis_servers]
        pids += [s.pid for s in self.sentinels]
        pids += [v.pid for v in self.vaults()]
        pids += [self.service("sapi").pid, self.service("eapi").pid]
        return [p for p in pids if p is not None]

    def kill(self) -> list[int]:
        """kill -9 of every process of the region: a region outage, nothing cleaned up."""
        killed = self.all_pids()
        for pid in killed:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        return killed

    def stopped(self) -> bool:
        return not any(pid_alive(p) for p in self.all_pids())

    # -- description (lab status --json) -------------------------------------------

    def describe(self, roles: dict[str, tuple[str, int | None]]) -> dict[str, Any]:
        """This region in the contract of ``lab status --json``; ``roles`` maps a member's
        name to its Patroni role and lag (observed by the caller)."""
        members = []
        for m in self.members:
            role, lag = roles.get(m.name, ("stopped", None))
            members.append(
                {
                    "name": m.name,
                    "role": role,
                    "pid": m.postmaster_pid,
                    "patroni_pid": m.patroni_pid,
                    "port": m.pg_port,
                    "rest_url": m.rest_url,
                    "lag_bytes": lag,
                }
            )
        redis_members = []
        for r in self.redis_servers:
            redis_members.append({"role": _redis_role(r), "pid": r.pid, "port": r.port})
        eapi, sapi = self.service("eapi"), self.service("sapi")
        return {
            "config": str(self.config_path),
            "postgres": {"members": members, "payment_dsn": self.dsn("payment_db")},
            "redis": {
                "url": self.redis_servers[0].url,
                "members": redis_members,
                "sentinels": [{"pid": s.pid, "port": s.port} for s in self.sentinels],
            },
            "vault": {
                "url": url(self.ports["vault1"]),
                "servers": [{"url": url(v.port), "pid": v.pid} for v in self.vaults()],
            },
            "eapi": url(eapi.port) if eapi.is_running() else None,
            "sapi": url(sapi.port) if sapi.is_running() else None,
            "etcd": {"pid": self.etcd.pid, "url": self.etcd.url},
        }


def _redis_role(server: RedisServer) -> str:
    """``master`` or ``replica`` as the server says (``stopped`` when it does not answer)."""
    if read_pid(server.pidfile) is None or not server.is_running():
        return "stopped"
    from payapi.systems.redis import replication_info

    try:
        return str(replication_info(server.url)["role"])
    except Exception:  # an observation, never an error: the server may be going down
        return "unknown"
