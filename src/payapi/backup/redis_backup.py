"""Redis: RDB snapshots over the replication stream, and restores that cannot resurrect
a revoked token.

Backup (:func:`run_redis_backup`): we connect like a replica and send ``SYNC``; Redis forks,
writes a point-in-time RDB and sends it as one length-prefixed payload. Redis never stops
and clients keep writing. The payload streams straight into the backup repository
(compressed, encrypted, checksummed) while a scanner counts its keys per database on the
way past; nothing is staged, in memory or on disk. The manifest records the key counts,
the key classes (how many token hashes, verification entries...), the Redis version and
the snapshot's own creation time.

Restore (:func:`restore_redis`): the snapshot is first loaded into a *private* Redis on a
free loopback port, never the live one, where the key count is verified against the
snapshot and the restore is made safe:

- every verification-cache entry (``payapi:ver:*``) is dropped: it remembers that a
  client secret was valid, and the secret may have been rotated since;
- tokens revoked after the snapshot are dropped: all of them when the caller cannot say
  what was revoked (``revocations=None``, the default) or when an emergency rotation
  revoked everything; else every token of each client that revoked one since;
- the revocation generation ``payapi:gen`` is moved above any value handed out before,
  so that no verification looked up before the restore can be cached after it.

Only then is the cleaned file saved, Redis stopped, the file put in its data directory,
Redis started, and the key count verified again against what was put there. Clients
therefore never see a restored verification entry or revoked token, not even briefly.

Rebuild (``rebuild=True``; the plan's alternative approach): stop, remove the data file,
start empty; every client re-authenticates. Only ``payapi:gen`` is set (see above).

``docs/redis-and-config-backups.md`` explains the consequences for tokens.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import redis as redis_sync
from redis.connection import parse_url as _redis_parse_url
from redis.exceptions import BusyLoadingError, RedisError

from payapi.backup.errors import NotFound, RepositoryError
from payapi.backup.lock import (
    DEFAULT_LEASE,
    Lock,
    LockError,
    lock_name,
)
from payapi.backup.manifest import BackupInfo
from payapi.backup.rdb import (
    ChunkPipe,
    RdbError,
    RdbSummary,
    finish_pipe_scan,
    scan_file,
    scan_source,
)
from payapi.backup.repository import Repository
from payapi.config import RedisSettings
from payapi.eapi.cache import GEN_KEY, PREFIX
from payapi.logs import get_logger

if TYPE_CHECKING:
    from payapi.lab.platform import Lab
    from payapi.lab.redis import RedisServer

__all__ = [
    "COMPONENT",
    "OBJECT",
    "TYPE",
    "LabRedisControl",
    "RedisBackupError",
    "RedisControl",
    "RedisRestoreError",
    "RedisRestoreResult",
    "RedisServerControl",
    "Revocations",
    "restore_redis",
    "revocations_from_audit",
    "revocations_from_events",
    "run_redis_backup",
    "snapshot_time",
]

COMPONENT = "redis"  # the plan's component name
TYPE = "snapshot"  # the plan's backup type for it (retention: 7 days)
OBJECT = "dump.rdb"

# How far ahead restore verification keeps expiry times (a load taking longer than this
# makes the check an error rather than a guess).
_HORIZON_MS = 3600 * 1000
# Clock slack around load times (ms): Redis and this process read the clock separately.
_SLACK_MS = 1000
_CHUNK = 1 << 20

# Audit event types that revoke tokens (payapi.eapi.app, payapi.credentials.service).
TOKEN_REVOKED = "token.revoked"  # noqa: S105 - an event type; subject: the client id whose token revoked itself
EMERGENCY_ROTATION = "credentials.emergency_rotation"  # revokes every token

Progress = Callable[[str], None]
log = get_logger("payapi.backup.redis")


class RedisBackupError(RepositoryError):
    """A Redis snapshot could not be taken; one line for the operator."""


class RedisRestoreError(RepositoryError):
    """A Redis restore or rebuild failed or did not verify; one line for the operator."""


def _note(progress: Progress | None, message: str) -> None:
    log.info("redis_backup", step=message)
    if progress is not None:
        progress(message)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


# --------------------------------------------------------------------------- connection


def parse_url(url: str) -> dict[str, Any]:
    """redis-py's URL parser (untyped upstream): host, port, db, username, password..."""
    params: dict[str, Any] = _redis_parse_url(url)  # type: ignore[no-untyped-call]
    return params


def _where(url: str) -> str:
    """host:port/db or the socket path: never the credentials of the URL."""
    params = parse_url(url)
    if "path" in params:
        return f"unix:{params['path']}/{params.get('db', 0)}"
    return f"{params.get('host', '127.0.0.1')}:{params.get('port', 6379)}/{params.get('db', 0)}"


def _client(url: str, timeout: float, db: int | None = None) -> redis_sync.Redis:
    kwargs: dict[str, Any] = {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "retry_on_timeout": False,
    }
    if db is not None:
        kwargs["db"] = db
    return redis_sync.Redis.from_url(url, **kwargs)


def _resp(*args: bytes) -> bytes:
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


class _SyncStream:
    """One ``SYNC`` on a raw socket: the RDB payload as bounded chunks, then close.

    Redis answers ``SYNC`` with newlines (keep-alives while it forks and writes the RDB),
    then ``$<length>\\r\\n`` and exactly that many bytes. What follows is the live command
    stream of a replica, which we do not want: we close after the payload.
    """

    def __init__(self, url: str, timeout: float) -> None:
        params = parse_url(url)
        self.where = _where(url)
        try:
            if "path" in params:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.settimeout(timeout)
                sock.connect(params["path"])
            else:
                host = params.get("host", "127.0.0.1")
                sock = socket.create_connection((host, params.get("port", 6379)), timeout)
                if url.lower().startswith("rediss://"):
                    sock = ssl.create_default_context().wrap_socket(sock, server_hostname=host)
        except OSError as exc:
            raise RedisBackupError(f"cannot connect to Redis at {self.where}: {exc}") from None
        self._sock = sock
        self._buf = b""
        try:
            password = params.get("password")
            if password:
                username = params.get("username")
                args = [b"AUTH"]
                if username:
                    args.append(str(username).encode())
                args.append(str(password).encode())
                sock.sendall(_resp(*args))
                reply = self._line()
                if not reply.startswith(b"+"):
                    raise RedisBackupError(f"Redis at {self.where} refused AUTH")
            sock.sendall(b"SYNC\r\n")
            while True:
                line = self._line()
                if line:  # empty lines are keep-alives
                    break
        except OSError as exc:
            self.close()
            raise RedisBackupError(f"SYNC with Redis at {self.where} failed: {exc}") from None
        except RedisBackupError:
            self.close()
            raise
        if line.startswith(b"-"):
            self.close()
            reason = line[1:].decode("utf-8", "replace")[:200]
            raise RedisBackupError(f"Redis at {self.where} refused SYNC: {reason}")
        if not line.startswith(b"$") or line.startswith(b"$EOF:") or not line[1:].isdigit():
            self.close()
            raise RedisBackupError(f"unexpected SYNC reply from Redis at {self.where}")
        self.length = int(line[1:])

    def _line(self) -> bytes:
        while b"\n" not in self._buf:
            data = self._sock.recv(65536)
            if not data:
                raise RedisBackupError(f"Redis at {self.where} closed the connection")
            self._buf += data
            if len(self._buf) > 65536:
                raise RedisBackupError(f"unexpected SYNC reply from Redis at {self.where}")
        line, _, self._buf = self._buf.partition(b"\n")
        return line.rstrip(b"\r")

    def chunks(self) -> Iterator[bytes]:
        left = self.length
        if self._buf:
            head, self._buf = self._buf[:left], b""
            left -= len(head)
            yield head
        while left > 0:
            try:
                data = self._sock.recv(min(left, _CHUNK))
            except OSError as exc:
                raise RedisBackupError(f"SYNC with Redis at {self.where} failed: {exc}") from None
            if not data:
                raise RedisBackupError(
                    f"Redis at {self.where} closed the connection in the middle of the RDB"
                )
            left -= len(data)
            yield data

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.close()


def _config_get(client: redis_sync.Redis, name: str) -> str | None:
    try:
        raw: dict[Any, Any] = client.config_get(name)
    except (RedisError, OSError):
        return None
    for k, v in raw.items():
        key = k.decode() if isinstance(k, bytes) else str(k)
        if key == name:
            return v.decode() if isinstance(v, bytes) else str(v)
    return None


def _persistence_less(client: redis_sync.Redis) -> bool | None:
    save, aof = _config_get(client, "save"), _config_get(client, "appendonly")
    if save is None or aof is None:
        return None
    return save.strip() == "" and aof == "no"


def _info_str(info: dict[str, Any], key: str) -> str:
    value = info.get(key)
    return "" if value is None else str(value)


# --------------------------------------------------------------------------- backup


def run_redis_backup(
    repo: Repository,
    settings: RedisSettings,
    *,
    progress: Progress | None = None,
    timeout: float = 60.0,
) -> BackupInfo:
    """Take an RDB snapshot of the running Redis over the replication stream and store it
    as backup ``redis/snapshot`` (object ``dump.rdb``).

    ``timeout`` bounds each wait for data from Redis (it sends keep-alives while it forks
    and writes). The caller holds the component's lock (``lock_name("redis")``), as for
    every backup. The manifest's ``meta`` holds: ``redis_version``, ``rdb_version``,
    ``keys`` and ``expires`` per database (as strings), ``total_keys``, ``key_classes``,
    ``snapshot_at`` (when Redis wrote the RDB), ``source`` (host:port/db, no credentials).
    """
    repo.require_config()
    where = _where(settings.url)
    client = _client(settings.url, max(settings.socket_timeout_seconds, 5.0))
    try:
        try:
            info: dict[str, Any] = client.info("server")
        except (RedisError, OSError) as exc:
            raise RedisBackupError(
                f"Redis at {where} is unreachable: {type(exc).__name__}"
            ) from None
        version = _info_str(info, "redis_version")
        # A persistence-less Redis keeps the RDB it wrote for a replica in its data
        # directory and would load that stale copy at its next start (bringing back tokens
        # revoked since). rdb-del-sync-files is Redis's own switch for exactly this case.
        if _persistence_less(client) and _config_get(client, "rdb-del-sync-files") == "no":
            try:
                client.config_set("rdb-del-sync-files", "yes")
                _note(progress, "set rdb-del-sync-files yes (Redis keeps nothing on disk)")
            except (RedisError, OSError):
                log.warning("redis_sync_file_kept", source=where)
    finally:
        client.close()

    _note(progress, f"snapshot of Redis {version} at {where} (SYNC)")
    holder = f"redis backup (pid {os.getpid()})"
    try:
        with Lock(repo.lock_store()).hold(lock_name(COMPONENT), holder, DEFAULT_LEASE):
            info_out, summary, size = _snapshot(repo, settings, where, version, timeout)
    except LockError as exc:
        raise RedisBackupError(f"redis backup: {exc}") from None
    _note(progress, f"stored {info_out.backup_id}: {summary.total_keys} keys, {size} bytes")
    return info_out


def _snapshot(
    repo: Repository, settings: RedisSettings, where: str, version: str, timeout: float
) -> tuple[BackupInfo, RdbSummary, int]:
    with repo.begin_backup(COMPONENT, TYPE, None) as writer:
        stream = _SyncStream(settings.url, timeout)
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
                f"the snapshot from {where} is not a valid RDB: {result['error']}"
            )
        summary: RdbSummary = result["summary"]
        if entry.size != stream.length:
            raise RedisBackupError(f"the snapshot from {where} is incomplete")
        ctime = summary.aux.get("ctime")
        snapshot_at = (
            datetime.fromtimestamp(int(ctime), UTC).isoformat()
            if ctime and ctime.lstrip("-").isdigit()
            else None
        )
        writer.set_meta(
            redis_version=version or summary.aux.get("redis-ver", ""),
            source=where,
            method="replication SYNC",
            snapshot_at=snapshot_at,
            **summary.meta(),
        )
        return writer.commit(), summary, entry.size


# --------------------------------------------------------------------------- control


@runtime_checkable
class RedisControl(Protocol):
    """How a restore stops and starts the Redis it restores, and where its data file is.

    Redis loads ``data_dir / dbfilename`` when it starts (whatever its ``save`` setting).
    """

    @property
    def data_dir(self) -> Path: ...

    @property
    def dbfilename(self) -> str: ...

    def stop(self) -> None: ...

    def start(self) -> None: ...


@dataclass
class RedisServerControl:
    """A :class:`payapi.lab.redis.RedisServer` (tests, or any Redis started that way)."""

    server: RedisServer

    @property
    def data_dir(self) -> Path:
        return self.server.workdir

    @property
    def dbfilename(self) -> str:
        return "dump.rdb"

    def stop(self) -> None:
        self.server.stop()

    def start(self) -> None:
        self.server.start()


@dataclass
class LabRedisControl:
    """The lab's Redis (``DIR/redis``), stopped and started through the lab."""

    lab: Lab

    @property
    def data_dir(self) -> Path:
        return self.lab.redis.workdir

    @property
    def dbfilename(self) -> str:
        return "dump.rdb"

    def stop(self) -> None:
        self.lab.stop("redis")

    def start(self) -> None:
        self.lab.start("redis")


# --------------------------------------------------------------------------- revocations


@dataclass(frozen=True)
class Revocations:
    """Token revocations after ``since`` (which must be no later than the snapshot).

    ``all_tokens``: something revoked every token (an emergency rotation). ``client_ids``:
    clients that revoked a token; the event does not say which token, so a restore drops
    every token of these clients (they re-authenticate: the safe direction).
    """

    since: datetime
    all_tokens: bool = False
    client_ids: frozenset[str] = frozenset()

    def to_json(self) -> dict[str, Any]:
        return {
            "since": self.since.isoformat(),
            "all_tokens": self.all_tokens,
            "clients": len(self.client_ids),
        }


RevocationSource = Callable[[datetime], Revocations]


def revocations_from_events(
    events: Iterable[tuple[str, str | None]], since: datetime
) -> Revocations:
    """Revocations from audit events given as ``(type, subject)``, all after ``since``."""
    everything = False
    clients: set[str] = set()
    for type_, subject in events:
        if type_ == EMERGENCY_ROTATION:
            everything = True
        elif type_ == TOKEN_REVOKED and subject:
            clients.add(subject)
    return Revocations(since=since, all_tokens=everything, client_ids=frozenset(clients))


async def revocations_from_audit(dsn: str, since: datetime) -> Revocations:
    """What the audit chain (``payment_db``) records as revoked since ``since``.

    EAPI delivers its audit events off the request path and may drop some under overload
    (it logs ``audit_event_dropped``); a revocation whose event was dropped is unknown here.
    Pass ``revocations=None`` to :func:`restore_redis` to drop every token instead.
    """
    import asyncpg

    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        rows = await conn.fetch(
            "SELECT type, subject FROM audit_events WHERE occurred_at >= $1 "
            "AND type = ANY($2::text[]) ORDER BY seq",
            since,
            [TOKEN_REVOKED, EMERGENCY_ROTATION],
        )
    finally:
        await conn.close()
    return revocations_from_events(((r["type"], r["subject"]) for r in rows), since)


# --------------------------------------------------------------------------- restore


@dataclass
class RedisRestoreResult:
    """What a restore or rebuild did; ``to_json`` is the CLI's ``--json`` output."""

    mode: str  # "restore" | "rebuild"
    backup_id: str | None
    snapshot_keys: dict[int, int] = field(default_factory=dict)  # as recorded at backup
    loaded_keys: dict[int, int] = field(default_factory=dict)  # in the private Redis
    dropped: dict[str, int] = field(default_factory=dict)
    tokens: str = "dropped"  # "kept" | "dropped" | "partially dropped" | "none"
    final_keys: dict[int, int] = field(default_factory=dict)  # in the restored Redis
    generation: int = 0
    verified: bool = False
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        def dbs(d: dict[int, int]) -> dict[str, int]:
            return {str(k): v for k, v in sorted(d.items())}

        return {
            "component": COMPONENT,
            "mode": self.mode,
            "backup_id": self.backup_id,
            "snapshot_keys": dbs(self.snapshot_keys),
            "loaded_keys": dbs(self.loaded_keys),
            "dropped": dict(self.dropped),
            "tokens": self.tokens,
            "final_keys": dbs(self.final_keys),
            "generation": self.generation,
            "verified": self.verified,
            "seconds": round(self.seconds, 3),
            "notes": list(self.notes),
        }


def _keyspace(client: redis_sync.Redis) -> dict[int, int]:
    info: dict[str, Any] = client.info("keyspace")
    out: dict[int, int] = {}
    for name, value in info.items():
        if name.startswith("db") and name[2:].isdigit():
            keys = value.get("keys", 0) if isinstance(value, dict) else 0
            if keys:
                out[int(name[2:])] = int(keys)
    return out


def _wait_loaded(
    url: str,
    timeout: float,
    what: str,
    log_file: Path | None = None,
    alive: Callable[[], bool] | None = None,
) -> None:
    """Until Redis answers PING (not ``-LOADING``); an error if it dies or takes too long."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    hint = f" (see {log_file})" if log_file is not None else ""
    while time.monotonic() < deadline:
        if alive is not None and not alive():
            raise RedisRestoreError(f"{what} exited while loading the snapshot{hint}")
        client = _client(url, 2.0)
        try:
            if client.ping():
                return
        except BusyLoadingError:
            last = "still loading"
        except (RedisError, OSError) as exc:
            last = type(exc).__name__
        finally:
            client.close()
        time.sleep(0.05)
    raise RedisRestoreError(f"{what} did not finish loading within {timeout:.0f} s: {last}{hint}")


def _check_counts(
    what: str, summary: RdbSummary, observed: dict[int, int], t_before: int, t_after: int
) -> None:
    """``observed`` must lie between the keys alive at ``t_after`` and at ``t_before``
    (exactly equal when no key expires in between)."""
    try:
        high = summary.alive_at(t_before - _SLACK_MS)
        low = summary.alive_at(t_after + _SLACK_MS)
    except ValueError as exc:
        raise RedisRestoreError(f"{what}: cannot verify the key count: {exc}") from None
    problems = []
    for db in sorted(set(high) | set(observed)):
        n = observed.get(db, 0)
        lo, hi = low.get(db, 0), high.get(db, 0)
        if not lo <= n <= hi:
            want = f"{hi}" if lo == hi else f"{lo}..{hi}"
            problems.append(f"db{db}: {n} keys, expected {want}")
    if problems:
        raise RedisRestoreError(
            f"{what}: key count does not match the snapshot: " + "; ".join(problems)
        )


def _scan_delete(client: redis_sync.Redis, pattern: str) -> int:
    total = 0
    batch: list[Any] = []
    for key in client.scan_iter(match=pattern, count=1000):
        batch.append(key)
        if len(batch) >= 500:
            total += int(client.delete(*batch))
            batch = []
    if batch:
        total += int(client.delete(*batch))
    return total


def _drop_client_tokens(client: redis_sync.Redis, client_ids: frozenset[str]) -> tuple[int, int]:
    """Delete the tokens (``tok:<digest>`` → client id) and token sets of ``client_ids``."""
    wanted = {c.encode() for c in client_ids}
    tokens = 0
    batch: list[Any] = []

    def flush() -> int:
        values = client.mget(batch)
        doomed = [k for k, v in zip(batch, values, strict=True) if v in wanted]
        return int(client.delete(*doomed)) if doomed else 0

    for key in client.scan_iter(match=f"{PREFIX}tok:*", count=1000):
        batch.append(key)
        if len(batch) >= 500:
            tokens += flush()
            batch = []
    if batch:
        tokens += flush()
    sets = 0
    ids = sorted(client_ids)
    for i in range(0, len(ids), 500):
        keys = [f"{PREFIX}ctok:{c}" for c in ids[i : i + 500]]
        sets += int(client.delete(*keys))
    return tokens, sets


def _int_or_none(raw: Any) -> int | None:
    try:
        return int(raw) if raw is not None else None
    except (TypeError, ValueError):
        return None


def _new_generation(*known: int | None) -> int:
    """Above every generation handed out before: generations grow by one per revocation,
    far slower than a nanosecond clock, so a clock reading beats any earlier value that
    was itself a clock reading plus a count; ``known`` values are beaten by one."""
    return max([time.time_ns(), *[k + 1 for k in known if k is not None]])


@dataclass
class _Live:
    reachable: bool
    generation: int | None = None
    appendonly: str | None = None


def _probe(url: str, timeout: float) -> _Live:
    client = _client(url, timeout)
    try:
        gen = _int_or_none(client.get(GEN_KEY))
        return _Live(True, gen, _config_get(client, "appendonly"))
    except (RedisError, OSError):
        return _Live(False)
    finally:
        client.close()


def snapshot_time(info: BackupInfo) -> datetime:
    """The latest instant known to be no later than the snapshot: Redis's own creation
    time (whole seconds, rounded down) or the backup's start, whichever is later.
    Revocations for a restore must be collected from this instant on."""
    raw = info.meta.get("snapshot_at")
    if isinstance(raw, str):
        with contextlib.suppress(ValueError):
            return max(datetime.fromisoformat(raw), info.started_at)
    return info.started_at


def _pick_backup(repo: Repository, backup_id: str | None) -> BackupInfo:
    if backup_id is None:
        backups = repo.list_backups(COMPONENT)
        if not backups:
            raise NotFound(f"no Redis backup in {repo.url}")
        return backups[-1]
    info = repo.get_backup(backup_id)
    if info.component != COMPONENT:
        raise RedisRestoreError(f"backup {backup_id} is a {info.component} backup, not Redis")
    return info


def _db_of(url: str) -> int:
    return int(parse_url(url).get("db", 0) or 0)


def restore_redis(
    repo: Repository,
    settings: RedisSettings,
    control: RedisControl,
    *,
    backup_id: str | None = None,
    rebuild: bool = False,
    revocations: Revocations | RevocationSource | None = None,
    progress: Progress | None = None,
    load_timeout: float = 300.0,
    lock_wait: timedelta = timedelta(seconds=30),
) -> RedisRestoreResult:
    """Restore a Redis snapshot in place (the newest one unless ``backup_id``), or rebuild
    Redis empty (``rebuild=True``). See the module docstring for what is dropped and why.

    ``settings.url`` is the Redis that ``control`` stops and starts (its database number is
    where ``payapi:gen`` lives). ``revocations``: what was revoked since the snapshot, or a
    function that is given the snapshot's time (:func:`snapshot_time`) and returns it,
    e.g. ``lambda t: asyncio.run(revocations_from_audit(dsn, t))``; without it every token
    is dropped. Raises
    :class:`RedisRestoreError` if a key count does not verify; before the live Redis is
    stopped, nothing has changed. Holds the component's repository lock (as a backup and
    retention's purge do), waiting up to ``lock_wait`` for it. Confirmation is the caller's.
    """
    started = time.monotonic()
    holder = f"redis {'rebuild' if rebuild else 'restore'} (pid {os.getpid()})"
    try:
        with Lock(repo.lock_store()).hold(
            lock_name(COMPONENT), holder, DEFAULT_LEASE, wait=lock_wait
        ):
            result = _restore_locked(
                repo,
                settings,
                control,
                backup_id=backup_id,
                rebuild=rebuild,
                revocations=revocations,
                progress=progress,
                load_timeout=load_timeout,
            )
    except LockError as exc:
        raise RedisRestoreError(f"redis restore: {exc}") from None
    result.seconds = time.monotonic() - started
    return result


def _restore_locked(
    repo: Repository,
    settings: RedisSettings,
    control: RedisControl,
    *,
    backup_id: str | None,
    rebuild: bool,
    revocations: Revocations | RevocationSource | None,
    progress: Progress | None,
    load_timeout: float,
) -> RedisRestoreResult:
    live = _probe(settings.url, max(settings.socket_timeout_seconds, 2.0))
    if live.appendonly == "yes":
        raise RedisRestoreError(
            "Redis has appendonly yes: it would load its AOF, not the snapshot; "
            "disable AOF (or restore its AOF files) first"
        )
    if rebuild:
        return _rebuild(settings, control, live, progress, load_timeout)
    return _restore(repo, settings, control, live, backup_id, revocations, progress, load_timeout)


def _rebuild(
    settings: RedisSettings,
    control: RedisControl,
    live: _Live,
    progress: Progress | None,
    load_timeout: float,
) -> RedisRestoreResult:
    result = RedisRestoreResult(mode="rebuild", backup_id=None, tokens="none")
    _note(progress, "stopping Redis")
    control.stop()
    data_file = control.data_dir / control.dbfilename
    if data_file.exists():
        data_file.unlink()
        result.notes.append(f"removed {data_file}")
    _note(progress, "starting Redis empty")
    control.start()
    _wait_loaded(settings.url, load_timeout, "Redis")
    client = _client(settings.url, 5.0)
    try:
        before = _keyspace(client)
        if before:
            raise RedisRestoreError(
                f"Redis started with {sum(before.values())} keys after a rebuild: "
                "it loads data from somewhere else (an AOF, another dir)"
            )
        result.generation = _new_generation(live.generation)
        client.set(GEN_KEY, result.generation)
        result.final_keys = _keyspace(client)
    finally:
        client.close()
    result.verified = result.final_keys == {_db_of(settings.url): 1}
    if not result.verified:
        raise RedisRestoreError(f"Redis after the rebuild holds {result.final_keys}, not 1 key")
    _note(progress, "Redis rebuilt empty; clients re-authenticate")
    return result


def _restore(
    repo: Repository,
    settings: RedisSettings,
    control: RedisControl,
    live: _Live,
    backup_id: str | None,
    revocations: Revocations | RevocationSource | None,
    progress: Progress | None,
    load_timeout: float,
) -> RedisRestoreResult:
    from payapi.lab.procs import LabError, free_port
    from payapi.lab.redis import RedisServer

    info = _pick_backup(repo, backup_id)
    snap_at = snapshot_time(info)
    if callable(revocations):
        revocations = revocations(snap_at)
    if revocations is not None and revocations.since > snap_at:
        raise ValueError(
            f"revocations since {revocations.since.isoformat()} do not cover the time "
            f"since the snapshot ({snap_at.isoformat()})"
        )
    recorded = info.meta.get("keys", {})
    result = RedisRestoreResult(
        mode="restore",
        backup_id=info.backup_id,
        snapshot_keys={int(k): int(v) for k, v in recorded.items()}
        if isinstance(recorded, dict)
        else {},
    )
    data_dir = control.data_dir
    data_dir.mkdir(parents=True, exist_ok=True)
    staging = data_dir / f".payapi-restore-{secrets.token_hex(4)}"
    staging.mkdir(mode=0o700)
    private: RedisServer | None = None
    try:
        staged = staging / "dump.rdb"
        _note(progress, f"fetching {info.backup_id}")
        repo.restore_object(info.backup_id, OBJECT, staged)
        t0 = _now_ms()
        try:
            loaded_summary = scan_file(staged, as_of=t0 - _SLACK_MS, horizon_ms=_HORIZON_MS)
        except RdbError as exc:
            raise RedisRestoreError(f"backup {info.backup_id}: {exc}") from None
        if loaded_summary.keys() != result.snapshot_keys:
            raise RedisRestoreError(
                f"backup {info.backup_id} holds {loaded_summary.keys()} keys but its "
                f"manifest recorded {result.snapshot_keys}"
            )

        # 1. Load it into a private Redis; verify; make it safe; save.
        private = RedisServer(workdir=staging, port=free_port())
        _note(progress, "loading the snapshot into a private Redis")
        try:
            private.start()
        except LabError as exc:
            raise RedisRestoreError(f"private Redis did not start: {exc}") from None
        private_url = f"redis://127.0.0.1:{private.port}/0"
        _wait_loaded(
            private_url, load_timeout, "the private Redis", private.logfile, private.is_running
        )
        client = _client(private_url, 30.0)
        try:
            result.loaded_keys = _keyspace(client)
            _check_counts("private Redis", loaded_summary, result.loaded_keys, t0, _now_ms())
            _make_safe(private_url, settings, info, live, revocations, result)
            client.save()
        finally:
            client.close()
        private.stop()
        private = None
        t2 = _now_ms()
        try:
            clean = scan_file(staged, as_of=t2 - _SLACK_MS, horizon_ms=_HORIZON_MS)
        except RdbError as exc:
            raise RedisRestoreError(f"the cleaned snapshot is unreadable: {exc}") from None

        # 2. Stop, replace, start, verify.
        _note(progress, "stopping Redis")
        control.stop()
        target = data_dir / control.dbfilename
        staged.replace(target)
        _note(progress, "starting Redis on the restored snapshot")
        control.start()
        _wait_loaded(settings.url, load_timeout, "Redis")
        client = _client(settings.url, 30.0)
        try:
            result.final_keys = _keyspace(client)
            _check_counts("Redis", clean, result.final_keys, t2, _now_ms())
            result.verified = True
            # A Redis that keeps nothing on disk must not reload this snapshot at its
            # next restart (by then revocations may have happened): it has it in memory.
            if _persistence_less(client):
                target.unlink(missing_ok=True)
                result.notes.append(f"removed {target} after loading (Redis keeps no RDB)")
        finally:
            client.close()
    finally:
        if private is not None:
            with contextlib.suppress(Exception):
                private.stop()
        shutil.rmtree(staging, ignore_errors=True)
    _note(progress, f"restored {info.backup_id}: {sum(result.final_keys.values())} keys")
    return result


def _make_safe(
    url: str,
    settings: RedisSettings,
    info: BackupInfo,
    live: _Live,
    revocations: Revocations | None,
    result: RedisRestoreResult,
) -> None:
    """Drop verification entries and revoked tokens; move the generation on (all dbs).

    ``url`` is the private Redis: nothing here touches the live one.
    """
    dropped = {"verifications": 0, "tokens": 0, "token_sets": 0}
    gen_db = _db_of(settings.url)
    dbs = sorted(set(result.loaded_keys) | {gen_db})
    drop_all = revocations is None or revocations.all_tokens
    snapshot_gens: dict[int, int | None] = {}
    for db in dbs:
        client = _client(url, 30.0, db=db)
        try:
            dropped["verifications"] += _scan_delete(client, f"{PREFIX}ver:*")
            if drop_all:
                dropped["tokens"] += _scan_delete(client, f"{PREFIX}tok:*")
                dropped["token_sets"] += _scan_delete(client, f"{PREFIX}ctok:*")
            elif revocations is not None and revocations.client_ids:
                t, s = _drop_client_tokens(client, revocations.client_ids)
                dropped["tokens"] += t
                dropped["token_sets"] += s
            snapshot_gens[db] = _int_or_none(client.get(GEN_KEY))
        finally:
            client.close()
    result.generation = _new_generation(live.generation, *snapshot_gens.values())
    for db, gen in snapshot_gens.items():
        if gen is not None or db == gen_db:
            client = _client(url, 30.0, db=db)
            try:
                client.set(GEN_KEY, result.generation)
            finally:
                client.close()
    result.dropped = dropped
    if revocations is None:
        result.tokens = "dropped"
        result.notes.append("no revocation record given: every token dropped")
    elif revocations.all_tokens:
        result.tokens = "dropped"
        result.notes.append("an emergency rotation since the snapshot: every token dropped")
    elif revocations.client_ids:
        result.tokens = "partially dropped"
        result.notes.append(
            f"tokens of {len(revocations.client_ids)} client(s) that revoked since the "
            "snapshot dropped"
        )
    else:
        result.tokens = "kept"
    log.info(
        "redis_restore_cleaned",
        backup_id=info.backup_id,
        dropped=json.dumps(dropped),
        outcome=result.tokens,
    )
