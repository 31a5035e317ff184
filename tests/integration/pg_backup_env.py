"""A PostgreSQL cluster that archives its WAL into a file:// backup repository.

Used by the backup and PITR tests. Everything lives in a temp folder *outside* pytest's
temp root (which pytest re-tightens to 0700), because the archiver runs as the
unprivileged lab user: it must reach the config, the key file and the repository.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from payapi.backup.crypto import load_repository_key, write_key_file
from payapi.backup.repository import Repository
from payapi.backup.restore import stop_server
from payapi.backup.wal import archive_command, guc_string
from payapi.lab.postgres import PgCluster, pg_bin
from payapi.lab.procs import (
    chown_to_lab_user,
    ensure_lab_user,
    free_port,
    is_root,
    make_reachable,
)


@dataclass
class BackupEnv:
    root: Path
    cluster: PgCluster
    config: Path
    key_file: Path
    restored: list[Path] = field(default_factory=list)

    @property
    def repo_dir(self) -> Path:
        return self.root / "repo"

    @property
    def dsn(self) -> str:
        return self.cluster.dsn("payment_db")

    def repo(self) -> Repository:
        return Repository.open(f"file://{self.repo_dir}", load_repository_key(self.key_file))

    def psql(self, sql: str, dsn: str | None = None) -> str:
        res = subprocess.run(
            [
                pg_bin("psql"),
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-d",
                dsn or self.dsn,
            ],
            input=sql,
            capture_output=True,
            text=True,
            check=False,
            timeout=300,
        )
        if res.returncode != 0:
            raise AssertionError(f"psql failed: {res.stderr}")
        return res.stdout.strip()

    def cli(
        self, *args: str, check: bool = True, timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "payapi", "--config", str(self.config), *args]
        res = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
        if check and res.returncode != 0:
            raise AssertionError(f"payapi {' '.join(args)} failed ({res.returncode}): {res.stderr}")
        return res

    def cli_json(self, *args: str) -> Any:
        return json.loads(self.cli(*args, "--json").stdout)

    def new_dir(self, name: str) -> Path:
        path = self.root / "restores" / name
        path.parent.mkdir(exist_ok=True)
        self.restored.append(path)
        return path

    def wait_archived(self, timeout: float = 60) -> str:
        """Switch WAL and wait until the switched segment is in the repository."""
        self.psql("SELECT pg_current_xact_id()")
        seg = self.psql("SELECT pg_walfile_name(pg_switch_wal())")
        deadline = time.monotonic() + timeout
        with self.repo() as repo:
            while seg not in repo.list_wal():
                if time.monotonic() > deadline:
                    raise AssertionError(f"segment {seg} not archived within {timeout}s")
                time.sleep(0.2)
        return seg

    def close(self) -> None:
        for path in self.restored:
            with contextlib.suppress(Exception):
                stop_server(path, mode="immediate")
        with contextlib.suppress(Exception):
            self.cluster.stop(mode="immediate")
        shutil.rmtree(self.root, ignore_errors=True)


def make_env(prefix: str = "payapi-bk-", *, archive: bool = True, **settings: str) -> BackupEnv:
    root = Path(tempfile.mkdtemp(prefix=prefix))
    root.chmod(0o755)
    repo_dir = root / "repo"
    repo_dir.mkdir()
    key_file = root / "repository.key"
    write_key_file(key_file)
    with Repository.open(f"file://{repo_dir}", load_repository_key(key_file)) as repo:
        repo.init()
    for sub in ("wal", "wal-index"):
        (repo_dir / sub).mkdir()
    port = free_port()
    config = root / "payapi.toml"
    config.write_text(
        f"""[backup]
repository = "file://{repo_dir}"
key_file = "{key_file}"
work_dir = "{root / "work"}"

[postgres]
payment_dsn = "postgresql://postgres@127.0.0.1:{port}/payment_db"
"""
    )
    if is_root():
        user = ensure_lab_user()
        chown_to_lab_user(repo_dir)
        os.chown(key_file, user.pw_uid, user.pw_gid)
        python = Path(sys.executable).absolute()
        make_reachable(python)
        make_reachable(python.resolve())
    base = {"fsync": "off", "synchronous_commit": "off"}
    if archive:
        base.update(
            archive_mode="on",
            archive_command=guc_string(archive_command(config)),
            archive_timeout="60",
        )
    cluster = PgCluster(
        datadir=root / "pg" / "data",
        port=port,
        logfile=root / "pg" / "postgres.log",
        settings={**base, **settings},
    )
    cluster.init()
    cluster.start()
    cluster.create_database("payment_db")
    return BackupEnv(root=root, cluster=cluster, config=config, key_file=key_file)


PAYMENTS_DDL = """
CREATE TABLE IF NOT EXISTS payments (
    id bigserial PRIMARY KEY,
    client_id text NOT NULL,
    amount numeric(12,2) NOT NULL,
    currency char(3) NOT NULL,
    reference text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
"""


def insert_payments(env: BackupEnv, references: list[str], *, one_by_one: bool = True) -> None:
    """Each payment in its own transaction (like the API), unless told otherwise."""
    stmts = [
        f"INSERT INTO payments (client_id, amount, currency, reference) "
        f"VALUES ('client-a', {i + 1}.50, 'EUR', '{ref}');"
        for i, ref in enumerate(references)
    ]
    env.psql("\n".join(stmts) if one_by_one else "BEGIN;" + "\n".join(stmts) + "COMMIT;")


def references(env: BackupEnv, dsn: str) -> set[str]:
    out = env.psql("SELECT reference FROM payments ORDER BY id", dsn=dsn)
    return set(out.splitlines()) if out else set()
