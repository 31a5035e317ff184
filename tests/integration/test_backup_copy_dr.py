"""Losing the primary repository loses nothing: a real, archiving PostgreSQL 18 and a real
vault back up into a file:// primary; a file:// secondary (``[backup.secondary.dr]``,
its own key) receives a copy of every backup after each ``backup run`` and every WAL
segment from ``wal push``. Then the primary repository is deleted (``rm -rf``), and the
database and the vault are restored from the secondary through the CLI
(``--repository dr``): every payment, including those committed after the last backup,
and every secret version come back.
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from payapi.backup.crypto import load_repository_key, write_key_file
from payapi.backup.repository import Repository
from payapi.servers.procs import chown_to_lab_user, ensure_lab_user, is_root
from payapi.vault.testing import running_vault
from tests.integration.pg_backup_env import (
    PAYMENTS_DDL,
    BackupEnv,
    insert_payments,
    make_env,
    references,
)
from tests.integration.test_vault_backup import (
    API_TOKEN,
    APP_POLICY,
    DB_PW,
    ROOT_POLICY,
    admin_of,
    load,
    serve,
    state_of,
)

pytestmark = pytest.mark.timeout(900)

BEFORE = [f"REF-BEFORE-{uuid.uuid4().hex[:12]}" for _ in range(10)]
AFTER = [f"REF-AFTER-{uuid.uuid4().hex[:12]}" for _ in range(5)]


@pytest.fixture(scope="module")
def env() -> Iterator[BackupEnv]:
    e = make_env("payapi-dr-")
    try:
        yield e
    finally:
        e.close()


def _add_secondary(env: BackupEnv) -> tuple[Path, Path]:
    """``[backup.secondary.dr]``: a folder with its own key, reachable by the archiver."""
    dr, key_file = env.root / "dr", env.root / "dr.key"
    dr.mkdir()
    write_key_file(key_file)
    if is_root():
        user = ensure_lab_user()
        chown_to_lab_user(dr)  # before init: what root writes there is given to that user
        os.chown(key_file, user.pw_uid, user.pw_gid)
    with Repository.open(f"file://{dr}", load_repository_key(key_file)) as repo:
        repo.init()
    with open(env.config, "a") as f:
        f.write(f'\n[backup.secondary.dr]\nurl = "file://{dr}"\nkey_file = "{key_file}"\n')
    return dr, key_file


def _wait_in(dr: Path, key_file: Path, segment: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    with Repository.open(f"file://{dr}", load_repository_key(key_file)) as repo:
        while segment not in repo.list_wal():
            assert time.monotonic() < deadline, f"{segment} never reached the secondary"
            time.sleep(0.2)


async def test_restore_the_database_and_the_vault_from_the_secondary(
    env: BackupEnv, tmp_path: Path
) -> None:
    dr, dr_key = _add_secondary(env)
    env.cluster.create_database("vault_db")
    async with running_vault(env.cluster.dsn("vault_db")) as v:
        with open(env.config, "a") as f:
            f.write(
                f'\n[vault]\ndsn = "{env.cluster.dsn("vault_db")}"\n'
                f'data_key_file = "{v.settings.vault.data_key_file}"\n'
            )
        admin = admin_of(v)
        await load(admin, "root", ROOT_POLICY, tmp_path)
        await load(admin, "app", APP_POLICY, tmp_path)
        await admin.set(DB_PW, "pw-1")
        await admin.set(API_TOKEN, "tok-1")

        env.psql(PAYMENTS_DDL)
        insert_payments(env, BEFORE)

        # Each backup is copied into the secondary right after it is taken.
        db = env.cli_json("backup", "run", "--component", "db", "--full")
        [copy] = db["copies"]
        assert copy["repository"] == "dr" and copy["ok"], copy
        assert db["backup_id"] in copy["copied"]
        assert copy["wal_copied"] + copy["wal_skipped"] >= 1  # wal push got there first
        full = env.cli_json("backup", "run", "--component", "vault", "--full")
        assert full["copies"][0]["ok"] and full["backup_id"] in full["copies"][0]["copied"]
        await admin.set(DB_PW, "pw-2")
        incr = env.cli_json("backup", "run", "--component", "vault", "--incremental")
        assert incr["type"] == "incremental" and incr["parent"] == full["backup_id"]
        assert incr["copies"][0]["copied"] == [incr["backup_id"]]
        expected_vault = await state_of(admin)
        assert expected_vault[DB_PW] == {1: b"pw-1", 2: b"pw-2"}

        # Payments after the last backup reach the secondary through wal push alone.
        insert_payments(env, AFTER)
        segment = env.wait_archived()
        _wait_in(dr, dr_key, segment)
        again = env.cli_json("backup", "copy")
        assert again[0]["ok"] and again[0]["copied"] == []
        listed = env.cli_json("backup", "list", "--repository", "dr")
        assert {b["backup_id"] for b in listed} == {
            db["backup_id"], full["backup_id"], incr["backup_id"]
        }  # fmt: skip
        assert all(b["verified_at"] for b in listed)

        # The disaster: the primary repository is gone.
        shutil.rmtree(env.repo_dir)
        gone = env.cli("backup", "list", check=False)
        assert gone.returncode == 1 and "no repository at" in gone.stderr

        verified = env.cli_json("backup", "verify", "--repository", "dr")
        assert verified["ok"] and verified["problems"] == []

        to = env.new_dir("from-dr")
        out = env.cli_json(
            "restore", "--component", "db", "--repository", "dr", "--to", str(to), "--start",
        )  # fmt: skip
        try:
            assert out["backup_id"] == db["backup_id"]
            assert references(env, out["dsn"]) == set(BEFORE) | set(AFTER)
        finally:
            env.cli("restore", "--component", "db", "--stop", "--to", str(to))

        env.cluster.create_database("vault_restored")
        target = env.cluster.dsn("vault_restored")
        restored = env.cli_json(
            "restore", "--component", "vault", "--repository", "dr", "--to", target
        )
        assert restored["chain"] == [full["backup_id"], incr["backup_id"]]
        assert v.settings.vault.data_key_file is not None
        async with serve(target, v.settings.vault.data_key_file) as url:
            assert await state_of(admin_of(v, url)) == expected_vault
