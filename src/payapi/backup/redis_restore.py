"""Redis restores that cannot resurrect a revoked token, and rebuilds.

One job: put a Redis snapshot back into the Redis a :class:`~payapi.systems.redis.RedisControl`
stops and starts, or start that Redis empty.

Restore (:func:`restore_redis`): the snapshot is first loaded into a *private* Redis on a
free loopback port, never the live one, where the key count is verified against the
snapshot and EAPI's restore-safety rule is applied
(:func:`payapi.eapi.cachekeys.make_restore_safe`):

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

The caller holds the component's lock (:func:`payapi.backup.service.component_lock`).
"""

from __future__ import annotations

import contextlib
import json
import secrets
import shutil
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import redis as redis_sync
from redis.exceptions import BusyLoadingError, RedisError

from payapi.backup.errors import NotFound, RepositoryError
from payapi.backup.manifest import BackupInfo
from payapi.backup.rdb import RdbError, RdbSummary, scan_file
from payapi.backup.redis_backup import COMPONENT, OBJECT, RedisMeta
from payapi.backup.repository import Repository
from payapi.core.journal import Journal
from payapi.core.logs import get_logger
from payapi.core.settings import RedisSettings
from payapi.eapi.cachekeys import (
    GEN_KEY,
    Dropped,
    make_restore_safe,
    new_generation,
    read_generation,
)
from payapi.systems.redis import RedisControl, client, config_get, db_of, persistence_less

__all__ = [
    "EMERGENCY_ROTATION",
    "TOKEN_REVOKED",
    "RedisRestoreError",
    "RedisRestoreResult",
    "Revocations",
    "restore_redis",
    "revocations_from_audit",
    "revocations_from_events",
    "snapshot_time",
]

# How far ahead restore verification keeps expiry times (a load taking longer than this
# makes the check an error rather than a guess).
_HORIZON_MS = 3600 * 1000
# Clock slack around load times (ms): Redis and this process read the clock separately.
_SLACK_MS = 1000

# Audit event types that revoke tokens (payapi.eapi.app, payapi.credentials.service).
TOKEN_REVOKED = "token.revoked"  # noqa: S105 - an event type; subject: the client id whose token revoked itself
EMERGENCY_ROTATION = "credentials.emergency_rotation"  # revokes every token

STEP_FETCH = "fetching the snapshot"
STEP_PRIVATE = "loading into a private Redis"
STEP_REPLACE = "replacing the live Redis"
STEP_REBUILD = "rebuilding Redis empty"

log = get_logger("payapi.backup.redis")


class RedisRestoreError(RepositoryError):
    """A Redis restore or rebuild failed or did not verify; one line for the operator."""


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


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


# --------------------------------------------------------------------------- result


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


# --------------------------------------------------------------------------- checks


def _keyspace(conn: redis_sync.Redis) -> dict[int, int]:
    info: dict[str, Any] = conn.info("keyspace")
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
        conn = client(url, 2.0)
        try:
            if conn.ping():
                return
        except BusyLoadingError:
            last = "still loading"
        except (RedisError, OSError) as exc:
            last = type(exc).__name__
        finally:
            conn.close()
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


@dataclass
class _Live:
    reachable: bool
    generation: int | None = None
    appendonly: str | None = None


def _probe(url: str, timeout: float) -> _Live:
    conn = client(url, timeout)
    try:
        return _Live(True, read_generation(conn), config_get(conn, "appendonly"))
    except (RedisError, OSError):
        return _Live(False)
    finally:
        conn.close()


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


# --------------------------------------------------------------------------- restore


def restore_redis(
    repo: Repository,
    settings: RedisSettings,
    control: RedisControl,
    *,
    backup_id: str | None = None,
    rebuild: bool = False,
    revocations: Revocations | RevocationSource | None = None,
    journal: Journal | None = None,
    load_timeout: float = 300.0,
) -> RedisRestoreResult:
    """Restore a Redis snapshot in place (the newest one unless ``backup_id``), or rebuild
    Redis empty (``rebuild=True``). See the module docstring for what is dropped and why.

    ``settings.url`` is the Redis that ``control`` stops and starts (its database number is
    where ``payapi:gen`` lives). ``revocations``: what was revoked since the snapshot, or a
    function that is given the snapshot's time (:func:`snapshot_time`) and returns it,
    e.g. ``lambda t: asyncio.run(revocations_from_audit(dsn, t))``; without it every token
    is dropped. Raises :class:`RedisRestoreError` if a key count does not verify; before
    the live Redis is stopped, nothing has changed. The caller holds the component's
    repository lock (as a backup and retention's purge do). Confirmation is the caller's.
    """
    j = journal or Journal.silent()
    started = time.monotonic()
    live = _probe(settings.url, max(settings.socket_timeout_seconds, 2.0))
    if live.appendonly == "yes":
        raise RedisRestoreError(
            "Redis has appendonly yes: it would load its AOF, not the snapshot; "
            "disable AOF (or restore its AOF files) first"
        )
    if rebuild:
        result = _rebuild(settings, control, live, j, load_timeout)
    else:
        result = _restore(repo, settings, control, live, backup_id, revocations, j, load_timeout)
    result.seconds = time.monotonic() - started
    return result


def _rebuild(
    settings: RedisSettings,
    control: RedisControl,
    live: _Live,
    j: Journal,
    load_timeout: float,
) -> RedisRestoreResult:
    result = RedisRestoreResult(mode="rebuild", backup_id=None, tokens="none")
    with j.step(STEP_REBUILD):
        j.note("stopping Redis")
        control.stop()
        data_file = control.data_dir / control.dbfilename
        if data_file.exists():
            data_file.unlink()
            result.notes.append(f"removed {data_file}")
        j.note("starting Redis empty")
        control.start()
        _wait_loaded(settings.url, load_timeout, "Redis")
        conn = client(settings.url, 5.0)
        try:
            before = _keyspace(conn)
            if before:
                raise RedisRestoreError(
                    f"Redis started with {sum(before.values())} keys after a rebuild: "
                    "it loads data from somewhere else (an AOF, another dir)"
                )
            result.generation = new_generation(live.generation)
            conn.set(GEN_KEY, result.generation)
            result.final_keys = _keyspace(conn)
        finally:
            conn.close()
        result.verified = result.final_keys == {db_of(settings.url): 1}
        if not result.verified:
            raise RedisRestoreError(f"Redis after the rebuild holds {result.final_keys}, not 1 key")
        j.note("Redis rebuilt empty; clients re-authenticate")
    return result


def _restore(
    repo: Repository,
    settings: RedisSettings,
    control: RedisControl,
    live: _Live,
    backup_id: str | None,
    revocations: Revocations | RevocationSource | None,
    j: Journal,
    load_timeout: float,
) -> RedisRestoreResult:
    from payapi.servers.procs import ServerError, free_port
    from payapi.servers.redis import RedisServer

    info = _pick_backup(repo, backup_id)
    snap_at = snapshot_time(info)
    if callable(revocations):
        revocations = revocations(snap_at)
    if revocations is not None and revocations.since > snap_at:
        raise ValueError(
            f"revocations since {revocations.since.isoformat()} do not cover the time "
            f"since the snapshot ({snap_at.isoformat()})"
        )
    result = RedisRestoreResult(
        mode="restore", backup_id=info.backup_id, snapshot_keys=RedisMeta.of(info).key_counts()
    )
    data_dir = control.data_dir
    data_dir.mkdir(parents=True, exist_ok=True)
    staging = data_dir / f".payapi-restore-{secrets.token_hex(4)}"
    staging.mkdir(mode=0o700)
    private: RedisServer | None = None
    try:
        staged = staging / "dump.rdb"
        with j.step(STEP_FETCH):
            j.note(f"fetching {info.backup_id}")
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
        with j.step(STEP_PRIVATE):
            private = RedisServer(workdir=staging, port=free_port())
            j.note("loading the snapshot into a private Redis")
            try:
                private.start()
            except ServerError as exc:
                raise RedisRestoreError(f"private Redis did not start: {exc}") from None
            private_url = f"redis://127.0.0.1:{private.port}/0"
            _wait_loaded(
                private_url, load_timeout, "the private Redis", private.logfile, private.is_running
            )
            conn = client(private_url, 30.0)
            try:
                result.loaded_keys = _keyspace(conn)
                _check_counts("private Redis", loaded_summary, result.loaded_keys, t0, _now_ms())
                _make_safe(private_url, settings, info, live, revocations, result)
                conn.save()
            finally:
                conn.close()
            private.stop()
            private = None
            t2 = _now_ms()
            try:
                clean = scan_file(staged, as_of=t2 - _SLACK_MS, horizon_ms=_HORIZON_MS)
            except RdbError as exc:
                raise RedisRestoreError(f"the cleaned snapshot is unreadable: {exc}") from None

        # 2. Stop, replace, start, verify.
        with j.step(STEP_REPLACE):
            j.note("stopping Redis")
            control.stop()
            target = data_dir / control.dbfilename
            staged.replace(target)
            j.note("starting Redis on the restored snapshot")
            control.start()
            _wait_loaded(settings.url, load_timeout, "Redis")
            conn = client(settings.url, 30.0)
            try:
                result.final_keys = _keyspace(conn)
                _check_counts("Redis", clean, result.final_keys, t2, _now_ms())
                result.verified = True
                # A Redis that keeps nothing on disk must not reload this snapshot at its
                # next restart (by then revocations may have happened): it has it in memory.
                if persistence_less(conn):
                    target.unlink(missing_ok=True)
                    result.notes.append(f"removed {target} after loading (Redis keeps no RDB)")
            finally:
                conn.close()
            j.note(f"restored {info.backup_id}: {sum(result.final_keys.values())} keys")
    finally:
        if private is not None:
            with contextlib.suppress(Exception):
                private.stop()
        shutil.rmtree(staging, ignore_errors=True)
    return result


def _make_safe(
    url: str,
    settings: RedisSettings,
    info: BackupInfo,
    live: _Live,
    revocations: Revocations | None,
    result: RedisRestoreResult,
) -> None:
    """Apply EAPI's restore-safety rule to every database; move the generation on.

    ``url`` is the private Redis: nothing here touches the live one.
    """
    dropped = Dropped()
    gen_db = db_of(settings.url)
    dbs = sorted(set(result.loaded_keys) | {gen_db})
    drop_all = revocations is None or revocations.all_tokens
    clients = revocations.client_ids if revocations is not None else frozenset()
    snapshot_gens: dict[int, int | None] = {}
    for db in dbs:
        conn = client(url, 30.0, db=db)
        try:
            dropped += make_restore_safe(conn, drop_all_tokens=drop_all, client_ids=clients)
            snapshot_gens[db] = read_generation(conn)
        finally:
            conn.close()
    result.generation = new_generation(live.generation, *snapshot_gens.values())
    for db, gen in snapshot_gens.items():
        if gen is not None or db == gen_db:
            conn = client(url, 30.0, db=db)
            try:
                conn.set(GEN_KEY, result.generation)
            finally:
                conn.close()
    result.dropped = dropped.to_json()
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
        dropped=json.dumps(result.dropped),
        outcome=result.tokens,
    )
