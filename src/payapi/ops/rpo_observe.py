"""Observing for the RPO check: the backup repository and the payment database's archiver,
read into the immutable :class:`~payapi.ops.rpo.Observations` that :func:`payapi.ops.rpo.assess`
judges. It decides nothing; an unreachable database is an observation, not an error."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from payapi.core.errors import PayapiError
from payapi.core.plan import Plan, PlanError
from payapi.core.settings import Settings
from payapi.ops.rpo import (
    ArchiverObservation,
    BackupObservation,
    CheckError,
    Observations,
    _newest_segment,
)
from payapi.ops.rpo_cover import StandbyServices
from payapi.ops.rpo_replication import ReplicationObservations
from payapi.replication.redis_observe import RedisObservation

DB_TIMEOUT_SECONDS = 5.0


_ARCHIVER_SQL = """
SELECT now() AS db_now,
       pg_is_in_recovery() AS in_recovery,
       current_setting('archive_mode') AS archive_mode,
       a.archived_count, a.last_archived_wal, a.last_archived_time,
       a.failed_count, a.last_failed_wal, a.last_failed_time,
       CASE WHEN pg_is_in_recovery() THEN NULL
            ELSE pg_current_wal_insert_lsn()::text END AS insert_lsn,
       (SELECT setting::bigint FROM pg_settings WHERE name = 'wal_segment_size') AS seg_size
FROM pg_stat_archiver a
"""


async def observe_database(
    dsn: str, *, timeout: float = DB_TIMEOUT_SECONDS, clock: Callable[[], datetime] | None = None
) -> ArchiverObservation:
    """Read ``pg_stat_archiver`` from the payment database; never raises.

    An unreachable database is an observation (``reachable=False`` and why), not an error:
    the check still says what the repository alone can restore. The archive_command itself
    is never read (it may carry credentials).
    """
    import asyncpg

    now = clock or (lambda: datetime.now(UTC))
    try:
        conn = await asyncpg.connect(dsn, timeout=timeout, command_timeout=timeout)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
        return ArchiverObservation(reachable=False, error=_one_line(exc))
    try:
        row = await conn.fetchrow(_ARCHIVER_SQL)
    except (asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError, OSError) as exc:
        return ArchiverObservation(reachable=False, error=_one_line(exc))
    finally:
        try:
            await asyncio.wait_for(conn.close(), timeout)
        except (OSError, asyncpg.InterfaceError, TimeoutError):
            conn.terminate()
    local_now = now()
    assert row is not None
    shift = local_now - row["db_now"]

    def local(t: datetime | None) -> datetime | None:
        return t + shift if t is not None else None

    return ArchiverObservation(
        reachable=True,
        archive_mode=str(row["archive_mode"]),
        archived_count=int(row["archived_count"] or 0),
        last_archived_wal=row["last_archived_wal"],
        last_archived_at=local(row["last_archived_time"]),
        failed_count=int(row["failed_count"] or 0),
        last_failed_wal=row["last_failed_wal"],
        last_failed_at=local(row["last_failed_time"]),
        insert_lsn=row["insert_lsn"],
        wal_segment_size=int(row["seg_size"] or 16 * 1024 * 1024),
        in_recovery=bool(row["in_recovery"]),
    )


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"[:300]


def _canonical(plan: Plan, label: str) -> str:
    try:
        return plan.resolve(label)
    except PlanError:
        return label  # unknown to the plan: listed under its own name, judged by nobody


def observe(
    settings: Settings,
    plan: Plan,
    *,
    repository: str | None = None,
    key_file: Path | None = None,
    clock: Callable[[], datetime] | None = None,
    database: bool = True,
    db_timeout: float = DB_TIMEOUT_SECONDS,
) -> Observations:
    """Read the database (first: with ``[regions]``, every region's replication, then the
    archiver) and then the repository into :class:`Observations`.

    The database is asked first, so that the repository, read after it, is at least as
    new as what the database says it archived. Raises :class:`CheckError` (one line)
    when the repository cannot be read: without it nothing can be judged.
    """
    from payapi.backup.errors import NotFound, RepositoryError
    from payapi.backup.service import open_repository

    now = clock or (lambda: datetime.now(UTC))
    # --no-database asks no server at all, so replication goes unobserved too.
    replication = observe_replication(settings, clock=now, timeout=db_timeout) if database else None
    dsn = settings.postgres.payment_dsn or _leader_dsn(settings, replication)
    db: ArchiverObservation | None = None
    if database and dsn:
        db = asyncio.run(observe_database(dsn, timeout=db_timeout, clock=now))

    if not (repository or settings.backup.repository):
        raise CheckError(
            "no backup repository: set backup.repository in the config "
            "(or $PAYAPI_BACKUP__REPOSITORY), or pass --repository URL"
        )
    try:
        repo = open_repository(settings, repository, key_file=key_file)
    except PayapiError as exc:
        raise CheckError(str(exc)) from None
    try:
        infos = repo.list_backups()
        names = repo.list_wal()
        newest = _newest_segment(names)
        newest_at: datetime | None = None
        if newest is not None:
            try:
                newest_at = repo.wal_entry(newest).archived_at
            except NotFound:  # removed by a purge between listing and reading
                newest_at = None
    except RepositoryError as exc:
        raise CheckError(f"cannot read the backup repository: {exc}") from None
    finally:
        repo.close()
    backups = tuple(
        BackupObservation(
            backup_id=b.backup_id,
            component=_canonical(plan, b.component),
            type=b.type,
            started_at=b.started_at,
            finished_at=b.finished_at,
            verified_at=b.verified_at,
        )
        for b in infos
    )
    redis, standby = observe_covers(settings, clock=now) if database else (None, None)
    return Observations(
        observed_at=now(),
        backups=backups,
        wal_newest=newest,
        wal_newest_at=newest_at,
        wal_count=len(names),
        database=db,
        repository=str(repo.url),
        replication=replication,
        redis=redis,
        standby_services=standby,
    )


def observe_covers(
    settings: Settings, *, clock: Callable[[], datetime]
) -> tuple[RedisObservation | None, StandbyServices | None]:
    """With ``[regions]``: the primary region's Redis replication, and which standby
    regions have each stateless service deployed (:mod:`payapi.ops.rpo_cover`)."""
    if not settings.regions:
        return None, None
    from payapi.core.topology import topology_from_settings
    from payapi.replication.redis_observe import observe_redis

    topology = topology_from_settings(settings)
    standbys = tuple(r.name for r in topology.standbys)
    deployed = {
        service: frozenset(
            name
            for name in standbys
            if (conf := getattr(settings.regions[name], service)).url is not None
            or conf.control != "none"
        )
        for service in ("eapi", "sapi")
    }
    return observe_redis(topology.primary, clock=clock), StandbyServices(standbys, deployed)


def observe_replication(
    settings: Settings,
    *,
    clock: Callable[[], datetime] | None = None,
    timeout: float = DB_TIMEOUT_SECONDS,
) -> ReplicationObservations | None:
    """Every configured region's replication (standbys first); None without ``[regions]``,
    so that a one-region configuration is judged exactly as before."""
    if not settings.regions:
        return None
    from payapi.core.topology import topology_from_settings
    from payapi.replication.observe import observe_regions

    topology = topology_from_settings(settings)
    seen = observe_regions(topology, timeout=timeout, clock=clock or (lambda: datetime.now(UTC)))
    return ReplicationObservations(
        primary=topology.primary.name,
        regions=tuple(seen.values()),
        write_rate_bytes_per_second=settings.patroni.write_rate_bytes_per_second,
    )


def _leader_dsn(settings: Settings, replication: ReplicationObservations | None) -> str:
    """Without ``postgres.payment_dsn``: the DSN of the primary region's leader, as observed
    (its archiver is the one that archives)."""
    if replication is None:
        return ""
    primary = replication.region(replication.primary)
    leader = primary.leader if primary is not None else None
    if leader is None:
        return ""
    members = settings.regions[replication.primary].postgres
    return next((m.url for m in members if m.name == leader.member), "")
