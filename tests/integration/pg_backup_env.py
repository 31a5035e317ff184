"""A PostgreSQL cluster that archives its WAL into a backup repository: a ``file://``
folder, or an ``s3://`` prefix on the session's moto server.

Used by the backup and PITR tests. Everything lives in a temp folder *outside* pytest's
temp root (which pytest re-tightens to 0700), because the archiver runs as the
unprivileged lab user: it must reach the config, the key file and the repository.

On S3 the archiver gets its credentials the way a production one would: not from the
test runner (PostgreSQL is started with no ``AWS_*`` variable in its environment) but
from its own command, ``env AWS_SHARED_CREDENTIALS_FILE=… AWS_CONFIG_FILE=… payapi …
wal push %p``, naming files only the lab user can read. The CLI runs with the test
runner's environment, which holds moto's dummy credentials (an operator's shell).

Tests choose the kinds they run on with :func:`repos`; a test module hands its ``env``
fixture's parametrization to :func:`parametrize_env` (``pytest_generate_tests``).
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

from payapi.backup.crypto import load_repository_key, write_key_file
from payapi.backup.repository import Repository
from payapi.backup.wal import archive_command, guc_string
from payapi.servers.postgres import PgCluster, pg_bin, stop_server
from payapi.servers.procs import (
    chown_to_lab_user,
    ensure_lab_user,
    free_port,
    is_root,
    make_reachable,
)
from tests.integration import s3_server

KINDS = ("file", "s3")
F = TypeVar("F", bound=Callable[..., Any])


def repos(*kinds: str) -> Callable[[F], F]:
    """Run the decorated test on these repository kinds (default: ``file`` only)."""
    assert kinds and set(kinds) <= set(KINDS), kinds

    def mark(fn: F) -> F:
        fn.repository_kinds = kinds  # type: ignore[attr-defined]
        return fn

    return mark


def parametrize_env(metafunc: pytest.Metafunc) -> None:
    """``env`` (a module-scoped fixture taking ``request.param``) gets one value per kind
    the test asked for; module scope groups the tests by kind, one cluster per kind."""
    if "env" in metafunc.fixturenames:
        kinds = getattr(metafunc.function, "repository_kinds", ("file",))
        metafunc.parametrize("env", kinds, indirect=True, scope="module")


@dataclass
class BackupEnv:
    root: Path
    cluster: PgCluster
    config: Path
    key_file: Path
    repo_url: str
    s3_endpoint: str | None = None
    restored: list[Path] = field(default_factory=list)

    @property
    def kind(self) -> str:
        return "s3" if self.s3_endpoint else "file"

    @property
    def repo_dir(self) -> Path:
        """The repository folder (``file://`` only)."""
        assert self.kind == "file", "an S3 repository has no folder"
        return self.root / "repo"

    @property
    def s3_prefix(self) -> str:
        """The repository's key prefix in the bucket (``s3://`` only)."""
        assert self.kind == "s3", "a file repository has no S3 prefix"
        return self.repo_url.removeprefix(f"s3://{s3_server.BUCKET}/").strip("/") + "/"

    @property
    def dsn(self) -> str:
        return self.cluster.dsn("payment_db")

    def repo(self) -> Repository:
        return Repository.open(
            self.repo_url, load_repository_key(self.key_file), s3_endpoint_url=self.s3_endpoint
        )

    def stored_objects(self) -> Iterator[tuple[str, bytes]]:
        """Every stored object as it is at rest, read past the product's code (the files
        themselves, or the bucket through boto3): (key in the repository, bytes)."""
        if self.s3_endpoint:
            for key, data in s3_server.objects(self.s3_endpoint, self.s3_prefix):
                yield key.removeprefix(self.s3_prefix), data
        else:
            for path in sorted(self.repo_dir.rglob("*")):
                if path.is_file():
                    yield str(path.relative_to(self.repo_dir)), path.read_bytes()

    def tamper(self, key: str, fn: Callable[[bytes], bytes]) -> bytes:
        """Replace the stored bytes of ``key`` by ``fn(bytes)``; returns the original."""
        with self.repo() as repo:
            original = repo.store.get_bytes(key)
            repo.store.put_bytes(key, fn(original))
        return original

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
        if self.s3_endpoint:  # the server keeps objects in memory
            with contextlib.suppress(Exception):
                s3_server.delete_prefix(self.s3_endpoint, self.s3_prefix)
        shutil.rmtree(self.root, ignore_errors=True)


def make_env(
    prefix: str = "payapi-bk-",
    *,
    archive: bool = True,
    s3_endpoint: str | None = None,
    **settings: str,
) -> BackupEnv:
    """A cluster archiving into a new repository: a folder, or (``s3_endpoint``) a new
    prefix of the test bucket on that server."""
    root = Path(tempfile.mkdtemp(prefix=prefix))
    root.chmod(0o755)
    key_file = root / "repository.key"
    write_key_file(key_file)
    repo_dir = root / "repo"
    if s3_endpoint:
        repo_url = f"s3://{s3_server.BUCKET}/{root.name}"
        s3_line = f'\ns3_endpoint_url = "{s3_endpoint}"'
    else:
        repo_url = f"file://{repo_dir}"
        s3_line = ""
        repo_dir.mkdir()
    with Repository.open(
        repo_url, load_repository_key(key_file), s3_endpoint_url=s3_endpoint
    ) as repo:
        repo.init()
    if not s3_endpoint:
        for sub in ("wal", "wal-index"):
            (repo_dir / sub).mkdir()
    port = free_port()
    config = root / "payapi.toml"
    config.write_text(
        f"""[backup]
repository = "{repo_url}"{s3_line}
key_file = "{key_file}"
work_dir = "{root / "work"}"

[postgres]
payment_dsn = "postgresql://postgres@127.0.0.1:{port}/payment_db"
"""
    )
    if is_root():
        user = ensure_lab_user()
        if not s3_endpoint:
            chown_to_lab_user(repo_dir)
        os.chown(key_file, user.pw_uid, user.pw_gid)
        python = Path(sys.executable).absolute()
        make_reachable(python)
        make_reachable(python.resolve())
    base = {"fsync": "off", "synchronous_commit": "off"}
    if archive:
        command = archive_command(config)
        if s3_endpoint:
            aws = s3_server.write_credentials(root / "aws")
            words = [f"{k}={shlex.quote(v)}" for k, v in sorted(aws.items())]
            command = " ".join(["env", *words, command])
        base.update(
            archive_mode="on",
            archive_command=guc_string(command),
            archive_timeout="60",
        )
    cluster = PgCluster(
        datadir=root / "pg" / "data",
        port=port,
        logfile=root / "pg" / "postgres.log",
        settings={**base, **settings},
    )
    cluster.init()
    with s3_server.without_aws_environ():  # the archiver inherits none of our credentials
        cluster.start()
    cluster.create_database("payment_db")
    return BackupEnv(
        root=root,
        cluster=cluster,
        config=config,
        key_file=key_file,
        repo_url=repo_url,
        s3_endpoint=s3_endpoint,
    )


def env_fixture(request: pytest.FixtureRequest, prefix: str) -> BackupEnv:
    """For a module's ``env`` fixture: a new environment of the kind ``request.param``."""
    kind = getattr(request, "param", "file")
    endpoint = request.getfixturevalue("s3_endpoint") if kind == "s3" else None
    return make_env(prefix=f"{prefix}{kind}-", s3_endpoint=endpoint)


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
