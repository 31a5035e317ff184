"""Point-in-time recovery against a real, archiving PostgreSQL 18.

Full backup, then batches of payments (one transaction each, like the API); recovery to
a time taken between two batches must bring back exactly the first batch. A restored
copy never archives and a later PITR keeps to production's timeline. With the source
down, recovery trusts the archive, and refuses a target the archive does not reach,
naming the last archived commit.

The time-between-batches case also runs with the repository in S3 (the session's moto
server): WAL archived there by the lab user's ``wal push``, fetched back by the restored
server's ``wal fetch``."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

import pytest

from tests.integration.pg_backup_env import (
    PAYMENTS_DDL,
    BackupEnv,
    env_fixture,
    insert_payments,
    parametrize_env,
    references,
    repos,
)

pytestmark = pytest.mark.timeout(600)


@dataclass
class History:
    full_id: str
    batch1: list[str]
    batch2: list[str]
    t1: str  # between batch 1 and batch 2 (the server's clock)
    lsn1: str
    t2: str  # after batch 2


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    parametrize_env(metafunc)


@pytest.fixture(scope="module")
def env(request: pytest.FixtureRequest) -> Iterator[BackupEnv]:
    e = env_fixture(request, "payapi-pitr-")
    e.psql(PAYMENTS_DDL)
    try:
        yield e
    finally:
        e.close()


@pytest.fixture(scope="module")
def history(env: BackupEnv) -> History:
    insert_payments(env, [f"BEFORE-BACKUP-{i}" for i in range(5)])
    full = env.cli_json("backup", "run", "--component", "db", "--full")
    batch1 = [f"BATCH1-{i:03d}" for i in range(40)]
    batch2 = [f"BATCH2-{i:03d}" for i in range(40)]
    insert_payments(env, batch1)
    t1 = env.psql("SELECT clock_timestamp()")
    lsn1 = env.psql("SELECT pg_current_wal_insert_lsn()")
    time.sleep(0.2)
    insert_payments(env, batch2)
    t2 = env.psql("SELECT clock_timestamp()")
    return History(
        full_id=full["backup_id"],
        batch1=[f"BEFORE-BACKUP-{i}" for i in range(5)] + batch1,
        batch2=batch2,
        t1=t1,
        lsn1=lsn1,
        t2=t2,
    )


def _restore(env: BackupEnv, name: str, *target: str) -> dict[str, object]:
    to = env.new_dir(name)
    out = env.cli_json("restore", "--component", "db", *target, "--to", str(to), "--start")
    assert out["started"] and out["dsn"]
    return out  # type: ignore[no-any-return]


@repos("file", "s3")
def test_pitr_to_a_time_between_batches_restores_exactly_the_first(
    env: BackupEnv, history: History
) -> None:
    out = _restore(env, "t1", "--target-time", history.t1)
    try:
        assert out["backup_id"] == history.full_id
        assert out["coverage"]["checked"] == "wal switch"  # type: ignore[index]
        assert references(env, str(out["dsn"])) == set(history.batch1)
        assert "before commit" in out["recovered"]["stopped"]  # type: ignore[index]
        # A restored copy never archives, and its timeline is pinned (not 'latest').
        assert env.psql("SHOW archive_mode", dsn=str(out["dsn"])) == "off"
        auto = (env.root / "restores" / "t1" / "postgresql.auto.conf").read_text()
        assert "recovery_target_timeline = '1'" in auto
        assert out["recovered"]["timeline"] == 2  # type: ignore[index]
    finally:
        env.cli("restore", "--component", "db", "--stop", "--to", str(env.root / "restores/t1"))
    with env.repo() as repo:
        assert "00000002.history" not in repo.list_wal()


def test_a_later_pitr_keeps_to_production_timeline(env: BackupEnv, history: History) -> None:
    out = _restore(env, "t2", "--target-time", history.t2)
    try:
        assert out["timeline"] == 1
        assert references(env, str(out["dsn"])) == set(history.batch1 + history.batch2)
    finally:
        env.cli("restore", "--component", "db", "--stop", "--to", str(env.root / "restores/t2"))


def test_pitr_to_an_lsn(env: BackupEnv, history: History) -> None:
    out = _restore(env, "lsn", "--target-lsn", history.lsn1)
    try:
        assert references(env, str(out["dsn"])) == set(history.batch1)
    finally:
        env.cli("restore", "--component", "db", "--stop", "--to", str(env.root / "restores/lsn"))


def _pg_time(text: str) -> datetime:
    return datetime.fromisoformat(text.strip().replace(" ", "T", 1))


def test_with_the_source_down_the_archive_decides(env: BackupEnv, history: History) -> None:
    """Runs last: it stops the source server."""
    env.wait_archived()
    last_archived_batch = env.psql("SELECT max(created_at) FROM payments")
    unarchived = [f"UNARCHIVED-{i}" for i in range(5)]
    insert_payments(env, unarchived)  # in the current segment: never archived
    after = env.psql("SELECT clock_timestamp()")
    env.cluster.stop(mode="immediate")

    # A target the archive covers still works, from the archive alone.
    out = _restore(env, "down-ok", "--target-time", history.t1)
    try:
        assert out["coverage"]["checked"] == "archive"  # type: ignore[index]
        assert references(env, str(out["dsn"])) == set(history.batch1)
    finally:
        env.cli(
            "restore", "--component", "db", "--stop", "--to", str(env.root / "restores/down-ok")
        )

    # A target past the end of the archive is refused, naming the last archived commit.
    to = env.new_dir("down-beyond")
    res = env.cli(
        "restore", "--component", "db", "--target-time", after, "--to", str(to), "--start",
        check=False,
    )  # fmt: skip
    assert res.returncode == 1
    last_line = res.stderr.strip().splitlines()[-1]
    assert "archive ends before the target" in last_line
    m = re.search(r"last archived commit is at (\S+)", last_line)
    assert m, last_line
    named = _pg_time(m.group(1))
    assert _pg_time(last_archived_batch) - timedelta(seconds=1) <= named < _pg_time(after)
    assert not to.exists() or not any(to.iterdir())  # nothing half-restored is left
