"""The RPO check against a real PostgreSQL whose WAL archiving works, then is broken.

The session's shared ``pg`` cluster does not archive, so this module starts its own with
``archive_mode = on``. Archiving first works (``cp`` into a spool folder, from which the
test pushes each segment into the backup repository, as ``payapi wal push`` would), and
``plan check`` says OK; then ``archive_command`` becomes ``/bin/false``, a payment-sized
write and ``pg_switch_wal()`` make PostgreSQL try, and once ``pg_stat_archiver`` counts
the failure the check says VIOLATION.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from payapi.backup.repository import Repository
from payapi.cli.main import app
from payapi.core.plan import load_plan
from payapi.core.settings import BackupSettings, PostgresSettings, Settings
from payapi.ops.rpo import ArchiverObservation, Status, assess
from payapi.ops.rpo_observe import observe, observe_database
from payapi.servers.postgres import PgCluster
from payapi.servers.procs import chown_to_lab_user, free_port, make_reachable
from tests.integration.test_plan_check_cli import Repo

PLAN = load_plan()


@pytest.fixture(scope="module")
def spool(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("wal-spool")
    make_reachable(d, None)
    chown_to_lab_user(d)
    return d


@pytest.fixture(scope="module")
def archiving_pg(tmp_path_factory: pytest.TempPathFactory, spool: Path) -> Iterator[PgCluster]:
    base = tmp_path_factory.mktemp("pg-archiving")
    cluster = PgCluster(
        datadir=base / "data",
        port=free_port(),
        logfile=base / "postgres.log",
        settings={
            "fsync": "off",
            "archive_mode": "on",
            "archive_command": f"'test ! -f {spool}/%f && cp %p {spool}/%f'",
        },
    )
    cluster.init()
    cluster.start()
    cluster.create_database("payment_db")
    cluster.psql(
        "CREATE TABLE payments (id serial PRIMARY KEY, amount numeric NOT NULL)", "payment_db"
    )
    yield cluster
    cluster.stop(mode="immediate")


def _archiver(cluster: PgCluster) -> ArchiverObservation:
    return asyncio.run(observe_database(cluster.dsn("payment_db")))


def _wait(cluster: PgCluster, pred: object, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred(_archiver(cluster)):  # type: ignore[operator]
            return
        time.sleep(0.25)
    raise AssertionError(f"{what} within {timeout}s: {_archiver(cluster)}")


def _pay_and_switch(cluster: PgCluster) -> None:
    cluster.psql("INSERT INTO payments (amount) VALUES (12.34)", "payment_db")
    cluster.psql("SELECT pg_switch_wal()")


def _push_spool(repo: Repo, spool: Path) -> None:
    """What `payapi wal push %p` does for each archived segment."""
    with Repository.open(repo.url, repo.key) as r:
        for seg in sorted(spool.iterdir()):
            r.put_wal(seg.name, seg)


def _settings(repo: Repo, cluster: PgCluster) -> Settings:
    return Settings(
        postgres=PostgresSettings(payment_dsn=cluster.dsn("payment_db")),
        backup=BackupSettings(repository=repo.url, key_file=repo.key_file),
    )


def test_archiving_works_then_breaking_it_is_a_violation(
    archiving_pg: PgCluster, spool: Path, tmp_path: Path
) -> None:
    repo = Repo(tmp_path / "platform")
    repo.backup("database", "full", datetime.now(UTC) - timedelta(minutes=1))

    # 1. Archiving works: a payment, a segment switch, the segment lands in the repository.
    before = _archiver(archiving_pg).archived_count
    _pay_and_switch(archiving_pg)
    _wait(archiving_pg, lambda a: a.archived_count > before, "a segment archived")
    _push_spool(repo, spool)
    settings = _settings(repo, archiving_pg)
    obs = observe(settings, PLAN)
    assert obs.database is not None and obs.database.reachable
    assert obs.database.archive_mode == "on"
    assert obs.wal_newest == obs.database.last_archived_wal
    db = next(s for s in assess(PLAN, obs, datetime.now(UTC)) if s.name == "database")
    assert db.status is Status.OK, db.reasons
    assert db.wal is not None and db.wal.archiving == "ok"
    assert db.exposure is not None and db.exposure < timedelta(minutes=2)

    # 2. Break it: every archive attempt now fails.
    archiving_pg.psql("ALTER SYSTEM SET archive_command = '/bin/false'")
    archiving_pg.psql("SELECT pg_reload_conf()")
    time.sleep(0.5)  # the archiver re-reads its configuration on SIGHUP
    failed_before = _archiver(archiving_pg).failed_count
    _pay_and_switch(archiving_pg)
    _wait(
        archiving_pg,
        lambda a: a.failed_count > failed_before and a.failing,
        "a failed archive attempt",
    )
    obs = observe(settings, PLAN)
    db = next(s for s in assess(PLAN, obs, datetime.now(UTC)) if s.name == "database")
    assert db.status is Status.VIOLATION
    assert db.wal is not None and db.wal.archiving == "failing"
    assert db.wal.failed_count > 0
    assert any("WAL archiving is failing" in r for r in db.reasons)

    # 3. The same through the CLI: exit 1, and the reason in the JSON.
    repo.config.write_text(
        repo.config.read_text()
        + f'\n[postgres]\npayment_dsn = "{archiving_pg.dsn("payment_db")}"\n'
    )
    res = CliRunner().invoke(app, ["--config", str(repo.config), "plan", "check", "--json"])
    assert res.exit_code == 1, res.stderr
    out = next(c for c in json.loads(res.stdout)["components"] if c["name"] == "database")
    assert out["status"] == "VIOLATION"
    assert out["wal"]["archiving"] == "failing"
    assert out["wal"]["failed_count"] > 0
    assert out["wal"]["last_failed_wal"]
