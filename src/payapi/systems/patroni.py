"""Patroni's REST API: what a PostgreSQL cluster looks like, and the few requests payapi
makes of it (switchover, failover, promoting or demoting a standby cluster).

The same code drives the lab's members and a production deployment: only the URLs differ
(``[[regions.NAME.postgres]] patroni_url``). Every call tries the members in turn, since
any member answers for the whole cluster; an error names the request, never a URL's
credentials.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from payapi.core.errors import PayapiError
from payapi.core.redaction import redact_url

TIMEOUT = 3.0
ACTION_TIMEOUT = 60.0  # a switchover answers once it is done


class PatroniError(PayapiError):
    """Patroni could not be reached or refused a request; one line for the operator."""


@dataclass(frozen=True)
class MemberView:
    """One member as Patroni reports it (``GET /cluster``)."""

    name: str
    role: str  # leader, sync_standby, replica, standby_leader, ...
    state: str  # running, streaming, starting, stopped, ...
    host: str
    port: int
    api_url: str
    timeline: int | None
    lag_bytes: int | None  # None: unknown (Patroni says "unknown" or omits it)

    @property
    def leads(self) -> bool:
        return self.role in ("leader", "standby_leader")


@dataclass(frozen=True)
class ClusterView:
    scope: str
    members: tuple[MemberView, ...]
    standby_cluster: bool  # this cluster streams from another (a DR region)

    @property
    def leader(self) -> MemberView | None:
        return next((m for m in self.members if m.leads), None)

    def member(self, name: str) -> MemberView | None:
        return next((m for m in self.members if m.name == name), None)


def _lag(value: Any) -> int | None:
    return int(value) if isinstance(value, int | float) else None


def parse_cluster(data: dict[str, Any]) -> ClusterView:
    """A ``GET /cluster`` answer as a :class:`ClusterView` (a pure function)."""
    members = []
    for m in data.get("members", []):
        role = str(m.get("role", "unknown"))
        members.append(
            MemberView(
                name=str(m.get("name", "")),
                role=role,
                state=str(m.get("state", "unknown")),
                host=str(m.get("host", "")),
                port=int(m.get("port", 0) or 0),
                api_url=str(m.get("api_url", "")),
                timeline=m.get("timeline") if isinstance(m.get("timeline"), int) else None,
                lag_bytes=0 if role in ("leader", "standby_leader") else _lag(m.get("lag")),
            )
        )
    standby = any(m.role == "standby_leader" for m in members)
    return ClusterView(
        scope=str(data.get("scope", "")), members=tuple(members), standby_cluster=standby
    )


class PatroniClient:
    """A cluster's REST API through any of its members' URLs."""

    def __init__(self, urls: Sequence[str], *, timeout: float = TIMEOUT) -> None:
        if not urls:
            raise PatroniError("no Patroni REST API URL is configured")
        self.urls = [u.rstrip("/") for u in urls]
        self.timeout = timeout

    def _request(
        self, method: str, path: str, *, once: bool = False, **kwargs: Any
    ) -> httpx.Response:
        """Ask the members in turn until one answers. A switchover or failover is sent
        ``once``: Patroni answers it only when the new leader has taken over (it polls
        for up to half a minute), and after a timeout the request may well have been
        carried out, so asking another member would ask for a second one."""
        last = "no member answered"
        for url in self.urls:
            try:
                timeout = ACTION_TIMEOUT if once else self.timeout
                return httpx.request(method, url + path, timeout=timeout, **kwargs)
            except httpx.HTTPError as exc:
                last = f"{redact_url(url, keep_user=False)}: {type(exc).__name__}"
                if once and not isinstance(exc, httpx.ConnectError):
                    raise PatroniError(
                        f"{method} {path}: no answer from Patroni ({type(exc).__name__}); "
                        "check the cluster before asking again"
                    ) from None
        raise PatroniError(f"Patroni unreachable ({method} {path}): {last}")

    def cluster(self) -> ClusterView:
        r = self._request("GET", "/cluster")
        if r.status_code != 200:
            raise PatroniError(f"GET /cluster answered {r.status_code}")
        return parse_cluster(r.json())

    def config(self) -> dict[str, Any]:
        r = self._request("GET", "/config")
        if r.status_code != 200:
            raise PatroniError(f"GET /config answered {r.status_code}")
        data: dict[str, Any] = r.json()
        return data

    def patch_config(self, changes: dict[str, Any]) -> None:
        r = self._request("PATCH", "/config", json=changes)
        if r.status_code != 200:
            raise PatroniError(f"PATCH /config answered {r.status_code}: {_why(r)}")

    def switchover(self, leader: str, candidate: str | None) -> None:
        """A planned switchover (Patroni refuses a candidate that is not healthy)."""
        body: dict[str, Any] = {"leader": leader}
        if candidate:
            body["candidate"] = candidate
        r = self._request("POST", "/switchover", json=body, once=True)
        if r.status_code != 200:
            raise PatroniError(f"switchover refused by Patroni: {_why(r)}")

    def failover(self, candidate: str) -> None:
        """A failover to ``candidate`` (works without a healthy leader)."""
        r = self._request("POST", "/failover", json={"candidate": candidate}, once=True)
        if r.status_code != 200:
            raise PatroniError(f"failover refused by Patroni: {_why(r)}")

    def promote_standby_cluster(self) -> None:
        """Turn a standby cluster into a normal one: its standby leader promotes."""
        self.patch_config({"standby_cluster": None})

    def demote_to_standby_cluster(self, hosts: Sequence[tuple[str, int]]) -> None:
        """Turn this cluster into a standby cluster streaming from ``hosts`` (failback)."""
        self.patch_config(
            {
                "standby_cluster": {
                    "host": ",".join(h for h, _ in hosts),
                    "port": ",".join(str(p) for _, p in hosts),
                    "create_replica_methods": ["basebackup"],
                }
            }
        )


def _why(r: httpx.Response) -> str:
    text = r.text.strip().splitlines()
    return (text[0] if text else str(r.status_code))[:200]
