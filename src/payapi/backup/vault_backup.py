"""Vault backups (full and incremental) and restore, as a library the CLI calls.

What a vault backup is
    Every row of the vault's tables (``TABLES``: variables with all kept secret versions,
    policies and their versions, roles, memberships, permissions, annotations, API-key
    digests, the data-key check value), read in ONE ``REPEATABLE READ`` snapshot and
    streamed out as JSON lines, one object per table (``<table>.rows.jsonl``). The
    repository compresses and encrypts them; memory is bounded by a cursor batch.

    Secret values are copied as the vault stores them: AES-256-GCM ciphertexts under the
    vault's data key. The data key itself is never in a backup (only its one-way check
    value), so a backup is useless without the escrowed key, and a backup job does not
    need the key at all.

Incrementals
    Migration ``002_backup_changes.sql`` records the primary key of every row written or
    deleted (cascades included) with the id of the writing transaction. A backup records
    its snapshot; an incremental stores, for every key changed by a transaction its
    parent's snapshot did not see, the row as it is now (``<table>.rows.jsonl``) and the
    key itself (``<table>.keys.jsonl``). Restoring deletes every changed key, then inserts
    the rows: a key without a row is a deletion, so a variable removed by a replaced
    policy stays removed. Transaction visibility, not a sequence number, decides what is
    "since the parent": a sequence value is taken at write time, not at commit time.

    The parent is the newest vault backup in the repository. An incremental that cannot
    be built on it (no full yet, the vault was restored or is another database since, or
    the change log it needs was pruned) is taken as a full backup instead, and says so,
    as pgBackRest does: an hourly job never silently stops protecting the vault.

Restore
    The chain (full + incrementals) is rebuilt in temporary staging tables in the target
    database; the configured data key is then checked against the backup's key check
    value AND used to decrypt every staged secret version. Only then, in one transaction
    (tracking switched off, a new lineage started), the vault tables are replaced. A
    missing or wrong key is one clear error and nothing is changed. In place, the running
    vault keeps serving (it caches nothing from its tables: tokens are stateless and its
    keys derive from the data key), so it answers its health check afterwards.

    Before replacing, the staged state is compared with the live vault (and with the
    audit log when reachable): restoring a backup older than an emergency rotation brings
    back rotated credentials, and the result says so in ``warnings``.

Concurrency: a backup and a restore hold the repository lock of the ``vault`` component
(:func:`payapi.backup.lock.lock_name`), as retention's purge does.
"""

from __future__ import annotations

import asyncio
import os
import re
import threading
import time
from collections.abc import Callable, Coroutine, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit

import asyncpg
import httpx
import orjson

from payapi.backup.errors import NotFound, RepositoryError
from payapi.backup.lock import (
    DEFAULT_LEASE,
    Held,
    Lock,
    LockError,
    lock_name,
)
from payapi.backup.manifest import BackupInfo, Manifest
from payapi.backup.repository import BackupWriter, Repository
from payapi.core.logs import get_logger
from payapi.core.settings import ConfigError, Settings
from payapi.vault import db as vault_db
from payapi.vault.crypto import DecryptionError, SecretCipher, key_check_value, load_data_key

__all__ = [
    "COMPONENT",
    "FORMAT",
    "TABLES",
    "VaultBackupError",
    "VaultKeyError",
    "VaultRestoreError",
    "VaultRestoreResult",
    "restore_vault",
    "run_vault_backup",
    "wait_vault_healthy",
]

log = get_logger("payapi.backup.vault")

COMPONENT = "vault"
FORMAT = "payapi-vault/1"
BackupKind = Literal["full", "incremental"]

# Batches are bounded by rows AND bytes: a secret version may be 1 MiB (2 MiB as hex) and
# a policy text 5 MiB, so a fixed row count alone would not bound memory.
_BATCH_ROWS = 1000
_BATCH_BYTES = 8 * 1024 * 1024
_BLOCK_BYTES = 256 * 1024
# A restore in place waits at most this long for the vault's own transactions to finish.
_LOCK_TIMEOUT = "30s"
# Changes closer together than this are one rotation event in the warnings.
_EVENT_GAP = timedelta(minutes=10)

T = TypeVar("T")


@dataclass(frozen=True)
class Table:
    name: str
    pk: tuple[str, ...]

    @property
    def rows_object(self) -> str:
        return f"{self.name}.rows.jsonl"

    @property
    def keys_object(self) -> str:
        return f"{self.name}.keys.jsonl"

    @property
    def stage(self) -> str:
        return f"payapi_stage_{self.name}"

    def pk_sql(self, alias: str) -> str:
        return ", ".join(f"{alias}.{c}" for c in self.pk)

    def pk_join(self, left: str, right: str) -> str:
        return " AND ".join(f"{left}.{c} = {right}.{c}" for c in self.pk)


# In restore (insert) order: every immediate foreign key points to an earlier table; the
# deferred ones (owners, policies) are checked at commit.
TABLES: tuple[Table, ...] = (
    Table("vault_meta", ("name",)),
    Table("accounts", ("account",)),
    Table("roles", ("role_id",)),
    Table("resources", ("resource_id",)),
    Table("credentials", ("role_id",)),
    Table("role_memberships", ("role_id", "member_id", "ownership")),
    Table("permissions", ("resource_id", "role_id", "privilege")),
    Table("annotations", ("resource_id", "name")),
    Table("policy_versions", ("resource_id", "version")),
    Table("secrets", ("resource_id", "version")),
)
_BY_NAME = {t.name: t for t in TABLES}

# What a backup records about the vault it read (also the restore result's counts).
_SUMMARY_SQL = """
SELECT
  (SELECT count(*) FROM accounts) AS accounts,
  (SELECT count(*) FROM resources WHERE kind = 'variable') AS variables,
  (SELECT count(*) FROM secrets) AS secret_versions,
  (SELECT count(*) FROM resources WHERE kind = 'policy') AS policies,
  (SELECT count(*) FROM resources WHERE kind IN ('host', 'user')) AS identities,
  (SELECT count(*) FROM roles) AS roles,
  (SELECT count(*) FROM credentials) AS api_keys
"""


# --------------------------------------------------------------------------- errors


class VaultBackupError(RepositoryError):
    """A vault backup or restore failed; one line for the operator, never a secret."""


class VaultRestoreError(VaultBackupError):
    """The restore did not happen (the message says why; nothing was replaced)."""


class VaultKeyError(VaultRestoreError):
    """The vault data key is missing, unreadable, or not the key the backup was sealed with."""


# --------------------------------------------------------------------------- results


@dataclass
class VaultRestoreResult:
    """What a restore did. ``warnings`` are for the operator (and the CLI's output)."""

    backup_id: str
    chain: list[str]
    in_place: bool
    target: str
    snapshot_at: datetime | None
    counts: dict[str, int]
    rows: dict[str, int]
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0
    healthy: bool | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "backup_id": self.backup_id,
            "chain": list(self.chain),
            "component": COMPONENT,
            "in_place": self.in_place,
            "target": self.target,
            "snapshot_at": self.snapshot_at.isoformat() if self.snapshot_at else None,
            "counts": dict(self.counts),
            "rows": dict(self.rows),
            "warnings": list(self.warnings),
            "seconds": self.seconds,
            "healthy": self.healthy,
        }


# --------------------------------------------------------------------------- helpers


def _vault_dsn(settings: Settings) -> str:
    dsn = settings.vault.dsn or settings.postgres.vault_dsn
    if not dsn:
        raise VaultBackupError("vault: no database configured (vault.dsn or postgres.vault_dsn)")
    return dsn


def describe_dsn(dsn: str) -> str:
    """``host:port/dbname`` of a DSN: safe to print (no user, no password, no options)."""
    try:
        parts = urlsplit(dsn)
        host = parts.hostname or "localhost"
        port = f":{parts.port}" if parts.port else ""
        return f"{host}{port}{parts.path or '/'}"
    except ValueError:
        return "(unparseable DSN)"


def _utc(ts: datetime) -> str:
    return ts.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


class _Db:
    """A blocking facade over one asyncpg connection, run on a private event loop thread.

    The public API is synchronous (the CLI is), while the repository's writer pulls data
    from plain iterators; this lets a generator fetch cursor batches on demand, so memory
    stays bounded, whether or not the caller itself runs an event loop.
    """

    def __init__(self, dsn: str, what: str, *, timeout: float = 10.0) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="payapi-vault-backup-db", daemon=True
        )
        self._thread.start()
        self.what = what
        try:
            self.conn: asyncpg.Connection[asyncpg.Record] = self.run(
                asyncpg.connect(dsn, timeout=timeout)
            )
        except BaseException as exc:
            self._stop()
            if isinstance(exc, (OSError, asyncio.TimeoutError, asyncpg.PostgresError)):
                raise VaultBackupError(
                    f"cannot connect to {what} at {describe_dsn(dsn)} ({type(exc).__name__})"
                ) from None
            raise

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def execute(self, sql: str, *args: Any) -> str:
        return self.run(self.conn.execute(sql, *args))

    def fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        return self.run(self.conn.fetch(sql, *args))

    def fetchrow(self, sql: str, *args: Any) -> asyncpg.Record | None:
        return self.run(self.conn.fetchrow(sql, *args))

    def fetchval(self, sql: str, *args: Any) -> Any:
        return self.run(self.conn.fetchval(sql, *args))

    def batches(self, sql: str, *args: Any) -> Iterator[list[Any]]:
        """Rows of ``sql`` through a server-side cursor (needs a transaction), in batches
        of at most ``_BATCH_ROWS`` rows and about ``_BATCH_BYTES`` (sized by the rows'
        first column, the large one in every query here)."""

        async def open_cursor() -> Any:
            return await self.conn.cursor(sql, *args)

        cur = self.run(open_cursor())
        size = 16  # the first batch learns the row size
        while True:
            rows: list[Any] = self.run(cur.fetch(size))
            if not rows:
                return
            yield rows
            nbytes = sum(len(r[0]) if isinstance(r[0], (str, bytes)) else 64 for r in rows)
            per_row = max(1, nbytes // len(rows))
            size = max(1, min(_BATCH_ROWS, _BATCH_BYTES // per_row))

    def copy_records(
        self, table: str, records: Sequence[tuple[Any, ...]], columns: Sequence[str]
    ) -> None:
        self.run(self.conn.copy_records_to_table(table, records=records, columns=list(columns)))

    def _stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        if not self._thread.is_alive():
            self._loop.close()

    def close(self) -> None:
        try:
            self.run(self.conn.close(timeout=5))
        except Exception:  # closing is best effort
            self.conn.terminate()
        finally:
            self._stop()

    def __enter__(self) -> _Db:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _columns(db: _Db, table: str) -> list[str]:
    rows = db.fetch(
        """SELECT column_name FROM information_schema.columns
           WHERE table_schema = current_schema() AND table_name = $1
           ORDER BY ordinal_position""",
        table,
    )
    return [r["column_name"] for r in rows]


def _lines(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """Split a stream of chunks into lines (without the newline), across chunk borders."""
    rest = b""
    for chunk in chunks:
        data = rest + chunk
        parts = data.split(b"\n")
        rest = parts.pop()
        yield from (p for p in parts if p)
    if rest:
        yield rest


def _json_batches(lines: Iterable[bytes]) -> Iterator[tuple[str, int]]:
    """Lines of JSON objects → (JSON array text, count), bounded by rows and bytes."""
    batch: list[bytes] = []
    nbytes = 0
    for line in lines:
        batch.append(line)
        nbytes += len(line)
        if len(batch) >= _BATCH_ROWS or nbytes >= _BATCH_BYTES:
            yield "[" + b",".join(batch).decode("utf-8") + "]", len(batch)
            batch, nbytes = [], 0
    if batch:
        yield "[" + b",".join(batch).decode("utf-8") + "]", len(batch)


# --------------------------------------------------------------------------- backup


@dataclass
class _Parent:
    info: BackupInfo | None
    usable: bool
    reason: str


def _find_parent(repo: Repository, lineage: str, pruned_below: int) -> _Parent:
    """The newest vault backup, and whether an incremental can be built on it."""
    backups = repo.list_backups(COMPONENT)
    if not backups:
        return _Parent(None, False, "there is no earlier vault backup")
    parent = backups[-1]
    meta = parent.meta
    if meta.get("format") != FORMAT:
        return _Parent(parent, False, f"backup {parent.backup_id} is not a {FORMAT} backup")
    if meta.get("lineage") != lineage:
        return _Parent(
            parent,
            False,
            f"the vault database is not the one backup {parent.backup_id} was taken of "
            "(restored since, or another database)",
        )
    if int(meta.get("snapshot_xmin", "0")) < pruned_below:
        return _Parent(parent, False, f"the change log since backup {parent.backup_id} was pruned")
    try:
        _chain(repo, parent.backup_id)
    except VaultRestoreError as exc:
        return _Parent(parent, False, str(exc))
    return _Parent(parent, True, "")


def run_vault_backup(
    repo: Repository,
    settings: Settings,
    *,
    kind: BackupKind,
    progress: Callable[[str], None] | None = None,
    lock_wait: timedelta = timedelta(0),
) -> BackupInfo:
    """Back up the vault database into ``repo`` (component ``vault``, type ``kind``).

    An incremental that has no usable parent is taken as a full backup (``type`` of the
    result says which; ``meta["promoted_from"]`` and ``progress`` say why). Holds the
    component's repository lock (waiting up to ``lock_wait`` for a purge to finish). The
    vault's data key is not needed: ciphertexts are copied as they are.
    """
    if kind not in ("full", "incremental"):
        raise ValueError(f"vault backup kind must be full or incremental, not {kind!r}")
    say = progress or (lambda _msg: None)
    dsn = _vault_dsn(settings)
    repo.require_config()
    lock = Lock(repo.lock_store())
    holder = f"vault {kind} backup (pid {os.getpid()})"
    try:
        with (
            lock.hold(lock_name(COMPONENT), holder, DEFAULT_LEASE, wait=lock_wait) as held,
            _Db(dsn, "the vault database") as db,
        ):
            return _backup_and_prune(repo, db, kind, held, say)
    except LockError as exc:
        raise VaultBackupError(f"vault backup: {exc}") from None
    except asyncpg.PostgresError as exc:
        raise VaultBackupError(f"vault backup failed in the database ({_pg_error(exc)})") from None


def _pg_error(exc: BaseException) -> str:
    """``SomeError: first line of the message`` (PostgreSQL never echoes secret values:
    the vault's columns hold ciphertexts and digests only)."""
    first = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def _backup_and_prune(
    repo: Repository, db: _Db, kind: BackupKind, held: Held, say: Callable[[str], None]
) -> BackupInfo:
    applied = db.run(vault_db.migrate(db.conn))
    if applied:
        say(f"vault: applied schema migrations {', '.join(applied)}")
    info = _backup(repo, db, kind, held, say)
    # Only now that the manifest exists may the change log it covers go.
    removed = db.fetchval(
        """WITH state AS (
               UPDATE vault_backup_state
               SET pruned_below = greatest(pruned_below, $1::text::xid8)
               WHERE lineage = $2 RETURNING 1)
           , gone AS (
               DELETE FROM vault_changes WHERE xid < $1::text::xid8
                 AND EXISTS (SELECT 1 FROM state) RETURNING 1)
           SELECT count(*) FROM gone""",
        info.meta["snapshot_xmin"],
        info.meta["lineage"],
    )
    log.info(
        "vault_backup_committed",
        backup_id=info.backup_id,
        type=info.type,
        parent=info.parent,
        bytes=info.bytes,
        changes_pruned=int(removed or 0),
    )
    say(f"vault: backup {info.backup_id} committed ({info.type}, {info.objects} objects)")
    return info


def _backup(
    repo: Repository, db: _Db, kind: BackupKind, held: Held, say: Callable[[str], None]
) -> BackupInfo:
    tr = db.conn.transaction(isolation="repeatable_read", readonly=True)
    db.run(tr.start())
    try:
        # The first statement takes the snapshot every later read uses.
        head = db.fetchrow(
            """SELECT pg_current_snapshot()::text AS snapshot,
                      pg_snapshot_xmin(pg_current_snapshot())::text AS xmin,
                      clock_timestamp() AS at,
                      s.lineage, s.pruned_below::text AS pruned_below,
                      (SELECT value FROM vault_meta WHERE name = $1) AS key_check,
                      ARRAY(SELECT version FROM schema_migrations ORDER BY version) AS schema
               FROM vault_backup_state s""",
            vault_db.KEY_CHECK_NAME,
        )
        if head is None:
            raise VaultBackupError("vault database has no vault_backup_state row")
        db.execute("SET LOCAL bytea_output = 'hex'")
        db.execute("SET LOCAL TimeZone = 'UTC'")
        lineage = str(head["lineage"])
        parent: _Parent | None = None
        promoted: str | None = None
        if kind == "incremental":
            parent = _find_parent(repo, lineage, int(head["pruned_below"]))
            if not parent.usable:
                promoted = parent.reason
                say(f"vault: incremental taken as a full backup: {parent.reason}")
                kind = "full"
        parent_info = parent.info if parent is not None and parent.usable else None
        tables_meta: dict[str, Any] = {}
        with repo.begin_backup(
            COMPONENT, kind, parent_info.backup_id if parent_info else None
        ) as writer:
            say(f"vault: {kind} backup {writer.backup_id} from snapshot at {_utc(head['at'])}")
            for table in TABLES:
                cols = _columns(db, table.name)
                if not cols:
                    raise VaultBackupError(f"vault database has no table {table.name}")
                entry: dict[str, Any] = {"columns": cols}
                if parent_info is None:
                    entry["rows"] = _dump_table(db, writer, held, table)
                else:
                    psnap = str(parent_info.meta["snapshot"])
                    _dump_changes(db, writer, held, table, psnap, entry)
                tables_meta[table.name] = entry
                say(f"vault: {table.name}: {entry['rows']} rows")
            summary = db.fetchrow(_SUMMARY_SQL)
            assert summary is not None
            meta: dict[str, Any] = {
                "format": FORMAT,
                "snapshot": head["snapshot"],
                "snapshot_xmin": head["xmin"],
                "snapshot_at": head["at"].astimezone(UTC).isoformat(),
                "lineage": lineage,
                "schema": list(head["schema"]),
                "key_check": head["key_check"],
                "tables": tables_meta,
                "vault": {k: int(v) for k, v in dict(summary).items()},
            }
            if promoted is not None:
                meta["promoted_from"] = "incremental"
                meta["promotion_reason"] = promoted
            writer.set_meta(**meta)
            return writer.commit()
    finally:
        db.run(tr.rollback())


def _dump_table(db: _Db, writer: BackupWriter, held: Held, table: Table) -> int:
    """The whole of ``table`` (ordered by its key) into its rows object."""
    sql = (
        f"SELECT row_to_json(t)::text FROM {table.name} t "  # noqa: S608 - our own table names
        f"ORDER BY {table.pk_sql('t')}"
    )
    return _dump(db, writer, held, table.rows_object, sql)


def _dump(db: _Db, writer: BackupWriter, held: Held, name: str, sql: str, *args: Any) -> int:
    """Stream the single text column of ``sql`` into object ``name``, one line per row."""
    count = 0

    def blocks() -> Iterator[bytes]:
        nonlocal count
        buf = bytearray()
        for batch in db.batches(sql, *args):
            for row in batch:
                buf += row[0].encode("utf-8")
                buf += b"\n"
                count += 1
                if len(buf) >= _BLOCK_BYTES:
                    yield bytes(buf)
                    buf.clear()
            held.renew()
        if buf:
            yield bytes(buf)

    writer.add_object(name, blocks())
    return count


_CHANGED = """SELECT DISTINCT pk FROM vault_changes
    WHERE table_name = $1 AND pk IS NOT NULL
      AND xid >= pg_snapshot_xmin($2::text::pg_snapshot)
      AND NOT pg_visible_in_snapshot(xid, $2::text::pg_snapshot)"""


def _dump_changes(
    db: _Db,
    writer: BackupWriter,
    held: Held,
    table: Table,
    parent_snapshot: str,
    entry: dict[str, Any],
) -> None:
    """An incremental's objects for one table: changed keys, and their rows as they are now."""
    truncated = bool(
        db.fetchval(
            """SELECT EXISTS (SELECT 1 FROM vault_changes
                 WHERE table_name = $1 AND pk IS NULL
                   AND xid >= pg_snapshot_xmin($2::text::pg_snapshot)
                   AND NOT pg_visible_in_snapshot(xid, $2::text::pg_snapshot))""",
            table.name,
            parent_snapshot,
        )
    )
    entry["replace"] = truncated
    if truncated:  # the whole table changed: store all of it
        entry["keys"] = 0
        writer.add_bytes(table.keys_object, b"")
        entry["rows"] = _dump_table(db, writer, held, table)
        return
    entry["keys"] = _dump(
        db,
        writer,
        held,
        table.keys_object,
        f"SELECT c.pk::text FROM ({_CHANGED}) c ORDER BY c.pk",  # noqa: S608
        table.name,
        parent_snapshot,
    )
    entry["rows"] = _dump(
        db,
        writer,
        held,
        table.rows_object,
        f"""SELECT row_to_json(t)::text
            FROM ({_CHANGED}) c
            CROSS JOIN LATERAL jsonb_populate_record(NULL::{table.name}, c.pk) k
            JOIN {table.name} t ON {table.pk_join("t", "k")}
            ORDER BY {table.pk_sql("t")}""",  # noqa: S608
        table.name,
        parent_snapshot,
    )


# --------------------------------------------------------------------------- restore


def _chain(repo: Repository, backup_id: str | None) -> list[Manifest]:
    """The backups to apply, full first, ending with ``backup_id`` (default: the newest)."""
    if backup_id is None:
        backups = repo.list_backups(COMPONENT)
        if not backups:
            raise VaultRestoreError(f"no vault backup in {repo.url}")
        backup_id = backups[-1].backup_id
    chain: list[Manifest] = []
    seen: set[str] = set()
    current: str | None = backup_id
    while current is not None:
        if current in seen:
            raise VaultRestoreError(f"backup chain of {backup_id} loops at {current}")
        seen.add(current)
        try:
            manifest = repo.read_manifest(current)
        except NotFound:
            if current == backup_id:
                raise VaultRestoreError(f"backup {backup_id} not found in {repo.url}") from None
            raise VaultRestoreError(
                f"backup {backup_id} cannot be restored: {current}, a backup it builds on, "
                "is missing"
            ) from None
        if manifest.component != COMPONENT:
            raise VaultRestoreError(
                f"backup {current} is a {manifest.component} backup, not a vault backup"
            )
        if manifest.meta.get("format") != FORMAT:
            raise VaultRestoreError(f"backup {current} is not a {FORMAT} backup")
        chain.append(manifest)
        if manifest.type == "full":
            break
        if manifest.parent is None:
            raise VaultRestoreError(f"incremental backup {current} names no parent")
        current = manifest.parent
    chain.reverse()
    if chain[0].type != "full":
        raise VaultRestoreError(f"backup chain of {backup_id} does not start with a full backup")
    return chain


def _key_source(settings: Settings) -> str:
    if settings.vault.data_key_file is not None:
        return f"key file {settings.vault.data_key_file}"
    return f"${settings.vault.data_key_env}"


def _load_key(settings: Settings) -> bytes:
    try:
        return load_data_key(settings.vault)
    except ConfigError as exc:
        raise VaultKeyError(f"vault restore: {exc}; nothing was changed") from None


def _wrong_key(settings: Settings, what: str) -> VaultKeyError:
    return VaultKeyError(
        f"vault restore: the vault data key from {_key_source(settings)} is not the key "
        f"{what} was sealed with (configure the escrowed data key); nothing was changed"
    )


def restore_vault(
    repo: Repository,
    settings: Settings,
    *,
    backup_id: str | None = None,
    target_dsn: str | None = None,
    progress: Callable[[str], None] | None = None,
    health_timeout: float | None = 60.0,
    lock_wait: timedelta = timedelta(seconds=30),
) -> VaultRestoreResult:
    """Rebuild the vault database from ``backup_id`` (default: the newest) and its chain.

    In place when ``target_dsn`` is None (the configured vault database, replaced in one
    transaction while the vault keeps serving; then, if ``vault.url`` is configured and
    ``health_timeout`` is not None, the vault's health check is awaited: ``healthy`` says
    how that went, and a vault that did not answer adds a warning). With ``target_dsn``,
    into that database, which must hold no vault yet. Confirmation is the caller's business.

    Raises :class:`VaultKeyError` when the data key is missing or wrong and
    :class:`VaultRestoreError` for anything else; in both cases nothing was replaced.
    """
    start = time.monotonic()
    say = progress or (lambda _msg: None)
    data_key = _load_key(settings)
    chain = _chain(repo, backup_id)
    last = chain[-1]
    expected = last.meta.get("key_check")
    if expected and expected != key_check_value(data_key):
        raise _wrong_key(settings, f"backup {last.backup_id}")
    in_place = target_dsn is None
    dsn = target_dsn if target_dsn is not None else _vault_dsn(settings)
    say(
        "vault: restoring "
        + " + ".join(m.backup_id for m in chain)
        + (" in place" if in_place else f" into {describe_dsn(dsn)}")
    )
    lock = Lock(repo.lock_store())
    holder = f"vault restore (pid {os.getpid()})"
    try:
        with (
            lock.hold(lock_name(COMPONENT), holder, DEFAULT_LEASE, wait=lock_wait) as held,
            _Db(dsn, "the target vault database") as db,
        ):
            result = _restore(repo, settings, db, chain, data_key, in_place, dsn, held, say)
    except VaultRestoreError:
        raise
    except (VaultBackupError, RepositoryError, LockError) as exc:
        raise VaultRestoreError(f"vault restore: {exc}; nothing was changed") from None
    except asyncpg.PostgresError as exc:
        raise VaultRestoreError(
            f"vault restore failed in the database ({_pg_error(exc)}); nothing was changed"
        ) from None
    if in_place and settings.vault.url and health_timeout is not None:
        try:
            wait_vault_healthy(settings, health_timeout)
            result.healthy = True
            say("vault: health check OK")
        except VaultBackupError as exc:
            result.healthy = False
            result.warnings.append(str(exc))
    result.seconds = round(time.monotonic() - start, 3)
    log.info(
        "vault_restored",
        backup_id=result.backup_id,
        chain=result.chain,
        in_place=in_place,
        target=result.target,
        warnings=len(result.warnings),
        healthy=result.healthy,
    )
    return result


def _restore(
    repo: Repository,
    settings: Settings,
    db: _Db,
    chain: list[Manifest],
    data_key: bytes,
    in_place: bool,
    dsn: str,
    held: Held,
    say: Callable[[str], None],
) -> VaultRestoreResult:
    last = chain[-1]
    applied = db.run(vault_db.migrate(db.conn))
    if applied:
        say(f"vault: created the vault schema ({', '.join(applied)})")
    if not in_place:
        present = int(db.fetchval("SELECT count(*) FROM accounts"))
        if present:
            raise VaultRestoreError(
                f"the target database {describe_dsn(dsn)} already holds a vault "
                f"({present} accounts); restore in place, or into an empty database"
            )
    columns = {t.name: _columns(db, t.name) for t in TABLES}
    _stage(repo, db, chain, columns, held, say)
    _check_key(db, settings, data_key, last.backup_id, say)
    warnings = _warnings(db, settings, chain, data_key, in_place, dsn, say)
    rows = _replace(db, chain, columns)
    summary = db.fetchrow(_SUMMARY_SQL)
    assert summary is not None
    snapshot_at = last.meta.get("snapshot_at")
    return VaultRestoreResult(
        backup_id=last.backup_id,
        chain=[m.backup_id for m in chain],
        in_place=in_place,
        target=describe_dsn(dsn),
        snapshot_at=datetime.fromisoformat(snapshot_at) if snapshot_at else None,
        counts={k: int(v) for k, v in dict(summary).items()},
        rows=rows,
        warnings=warnings,
    )


def _stage(
    repo: Repository,
    db: _Db,
    chain: list[Manifest],
    columns: dict[str, list[str]],
    held: Held,
    say: Callable[[str], None],
) -> None:
    """Rebuild the chain's final state in temporary tables (no foreign keys, no triggers)."""
    for table in TABLES:
        db.execute(f"DROP TABLE IF EXISTS pg_temp.{table.stage}")
        db.execute(
            f"CREATE TEMP TABLE {table.stage} (LIKE {table.name} INCLUDING DEFAULTS "
            "INCLUDING INDEXES)"
        )
    for manifest in chain:
        tables = manifest.meta.get("tables", {})
        for table in TABLES:
            entry = tables.get(table.name)
            if entry is None:
                raise VaultRestoreError(
                    f"backup {manifest.backup_id} has no data for table {table.name}"
                )
            cols = [c for c in entry["columns"]]
            unknown = sorted(set(cols) - set(columns[table.name]))
            if unknown:
                raise VaultRestoreError(
                    f"backup {manifest.backup_id} has columns {', '.join(unknown)} in "
                    f"{table.name} that this vault schema lacks (restore with a newer payapi)"
                )
            col_sql = ", ".join(cols)
            if manifest.type == "full" or entry.get("replace"):
                db.execute(f"TRUNCATE {table.stage}")
            elif manifest.entry(table.keys_object) is not None:
                for batch, _n in _json_batches(
                    _lines(repo.iter_object(manifest.backup_id, table.keys_object))
                ):
                    db.execute(
                        f"DELETE FROM {table.stage} s USING json_populate_recordset("  # noqa: S608
                        f"NULL::{table.stage}, $1::json) k WHERE {table.pk_join('s', 'k')}",
                        batch,
                    )
                held.renew()
            count = 0
            for batch, n in _json_batches(
                _lines(repo.iter_object(manifest.backup_id, table.rows_object))
            ):
                db.execute(
                    f"INSERT INTO {table.stage} ({col_sql}) SELECT {col_sql} "  # noqa: S608
                    f"FROM json_populate_recordset(NULL::{table.stage}, $1::json)",
                    batch,
                )
                count += n
            held.renew()
            if count != entry.get("rows", count):
                raise VaultRestoreError(
                    f"backup {manifest.backup_id}: {table.name} holds {count} rows, "
                    f"its manifest says {entry.get('rows')}"
                )
        say(f"vault: staged {manifest.type} backup {manifest.backup_id}")


def _check_key(
    db: _Db, settings: Settings, data_key: bytes, backup_id: str, say: Callable[[str], None]
) -> None:
    """The configured key must match the backup's check value AND open every secret."""
    stored = db.fetchval(
        f"SELECT value FROM {_BY_NAME['vault_meta'].stage} WHERE name = $1",  # noqa: S608
        vault_db.KEY_CHECK_NAME,
    )
    if stored is not None and stored != key_check_value(data_key):
        raise _wrong_key(settings, f"backup {backup_id}")
    cipher = SecretCipher.from_data_key(data_key)
    checked = 0
    tr = db.conn.transaction()
    db.run(tr.start())
    try:
        for batch in db.batches(
            f"SELECT resource_id, version, sealed FROM {_BY_NAME['secrets'].stage}"  # noqa: S608
        ):
            for r in batch:
                try:
                    cipher.open(r["resource_id"], int(r["version"]), bytes(r["sealed"]))
                except DecryptionError:
                    raise _wrong_key(
                        settings,
                        f"the secrets of backup {backup_id} ({r['resource_id']} version "
                        f"{r['version']} does not open)",
                    ) from None
                checked += 1
    finally:
        db.run(tr.rollback())
    say(f"vault: data key checked: {checked} secret versions decrypt")


def _replace(db: _Db, chain: list[Manifest], columns: dict[str, list[str]]) -> dict[str, int]:
    """Replace the vault's tables with the staged state, in one transaction."""
    names = ", ".join(t.name for t in TABLES)
    rows: dict[str, int] = {}
    tr = db.conn.transaction()
    db.run(tr.start())
    try:
        db.execute("SET LOCAL payapi.vault_restore = 'on'")
        db.execute(f"SET LOCAL lock_timeout = '{_LOCK_TIMEOUT}'")
        db.execute(
            f"LOCK TABLE {names}, vault_changes, vault_backup_state IN ACCESS EXCLUSIVE MODE"
        )
        db.execute(f"TRUNCATE {names}, vault_changes")
        for table in TABLES:
            cols = ", ".join(c for c in columns[table.name])
            status = db.execute(
                f"INSERT INTO {table.name} ({cols}) SELECT {cols} FROM {table.stage}"  # noqa: S608
            )
            rows[table.name] = int(status.rsplit(" ", 1)[-1])
        db.execute(
            """UPDATE vault_backup_state SET lineage = gen_random_uuid()::text,
                   pruned_below = '0'::xid8, restored_at = now(), restored_from = $1""",
            chain[-1].backup_id,
        )
        db.execute("SET CONSTRAINTS ALL IMMEDIATE")  # deferred FKs fail here, not at COMMIT
        db.run(tr.commit())
    except BaseException:
        db.run(tr.rollback())
        raise
    for table in TABLES:
        db.execute(f"DROP TABLE IF EXISTS pg_temp.{table.stage}")
    return rows


# --------------------------------------------------------------------------- warnings


_CMP_TABLES = {
    "payapi_cmp_secrets": "resource_id text, version int, created_at timestamptz, sealed bytea",
    "payapi_cmp_credentials": "role_id text, api_key_sha256 bytea, rotated_at timestamptz",
    "payapi_cmp_resources": "resource_id text, kind text",
}
_PVU = "/previous-valid-until"


def _cmp_queries() -> dict[str, str]:
    return {
        "payapi_cmp_secrets": f"""SELECT resource_id, version, created_at,
                   CASE WHEN resource_id LIKE '%{_PVU}' THEN sealed END AS sealed
               FROM secrets""",  # noqa: S608 - constants only
        "payapi_cmp_credentials": "SELECT role_id, api_key_sha256, rotated_at FROM credentials",
        "payapi_cmp_resources": "SELECT resource_id, kind FROM resources",
    }


def _load_live(
    db: _Db, settings: Settings, in_place: bool, dsn: str, say: Callable[[str], None]
) -> bool:
    """Copy what the live vault holds now (metadata only) into comparison tables."""
    for name, cols in _CMP_TABLES.items():
        db.execute(f"DROP TABLE IF EXISTS pg_temp.{name}")
        db.execute(f"CREATE TEMP TABLE {name} ({cols})")
    if in_place:
        for name, sql in _cmp_queries().items():
            db.execute(f"INSERT INTO {name} {sql}")
        return True
    live_dsn = settings.vault.dsn or settings.postgres.vault_dsn
    if not live_dsn or live_dsn == dsn:
        return False
    try:
        live = _Db(live_dsn, "the live vault database", timeout=5.0)
    except VaultBackupError as exc:
        say(f"vault: live vault not compared: {exc}")
        return False
    with live:
        try:
            tr = live.conn.transaction(isolation="repeatable_read", readonly=True)
            live.run(tr.start())
            try:
                for name, sql in _cmp_queries().items():
                    names = [c.split()[0] for c in _CMP_TABLES[name].split(", ")]
                    for batch in live.batches(sql):
                        db.copy_records(name, [tuple(r) for r in batch], names)
            finally:
                live.run(tr.rollback())
        except asyncpg.PostgresError as exc:  # e.g. not a vault database
            say(f"vault: live vault not compared ({type(exc).__name__})")
            return False
    return True


def _clusters(times: list[tuple[datetime, str]]) -> list[tuple[datetime, set[str]]]:
    """Group (time, name) pairs into events separated by more than ``_EVENT_GAP``."""
    out: list[tuple[datetime, set[str]]] = []
    last: datetime | None = None
    for at, name in sorted(times):
        if last is None or at - last > _EVENT_GAP:
            out.append((at, set()))
        out[-1][1].add(name)
        last = at
    return out


def _warnings(
    db: _Db,
    settings: Settings,
    chain: list[Manifest],
    data_key: bytes,
    in_place: bool,
    dsn: str,
    say: Callable[[str], None],
) -> list[str]:
    """What restoring this state undoes, compared with the live vault and the audit log."""
    warnings: list[str] = []
    snap_text = chain[-1].meta.get("snapshot_at")
    snapshot_at = datetime.fromisoformat(snap_text) if snap_text else None
    stage_secrets = _BY_NAME["secrets"].stage
    stage_resources = _BY_NAME["resources"].stage
    stage_credentials = _BY_NAME["credentials"].stage
    emergencies: list[tuple[datetime, set[str]]] = []
    if _load_live(db, settings, in_place, dsn, say):
        newer = db.fetch(
            f"""SELECT c.resource_id, c.version, c.created_at, c.sealed
                FROM payapi_cmp_secrets c
                JOIN {stage_resources} r ON r.resource_id = c.resource_id
                LEFT JOIN (SELECT resource_id, max(version) AS v FROM {stage_secrets}
                           GROUP BY resource_id) s ON s.resource_id = c.resource_id
                WHERE c.version > coalesce(s.v, 0)
                ORDER BY c.created_at"""  # noqa: S608
        )
        cipher = SecretCipher.from_data_key(data_key)
        from payapi.core.naming import CLIENTS_PREFIX
        from payapi.credentials.service import EPOCH

        pvu = re.compile(rf"^[^:]+:variable:{re.escape(CLIENTS_PREFIX)}/([^/]+){_PVU}$")
        emergency_times: list[tuple[datetime, str]] = []
        for r in newer:
            m = pvu.match(r["resource_id"])
            if m is None or r["sealed"] is None:
                continue
            try:
                value = cipher.open(r["resource_id"], int(r["version"]), bytes(r["sealed"]))
            except DecryptionError:
                continue
            if value.decode("utf-8", "replace") == EPOCH:
                emergency_times.append((r["created_at"], m.group(1)))
        emergencies = _clusters(emergency_times)
        for at, names in emergencies:
            warnings.append(
                f"this backup predates an emergency rotation of {len(names)} clients on "
                f"{_utc(at)}: it brings back rotated credentials"
            )
        if newer:
            variables = {r["resource_id"] for r in newer}
            warnings.append(
                f"{len(variables)} variables have {len(newer)} secret versions newer than "
                f"this backup (the newest written {_utc(newer[-1]['created_at'])}); "
                "restoring brings back their older values"
            )
        keys = db.fetch(
            f"""SELECT c.role_id FROM payapi_cmp_credentials c
                JOIN {stage_credentials} s ON s.role_id = c.role_id
                WHERE c.api_key_sha256 <> s.api_key_sha256 ORDER BY c.role_id"""  # noqa: S608
        )
        if keys:
            shown = ", ".join(r["role_id"] for r in keys[:5]) + (" ..." if len(keys) > 5 else "")
            warnings.append(
                f"the API keys of {len(keys)} roles were rotated after this backup: the "
                f"restored vault accepts their old keys and rejects the current ones ({shown})"
            )
        created = db.fetch(
            f"""SELECT c.kind, count(*) AS n FROM payapi_cmp_resources c
                WHERE NOT EXISTS (SELECT 1 FROM {stage_resources} s
                                  WHERE s.resource_id = c.resource_id)
                GROUP BY c.kind ORDER BY c.kind"""  # noqa: S608
        )
        if created:
            what = ", ".join(f"{r['n']} {r['kind']}s" for r in created)
            warnings.append(f"created after this backup, removed by restoring it: {what}")
    elif not in_place:
        warnings.append(
            "the live vault could not be compared with this backup: rotations after it "
            "are detected from the audit log only"
        )
    for name in _CMP_TABLES:
        db.execute(f"DROP TABLE IF EXISTS pg_temp.{name}")
    if snapshot_at is not None:
        warnings[:0] = _audit_warnings(settings, snapshot_at, emergencies, say)
    return warnings


def _audit_warnings(
    settings: Settings,
    snapshot_at: datetime,
    known: list[tuple[datetime, set[str]]],
    say: Callable[[str], None],
) -> list[str]:
    """Emergency rotations after ``snapshot_at`` in the audit log, unless already known."""
    dsn = settings.postgres.payment_dsn
    if not dsn:
        return []
    try:
        with _Db(dsn, "the audit log", timeout=5.0) as audit:
            rows = audit.fetch(
                """SELECT occurred_at, details::text AS details FROM audit_events
                   WHERE type = 'credentials.emergency_rotation' AND occurred_at > $1
                   ORDER BY occurred_at""",
                snapshot_at,
            )
    except VaultBackupError as exc:
        say(f"vault: audit log not consulted: {exc}")
        return []
    except asyncpg.PostgresError as exc:
        say(f"vault: audit log not consulted ({type(exc).__name__})")
        return []
    out: list[str] = []
    for r in rows:
        at: datetime = r["occurred_at"]
        if any(abs(at - k_at) <= _EVENT_GAP for k_at, _ in known):
            continue
        try:
            clients = int(orjson.loads(r["details"]).get("clients", 0))
        except (orjson.JSONDecodeError, TypeError, ValueError, AttributeError):
            clients = 0
        out.append(
            f"this backup predates an emergency rotation of {clients} clients on "
            f"{_utc(at)}: it brings back rotated credentials"
        )
    return out


# --------------------------------------------------------------------------- health


def vault_url(settings: Settings) -> str:
    url = settings.vault.url or f"http://{settings.vault.host}:{settings.vault.port}"
    return url.rstrip("/")


def wait_vault_healthy(settings: Settings, timeout: float = 60.0) -> None:
    """Wait until the vault's ``/health`` answers ``{"status": "ok"}``; raise after ``timeout``."""
    url = vault_url(settings) + "/health"
    deadline = time.monotonic() + timeout
    last = "no answer"
    with httpx.Client(timeout=5.0, trust_env=False) as http:
        while True:
            try:
                resp = http.get(url)
                if resp.status_code == 200 and resp.json().get("status") == "ok":
                    return
                last = f"HTTP {resp.status_code}"
            except (httpx.HTTPError, ValueError) as exc:
                last = type(exc).__name__
            if time.monotonic() >= deadline:
                raise VaultBackupError(
                    f"the vault at {vault_url(settings)} did not answer its health check "
                    f"within {timeout:.0f}s (last: {last})"
                )
            time.sleep(0.25)
