"""One backup engine per component, behind one protocol, found in one registry.

Barman's shape: the command names a component, the registry finds its engine, the
service (:func:`run_backup`) takes the component's lock and runs it. The CLI knows no
engine by name; adding a component is one entry in :data:`ENGINES`. Engines are imported
lazily (the PostgreSQL engine pulls in nothing the Redis backup needs, and the reverse).

An engine's :meth:`Engine.kind` decides which of ``--full``/``--incremental``/
``--logical`` it takes (a pure check, a :class:`~payapi.core.errors.UsageError` for one it
does not); :meth:`Engine.run` takes the backup while the caller holds the lock.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from payapi.backup.lock import Held
from payapi.backup.manifest import BackupInfo
from payapi.backup.repository import Repository
from payapi.core.errors import UsageError
from payapi.core.journal import Journal
from payapi.core.settings import Settings

__all__ = [
    "ENGINES",
    "BackupJob",
    "Engine",
    "EngineRun",
    "UnknownEngine",
    "engine_for",
    "run_backup",
]


class UnknownEngine(UsageError):
    """No backup engine for this component."""


@dataclass(frozen=True)
class BackupJob:
    """What the operator asked for: ``kind`` as given (None: the engine's default),
    ``dsn`` for the database engine (None: ``[postgres] payment_dsn``)."""

    kind: str | None = None
    dsn: str | None = None
    wal_timeout: float = 60.0
    journal: Journal = field(default_factory=Journal.silent)


@dataclass(frozen=True)
class EngineRun:
    """A committed backup, the engine's own extra output (JSON-ready), and ``problem``:
    what failed *after* the backup was committed (a Git push), or None."""

    backup: BackupInfo
    extra: dict[str, Any] = field(default_factory=dict)
    problem: str | None = None


KeepAlive = Callable[[], None]


class Engine(Protocol):
    @property
    def component(self) -> str: ...

    def kind(self, asked: str | None) -> str | None:
        """The kind to take for ``asked``; UsageError when this engine has no such kind."""
        ...

    def run(
        self, repo: Repository, settings: Settings, job: BackupJob, keep_alive: KeepAlive
    ) -> EngineRun: ...


# --------------------------------------------------------------------------- engines


class DatabaseEngine:
    component = "database"

    def kind(self, asked: str | None) -> str | None:
        return asked or "full"

    def run(
        self, repo: Repository, settings: Settings, job: BackupJob, keep_alive: KeepAlive
    ) -> EngineRun:
        from payapi.backup.postgres import BackupRequest
        from payapi.backup.postgres import run_backup as run_pg_backup

        source = job.dsn or settings.postgres.payment_dsn
        if not source:
            raise UsageError("no database to back up: set [postgres] payment_dsn or pass --dsn")
        request = BackupRequest(
            kind=self.kind(job.kind) or "full",
            dsn=source,
            wal_timeout=job.wal_timeout,
            work_dir=settings.backup.work_dir,
            journal=job.journal,
            keep_alive=keep_alive,
        )
        return EngineRun(run_pg_backup(repo, request))


class VaultEngine:
    component = "vault"

    def kind(self, asked: str | None) -> str | None:
        if asked not in (None, "full", "incremental"):
            raise UsageError("a vault backup is --full or --incremental")
        return asked or "full"

    def run(
        self, repo: Repository, settings: Settings, job: BackupJob, keep_alive: KeepAlive
    ) -> EngineRun:
        from payapi.backup.vault_backup import run_vault_backup

        kind: Literal["full", "incremental"] = (
            "incremental" if self.kind(job.kind) == "incremental" else "full"
        )
        return EngineRun(
            run_vault_backup(repo, settings, kind=kind, journal=job.journal, keep_alive=keep_alive)
        )


class RedisEngine:
    component = "redis"

    def kind(self, asked: str | None) -> str | None:
        if asked is not None:
            raise UsageError("a Redis backup is an RDB snapshot: no --full/--incremental/--logical")
        return None

    def run(
        self, repo: Repository, settings: Settings, job: BackupJob, keep_alive: KeepAlive
    ) -> EngineRun:
        from payapi.backup.redis_backup import run_redis_backup

        self.kind(job.kind)
        return EngineRun(run_redis_backup(repo, settings.redis, journal=job.journal))


class ConfigurationEngine:
    component = "configuration"

    def kind(self, asked: str | None) -> str | None:
        if asked is not None:
            raise UsageError(
                "a configuration backup is an export: no --full/--incremental/--logical"
            )
        return None

    def run(
        self, repo: Repository, settings: Settings, job: BackupJob, keep_alive: KeepAlive
    ) -> EngineRun:
        from payapi.backup.config_backup import default_sources, run_config_backup
        from payapi.backup.service import config_git_dir

        self.kind(job.kind)
        section = settings.config_backup
        result = run_config_backup(
            repo,
            section,
            sources=default_sources(settings),
            git_dir=config_git_dir(settings),
            remotes=section.remotes,
            kube_context=section.kube_context,
            journal=job.journal,
        )
        extra = result.to_json()
        problem = None
        if extra.get("push_errors"):
            remote, error = next(iter(extra["push_errors"].items()))
            problem = f"configuration stored, but pushing to remote {remote} failed: {error}"
        return EngineRun(result.backup, extra, problem)


ENGINES: dict[str, Engine] = {
    e.component: e for e in (DatabaseEngine(), VaultEngine(), RedisEngine(), ConfigurationEngine())
}


def engine_for(component: str) -> Engine:
    """The engine of a canonical component name; :class:`UnknownEngine` if none."""
    try:
        return ENGINES[component]
    except KeyError:
        raise UnknownEngine(
            f"no backup engine for component {component!r} (one of {', '.join(ENGINES)})"
        ) from None


# --------------------------------------------------------------------------- the service


def run_backup(repo: Repository, settings: Settings, component: str, job: BackupJob) -> EngineRun:
    """Take one backup of ``component``: the kind is checked first (nothing is locked
    for a usage error), then the component's lock is held for the whole run and renewed
    as data streams, as every backup, restore and purge of the component does."""
    from payapi.backup.service import component_lock

    engine = engine_for(component)
    engine.kind(job.kind)
    purpose = f"{component} {job.kind or ''} backup".replace("  ", " ")
    with component_lock(repo, component, purpose) as held:
        return engine.run(repo, settings, job, held.renew)


@contextlib.contextmanager
def restore_lock(
    repo: Repository, component: str, purpose: str, *, wait: float = 30.0
) -> Iterator[Held]:
    """The lock a restore of ``component`` holds (waits up to ``wait`` s for a purge); long
    restores renew it through the yielded :class:`~payapi.backup.lock.Held`."""
    from datetime import timedelta

    from payapi.backup.service import component_lock

    with component_lock(repo, component, purpose, wait=timedelta(seconds=wait)) as held:
        yield held
