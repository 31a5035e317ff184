"""PostgreSQL members under Patroni, on an etcd DCS, from pip-installed binaries.

Patroni is the failover engine: it bootstraps the cluster, keeps the leader key in etcd,
promotes the synchronous standby when the leader key expires and rewinds or re-clones a
returning old leader. payapi never decides a failover itself; it writes the members'
configuration, starts and stops the processes, and observes them (``payapi.systems.patroni``
speaks the REST API).

A member runs as the unprivileged lab user (PostgreSQL refuses root): Patroni itself is
spawned as that user, so the pid recorded is Patroni's own and ``postmaster.pid`` names
the postmaster (a kill -9 of both is the outage the scenario tests simulate).

:func:`member_config` decides the YAML (a pure function); :class:`PatroniMember` acts.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from payapi.servers.postgres import BASE_SETTINGS, pg_bindir, postmaster_pid
from payapi.servers.procs import (
    ServerError,
    chown_to_lab_user,
    make_reachable,
    pid_alive,
    read_pid,
    spawn,
    terminate,
    wait_for,
)

SUPERUSER = "postgres"
REPLICATION_USER = "replicator"


@dataclass(frozen=True)
class DcsTimings:
    """Patroni's dynamic configuration that bounds a failover (see ops/feasibility)."""

    ttl: int = 20  # Patroni 4 raises anything lower to 20
    loop_wait: int = 2
    retry_timeout: int = 3
    maximum_lag_on_failover: int = 1_048_576
    synchronous_mode: bool = True
    # Not strict: with two members, a strict leader that lost its standby (or a new leader
    # whose old one is dead) would stop writing until another standby connects: tried, it
    # waited for the DR region's standby cluster to connect and become synchronous (50 s).
    synchronous_mode_strict: bool = False


@dataclass(frozen=True)
class StandbyOf:
    """Where a standby cluster streams from: one or more host:port (libpq tries each)."""

    hosts: tuple[tuple[str, int], ...]
    restore_command: str | None = None


def member_config(
    *,
    scope: str,
    name: str,
    workdir: Path,
    pg_port: int,
    rest_port: int,
    etcd_url: str,
    parameters: Mapping[str, str] = {},
    timings: DcsTimings = DcsTimings(),
    standby_of: StandbyOf | None = None,
    bin_dir: Path | None = None,
) -> dict[str, Any]:
    """Patroni's YAML for one member, as a dict.

    The lab trusts loopback (as the one-region lab does): no password is written here.
    Every parameter PostgreSQL needs at all times goes into ``postgresql.parameters``
    (local to the member); those Patroni insists on sharing go into ``bootstrap.dcs``.
    """
    params: dict[str, Any] = {
        k: v.strip("'") for k, v in BASE_SETTINGS.items() if k not in ("listen_addresses",)
    }
    params.update({k: v.strip("'") for k, v in parameters.items()})
    params.pop("port", None)
    dcs: dict[str, Any] = {
        "ttl": timings.ttl,
        "loop_wait": timings.loop_wait,
        "retry_timeout": timings.retry_timeout,
        "maximum_lag_on_failover": timings.maximum_lag_on_failover,
        "synchronous_mode": timings.synchronous_mode,
        "synchronous_mode_strict": timings.synchronous_mode and timings.synchronous_mode_strict,
        "postgresql": {
            "use_pg_rewind": True,
            "use_slots": True,
            "parameters": {
                "wal_level": "replica",
                "hot_standby": "on",
                "max_wal_senders": 10,
                "max_replication_slots": 10,
                "wal_log_hints": "on",
                "max_connections": int(params.pop("max_connections", "200")),
            },
        },
    }
    if standby_of is not None:
        standby: dict[str, Any] = {
            "host": ",".join(h for h, _ in standby_of.hosts),
            "port": ",".join(str(p) for _, p in standby_of.hosts),
            "create_replica_methods": ["basebackup"],
        }
        if standby_of.restore_command:
            standby["restore_command"] = standby_of.restore_command
        dcs["standby_cluster"] = standby
    hba = [
        "host all all 127.0.0.1/32 trust",
        "host replication all 127.0.0.1/32 trust",
    ]
    return {
        "scope": scope,
        "name": name,
        "namespace": "/payapi/",
        "log": {"level": "WARNING"},
        "restapi": {
            "listen": f"127.0.0.1:{rest_port}",
            "connect_address": f"127.0.0.1:{rest_port}",
        },
        "etcd3": {"hosts": [etcd_url.removeprefix("http://")]},
        "bootstrap": {
            "dcs": dcs,
            "initdb": [{"encoding": "UTF8"}, {"auth": "trust"}, "data-checksums"],
            "pg_hba": hba,
        },
        "postgresql": {
            "listen": f"127.0.0.1:{pg_port}",
            "connect_address": f"127.0.0.1:{pg_port}",
            "data_dir": str(workdir / "data"),
            "bin_dir": str(bin_dir or pg_bindir()),
            "pgpass": str(workdir / "pgpass"),
            "authentication": {
                "superuser": {"username": SUPERUSER},
                "replication": {"username": REPLICATION_USER},
                "rewind": {"username": SUPERUSER},
            },
            "parameters": params,
            "pg_hba": hba,
            "basebackup": [{"checkpoint": "fast"}],
        },
        "tags": {"nofailover": False, "noloadbalance": False, "clonefrom": False},
    }


def patroni_executable() -> str:
    candidate = Path(sys.executable).with_name("patroni")
    if candidate.exists():
        return str(candidate)
    found = shutil.which("patroni")
    if found is None:
        raise ServerError("patroni is not installed (pip install 'patroni[etcd3,psycopg3]')")
    return found


@dataclass
class PatroniMember:
    """One PostgreSQL member of a Patroni cluster, in ``workdir``."""

    workdir: Path
    scope: str
    name: str
    pg_port: int
    rest_port: int
    etcd_url: str
    parameters: Mapping[str, str] = field(default_factory=dict)
    timings: DcsTimings = field(default_factory=DcsTimings)
    standby_of: StandbyOf | None = None

    @property
    def datadir(self) -> Path:
        return self.workdir / "data"

    @property
    def config_file(self) -> Path:
        return self.workdir / "patroni.yml"

    @property
    def pidfile(self) -> Path:
        return self.workdir / "patroni.pid"

    @property
    def logfile(self) -> Path:
        return self.workdir / "patroni.log"

    @property
    def rest_url(self) -> str:
        return f"http://127.0.0.1:{self.rest_port}"

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.pg_port}/{database}"

    @property
    def patroni_pid(self) -> int | None:
        pid = read_pid(self.pidfile)
        return pid if pid is not None and pid_alive(pid) else None

    @property
    def postmaster_pid(self) -> int | None:
        pid = postmaster_pid(self.datadir)
        return pid if pid is not None and pid_alive(pid) else None

    def is_running(self) -> bool:
        return self.patroni_pid is not None

    def config(self) -> dict[str, Any]:
        """This member's Patroni YAML, as a dict (:func:`member_config`)."""
        return member_config(
            scope=self.scope,
            name=self.name,
            workdir=self.workdir,
            pg_port=self.pg_port,
            rest_port=self.rest_port,
            etcd_url=self.etcd_url,
            parameters=self.parameters,
            timings=self.timings,
            standby_of=self.standby_of,
        )

    def write_config(self) -> None:
        config = self.config()
        tmp = self.config_file.with_suffix(".tmp")
        tmp.write_text(yaml.safe_dump(config, sort_keys=False))
        tmp.replace(self.config_file)

    def start(self) -> None:
        """Start Patroni (it starts, bootstraps or clones PostgreSQL); returns at once:
        :meth:`wait_ready` waits for the role."""
        if self.is_running():
            return
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.write_config()
        make_reachable(self.workdir)
        make_reachable(Path(sys.executable).absolute())
        make_reachable(Path(sys.executable).resolve())
        chown_to_lab_user(self.workdir)
        # Patroni runs as the lab user; its environment must not point anywhere else.
        env = {
            k: v for k, v in os.environ.items() if not k.startswith(("PAYAPI_", "PG", "PATRONI_"))
        }
        env["HOME"] = str(self.workdir)
        spawn(
            [patroni_executable(), str(self.config_file)],
            log=self.logfile,
            pidfile=self.pidfile,
            env=env,
            cwd=self.workdir,
            unprivileged=True,
        )

    def state(self) -> dict[str, Any] | None:
        """Patroni's own view of this member (``GET /patroni``), None when unreachable."""
        try:
            r = httpx.get(f"{self.rest_url}/patroni", timeout=1.0)
        except httpx.HTTPError:
            return None
        try:
            data: dict[str, Any] = r.json()
        except ValueError:
            return None
        return data

    def wait_running(self, timeout: float = 60.0) -> dict[str, Any]:
        """Wait until PostgreSQL under this member is running (any role)."""
        seen: dict[str, Any] = {}

        def ready() -> bool:
            if not self.is_running():
                raise ServerError(f"patroni {self.name} exited; see {self.logfile}")
            state = self.state()
            if state and state.get("state") == "running":
                seen.update(state)
                return True
            return False

        wait_for(ready, timeout=timeout, what=f"patroni member {self.name}", interval=0.2)
        return seen

    def stop(self, timeout: float = 30.0) -> None:
        """Stop Patroni (it shuts PostgreSQL down first), then whatever is left."""
        pid = read_pid(self.pidfile)
        if pid is not None:
            terminate(pid, timeout=timeout, group=False)
        postmaster = self.postmaster_pid
        if postmaster is not None:
            terminate(postmaster, timeout=timeout, group=False)
        self.pidfile.unlink(missing_ok=True)

    def kill(self) -> None:
        """kill -9 of Patroni and of the postmaster: a crashed server, no clean-up."""
        import signal

        for pid in (self.patroni_pid, self.postmaster_pid):
            if pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
