"""moto's server on loopback: the lab's Route53 (and S3) API.

The lab's DNS record lives in a Route53 hosted zone that moto serves; production points
the same boto3 code at AWS. moto keeps its state in memory, so the lab re-creates the zone
and the record whenever this server (re)starts.
"""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import httpx

from payapi.servers.procs import ServerError, pid_alive, read_pid, spawn, terminate, wait_started


def moto_executable() -> str:
    candidate = Path(sys.executable).with_name("moto_server")
    if candidate.exists():
        return str(candidate)
    found = shutil.which("moto_server")
    if found is None:
        raise ServerError(
            "the two-region lab needs moto's server for its Route53 API: pip install 'moto[server]'"
        )
    return found


@dataclass(frozen=True)
class MotoServer:
    workdir: Path
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pidfile(self) -> Path:
        return self.workdir / "moto.pid"

    @property
    def pid(self) -> int | None:
        pid = read_pid(self.pidfile)
        return pid if pid is not None and pid_alive(pid) else None

    def healthy(self) -> bool:
        try:
            return httpx.get(f"{self.url}/moto-api/", timeout=1.0).status_code < 500
        except httpx.HTTPError:
            return False

    def start(self, timeout: float = 30.0) -> None:
        if self.pid is not None:
            return
        pid = spawn(
            [moto_executable(), "-H", "127.0.0.1", "-p", str(self.port)],
            log=self.workdir / "moto.log",
            pidfile=self.pidfile,
        )
        log = self.workdir / "moto.log"
        wait_started(pid, self.healthy, timeout=timeout, what="moto's server", log=log)

    def stop(self) -> None:
        pid = read_pid(self.pidfile)
        if pid is not None:
            terminate(pid, timeout=10)
        self.pidfile.unlink(missing_ok=True)
