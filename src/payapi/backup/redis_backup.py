"""Redis backups: RDB snapshots taken over the replication stream.

One job: take a snapshot of the running Redis and store it as backup ``redis/snapshot``.
We connect like a replica and send ``SYNC`` (:class:`payapi.systems.redis.SyncStream`);
Redis forks, writes a point-in-time RDB and sends it as one length-prefixed payload. Redis
never stops and clients keep writing. The payload streams straight into the backup
repository (compressed, encrypted, checksummed) while a scanner counts its keys per
database on the way past; nothing is staged, in memory or on disk. The manifest
(:class:`RedisMeta`) records the key counts, the key classes (how many token hashes,
verification entries...), the Redis version and the snapshot's own creation time.

Restores are :mod:`payapi.backup.redis_restore`'s; ``docs/redis-and-config-backups.md``
explains the consequences for tokens.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from pydantic import ConfigDict, Field
from redis.exceptions import RedisError

from payapi.backup.errors import RepositoryError
from payapi.backup.manifest import BackupInfo, BackupMeta
from payapi.backup.rdb import ChunkPipe, RdbSummary, finish_pipe_scan, scan_source
from payapi.backup.repository import Repository
from payapi.core.journal import Journal
from payapi.core.logs import get_logger
from payapi.core.settings import RedisSettings
from payapi.systems.redis import (
    RedisStreamError,
    SentinelError,
    SyncStream,
    client,
    config_get,
    persistence_less,
    primary_url,
    where,
)

__all__ = [
    "COMPONENT",
    "OBJECT",
    "TYPE",
    "RedisBackupError",
    "RedisMeta",
    "run_redis_backup",
]

COMPONENT = "redis"  # the plan's component name
TYPE = "snapshot"  # the plan's backup type for it (retention: 7 days)
OBJECT = "dump.rdb"

STEP_SNAPSHOT = "snapshot"

log = get_logger("payapi.backup.redis")


class RedisBackupError(RepositoryError):
    """A Redis snapshot could not be taken; one line for the operator."""


class RedisMeta(BackupMeta):
    """What a Redis snapshot's manifest records (db numbers are strings, as in JSON)."""

    model_config = ConfigDict(frozen=True, extra="allow")

    redis_version: str = ""
    source: str = ""
    method: str = ""
    snapshot_at: str | None = None
    rdb_version: int | None = None
    keys: dict[str, int] = Field(default_factory=dict)
    expires: dict[str, int] = Field(default_factory=dict)
    total_keys: int = 0
    key_classes: dict[str, int] = Field(default_factory=dict)

    def key_counts(self) -> dict[int, int]:
        return {int(k): int(v) for k, v in self.keys.items()}


def run_redis_backup(
    repo: Repository,
    settings: RedisSettings,
    *,
    journal: Journal | None = None,
    timeout: float = 60.0,
) -> BackupInfo:
    """Take an RDB snapshot of the running Redis over the replication stream and store it
    as backup ``redis/snapshot`` (object ``dump.rdb``).

    ``timeout`` bounds each wait for data from Redis (it sends keep-alives while it forks
    and writes). The caller holds the component's lock
    (:func:`payapi.backup.service.component_lock`), as for every backup. The manifest's
    ``meta`` is a :class:`RedisMeta`; ``source`` is host:port/db, never credentials.
    """
    j = journal or Journal.silent()
    repo.require_config()
    try:  # the current primary: after a Sentinel failover ``url`` names a replica
        settings = settings.model_copy(update={"url": primary_url(settings)})
    except SentinelError as exc:
        raise RedisBackupError(str(exc)) from None
    source = where(settings.url)
    conn = client(settings.url, max(settings.socket_timeout_seconds, 5.0))
    try:
        try:
            info: dict[str, Any] = conn.info("server")
        except (RedisError, OSError) as exc:
            raise RedisBackupError(
                f"Redis at {source} is unreachable: {type(exc).__name__}"
            ) from None
        version = str(info.get("redis_version") or "")
        # A persistence-less Redis keeps the RDB it wrote for a replica in its data
        # directory and would load that stale copy at its next start (bringing back tokens
        # revoked since). rdb-del-sync-files is Redis's own switch for exactly this case.
        if persistence_less(conn) and config_get(conn, "rdb-del-sync-files") == "no":
            try:
                conn.config_set("rdb-del-sync-files", "yes")
                j.note("set rdb-del-sync-files yes (Redis keeps nothing on disk)")
            except (RedisError, OSError):
                log.warning("redis_sync_file_kept", source=source)
    finally:
        conn.close()

    with j.step(STEP_SNAPSHOT):
        j.note(f"snapshot of Redis {version} at {source} (SYNC)")
        log.info("redis_backup", source=source, version=version)
        try:
            stored, summary, size = _snapshot(repo, settings, source, version, timeout)
        except RedisStreamError as exc:
            raise RedisBackupError(str(exc)) from None
        j.note(f"stored {stored.backup_id}: {summary.total_keys} keys, {size} bytes")
    return stored


def _snapshot(
    repo: Repository, settings: RedisSettings, source: str, version: str, timeout: float
) -> tuple[BackupInfo, RdbSummary, int]:
    with repo.begin_backup(COMPONENT, TYPE, None) as writer:
        stream = SyncStream(settings.url, timeout)
        pipe = ChunkPipe()
        result: dict[str, Any] = {}

        def scan() -> None:
            try:
                summary = scan_source(pipe)
                result["summary"] = finish_pipe_scan(summary, pipe, stream.length)
            except Exception as exc:  # RdbError, or a bug: never leave the producer blocked
                result["error"] = exc
            finally:
                pipe.drain()

        def tee() -> Iterator[bytes]:
            for chunk in stream.chunks():
                pipe.put(chunk)
                yield chunk

        scanner = threading.Thread(target=scan, name="rdb-scan", daemon=True)
        scanner.start()
        try:
            entry = writer.add_object(OBJECT, tee())
        finally:
            stream.close()
            pipe.close()
            scanner.join()
        if "error" in result:
            raise RedisBackupError(
                f"the snapshot from {source} is not a valid RDB: {result['error']}"
            )
        summary: RdbSummary = result["summary"]
        if entry.size != stream.length:
            raise RedisBackupError(f"the snapshot from {source} is incomplete")
        ctime = summary.aux.get("ctime")
        snapshot_at = (
            datetime.fromtimestamp(int(ctime), UTC).isoformat()
            if ctime and ctime.lstrip("-").isdigit()
            else None
        )
        meta = RedisMeta(
            redis_version=version or summary.aux.get("redis-ver", ""),
            source=source,
            method="replication SYNC",
            snapshot_at=snapshot_at,
            **summary.meta(),
        )
        writer.set_meta(**meta.dump())
        return writer.commit(), summary, entry.size
