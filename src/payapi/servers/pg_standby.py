"""A streaming standby of a local :class:`~payapi.servers.postgres.PgCluster`, and the
crash of a primary: ``pg_basebackup`` into a new data directory, ``standby.signal``, and
``kill -9`` of a postmaster.

Without a failover manager: Patroni does this itself (``servers.patroni``); tests and
tools that want "a primary and a standby" without one use this.
"""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Mapping
from pathlib import Path

from payapi.servers.postgres import PgCluster, pg_bin, postmaster_pid, psql
from payapi.servers.procs import (
    ServerError,
    ToolError,
    as_lab_user,
    chown_to_lab_user,
    make_reachable,
    pid_alive,
    run_tool,
)

_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")


def _check_name(name: str) -> None:
    if not _NAME.fullmatch(name):
        raise ServerError(f"invalid standby name {name!r}: lower-case letters, digits, _")


def clone_standby(
    primary: PgCluster,
    datadir: Path,
    *,
    port: int,
    logfile: Path,
    name: str = "standby",
    settings: Mapping[str, str] | None = None,
) -> PgCluster:
    """Copy the running ``primary`` into ``datadir`` as a streaming standby named ``name``
    (its ``application_name``, what ``synchronous_standby_names`` matches); not started.

    ``primary_conninfo`` goes into the cluster's settings rather than through
    ``pg_basebackup -R``: :meth:`PgCluster.write_settings` rewrites
    ``postgresql.auto.conf`` on every start and would drop it.
    """
    _check_name(name)
    if datadir.exists() and any(datadir.iterdir()):
        raise ServerError(f"cannot clone a standby into {datadir}: it is not empty")
    datadir.mkdir(parents=True, exist_ok=True)
    logfile.parent.mkdir(parents=True, exist_ok=True)
    logfile.touch(exist_ok=True)
    make_reachable(datadir)
    chown_to_lab_user(datadir)
    chown_to_lab_user(logfile)
    datadir.chmod(0o700)  # PostgreSQL refuses a group- or world-readable data directory
    run_tool(
        as_lab_user(
            [
                pg_bin("pg_basebackup"),
                "-h",
                "127.0.0.1",
                "-p",
                str(primary.port),
                "-U",
                "postgres",
                "-D",
                str(datadir),
                "-X",
                "stream",
                "-c",
                "fast",
                "--no-sync",
            ]
        ),
        what="pg_basebackup",
        timeout=120,
    )
    signal_file = datadir / "standby.signal"
    signal_file.touch()
    chown_to_lab_user(signal_file)
    conninfo = f"host=127.0.0.1 port={primary.port} user=postgres application_name={name}"
    merged = {
        **primary.settings,
        "primary_conninfo": f"'{conninfo}'",
        "hot_standby": "on",
        **(settings or {}),
    }
    return PgCluster(datadir=datadir, port=port, logfile=logfile, settings=merged)


def wait_streaming(primary: PgCluster, name: str, *, timeout: float = 30.0) -> None:
    """Wait until the standby ``name`` streams from ``primary`` (``pg_stat_replication``)."""
    _check_name(name)
    # The name was checked: it cannot carry a quote.
    sql = f"SELECT state FROM pg_stat_replication WHERE application_name = '{name}'"  # noqa: S608
    deadline = time.monotonic() + timeout
    while True:
        try:
            rows = psql(primary.dsn(), sql, timeout=10)
        except ToolError:
            rows = []
        if rows and rows[0][0] == "streaming":
            return
        if time.monotonic() >= deadline:
            raise ServerError(f"standby {name!r} is not streaming after {timeout:.0f}s")
        time.sleep(0.1)


def kill_postmaster(cluster: PgCluster, *, timeout: float = 10.0) -> None:
    """``kill -9`` the postmaster of ``cluster`` (a crash: no shutdown checkpoint, clients
    see their connections drop) and wait until it is gone. Its backends exit by themselves
    once the postmaster has died."""
    pid = postmaster_pid(cluster.datadir)
    if pid is None or not pid_alive(pid):
        return
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while pid_alive(pid):
        if time.monotonic() >= deadline:
            raise ServerError(f"postmaster {pid} still alive {timeout:.0f}s after SIGKILL")
        time.sleep(0.05)
