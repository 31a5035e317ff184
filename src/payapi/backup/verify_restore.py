"""Restore tests: a backup is only as good as the server it boots.

:func:`restore_test` restores one backup into a scratch directory (its own consistent
point: ``recovery_target = 'immediate'``, no WAL beyond what the backup holds), checks
the files with ``pg_verifybackup`` (physical backups), boots PostgreSQL on a free port,
counts the rows of every user table of the backed-up database (the payment tables in
the lab) and records the result with :meth:`Repository.mark_verified`. The scratch
directory is removed whatever happens. A failure raises :class:`RestoreTestFailed`,
which names the backup and the step (or object) that failed.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from payapi.backup.postgres import LOGICAL
from payapi.backup.restore import RestoreRequest, Target, restore
from payapi.core.errors import PayapiError
from payapi.core.journal import Journal
from payapi.servers.postgres import psql, stop_server

if TYPE_CHECKING:
    from payapi.backup.manifest import BackupInfo
    from payapi.backup.repository import Repository

MAX_TABLES = 200  # smoke queries count at most this many tables


class RestoreTestFailed(PayapiError):
    """A restore test failed; the message names the backup and what failed."""

    def __init__(self, backup_id: str, what: str, detail: str) -> None:
        self.backup_id = backup_id
        self.what = what
        self.detail = " ".join(detail.split())
        super().__init__(f"restore test of backup {backup_id} failed: {what}: {self.detail}")


@dataclass
class RestoreTestResult:
    backup_id: str
    type: str
    verified_at: datetime
    duration_seconds: float
    tables: dict[str, int] = field(default_factory=dict)
    pg_verifybackup: bool | None = None
    chain: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "backup_id": self.backup_id,
            "type": self.type,
            "ok": True,
            "verified_at": self.verified_at.isoformat(),
            "duration_seconds": round(self.duration_seconds, 2),
            "pg_verifybackup": self.pg_verifybackup,
            "chain": self.chain,
            "tables": self.tables,
        }


_TABLES_SQL = """
SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg_toast%' AND NOT c.relispartition
ORDER BY 1 LIMIT 200
"""


def count_rows(dsn: str) -> dict[str, int]:
    """Exact row counts of the user tables of the database at ``dsn`` (smoke queries)."""
    tables = [row[0] for row in psql(dsn, _TABLES_SQL)]
    if not tables:
        return {}
    # Names come from quote_ident above.
    union = " UNION ALL ".join(
        f"SELECT {i}, count(*) FROM {name}"  # noqa: S608
        for i, name in enumerate(tables)
    )
    rows = psql(dsn, union, timeout=600)
    return {tables[int(i)].replace('"', ""): int(n) for i, n in rows}


def restore_test(
    repo: Repository,
    backup: BackupInfo,
    *,
    restore_command: str,
    work_dir: Path | None = None,
    recovery_timeout: float = 600.0,
    journal: Journal | None = None,
    record: bool = True,
) -> RestoreTestResult:
    started = time.monotonic()
    if work_dir is not None:
        work_dir.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="payapi-restore-test-", dir=work_dir))
    to = scratch / "data"
    journal = journal or Journal()
    try:
        req = RestoreRequest(
            to=to,
            restore_command=restore_command,
            target=Target("immediate") if backup.type != LOGICAL else Target("latest"),
            backup_id=backup.backup_id,
            start=True,
            verify_backup=backup.type != LOGICAL,
            recovery_timeout=recovery_timeout,
            journal=journal,
        )
        try:
            restored = restore(repo, req)
        except PayapiError as exc:
            raise RestoreTestFailed(backup.backup_id, "restore", str(exc)) from None
        assert restored.dsn is not None
        try:
            with journal.step("counting rows"):
                tables = count_rows(restored.dsn)
        except PayapiError as exc:
            raise RestoreTestFailed(backup.backup_id, "smoke queries", str(exc)) from None
    finally:
        with contextlib.suppress(Exception):
            stop_server(to, mode="immediate")
        shutil.rmtree(scratch, ignore_errors=True)
    now = datetime.now(UTC)
    result = RestoreTestResult(
        backup_id=backup.backup_id,
        type=backup.type,
        verified_at=now,
        duration_seconds=time.monotonic() - started,
        tables=tables,
        pg_verifybackup=restored.verified_backup,
        chain=restored.chain,
    )
    if record:
        repo.mark_verified(
            backup.backup_id,
            now,
            details={
                "kind": "restore-test",
                "pg_verifybackup": restored.verified_backup,
                "tables": tables,
                "duration_seconds": round(result.duration_seconds, 2),
            },
        )
    return result
