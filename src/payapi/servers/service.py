"""payapi's own services (vault, SAPI, EAPI, the global endpoint) as local processes.

``python -m payapi --config CONFIG serve NAME [--port P]``, detached, with a pid file and
a log, and ready once its health URL answers 200. The lab starts its services this way,
and so does the "local" service control of a region (``payapi.systems.services``), so a
regional failover in the lab starts the DR services exactly as ``lab up`` would.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx

from payapi.servers.procs import (
    ServerError,
    pid_alive,
    port_open,
    read_pid,
    spawn,
    terminate,
    wait_started,
)


@dataclass(frozen=True)
class ServiceProcess:
    name: str  # vault, sapi, eapi, endpoint
    config: Path
    port: int
    health_url: str
    pidfile: Path
    logfile: Path

    @property
    def pid(self) -> int | None:
        pid = read_pid(self.pidfile)
        return pid if pid is not None and pid_alive(pid) else None

    def is_running(self) -> bool:
        return self.pid is not None

    def healthy(self) -> bool:
        try:
            return httpx.get(self.health_url, timeout=2.0).status_code == 200
        except httpx.HTTPError:
            return False

    def start(
        self, *, timeout: float = 60.0, wait: bool = True, env: Mapping[str, str] | None = None
    ) -> None:
        """Start the service (nothing if it runs). ``env``: extra environment variables
        for the process (the A/B benchmark puts another code version first on
        ``PYTHONPATH``); never configuration, which comes from CONFIG only."""
        if self.is_running():
            return
        if port_open(self.port):
            raise ServerError(f"port {self.port} for {self.name} is taken by another process")
        argv = [
            sys.executable,
            "-m",
            "payapi",
            "--config",
            str(self.config),
            "serve",
            self.name,
            "--port",
            str(self.port),
        ]
        # The service reads its configuration from CONFIG only, never from our environment.
        child_env = {k: v for k, v in os.environ.items() if not k.startswith("PAYAPI_")}
        child_env.update({k: v for k, v in (env or {}).items() if not k.startswith("PAYAPI_")})
        pid = spawn(
            argv, log=self.logfile, pidfile=self.pidfile, env=child_env, cwd=self.config.parent
        )
        if wait:
            self.wait_healthy(pid, timeout=timeout)

    def wait_healthy(self, pid: int | None = None, *, timeout: float = 60.0) -> None:
        pid = pid or read_pid(self.pidfile)
        if pid is None:
            raise ServerError(f"{self.name} is not running")
        wait_started(pid, self.healthy, timeout=timeout, what=self.name, log=self.logfile)

    def stop(self) -> None:
        pid = read_pid(self.pidfile)
        if pid is not None:
            terminate(pid)
        self.pidfile.unlink(missing_ok=True)
