"""Vault backups, full and incremental (restore: :mod:`payapi.backup.vault_restore`).

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

Concurrency: the caller holds the repository lock of the ``vault`` component
(:func:`payapi.backup.engines.run_backup` and ``restore_lock`` take it), as a purge does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC
from typing import Any

import asyncpg

from payapi.backup.manifest import BackupInfo
from payapi.backup.repository import BackupWriter, Repository
from payapi.backup.vault_db import VaultDb, columns_of
from payapi.backup.vault_format import (
    COMPONENT,
    FORMAT,
    SUMMARY_SQL,
    TABLES,
    BackupKind,
    Table,
    TableEntry,
    VaultBackupError,
    VaultMeta,
    VaultRestoreError,
    chain_of,
    pg_error,
    utc,
    vault_dsn,
)
from payapi.core.journal import Journal
from payapi.core.logs import get_logger
from payapi.core.settings import Settings
from payapi.vault import db as vault_db

__all__ = ["run_vault_backup"]

log = get_logger("payapi.backup.vault")

_BLOCK_BYTES = 256 * 1024


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
    if parent.meta.get("format") != FORMAT:
        return _Parent(parent, False, f"backup {parent.backup_id} is not a {FORMAT} backup")
    meta = VaultMeta.of(parent)
    if meta.lineage != lineage:
        return _Parent(
            parent,
            False,
            f"the vault database is not the one backup {parent.backup_id} was taken of "
            "(restored since, or another database)",
        )
    if int(meta.snapshot_xmin) < pruned_below:
        return _Parent(parent, False, f"the change log since backup {parent.backup_id} was pruned")
    try:
        chain_of(repo, parent.backup_id)
    except VaultRestoreError as exc:
        return _Parent(parent, False, str(exc))
    return _Parent(parent, True, "")


def run_vault_backup(
    repo: Repository,
    settings: Settings,
    *,
    kind: BackupKind,
    journal: Journal | None = None,
    keep_alive: Callable[[], None] = lambda: None,
) -> BackupInfo:
    """Back up the vault database into ``repo`` (component ``vault``, type ``kind``).

    An incremental that has no usable parent is taken as a full backup (``type`` of the
    result says which; ``meta["promoted_from"]`` and the journal say why). The caller
    holds the component's lock (:func:`payapi.backup.engines.run_backup` does) and
    ``keep_alive`` renews it as data streams. The vault's data key is not needed:
    ciphertexts are copied as they are.
    """
    if kind not in ("full", "incremental"):
        raise ValueError(f"vault backup kind must be full or incremental, not {kind!r}")
    say = (journal or Journal.silent()).note
    dsn = vault_dsn(settings)
    repo.require_config()
    try:
        with VaultDb(dsn, "the vault database") as db:
            return _backup_and_prune(repo, db, kind, keep_alive, say)
    except asyncpg.PostgresError as exc:
        raise VaultBackupError(f"vault backup failed in the database ({pg_error(exc)})") from None


def _backup_and_prune(
    repo: Repository,
    db: VaultDb,
    kind: BackupKind,
    keep_alive: Callable[[], None],
    say: Callable[[str], None],
) -> BackupInfo:
    applied = db.run(vault_db.migrate(db.conn))
    if applied:
        say(f"vault: applied schema migrations {', '.join(applied)}")
    info = _backup(repo, db, kind, keep_alive, say)
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
        VaultMeta.of(info).snapshot_xmin,
        VaultMeta.of(info).lineage,
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
    repo: Repository,
    db: VaultDb,
    kind: BackupKind,
    keep_alive: Callable[[], None],
    say: Callable[[str], None],
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
        tables_meta: dict[str, TableEntry] = {}
        with repo.begin_backup(
            COMPONENT, kind, parent_info.backup_id if parent_info else None
        ) as writer:
            say(f"vault: {kind} backup {writer.backup_id} from snapshot at {utc(head['at'])}")
            for table in TABLES:
                cols = columns_of(db, table.name)
                if not cols:
                    raise VaultBackupError(f"vault database has no table {table.name}")
                entry: dict[str, Any] = {"columns": cols}
                if parent_info is None:
                    entry["rows"] = _dump_table(db, writer, keep_alive, table)
                else:
                    psnap = VaultMeta.of(parent_info).snapshot
                    _dump_changes(db, writer, keep_alive, table, psnap, entry)
                tables_meta[table.name] = TableEntry(**entry)
                say(f"vault: {table.name}: {entry['rows']} rows")
            summary = db.fetchrow(SUMMARY_SQL)
            assert summary is not None
            meta = VaultMeta(
                format=FORMAT,
                snapshot=head["snapshot"],
                snapshot_xmin=head["xmin"],
                snapshot_at=head["at"].astimezone(UTC).isoformat(),
                lineage=lineage,
                schema=list(head["schema"]),
                key_check=head["key_check"],
                tables=tables_meta,
                vault={k: int(v) for k, v in dict(summary).items()},
            )
            if promoted is not None:
                meta = meta.model_copy(
                    update={"promoted_from": "incremental", "promotion_reason": promoted}
                )
            writer.set_meta(**meta.dump())
            return writer.commit()
    finally:
        db.run(tr.rollback())


def _dump_table(
    db: VaultDb, writer: BackupWriter, keep_alive: Callable[[], None], table: Table
) -> int:
    """The whole of ``table`` (ordered by its key) into its rows object."""
    sql = (
        f"SELECT row_to_json(t)::text FROM {table.name} t "  # noqa: S608 - our own table names
        f"ORDER BY {table.pk_sql('t')}"
    )
    return _dump(db, writer, keep_alive, table.rows_object, sql)


def _dump(
    db: VaultDb,
    writer: BackupWriter,
    keep_alive: Callable[[], None],
    name: str,
    sql: str,
    *args: Any,
) -> int:
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
            keep_alive()
        if buf:
            yield bytes(buf)

    writer.add_object(name, blocks())
    return count


_CHANGED = """SELECT DISTINCT pk FROM vault_changes
    WHERE table_name = $1 AND pk IS NOT NULL
      AND xid >= pg_snapshot_xmin($2::text::pg_snapshot)
      AND NOT pg_visible_in_snapshot(xid, $2::text::pg_snapshot)"""


def _dump_changes(
    db: VaultDb,
    writer: BackupWriter,
    keep_alive: Callable[[], None],
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
        entry["rows"] = _dump_table(db, writer, keep_alive, table)
        return
    entry["keys"] = _dump(
        db,
        writer,
        keep_alive,
        table.keys_object,
        f"SELECT c.pk::text FROM ({_CHANGED}) c ORDER BY c.pk",  # noqa: S608
        table.name,
        parent_snapshot,
    )
    entry["rows"] = _dump(
        db,
        writer,
        keep_alive,
        table.rows_object,
        f"""SELECT row_to_json(t)::text
            FROM ({_CHANGED}) c
            CROSS JOIN LATERAL jsonb_populate_record(NULL::{table.name}, c.pk) k
            JOIN {table.name} t ON {table.pk_join("t", "k")}
            ORDER BY {table.pk_sql("t")}""",  # noqa: S608
        table.name,
        parent_snapshot,
    )
