"""Observing a region's replication: what Patroni, PostgreSQL and the vault say right now,
read into frozen values. It decides nothing, and it never raises for the world's sake: an
unreachable member, a Patroni that does not answer, a vault that says 503 are all
observations (``reachable=False`` and why), which :mod:`payapi.replication.lag`,
:mod:`payapi.replication.decide` and :mod:`payapi.ops.health` judge.

Per region (:class:`payapi.core.topology.Region`):

- Patroni's ``GET /cluster`` through the members' ``patroni_url`` (any member answers for
  the cluster): members, roles, states, lag in bytes;
- each PostgreSQL member's own view through its DSN: ``pg_is_in_recovery()``, its WAL
  positions, ``pg_last_xact_replay_timestamp()`` on a standby, the last commit time on a
  leader (when ``track_commit_timestamp`` is on), ``pg_stat_wal_receiver``, and on a
  server with WAL senders ``pg_stat_replication`` (write/flush/replay lag per standby);
- each vault member's ``GET /health`` (its ``status`` and, where the vault reports it, its
  ``role``: ``active`` on a writable database, ``standby`` on a standby).

Times read from a server are shifted onto the local clock by the difference between its
``now()`` and ours, so that they compare with each other and with the caller's clock.
Error texts are the exception's class and message: a driver's message names the server
and the user, never a password (DSNs are not echoed).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx

from payapi.core.topology import Member, Region, Service, Topology
from payapi.systems.patroni import ClusterView, PatroniClient, PatroniError

__all__ = [
    "DEFAULT_TIMEOUT",
    "PgObservation",
    "RegionObservation",
    "StreamObservation",
    "VaultObservation",
    "observe_patroni",
    "observe_postgres",
    "observe_region",
    "observe_regions",
    "observe_vault",
]

DEFAULT_TIMEOUT = 3.0  # seconds per server: an observation must not hang a health check

Clock = Callable[[], datetime]


def _utcnow() -> datetime:
    return datetime.now(UTC)


def one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"[:300]


@dataclass(frozen=True)
class StreamObservation:
    """One WAL sender of a server (a row of ``pg_stat_replication``)."""

    application_name: str
    state: str | None  # streaming, catchup, startup, backup, stopping
    sync_state: str | None  # sync, quorum, potential, async
    write_lag_seconds: float | None
    flush_lag_seconds: float | None
    replay_lag_seconds: float | None  # None also when caught up and idle (PostgreSQL's way)
    lag_bytes: int | None  # from this server's position to what the standby replayed

    @property
    def synchronous(self) -> bool:
        return self.sync_state in ("sync", "quorum")


@dataclass(frozen=True)
class PgObservation:
    """One PostgreSQL member as it sees itself."""

    member: str
    reachable: bool
    error: str | None = None
    observed_at: datetime | None = None
    in_recovery: bool | None = None
    current_lsn: str | None = None  # a writable server's pg_current_wal_lsn()
    receive_lsn: str | None = None  # a standby's pg_last_wal_receive_lsn()
    replay_lsn: str | None = None  # a standby's pg_last_wal_replay_lsn()
    last_replay_at: datetime | None = None  # a standby's last replayed commit (local clock)
    last_commit_at: datetime | None = None  # a leader's last commit, if tracked (local clock)
    receiver_status: str | None = None  # pg_stat_wal_receiver.status (streaming, ...)
    streams: tuple[StreamObservation, ...] = ()

    @property
    def writable(self) -> bool:
        return self.reachable and self.in_recovery is False

    @property
    def position(self) -> str | None:
        """How far this server's data goes: the WAL written (leader) or replayed (standby)."""
        return self.current_lsn if self.in_recovery is False else self.replay_lsn

    def stream(self, application_name: str) -> StreamObservation | None:
        return next((s for s in self.streams if s.application_name == application_name), None)


@dataclass(frozen=True)
class VaultObservation:
    """One vault server's ``GET /health``."""

    member: str
    configured_role: str
    url: str  # redacted
    reachable: bool
    healthy: bool
    status: str | None = None
    role: str | None = None  # active / standby, where the vault reports it
    http_status: int | None = None
    error: str | None = None


@dataclass(frozen=True)
class RegionObservation:
    """Everything observed in one region at ``observed_at``."""

    region: str
    configured_role: str  # primary / standby (the configuration's, not the world's)
    observed_at: datetime
    postgres_members: tuple[str, ...] = ()  # the configured names, in order
    patroni_configured: bool = False
    cluster: ClusterView | None = None
    patroni_error: str | None = None
    postgres: tuple[PgObservation, ...] = ()
    vault: tuple[VaultObservation, ...] = ()
    sync_expected: bool = False  # a member is configured as sync_standby

    def pg(self, name: str) -> PgObservation | None:
        return next((p for p in self.postgres if p.member == name), None)

    @property
    def leader(self) -> PgObservation | None:
        """The member that leads the region's database: Patroni's leader (or standby
        leader) when Patroni answered, else the one reachable member not in recovery,
        else (a standby region without Patroni) the first reachable one."""
        if self.cluster is not None and self.cluster.leader is not None:
            found = self.pg(self.cluster.leader.name)
            if found is not None:
                return found
        writable = [p for p in self.postgres if p.writable]
        if writable:
            return writable[0]
        if self.configured_role != "primary":
            return next((p for p in self.postgres if p.reachable), None)
        return None

    @property
    def promoted(self) -> bool | None:
        """Whether the region's database takes writes (a leader, not a standby leader);
        None when nothing could be observed."""
        if self.cluster is not None and self.cluster.leader is not None:
            return self.cluster.leader.role == "leader"
        leader = self.leader
        return None if leader is None else leader.in_recovery is False


# --------------------------------------------------------------------------- PostgreSQL

_STATE_SQL = """
SELECT now() AS db_now,
       pg_is_in_recovery() AS in_recovery,
       CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_current_wal_lsn()::text END
           AS current_lsn,
       pg_last_wal_receive_lsn()::text AS receive_lsn,
       pg_last_wal_replay_lsn()::text AS replay_lsn,
       pg_last_xact_replay_timestamp() AS last_replay_at,
       current_setting('track_commit_timestamp') = 'on' AS track_commit
"""
_COMMIT_SQL = "SELECT timestamp FROM pg_last_committed_xact()"
_RECEIVER_SQL = "SELECT status FROM pg_stat_wal_receiver"
_STREAMS_SQL = """
SELECT application_name, state, sync_state,
       EXTRACT(EPOCH FROM write_lag)::float8 AS write_lag,
       EXTRACT(EPOCH FROM flush_lag)::float8 AS flush_lag,
       EXTRACT(EPOCH FROM replay_lag)::float8 AS replay_lag,
       pg_wal_lsn_diff(
           CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn()
                ELSE pg_current_wal_lsn() END,
           replay_lsn)::bigint AS lag_bytes
FROM pg_stat_replication
ORDER BY application_name
"""


async def observe_postgres(
    member: str, dsn: str, *, timeout: float = DEFAULT_TIMEOUT, clock: Clock = _utcnow
) -> PgObservation:
    """One member's own view of its replication; never raises for an unreachable server."""
    import asyncpg

    errors = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError)
    try:
        conn = await asyncpg.connect(dsn, timeout=timeout, command_timeout=timeout)
    except errors as exc:
        return PgObservation(member, reachable=False, error=one_line(exc), observed_at=clock())
    try:
        row = await conn.fetchrow(_STATE_SQL)
        assert row is not None
        local_now = clock()
        shift = local_now - row["db_now"]
        commit_at: datetime | None = None
        if row["track_commit"] and not row["in_recovery"]:
            commit_at = await conn.fetchval(_COMMIT_SQL)
        receiver = await conn.fetchval(_RECEIVER_SQL)
        streams = tuple(_stream(r) for r in await conn.fetch(_STREAMS_SQL))
    except errors as exc:
        return PgObservation(member, reachable=False, error=one_line(exc), observed_at=clock())
    finally:
        try:
            await asyncio.wait_for(conn.close(), timeout)
        except (OSError, asyncpg.InterfaceError, TimeoutError):
            conn.terminate()

    def local(t: datetime | None) -> datetime | None:
        return t + shift if t is not None else None

    return PgObservation(
        member,
        reachable=True,
        observed_at=local_now,
        in_recovery=bool(row["in_recovery"]),
        current_lsn=row["current_lsn"],
        receive_lsn=row["receive_lsn"],
        replay_lsn=row["replay_lsn"],
        last_replay_at=local(row["last_replay_at"]),
        last_commit_at=local(commit_at),
        receiver_status=receiver,
        streams=streams,
    )


def _float(value: Any) -> float | None:
    return float(value) if value is not None else None


def _stream(row: Any) -> StreamObservation:
    return StreamObservation(
        application_name=str(row["application_name"] or ""),
        state=row["state"],
        sync_state=row["sync_state"],
        write_lag_seconds=_float(row["write_lag"]),
        flush_lag_seconds=_float(row["flush_lag"]),
        replay_lag_seconds=_float(row["replay_lag"]),
        lag_bytes=int(row["lag_bytes"]) if row["lag_bytes"] is not None else None,
    )


# --------------------------------------------------------------------------- Patroni, vault


def observe_patroni(
    urls: Iterable[str], *, timeout: float = DEFAULT_TIMEOUT
) -> tuple[ClusterView | None, str | None]:
    """Patroni's view of the cluster, or None and why."""
    try:
        return PatroniClient(list(urls), timeout=timeout).cluster(), None
    except PatroniError as exc:
        return None, str(exc)
    except ValueError:  # an answer that is not JSON
        return None, "Patroni answered GET /cluster with something that is not JSON"


async def observe_vault(member: Member, *, timeout: float = DEFAULT_TIMEOUT) -> VaultObservation:
    """A vault server's ``GET /health``: 200 with ``status`` ok is healthy."""
    name, role_wanted, shown = member.name, member.role.value, member.redacted_url
    try:
        async with httpx.AsyncClient(timeout=timeout) as http:
            r = await http.get(member.url.rstrip("/") + "/health")
    except httpx.HTTPError as exc:
        return VaultObservation(
            name,
            role_wanted,
            shown,
            reachable=False,
            healthy=False,
            error=f"unreachable ({type(exc).__name__})",
        )
    try:
        body = r.json()
    except ValueError:
        body = None
    data: dict[str, Any] = body if isinstance(body, dict) else {}
    status = data.get("status")
    role = data.get("role")
    return VaultObservation(
        name,
        role_wanted,
        shown,
        reachable=True,
        healthy=r.status_code == 200 and status == "ok",
        status=str(status) if status is not None else None,
        role=str(role) if role is not None else None,
        http_status=r.status_code,
        error=None if r.status_code == 200 else f"HTTP {r.status_code}",
    )


# --------------------------------------------------------------------------- regions


async def _observe_region(region: Region, timeout: float, clock: Clock) -> RegionObservation:
    pg_members = region.members_of(Service.POSTGRES)
    patroni_urls = [m.patroni_url for m in pg_members if m.patroni_url]
    patroni_task = (
        asyncio.to_thread(observe_patroni, patroni_urls, timeout=timeout) if patroni_urls else None
    )
    pg_tasks = [observe_postgres(m.name, m.url, timeout=timeout, clock=clock) for m in pg_members]
    vault_tasks = [observe_vault(m, timeout=timeout) for m in region.members_of(Service.VAULT)]
    results = await asyncio.gather(*pg_tasks, *vault_tasks)
    cluster, patroni_error = (await patroni_task) if patroni_task is not None else (None, None)
    postgres = tuple(r for r in results if isinstance(r, PgObservation))
    vault = tuple(r for r in results if isinstance(r, VaultObservation))
    return RegionObservation(
        region=region.name,
        configured_role=region.role.value,
        observed_at=clock(),
        postgres_members=tuple(m.name for m in pg_members),
        patroni_configured=bool(patroni_urls),
        cluster=cluster,
        patroni_error=patroni_error,
        postgres=postgres,
        vault=vault,
        sync_expected=any(m.role.value == "sync_standby" for m in pg_members),
    )


def observe_region(
    region: Region, *, timeout: float = DEFAULT_TIMEOUT, clock: Clock = _utcnow
) -> RegionObservation:
    """Observe one region (its servers in parallel); never raises for the world's sake."""
    return asyncio.run(_observe_region(region, timeout, clock))


def observe_regions(
    topology: Topology,
    names: Iterable[str] | None = None,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    clock: Clock = _utcnow,
) -> dict[str, RegionObservation]:
    """Observe the named regions (default: all), standby regions *before* the primary.

    The order is deliberate: a standby's replay position read before the primary's write
    position can only make the lag between them look larger, never smaller, so an RPO
    judged from it errs on the safe side.
    """
    wanted = set(names) if names is not None else set(topology.names)
    regions = [r for r in topology.regions if r.name in wanted]
    ordered = [r for r in regions if not r.is_primary] + [r for r in regions if r.is_primary]

    async def run() -> dict[str, RegionObservation]:
        out: dict[str, RegionObservation] = {}
        for region in ordered:
            out[region.name] = await _observe_region(region, timeout, clock)
        return out

    seen = asyncio.run(run())
    return {r.name: seen[r.name] for r in regions}
