"""`make bench-backup`: payapi's PostgreSQL backup and restore against pgBackRest and pg_dump.

A benchmark, not a test: it prints figures and ratios against peers measured in the same
run, on the same machine, on the same data; it asserts nothing about speed.

One run:

1. a PRIVATE PostgreSQL 15 cluster from Debian's binaries (``pg_config --bindir``) on a
   free loopback port, in its own folder, run as the unprivileged lab user when we are
   root (the machine's own PostgreSQL is never touched); ``wal_level = replica``,
   ``archive_mode = on`` (archiving a no-op while loading);
2. ``pgbench -i -s SCALE`` into the database ``bench`` (scale 100 ≈ 1.5 GB);
3. per round, on the same data: **payapi** ``backup run --component db --full`` into a
   ``file://`` repository (archive_command = ``payapi wal push``) and **pgBackRest**
   ``backup --type=full`` (``compress-type=zst``, ``repo1-cipher-type=aes-256-cbc``,
   ``process-max=2``, ``start-fast=y``; archive_command = ``pgbackrest archive-push``),
   in alternating order. Each tool is timed while its own archiver feeds its own archive,
   as in production; both wait for the backup's last WAL segment to be archived;
4. ``pg_dump -Fc`` of ``bench`` (once);
5. per round, alternating: ``payapi restore --component db --to DIR`` and ``pgbackrest
   restore`` into an empty folder (files, fsynced by both, and recovery settings); then,
   unless ``--no-check``, the copy is started with the same ``pg_ctl`` and timed until it
   answers a query (recovering from its own tool's archive: "restore → ready"),
   ``pgbench_accounts`` is counted and it is stopped. ``pg_restore`` into a fresh
   database (once);
6. ``wal push``: the median of N ``payapi wal push`` runs and N ``pgbackrest
   archive-push`` runs, each a fresh process on a real 16 MB segment (copied from
   ``pg_wal``) under a fresh name, so that no push is a no-op; run as the server's user,
   as archive_command runs. payapi's modules are byte-compiled first, as an install from
   a wheel does (``make venv`` is an editable install, and with
   ``PYTHONDONTWRITEBYTECODE`` set every push would otherwise compile them again).

Figures: wall time (median over rounds); CPU seconds of the tool and its descendants
(``RUSAGE_CHILDREN``; server-side work such as pg_basebackup's WAL sender is not included,
for any tool: pgBackRest reads the files itself, payapi through the server); peak RSS of
the tool's process tree (sum over the process and its descendants, sampled every 0.1 s);
stored bytes of each backup (for a restore: of the restored folder); load average before
and after (the machine may be shared: CPU seconds are steadier than wall time then).
Ratios are payapi ÷ pgBackRest (below 1 means payapi is faster).

Everything listens on 127.0.0.1; every wait and loop is bounded; the cluster is stopped
and the folder removed at the end unless ``--keep``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import secrets
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from payapi import __version__
from payapi.servers.procs import (
    ServerError,
    as_lab_user,
    chown_to_lab_user,
    ensure_lab_user,
    free_port,
    is_root,
    make_reachable,
    port_open,
    wait_for,
)

PG_MAJOR = 15
STANZA = "bench"
WAL_STANZA = "walbench"
DATABASE = "bench"
RESTORED_DATABASE = "bench_restored"
SEGMENT = 16 << 20
ROWS_PER_SCALE = 100_000
TOOL_TIMEOUT = 3600.0
SAMPLE_INTERVAL = 0.1

console = Console(stderr=True)


# -- measuring one command ------------------------------------------------------------------


def _children(pid: int) -> list[int]:
    out: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{task}/children") as fh:
                out += [int(c) for c in fh.read().split()]
    return out


def _rss(pid: int) -> int:
    """Resident bytes of ``pid`` (0 if gone)."""
    with contextlib.suppress(OSError, ValueError, IndexError), open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def tree_rss(root: int) -> int:
    """RSS of ``root`` and all its descendants (bounded walk)."""
    total, todo, seen = 0, [root], set()
    while todo and len(seen) < 10_000:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        total += _rss(pid)
        todo += _children(pid)
    return total


@dataclass
class Measure:
    """One timed command: wall time, peak RSS of its process tree, its exit status."""

    label: str
    argv: list[str]
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    peak_rss: int = 0
    max_rss: int = 0  # the largest single process's peak, exact (see with_peak_rss)
    returncode: int | None = None
    stdout: str = ""
    stderr_tail: str = ""

    def ok(self) -> bool:
        return self.returncode == 0


def measure(
    label: str,
    argv: list[str],
    *,
    env: dict[str, str] | None = None,
    timeout: float = TOOL_TIMEOUT,
    log: Path | None = None,
) -> Measure:
    """Run ``argv`` to completion; time it and sample the RSS of its tree every 0.1 s."""
    m = Measure(label=label, argv=argv)
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        stop = threading.Event()
        r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env)

        def sample() -> None:
            while not stop.is_set():
                m.peak_rss = max(m.peak_rss, tree_rss(proc.pid))
                stop.wait(SAMPLE_INTERVAL)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        # A blocking wait on a thread, not Popen.wait(timeout): that one polls with sleeps
        # growing to 50 ms, which rounded every wal push (0.07-0.2 s) up to the next poll.
        waiter = threading.Thread(target=proc.wait, daemon=True)
        waiter.start()
        waiter.join(timeout)
        if waiter.is_alive():
            proc.kill()
            waiter.join()
            m.stderr_tail = f"timed out after {timeout:.0f}s"
        m.returncode = proc.returncode
        m.seconds = time.perf_counter() - t0
        r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        # Every descendant that was waited for (pg_basebackup, pgBackRest's workers...):
        # helper commands never run concurrently with a measured one.
        m.cpu_seconds = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
        stop.set()
        sampler.join()
        out.seek(0)
        err.seek(0)
        m.stdout = out.read().decode("utf-8", "replace")
        text = err.read().decode("utf-8", "replace")
        if argv[: len(PEAK_RSS_PREFIX)] == PEAK_RSS_PREFIX:
            kept = []
            for line in text.splitlines(keepends=True):
                if line.startswith(_PEAK_MARK):
                    m.max_rss = int(line[len(_PEAK_MARK) :]) * 1024
                else:
                    kept.append(line)
            text = "".join(kept)
        if log is not None:
            with open(log, "a") as fh:
                fh.write(f"$ {shlex.join(argv)}\n{m.stdout}{text}\n")
        if m.returncode != 0:
            lines = [ln for ln in (text or m.stdout).strip().splitlines() if ln.strip()]
            m.stderr_tail = m.stderr_tail or " / ".join(lines[-3:])
    return m


_PEAK_MARK = "bench-peak-rss-kb="
PEAK_RSS_PREFIX = ["/usr/bin/time", "-f", _PEAK_MARK + "%M"]


def with_peak_rss(argv: list[str]) -> list[str]:
    """``argv`` under GNU time, whose ``%M`` is the exact peak RSS of the largest process
    it waited for (ours cannot be read from wait4: a child forked from this big Python
    starts with its high-water mark). The sampled tree RSS stays the fallback."""
    return [*PEAK_RSS_PREFIX, *argv] if os.access(PEAK_RSS_PREFIX[0], os.X_OK) else argv


def must(m: Measure) -> Measure:
    if not m.ok():
        raise BenchError(f"{m.label} failed (exit {m.returncode}): {m.stderr_tail}")
    return m


class BenchError(Exception):
    """A step of the benchmark failed; one line."""


def du(path: Path) -> int:
    """Bytes of the regular files under ``path`` (or of ``path`` itself)."""
    if path.is_file():
        return path.stat().st_size
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, name)).st_size
    return total


def run(argv: list[str], *, timeout: float = 600, env: dict[str, str] | None = None) -> str:
    """A short helper command (not measured); BenchError with its last words."""
    try:
        res = subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout, check=False, env=env
        )
    except subprocess.TimeoutExpired:
        raise BenchError(f"{argv[0]} timed out after {timeout:.0f}s") from None
    if res.returncode != 0:
        lines = (res.stderr or res.stdout).strip().splitlines()
        raise BenchError(f"{shlex.join(argv[:4])}… failed: {' / '.join(lines[-3:])}")
    return res.stdout


# -- a private PostgreSQL 15 -----------------------------------------------------------------


def pg15_bindir() -> Path:
    """Debian's PostgreSQL 15 binaries: ``pg_config --bindir`` when it says 15, else the
    usual Debian path."""
    candidates: list[Path] = []
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(
            ["pg_config", "--bindir"], capture_output=True, text=True, timeout=10, check=False
        ).stdout.strip()
        if out:
            candidates.append(Path(out))
    candidates.append(Path(f"/usr/lib/postgresql/{PG_MAJOR}/bin"))
    for c in candidates:
        exe = c / "postgres"
        if exe.exists():
            version = run([str(exe), "--version"], timeout=10)
            if f" {PG_MAJOR}." in version:
                return c
    raise BenchError(
        f"no PostgreSQL {PG_MAJOR} server binaries (looked in "
        f"{', '.join(map(str, candidates))}): apt-get install postgresql-{PG_MAJOR}"
    )


@dataclass
class Pg15:
    """A throwaway cluster: own folder, own port, own socket folder, the lab user."""

    bindir: Path
    datadir: Path
    sockdir: Path
    port: int
    logfile: Path
    extra: dict[str, str] = field(default_factory=dict)

    def bin(self, name: str) -> str:
        return str(self.bindir / name)

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def settings(self) -> dict[str, str]:
        return {
            "port": str(self.port),
            "listen_addresses": "'127.0.0.1'",
            "unix_socket_directories": f"'{self.sockdir}'",
            "wal_level": "replica",
            "archive_mode": "on",
            "archive_command": "'/bin/true'",
            "max_wal_senders": "10",
            "shared_buffers": "128MB",
            "max_wal_size": "2GB",
            **self.extra,
        }

    def init(self) -> None:
        for d in (self.datadir, self.sockdir):
            d.mkdir(parents=True, exist_ok=True)
            chown_to_lab_user(d)
            make_reachable(d)
        self.logfile.touch()
        chown_to_lab_user(self.logfile)
        run(
            as_lab_user(
                [
                    self.bin("initdb"),
                    "-D",
                    str(self.datadir),
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "--encoding=UTF8",
                    "--no-instructions",
                ]
            ),
            timeout=300,
        )
        conf = self.datadir / "postgresql.conf"
        with open(conf, "a") as fh:
            fh.write("\n# payapi bench-backup\n")
            fh.writelines(f"{k} = {v}\n" for k, v in self.settings().items())

    def ctl(self, *args: str, timeout: float = 600) -> str:
        return run(
            as_lab_user([self.bin("pg_ctl"), "-D", str(self.datadir), *args]), timeout=timeout
        )

    def start(self) -> None:
        self.ctl("-l", str(self.logfile), "-w", "-t", "600", "start", timeout=660)
        wait_for(lambda: port_open(self.port), timeout=60, what="PostgreSQL 15 port")

    def stop(self) -> None:
        if (self.datadir / "postmaster.pid").exists():
            with contextlib.suppress(BenchError):
                self.ctl("-m", "fast", "-w", "-t", "120", "stop", timeout=180)

    def sql(self, query: str, database: str = "postgres") -> str:
        return run(
            [
                self.bin("psql"),
                "-X",
                "-A",
                "-t",
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "-d",
                self.dsn(database),
                "-c",
                query,
            ],
            timeout=1800,
        ).strip()

    def wait_ready(self, timeout: float) -> None:
        """Until recovery is over and the server takes writes. pg_ctl -w alone is not
        it: with hot_standby on it returns at consistency (read-only), with it off it
        may return before the server answers at all."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                if self.sql("SELECT pg_is_in_recovery()") == "f":
                    return
            except BenchError:
                if time.monotonic() >= deadline:
                    raise
            if time.monotonic() >= deadline:
                raise BenchError(f"still recovering after {timeout:.0f}s")
            time.sleep(0.1)

    def set_archive_command(self, command: str) -> None:
        quoted = "'" + command.replace("'", "''") + "'"
        self.sql(f"ALTER SYSTEM SET archive_command = {quoted}")
        self.sql("SELECT pg_reload_conf()")
        # pg_reload_conf only signals; wait until the new value is in effect.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.sql("SHOW archive_command") == command:
                return
            time.sleep(0.1)
        raise BenchError("archive_command did not change within 30 s")


# -- the tools ---------------------------------------------------------------------------------


@dataclass
class Paths:
    root: Path

    def __post_init__(self) -> None:
        r = self.root
        self.pg_data = r / "pg" / "data"
        self.pg_sock = r / "pg" / "sock"
        self.pg_log = r / "pg" / "postgresql.log"
        self.payapi_repo = r / "payapi" / "repo"
        self.payapi_key = r / "payapi" / "repository.key"
        self.payapi_config = r / "payapi" / "payapi.toml"
        self.payapi_restore_config = r / "payapi" / "restore.toml"
        self.pgbr_dir = r / "pgbackrest"
        self.pgbr_repo = r / "pgbackrest" / "repo"
        self.pgbr_config = r / "pgbackrest" / "pgbackrest.conf"
        self.dump = r / "dump" / f"{DATABASE}.dump"
        self.restores = r / "restore"
        self.walbench = r / "walbench"
        self.log = r / "commands.log"


def payapi_argv(config: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "payapi", "--config", str(config), *args]


def pgbr_argv(paths: Paths, *args: str, stanza: str = STANZA) -> list[str]:
    return as_lab_user(["pgbackrest", f"--config={paths.pgbr_config}", f"--stanza={stanza}", *args])


def compile_payapi() -> str:
    """Byte-compile payapi's modules where they are imported from, as ``pip install`` of
    a wheel (or a distribution package) does at install time: the lab user's pushes then
    read the ``.pyc`` files a production archive_command reads (written by root with the
    usual umask, so readable by it). Returns the folder."""
    import compileall

    import payapi

    root = Path(payapi.__file__).parent
    if not compileall.compile_dir(str(root), quiet=1):
        raise BenchError(f"cannot byte-compile {root}")
    return str(root)


def setup_payapi(paths: Paths, pg: Pg15, repo_dir: Path, key: Path, config: Path) -> None:
    """A key, an initialized ``file://`` repository and a config, usable by the lab user
    (archive_command runs as the server's user)."""
    from payapi.backup.crypto import load_repository_key, write_key_file
    from payapi.backup.repository import Repository

    repo_dir.mkdir(parents=True, exist_ok=True)
    if not key.exists():
        write_key_file(key)
    with Repository.open(f"file://{repo_dir}", load_repository_key(key)) as repo:
        if not repo.initialized:
            repo.init()
    for sub in ("wal", "wal-index", "data", "manifests", "locks"):
        (repo_dir / sub).mkdir(exist_ok=True)
    config.write_text(
        "[backup]\n"
        f'repository = "file://{repo_dir}"\n'
        f'key_file = "{key}"\n'
        "\n[postgres]\n"
        f'payment_dsn = "{pg.dsn(DATABASE)}"\n'
    )
    if is_root():
        user = ensure_lab_user()
        chown_to_lab_user(repo_dir)
        os.chown(key, user.pw_uid, user.pw_gid)
        for p in (repo_dir, key, config):
            make_reachable(p)


def setup_pgbackrest(paths: Paths, pg: Pg15) -> None:
    paths.pgbr_dir.mkdir(parents=True, exist_ok=True)
    for sub in ("repo", "log", "lock", "spool"):
        (paths.pgbr_dir / sub).mkdir(exist_ok=True)
    cipher_pass = secrets.token_urlsafe(48)
    stanzas = "".join(
        f"\n[{name}]\npg1-path={pg.datadir}\npg1-port={pg.port}\n"
        f"pg1-socket-path={pg.sockdir}\npg1-user=postgres\n"
        for name in (STANZA, WAL_STANZA)
    )
    paths.pgbr_config.write_text(
        "[global]\n"
        f"repo1-path={paths.pgbr_repo}\n"
        "repo1-cipher-type=aes-256-cbc\n"
        f"repo1-cipher-pass={cipher_pass}\n"
        "repo1-retention-full=100\n"
        "compress-type=zst\n"
        "process-max=2\n"
        "start-fast=y\n"
        f"log-path={paths.pgbr_dir / 'log'}\n"
        f"lock-path={paths.pgbr_dir / 'lock'}\n"
        f"spool-path={paths.pgbr_dir / 'spool'}\n"
        "log-level-console=warn\n"
        "log-level-file=info\n" + stanzas
    )
    paths.pgbr_config.chmod(0o600)
    chown_to_lab_user(paths.pgbr_dir)
    make_reachable(paths.pgbr_config)
    for stanza in (STANZA, WAL_STANZA):
        run(pgbr_argv(paths, "stanza-create", stanza=stanza), timeout=300)


def pgbr_info(paths: Paths) -> list[dict[str, Any]]:
    out = run(pgbr_argv(paths, "info", "--output=json"), timeout=120)
    doc = json.loads(out)
    backups: list[dict[str, Any]] = doc[0].get("backup", []) if doc else []
    return backups


# -- the benchmark -----------------------------------------------------------------------------


@dataclass
class Row:
    tool: str
    op: str
    seconds: list[float] = field(default_factory=list)
    cpu_seconds: list[float] = field(default_factory=list)
    peak_rss: list[int] = field(default_factory=list)
    max_rss: list[int] = field(default_factory=list)
    stored_bytes: int | None = None
    note: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.seconds) if self.seconds else float("nan")

    @property
    def median_cpu(self) -> float | None:
        return statistics.median(self.cpu_seconds) if self.cpu_seconds else None

    def add(self, m: Measure) -> None:
        self.seconds.append(round(m.seconds, 3))
        self.cpu_seconds.append(round(m.cpu_seconds, 3))
        self.peak_rss.append(m.peak_rss)
        self.max_rss.append(m.max_rss or m.peak_rss)

    def add_seconds(self, seconds: float) -> None:
        self.seconds.append(round(seconds, 3))

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["median_seconds"] = round(self.median, 3)
        d["median_cpu_seconds"] = None if self.median_cpu is None else round(self.median_cpu, 3)
        d["max_peak_rss"] = max(self.peak_rss, default=0)
        return d


def _version(argv: list[str]) -> str:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
        return (out.stdout or out.stderr).strip().splitlines()[0]
    return "unknown"


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "unknown"


def _mem_total() -> int:
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    return 0


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _mib(n: int | None) -> str:
    return "—" if n is None else f"{n / (1 << 20):,.0f} MiB"


def fresh_dir(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    path.chmod(0o700)
    chown_to_lab_user(path)
    make_reachable(path)
    return path


class Bench:
    def __init__(self, args: argparse.Namespace, paths: Paths) -> None:
        self.args = args
        self.paths = paths
        self.bindir = pg15_bindir()
        self.pg = Pg15(
            bindir=self.bindir,
            datadir=paths.pg_data,
            sockdir=paths.pg_sock,
            port=free_port(),
            logfile=paths.pg_log,
        )
        self.rows: dict[tuple[str, str], Row] = {}
        self.facts: dict[str, Any] = {}
        self.started: list[Pg15] = []
        # payapi finds the PostgreSQL 15 server binaries itself (server_bindir) for the
        # restore; its client tools (pg_basebackup, psql) are its default ones unless
        # --pg15-client asks for Debian's.
        self.env = dict(os.environ)
        if args.pg15_client:
            self.env["PAYAPI_PG_BINDIR"] = str(self.bindir)

    def row(self, tool: str, op: str) -> Row:
        return self.rows.setdefault((tool, op), Row(tool, op))

    def step(self, text: str) -> None:
        console.print(f"[dim]{time.strftime('%H:%M:%S')}[/dim] {text}")

    def measure(self, label: str, argv: list[str], **kw: Any) -> Measure:
        m = must(measure(label, argv, log=self.paths.log, env=kw.pop("env", self.env), **kw))
        self.step(
            f"  {label}: {m.seconds:.2f} s (CPU {m.cpu_seconds:.2f} s), peak RSS {_mib(m.peak_rss)}"
        )
        return m

    # -- phases

    def load(self) -> None:
        p = self.paths
        self.step(f"PostgreSQL {PG_MAJOR} ({self.bindir}) on 127.0.0.1:{self.pg.port}")
        self.pg.init()
        self.pg.start()
        self.pg.sql(f"CREATE DATABASE {DATABASE}")
        self.step(f"pgbench -i -s {self.args.scale}")
        m = self.measure(
            "pgbench -i",
            [
                self.pg.bin("pgbench"),
                "-i",
                "-s",
                str(self.args.scale),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.pg.port),
                "-U",
                "postgres",
                DATABASE,
            ],
        )
        self.facts["load_seconds"] = round(m.seconds, 1)
        self.pg.sql("CHECKPOINT")
        self.facts["database_bytes"] = int(self.pg.sql(f"SELECT pg_database_size('{DATABASE}')"))
        self.facts["cluster_bytes"] = int(
            self.pg.sql("SELECT sum(pg_database_size(oid)) FROM pg_database")
        )
        self.facts["server_version"] = self.pg.sql("SHOW server_version")
        self.step(
            f"  database {DATABASE}: {_mib(self.facts['database_bytes'])} "
            f"(cluster {_mib(self.facts['cluster_bytes'])})"
        )
        setup_payapi(p, self.pg, p.payapi_repo, p.payapi_key, p.payapi_config)
        p.payapi_restore_config.write_text(  # no source DSN: a restore that only restores
            f'[backup]\nrepository = "file://{p.payapi_repo}"\nkey_file = "{p.payapi_key}"\n'
        )
        make_reachable(p.payapi_restore_config)
        setup_pgbackrest(p, self.pg)

    def payapi_archiving(self) -> None:
        self.pg.set_archive_command(
            shlex.join(payapi_argv(self.paths.payapi_config, "wal", "push")) + " %p"
        )

    def pgbr_archiving(self) -> None:
        self.pg.set_archive_command(
            shlex.join(["pgbackrest", f"--config={self.paths.pgbr_config}", f"--stanza={STANZA}"])
            + " archive-push %p"
        )

    def backups(self, rnd: int) -> None:
        """One full backup per tool; the order alternates between rounds (load drifts)."""
        self.step(f"round {rnd}: backups")
        order = (self.payapi_backup, self.pgbr_backup)
        for backup in order if rnd % 2 else reversed(order):
            backup(rnd)
        # Quiet from here on: the other phases are not slowed down by an archiver.
        self.pg.set_archive_command("/bin/true")

    def payapi_backup(self, rnd: int) -> None:
        p = self.paths
        self.payapi_archiving()
        m = self.measure(
            f"payapi backup run --full (round {rnd})",
            payapi_argv(
                p.payapi_config,
                "backup",
                "run",
                "--component",
                "db",
                "--full",
                "--wal-timeout",
                "300",
                "--json",
            ),
        )
        info = json.loads(m.stdout)
        row = self.row("payapi", "backup")
        row.add(m)
        bid = info["backup_id"]
        row.stored_bytes = du(p.payapi_repo / "data" / bid) + du(p.payapi_repo / "manifests" / bid)
        self.facts.setdefault("payapi_backups", []).append(info)

    def pgbr_backup(self, rnd: int) -> None:
        p = self.paths
        self.pgbr_archiving()
        run(pgbr_argv(p, "check"), timeout=300)  # archiving works before we time
        m = self.measure(
            f"pgbackrest backup --type=full (round {rnd})",
            pgbr_argv(p, "backup", "--type=full"),
        )
        row = self.row("pgbackrest", "backup")
        row.add(m)
        last = pgbr_info(p)[-1]
        row.stored_bytes = du(p.pgbr_repo / "backup" / STANZA / last["label"])
        self.facts.setdefault("pgbackrest_backups", []).append(
            {"label": last["label"], "info": last.get("info", {})}
        )

    def dump(self) -> None:
        self.step("pg_dump -Fc")
        self.paths.dump.parent.mkdir(parents=True, exist_ok=True)
        m = self.measure(
            "pg_dump -Fc",
            [
                self.pg.bin("pg_dump"),
                "-Fc",
                "-d",
                self.pg.dsn(DATABASE),
                "-f",
                str(self.paths.dump),
            ],
        )
        row = self.row("pg_dump", "backup")
        row.add(m)
        row.stored_bytes = du(self.paths.dump)

    def restores(self, rnd: int) -> None:
        """Per tool: restore the newest backup into an empty folder (timed), then, unless
        --no-check, start it and wait until it answers (timed: 'restore → ready'), count
        pgbench_accounts, stop it. Each copy recovers from its own tool's archive."""
        self.step(f"round {rnd}: restores")
        order = (self.payapi_restore, self.pgbr_restore)
        for restore in order if rnd % 2 else reversed(order):
            tool, dest, m = restore(rnd)
            row = self.row(tool, "restore")
            row.add(m)
            row.stored_bytes = du(dest)
            if not self.args.no_check:
                boot, result = self.boot(tool, dest)
                self.row(tool, "restore → ready").add_seconds(m.seconds + boot)
                self.facts.setdefault("check", {})[tool] = result

    def payapi_restore(self, rnd: int) -> tuple[str, Path, Measure]:
        p = self.paths
        dest = p.restores / "payapi"
        shutil.rmtree(dest, ignore_errors=True)
        dest.parent.mkdir(parents=True, exist_ok=True)
        m = self.measure(
            f"payapi restore --to (round {rnd})",
            payapi_argv(
                p.payapi_restore_config,
                "restore",
                "--component",
                "db",
                "--to",
                str(dest),
                "--json",
            ),
        )
        self.facts["payapi_restore"] = json.loads(m.stdout)
        return "payapi", dest, m

    def pgbr_restore(self, rnd: int) -> tuple[str, Path, Measure]:
        dest = fresh_dir(self.paths.restores / "pgbackrest")
        m = self.measure(
            f"pgbackrest restore (round {rnd})",
            pgbr_argv(self.paths, "restore", f"--pg1-path={dest}"),
        )
        return "pgbackrest", dest, m

    def boot(self, tool: str, dest: Path) -> tuple[float, dict[str, Any]]:
        """Start a restored copy (same pg_ctl for both tools), wait until it answers a
        query, count the rows, stop it. Returns the seconds until it answered."""
        p = self.paths
        want = self.args.scale * ROWS_PER_SCALE
        copy = Pg15(
            bindir=self.bindir,
            datadir=dest,
            sockdir=p.pg_sock,
            port=free_port(),
            logfile=p.restores / f"{tool}.log",
        )
        copy.logfile.unlink(missing_ok=True)
        copy.logfile.touch()
        chown_to_lab_user(copy.logfile)
        opts = (
            f"-p {copy.port} -c listen_addresses=127.0.0.1 "
            f"-c unix_socket_directories={p.pg_sock} -c archive_mode=off"
        )
        self.started.append(copy)
        t0 = time.perf_counter()
        try:
            copy.ctl("-l", str(copy.logfile), "-o", opts, "-w", "-t", "900", "start", timeout=960)
            copy.wait_ready(900)
            boot = time.perf_counter() - t0
            count = int(copy.sql("SELECT count(*) FROM pgbench_accounts", DATABASE))
        except BenchError as exc:
            tail = copy.logfile.read_text(errors="replace").strip().splitlines()[-3:]
            raise BenchError(f"the {tool} copy does not boot: {exc} {tail}") from None
        finally:
            copy.stop()
        self.step(f"  {tool} copy: up in {boot:.2f} s, {count} rows (want {want})")
        return boot, {"ok": count == want, "rows": count, "boot_seconds": round(boot, 2)}

    def pg_restore(self) -> None:
        self.step("pg_restore into a fresh database")
        self.pg.sql(f"DROP DATABASE IF EXISTS {RESTORED_DATABASE}")
        self.pg.sql(f"CREATE DATABASE {RESTORED_DATABASE}")
        m = self.measure(
            "pg_restore",
            [
                self.pg.bin("pg_restore"),
                "-d",
                self.pg.dsn(RESTORED_DATABASE),
                str(self.paths.dump),
            ],
        )
        row = self.row("pg_dump", "restore")
        row.add(m)
        row.stored_bytes = int(self.pg.sql(f"SELECT pg_database_size('{RESTORED_DATABASE}')"))
        # Ready as soon as pg_restore returns: the server was running all along.
        self.row("pg_dump", "restore → ready").add_seconds(m.seconds)
        count = int(self.pg.sql("SELECT count(*) FROM pgbench_accounts", RESTORED_DATABASE))
        want = self.args.scale * ROWS_PER_SCALE
        self.facts.setdefault("check", {})["pg_dump"] = {"ok": count == want, "rows": count}

    def wal_push(self) -> None:
        """N fresh pushes of real 16 MB segments per tool, as the server's user."""
        p = self.paths
        n = self.args.wal_runs
        self.step(f"wal push: {n} runs per tool")
        segs_dir = p.walbench / "segments"
        segs_dir.mkdir(parents=True, exist_ok=True)
        # Fill a few segments with real WAL (updates, as in production), then copy the
        # complete ones (names below the current segment) out of pg_wal.
        self.pg.sql(
            "UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid % 50 = 0", DATABASE
        )
        current = self.pg.sql("SELECT pg_walfile_name(pg_current_wal_lsn())")
        self.pg.sql("SELECT pg_switch_wal()")
        wal_dir = p.pg_data / "pg_wal"
        real = sorted(
            f
            for f in wal_dir.iterdir()
            if len(f.name) == 24 and f.name < current and f.stat().st_size == SEGMENT
        )
        if not real:
            real = sorted(
                f for f in wal_dir.iterdir() if len(f.name) == 24 and f.stat().st_size == SEGMENT
            )
        if not real:
            raise BenchError("no 16 MB WAL segment in pg_wal to push")
        sources = real[-n:]
        names = [f"{0x10:08X}{0:08X}{i + 1:08X}" for i in range(n)]  # timeline 16: unused
        files = []
        for i, name in enumerate(names):
            dst = segs_dir / name
            shutil.copyfile(sources[i % len(sources)], dst)
            files.append(dst)
        chown_to_lab_user(p.walbench)
        make_reachable(segs_dir)
        wal_repo = p.walbench / "payapi-repo"
        wal_config = p.walbench / "payapi.toml"
        setup_payapi(p, self.pg, wal_repo, p.walbench / "repository.key", wal_config)
        self.facts["payapi_bytecode_compiled"] = compile_payapi()
        # Alternating, segment by segment (and which tool goes first alternates too): the
        # load of a shared machine drifts, and both tools then see the same drift.
        for i, f in enumerate(files):
            tools = ("payapi", "pgbackrest") if i % 2 == 0 else ("pgbackrest", "payapi")
            for tool in tools:
                if tool == "payapi":
                    argv = as_lab_user(payapi_argv(wal_config, "wal", "push", str(f)))
                else:
                    argv = pgbr_argv(p, "archive-push", str(f), stanza=WAL_STANZA)
                argv = with_peak_rss(argv)
                m = must(measure(f"{tool} wal push {f.name}", argv, log=p.log, env=self.env))
                self.row(tool, "wal push").add(m)
        for tool in ("payapi", "pgbackrest"):
            row = self.row(tool, "wal push")
            self.step(
                f"  {tool}: median {row.median:.3f} s ({min(row.seconds):.3f}.."
                f"{max(row.seconds):.3f}), peak RSS {_mib(max(row.max_rss))} (one process)"
            )
        self.row("payapi", "wal push").stored_bytes = int(
            statistics.median(du(wal_repo / "wal" / name) for name in names)
        )
        pgbr_sizes = [
            du(f)
            for f in (p.pgbr_repo / "archive" / WAL_STANZA).rglob(f"{0x10:08X}*")
            if f.is_file()
        ]
        if pgbr_sizes:
            self.row("pgbackrest", "wal push").stored_bytes = int(statistics.median(pgbr_sizes))
        self.facts["wal_segment_sources"] = [f.name for f in sources]

    def cleanup(self) -> None:
        for c in self.started:
            c.stop()
        self.pg.stop()

    # -- report

    def summary(self) -> dict[str, Any]:
        def ratio(op: str) -> float | None:
            a, b = self.rows.get(("payapi", op)), self.rows.get(("pgbackrest", op))
            if a is None or b is None or not a.seconds or not b.seconds:
                return None
            return round(a.median / b.median, 3)

        def cpu_ratio(op: str) -> float | None:
            a, b = self.rows.get(("payapi", op)), self.rows.get(("pgbackrest", op))
            if a is None or b is None or not a.median_cpu or not b.median_cpu:
                return None
            return round(a.median_cpu / b.median_cpu, 3)

        return {
            "scale": self.args.scale,
            "rounds": self.args.rounds,
            "machine": {
                "cpus": os.cpu_count(),
                "cpu_model": _cpu_model(),
                "memory_bytes": _mem_total(),
                "kernel": platform.release(),
            },
            "versions": {
                "payapi": __version__,
                "python": platform.python_version(),
                "postgresql_server": self.facts.get("server_version"),
                "pg_basebackup": _version(
                    [str(self._client_bindir() / "pg_basebackup"), "--version"]
                ),
                "pgbackrest": _version(["pgbackrest", "version"]),
                "pg_dump": _version([self.pg.bin("pg_dump"), "--version"]),
            },
            "results": [r.to_json() for r in self.rows.values()],
            "ratios": {
                "backup": ratio("backup"),
                "restore": ratio("restore"),
                "restore_to_ready": ratio("restore → ready"),
                "wal_push": ratio("wal push"),
                "backup_cpu": cpu_ratio("backup"),
                "restore_cpu": cpu_ratio("restore"),
                "wal_push_cpu": cpu_ratio("wal push"),
            },
            "wal_push": self.wal_push_summary(),
            "facts": self.facts,
        }

    def wal_push_summary(self) -> dict[str, Any] | None:
        """Medians (and min..max) of the alternating wal push runs; RSS in MiB (the push
        process itself, GNU time's %M, else the sampled tree)."""
        a, b = self.rows.get(("payapi", "wal push")), self.rows.get(("pgbackrest", "wal push"))
        if a is None or b is None or not a.seconds or not b.seconds:
            return None
        mib = 1024 * 1024
        return {
            "runs": len(a.seconds),
            "payapi_s": round(a.median, 3),
            "payapi_s_range": [min(a.seconds), max(a.seconds)],
            "pgbackrest_s": round(b.median, 3),
            "pgbackrest_s_range": [min(b.seconds), max(b.seconds)],
            "ratio": round(a.median / b.median, 3),
            "ratio_range": [
                round(min(x / y for x, y in zip(a.seconds, b.seconds, strict=True)), 3),
                round(max(x / y for x, y in zip(a.seconds, b.seconds, strict=True)), 3),
            ],
            "payapi_cpu_s": a.median_cpu,
            "pgbackrest_cpu_s": b.median_cpu,
            "payapi_rss_mb": round(statistics.median(a.max_rss) / mib, 1),
            "payapi_rss_mb_max": round(max(a.max_rss) / mib, 1),
            "pgbackrest_rss_mb": round(statistics.median(b.max_rss) / mib, 1),
        }

    def _client_bindir(self) -> Path:
        if self.args.pg15_client:
            return self.bindir
        from payapi.servers.postgres import client_bindir

        return client_bindir()

    def tables(self, s: dict[str, Any]) -> Table:
        t = Table(
            title=f"PostgreSQL {PG_MAJOR}, pgbench scale {s['scale']} "
            f"({_mib(self.facts.get('database_bytes'))}), {s['rounds']} round(s)"
        )
        for col in ("operation", "tool", "median s", "CPU s", "range s", "peak RSS", "bytes"):
            t.add_column(col, justify="left" if col in ("tool", "operation") else "right")
        ops = ("backup", "restore", "restore → ready", "wal push")
        rows = sorted(self.rows.values(), key=lambda r: (ops.index(r.op), r.tool))
        for i, r in enumerate(rows):
            fmt = "{:.3f}" if r.op == "wal push" else "{:.2f}"
            cpu = r.median_cpu
            t.add_row(
                r.op if i == 0 or rows[i - 1].op != r.op else "",
                r.tool,
                fmt.format(r.median),
                "—" if cpu is None else fmt.format(cpu),
                "..".join(fmt.format(x) for x in (min(r.seconds), max(r.seconds))),
                _mib(max(r.peak_rss, default=0)) if r.peak_rss else "—",
                _mib(r.stored_bytes),
                end_section=i + 1 < len(rows) and rows[i + 1].op != r.op,
            )
        return t


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--scale", type=int, default=100, help="pgbench scale (100 ≈ 1.5 GB)")
    ap.add_argument("--dir", type=Path, help="work folder (default: a new temporary folder)")
    ap.add_argument("--keep", action="store_true", help="keep the folder (cluster stopped)")
    ap.add_argument("--json", action="store_true", help="print the results as JSON on stdout")
    ap.add_argument("--save", type=Path, help="also write the results as JSON to this file")
    ap.add_argument("--rounds", type=int, default=3, help="backup+restore rounds per tool")
    ap.add_argument("--wal-runs", type=int, default=7, help="wal pushes per tool")
    ap.add_argument("--no-check", action="store_true", help="do not boot the restored copies")
    ap.add_argument(
        "--wal-only",
        action="store_true",
        help="only the wal push comparison (no backups, restores or dumps; use a small --scale)",
    )
    ap.add_argument(
        "--no-dump", action="store_true", help="skip pg_dump / pg_restore (the slow peer)"
    )
    ap.add_argument(
        "--pg15-client",
        action="store_true",
        help="payapi uses Debian's PostgreSQL 15 client tools (default: its own, 18)",
    )
    args = ap.parse_args(argv)
    if not 1 <= args.scale <= 2000:
        ap.error("--scale must be between 1 and 2000")
    if not 1 <= args.rounds <= 10:
        ap.error("--rounds must be between 1 and 10")
    if not 1 <= args.wal_runs <= 50:
        ap.error("--wal-runs must be between 1 and 50")
    if shutil.which("pgbackrest") is None:
        console.print("[red]pgbackrest not found[/red]: apt-get install -y pgbackrest (as root)")
        return 2

    own_dir = args.dir is None
    root = Path(tempfile.mkdtemp(prefix="payapi-bench-backup-")) if own_dir else args.dir
    root = root.absolute()
    if root.exists() and any(root.iterdir()):
        ap.error(f"--dir {root} is not empty")
    root.mkdir(parents=True, exist_ok=True)
    paths = Paths(root)
    load_before = _load()
    bench: Bench | None = None
    try:
        bench = Bench(args, paths)
        bench.load()
        if not args.wal_only:
            for rnd in range(1, args.rounds + 1):
                bench.backups(rnd)
            if not args.no_dump:
                bench.dump()
            for rnd in range(1, args.rounds + 1):
                bench.restores(rnd)
            if not args.no_dump:
                bench.pg_restore()
        bench.wal_push()
        s = bench.summary()
        s["load_average"] = {"before": load_before, "after": _load()}
        s["command"] = shlex.join([Path(sys.argv[0]).name, *(argv or sys.argv[1:])])
        if args.save is not None:
            args.save.write_text(json.dumps(s, indent=2) + "\n")
        if args.json:
            print(json.dumps(s, indent=2))
        else:
            out = Console() if sys.stdout.isatty() else Console(width=110)
            out.print(bench.tables(s))
            r = s["ratios"]
            for op in ("backup", "restore", "restore_to_ready", "wal_push"):
                if r.get(op) is not None:
                    verdict = "payapi faster" if r[op] < 1 else "payapi slower"
                    cpu = r.get(f"{op}_cpu")
                    out.print(
                        f"payapi ÷ pgBackRest, {op.replace('_', ' ')}: [bold]{r[op]:.2f}[/bold]"
                        f" ({verdict})" + (f"; CPU seconds {cpu:.2f}" if cpu else "")
                    )
            w = s.get("wal_push")
            if w:
                out.print(
                    f"wal push ({w['runs']} alternating runs each): payapi {w['payapi_s']:.3f} s "
                    f"({w['payapi_s_range'][0]:.3f}..{w['payapi_s_range'][1]:.3f}), pgBackRest "
                    f"{w['pgbackrest_s']:.3f} s ({w['pgbackrest_s_range'][0]:.3f}.."
                    f"{w['pgbackrest_s_range'][1]:.3f}); ratio [bold]{w['ratio']:.2f}[/bold]; "
                    f"payapi peak RSS {w['payapi_rss_mb']:.1f} MiB"
                    f" (max {w['payapi_rss_mb_max']:.1f})"
                )
            out.print(
                f"[dim]{os.cpu_count()} CPUs ({_cpu_model()}); load average before "
                f"{load_before}, after {s['load_average']['after']}[/dim]"
            )
            chk = bench.facts.get("check")
            if chk:
                out.print(
                    "restored copies: "
                    + ", ".join(
                        f"{k} {'OK' if v.get('ok') else 'FAILED'}"
                        + (f" ({v['rows']} rows)" if "rows" in v else "")
                        for k, v in chk.items()
                    )
                )
        failed = any(not v.get("ok") for v in bench.facts.get("check", {}).values())
        return 1 if failed else 0
    except (BenchError, ServerError) as exc:
        console.print(f"[red]bench-backup failed[/red]: {exc}")
        if args.keep:
            console.print(f"commands and their output: {paths.log}")
        return 1
    finally:
        if bench is not None:
            bench.cleanup()
        if args.keep:
            console.print(f"work folder kept: {root}")
        elif own_dir:
            shutil.rmtree(root, ignore_errors=True)
        else:
            for child in root.iterdir():
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child, ignore_errors=True)
                else:
                    child.unlink(missing_ok=True)


if __name__ == "__main__":
    sys.exit(main())
