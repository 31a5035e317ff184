"""Controlling the PostgreSQL that payapi restores into (and, next, fails over).

One interface, :class:`PostgresControl`: where the server's data directory is, how to stop
and start it, the DSN it answers on, and the settings it must keep when its data is
replaced (its archiving). Implementations: :class:`LocalPostgresControl`, a server on
this host driven with ``pg_ctl`` (the lab's, or any cluster run as the lab user); Patroni's
REST API comes with the two-region work. :func:`postgres_control` picks one from the
``[postgres]`` settings, so a command never guesses from the files it finds.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit

from payapi.core.errors import PayapiError
from payapi.core.settings import PostgresSettings
from payapi.servers.postgres import PgCluster


class ControlUnavailable(PayapiError):
    """No control is configured for this server (or its configuration is incomplete)."""


class PostgresControl(Protocol):
    @property
    def datadir(self) -> Path: ...

    @property
    def port(self) -> int: ...

    @property
    def server_settings(self) -> Mapping[str, str]:
        """Settings the server runs with that survive a restore (archiving)."""
        ...

    def dsn(self, database: str = "postgres") -> str: ...

    def stop(self) -> None: ...

    def start(self) -> None: ...

    def describe(self) -> str: ...


@dataclass
class LocalPostgresControl:
    """A cluster on this host (run as the lab user), through :class:`PgCluster`."""

    cluster: PgCluster
    settings: Mapping[str, str] = field(default_factory=dict)

    @property
    def datadir(self) -> Path:
        return self.cluster.datadir

    @property
    def port(self) -> int:
        return self.cluster.port

    @property
    def server_settings(self) -> Mapping[str, str]:
        return dict(self.cluster.settings)

    def dsn(self, database: str = "postgres") -> str:
        return self.cluster.dsn(database)

    def stop(self) -> None:
        self.cluster.stop()

    def start(self) -> None:
        self.cluster.start()

    def describe(self) -> str:
        return f"the local PostgreSQL in {self.datadir}"


def postgres_control(
    section: PostgresSettings, *, server_settings: Mapping[str, str] | None = None
) -> PostgresControl:
    """The control ``[postgres] control`` names. ``server_settings`` are the settings the
    server is (re)started with (the caller knows them: the WAL archive command);
    :class:`ControlUnavailable` when no control is configured."""
    if section.control == "local":
        if section.data_dir is None:
            raise ControlUnavailable("[postgres] control = local needs [postgres] data_dir")
        port = urlsplit(section.payment_dsn).port if section.payment_dsn else None
        if port is None:
            raise ControlUnavailable(
                "[postgres] control = local needs a port in [postgres] payment_dsn"
            )
        logfile = section.log_file or section.data_dir.parent / "postgres.log"
        cluster = PgCluster(
            datadir=section.data_dir,
            port=port,
            logfile=logfile,
            settings=dict(server_settings or {}),
        )
        return LocalPostgresControl(cluster)
    raise ControlUnavailable(
        "no control of the PostgreSQL server is configured: set [postgres] control "
        "(the lab's config has control = local)"
    )
