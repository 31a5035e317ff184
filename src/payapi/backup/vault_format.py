"""The vault backup format: its tables, its errors, and reading a backup chain.

A vault backup (``payapi-vault/1``) is every row of the vault's tables (:data:`TABLES`),
read in one ``REPEATABLE READ`` snapshot, one JSON-lines object per table
(``<table>.rows.jsonl``; an incremental adds ``<table>.keys.jsonl``, the keys changed
since its parent). What backup, restore and the restore warnings share lives here; see
:mod:`payapi.backup.vault_backup` for how a backup is taken and
:mod:`payapi.backup.vault_restore` for how one is restored.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field

from payapi.backup.errors import NotFound, RepositoryError
from payapi.backup.manifest import BackupMeta, Manifest
from payapi.backup.repository import Repository
from payapi.core.settings import Settings

COMPONENT = "vault"
FORMAT = "payapi-vault/1"
BackupKind = Literal["full", "incremental"]

# Batches are bounded by rows AND bytes: a secret version may be 1 MiB (2 MiB as hex) and
# a policy text 5 MiB, so a fixed row count alone would not bound memory.
BATCH_ROWS = 1000
BATCH_BYTES = 8 * 1024 * 1024


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
BY_NAME = {t.name: t for t in TABLES}

# What a backup records about the vault it read (also the restore result's counts).
SUMMARY_SQL = """
SELECT
  (SELECT count(*) FROM accounts) AS accounts,
  (SELECT count(*) FROM resources WHERE kind = 'variable') AS variables,
  (SELECT count(*) FROM secrets) AS secret_versions,
  (SELECT count(*) FROM resources WHERE kind = 'policy') AS policies,
  (SELECT count(*) FROM resources WHERE kind IN ('host', 'user')) AS identities,
  (SELECT count(*) FROM roles) AS roles,
  (SELECT count(*) FROM credentials) AS api_keys
"""


class TableEntry(BaseModel):
    """One table in a backup: its columns, the rows stored, and (incrementals) the changed
    keys stored and whether the whole table was replaced (a TRUNCATE since the parent)."""

    model_config = ConfigDict(frozen=True, extra="allow")

    columns: list[str]
    rows: int
    keys: int | None = None
    replace: bool = False


class VaultMeta(BackupMeta):
    """What a vault backup's manifest records: the snapshot it read (``snapshot`` is the
    ``pg_snapshot`` an incremental is taken against), the vault's lineage (a restore
    starts a new one), the data key's check value, and per table its :class:`TableEntry`."""

    model_config = ConfigDict(frozen=True, extra="allow", coerce_numbers_to_str=True)

    format: str = ""
    snapshot: str = ""
    snapshot_xmin: str = "0"
    snapshot_at: str | None = None
    lineage: str = ""
    schema_versions: list[str] = Field(default_factory=list, alias="schema")
    key_check: str | None = None
    tables: dict[str, TableEntry] = Field(default_factory=dict)
    vault: dict[str, int] = Field(default_factory=dict)
    promoted_from: str | None = None
    promotion_reason: str | None = None

    def dump(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_unset=True, by_alias=True)

    @property
    def snapshot_time(self) -> datetime | None:
        return datetime.fromisoformat(self.snapshot_at) if self.snapshot_at else None


# --------------------------------------------------------------------------- errors


class VaultBackupError(RepositoryError):
    """A vault backup or restore failed; one line for the operator, never a secret."""


class VaultRestoreError(VaultBackupError):
    """The restore did not happen (the message says why; nothing was replaced)."""


class VaultKeyError(VaultRestoreError):
    """The vault data key is missing, unreadable, or not the key the backup was sealed with."""


def vault_dsn(settings: Settings) -> str:
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


def utc(ts: datetime) -> str:
    return ts.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def lines(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """Split a stream of chunks into lines (without the newline), across chunk borders."""
    rest = b""
    for chunk in chunks:
        data = rest + chunk
        parts = data.split(b"\n")
        rest = parts.pop()
        yield from (p for p in parts if p)
    if rest:
        yield rest


def json_batches(lines: Iterable[bytes]) -> Iterator[tuple[str, int]]:
    """Lines of JSON objects → (JSON array text, count), bounded by rows and bytes."""
    batch: list[bytes] = []
    nbytes = 0
    for line in lines:
        batch.append(line)
        nbytes += len(line)
        if len(batch) >= BATCH_ROWS or nbytes >= BATCH_BYTES:
            yield "[" + b",".join(batch).decode("utf-8") + "]", len(batch)
            batch, nbytes = [], 0
    if batch:
        yield "[" + b",".join(batch).decode("utf-8") + "]", len(batch)


def pg_error(exc: BaseException) -> str:
    """``SomeError: first line of the message`` (PostgreSQL never echoes secret values:
    the vault's columns hold ciphertexts and digests only)."""
    first = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def chain_of(repo: Repository, backup_id: str | None) -> list[Manifest]:
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
        if VaultMeta.of(manifest).format != FORMAT:
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
