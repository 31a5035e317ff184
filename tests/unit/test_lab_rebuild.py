"""The pure parts of `payapi recover system`: where the vault comes from, and the
refusals made before anything is done."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from payapi.core.errors import UsageError
from payapi.lab.platform import LabError
from payapi.lab.rebuild import RebuildRequest, check_request, decide_vault

T = datetime(2026, 1, 1, 12, tzinfo=UTC)


def test_auto_keeps_the_databases_vault_when_the_wal_is_newer() -> None:
    source, why = decide_vault(
        "auto", in_database=True, recovered_until=T, newest_backup_at=T - timedelta(minutes=5)
    )
    assert source == "database" and "newer" in why


def test_auto_restores_a_vault_backup_newer_than_the_wal() -> None:
    source, _ = decide_vault(
        "auto", in_database=True, recovered_until=T, newest_backup_at=T + timedelta(seconds=1)
    )
    assert source == "backup"


@pytest.mark.parametrize(
    ("in_database", "until", "backup_at", "expected"),
    [
        (False, T, T - timedelta(hours=1), "backup"),  # no vault in the database
        (True, None, T, "database"),  # how far the WAL reached is unknown
        (True, T, None, "database"),  # no vault backup
    ],
)
def test_auto_edge_cases(
    in_database: bool, until: datetime | None, backup_at: datetime | None, expected: str
) -> None:
    source, _ = decide_vault(
        "auto", in_database=in_database, recovered_until=until, newest_backup_at=backup_at
    )
    assert source == expected


def test_explicit_modes_and_impossible_ones() -> None:
    assert decide_vault("backup", in_database=True, recovered_until=T, newest_backup_at=T)[0] == (
        "backup"
    )
    assert decide_vault("database", in_database=True, recovered_until=None,
                        newest_backup_at=T)[0] == "database"  # fmt: skip
    with pytest.raises(LabError):
        decide_vault("backup", in_database=True, recovered_until=T, newest_backup_at=None)
    with pytest.raises(LabError):
        decide_vault("auto", in_database=False, recovered_until=T, newest_backup_at=None)


def _req(tmp_path: Path, into: Path, key: Path | None = None) -> RebuildRequest:
    vault_key = tmp_path / "vault.key"
    vault_key.write_text("k")
    repo_key = tmp_path / "repo.key"
    repo_key.write_text("k")
    return RebuildRequest(
        into=into, repository=f"file://{tmp_path}/backups", key_file=key or repo_key,
        vault_key_file=vault_key,
    )  # fmt: skip


def test_refuses_a_folder_that_is_not_empty(tmp_path: Path) -> None:
    into = tmp_path / "busy"
    into.mkdir()
    (into / "x").write_text("")
    with pytest.raises(UsageError, match="not an empty folder"):
        check_request(_req(tmp_path, into))
    check_request(_req(tmp_path, tmp_path / "absent"))  # absent or empty is fine


def test_refuses_a_missing_repository_key(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="--key-file"):
        check_request(_req(tmp_path, tmp_path / "new", key=tmp_path / "missing.key"))
