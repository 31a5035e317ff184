"""The backup service's entry points that every caller shares.

- :func:`open_repository`: the one way to open a repository from the settings, by name
  (``primary`` or a ``[backup.secondary.NAME]``) or by URL (with the primary's key), for
  every command and service (the RPO check, the schedule, the lab);
- :func:`restore_command_for` / :func:`archive_settings`: the ``restore_command`` and
  ``archive_command`` that point a PostgreSQL server at the same repository;
- :func:`postgres_control`: the control of the configured server for restores in place,
  started with its archive settings;
- :func:`component_lock`: the lock a backup, a restore and a purge of one component take
  (one place, so they exclude each other whatever command runs them).

The CLI calls these and renders; it decides nothing about repositories itself.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from payapi.backup.errors import RepositoryError
from payapi.core.errors import UsageError
from payapi.core.journal import Journal
from payapi.core.settings import PRIMARY, ConfigError, RepositoryLocation, Settings

if TYPE_CHECKING:
    from pathlib import Path

    from payapi.backup.lock import Held
    from payapi.backup.repository import Repository
    from payapi.systems.postgres import PostgresControl


class UnknownRepository(UsageError):
    """``--repository NAME`` names no configured repository (a typo must not open a
    folder of that name)."""


def is_url(name_or_url: str) -> bool:
    """A URL or a path (it has a ``/``), as opposed to a repository's name."""
    return "/" in name_or_url


def repository_location(settings: Settings, name_or_url: str | None = None) -> RepositoryLocation:
    """Where ``name_or_url`` is: the primary (None or ``primary``), a secondary by name,
    or a URL that is opened with the primary's key settings."""
    section = settings.backup
    if name_or_url is not None and is_url(name_or_url):
        return replace(section.location(), url=name_or_url)
    try:
        return section.location(name_or_url)
    except ConfigError as exc:
        raise UnknownRepository(str(exc)) from None


def open_repository(
    settings: Settings,
    name_or_url: str | None = None,
    *,
    create: bool = False,
    key_file: Path | None = None,
) -> Repository:
    """Open the repository ``name_or_url`` names (see :func:`repository_location`).

    :class:`UnknownRepository` for a name that is not configured; :class:`RepositoryError`
    when there is no repository or it cannot be used (a secondary's message names it).
    ``create`` initializes a location that holds no repository yet (with its key);
    ``key_file`` overrides the key file of the location.
    """
    from payapi.backup.repository import Repository

    where = repository_location(settings, name_or_url)
    if not where.url:
        raise RepositoryError(
            "no backup repository: set [backup] repository in the config "
            "(or $PAYAPI_BACKUP__REPOSITORY)"
        )
    try:
        return Repository.open_configured(
            where.url,
            key_file=key_file or where.key_file,
            key_env=where.key_env,
            s3_endpoint_url=where.s3_endpoint_url,
            s3_sse=where.s3_sse,
            s3_region=where.s3_region,
            create=create,
        )
    except RepositoryError as exc:
        if where.primary:
            raise
        raise RepositoryError(f"repository {where.name}: {exc}") from None


def restore_command_for(settings: Settings, name_or_url: str | None = None) -> str:
    """``restore_command`` for a restored server: the same repository and key as us
    (a secondary by its name, which ``wal fetch`` resolves from the same config)."""
    from payapi.backup.wal import restore_command

    if name_or_url is not None and name_or_url != PRIMARY:
        if settings.config_path is not None:
            return restore_command(settings.config_path, repository=name_or_url)
        where = repository_location(settings, name_or_url)
        return restore_command(None, repository=where.url, key_file=where.key_file)
    return restore_command(
        settings.config_path,
        repository=settings.backup.repository or None,
        key_file=settings.backup.key_file,
    )


def archive_settings(config_path: Path | None) -> dict[str, str]:
    """PostgreSQL settings that archive every WAL segment into the configured repository
    through ``payapi wal push`` (what the lab's server and a server restored in place
    run with)."""
    from payapi.backup.wal import archive_command, guc_string

    return {
        "archive_mode": "on",
        "archive_command": guc_string(archive_command(config_path)),
        "archive_timeout": "60",
    }


def postgres_control(settings: Settings) -> PostgresControl:
    """The configured server's control (``[postgres] control``), restarted with its
    archive settings; :class:`~payapi.systems.postgres.ControlUnavailable` without one."""
    from payapi.systems.postgres import postgres_control as control_for

    return control_for(settings.postgres, server_settings=archive_settings(settings.config_path))


@contextlib.contextmanager
def component_lock(
    repo: Repository,
    component: str,
    purpose: str,
    *,
    wait: timedelta = timedelta(0),
) -> Iterator[Held]:
    """Hold ``component``'s lock in ``repo`` (the lock backups, restores and purges of it
    take) for the block; :class:`~payapi.backup.lock.LockHeld` when someone else has it.
    Long work renews the lease through the yielded :class:`Held`."""
    from payapi.backup.lock import Lock, lock_name

    lock = Lock(repo.lock_store())
    with lock.hold(lock_name(component), purpose, wait=wait) as held:
        yield held


# --------------------------------------------------------------------------- copies

# How long a copy waits for a purge of the destination to let go of a component's lock.
DEFAULT_LOCK_WAIT = 60.0


def secondary_names(settings: Settings, to: str | None) -> list[str]:
    """The secondaries a copy goes to: every one, or ``to`` alone (UsageError if it is
    not one)."""
    names = sorted(settings.backup.secondaries)
    if to is None:
        return names
    if to == PRIMARY:
        raise UsageError("--to names a secondary repository, not the primary")
    if to not in names:
        known = ", ".join(names) or "none configured"
        raise UsageError(f"no secondary repository named {to!r} (secondaries: {known})")
    return [to]


def copy_to_secondaries(
    settings: Settings,
    src: Repository,
    names: list[str],
    *,
    backup_ids: list[str] | None = None,
    verify: bool = True,
    recheck: bool = False,
    lock_wait: float = DEFAULT_LOCK_WAIT,
    journal: Journal | None = None,
) -> tuple[list[dict[str, Any]], str | None]:
    """Copy into each named secondary (initializing one that does not exist yet); a JSON
    report per secondary, and the first failure (or None). A secondary that fails does
    not stop the others."""
    from payapi.backup.copy import copy_repository
    from payapi.backup.errors import RepositoryError
    from payapi.backup.lock import LockError

    reports: list[dict[str, Any]] = []
    failure: str | None = None
    started = datetime.now(UTC)
    for name in names:
        part = (journal or Journal()).prefixed(f"{name}: ")
        entry: dict[str, Any] = {"repository": name}
        try:
            with open_repository(settings, name, create=True) as dst:
                created = dst.require_config().created_at >= started
                report = copy_repository(
                    src,
                    dst,
                    backup_ids=backup_ids,
                    journal=part,
                    verify=verify,
                    lock_wait=timedelta(seconds=lock_wait),
                    work_dir=settings.backup.work_dir,
                    recheck=recheck,
                )
            if created:
                report.notes.insert(0, f"initialized the repository at {report.destination}")
            entry.update(report.to_json())
            if not report.ok:
                more = len(report.problems) - 1
                problem = report.problems[0] + (f" (and {more} more problems)" if more else "")
        except (RepositoryError, LockError, OSError) as exc:
            entry.update({"ok": False, "problems": [str(exc)]})
            problem = str(exc)
        if not entry["ok"] and failure is None:
            failure = f"copy to {name} failed: {problem}"
        reports.append(entry)
    return reports, failure


def copy_after_backup(
    settings: Settings, src: Repository, *, journal: Journal | None = None
) -> tuple[list[dict[str, Any]], str | None]:
    """What ``backup run`` does after a backup: copy everything the secondaries lack."""
    names = sorted(settings.backup.secondaries)
    if not names:
        return [], None
    return copy_to_secondaries(settings, src, names, journal=journal)


def config_git_dir(settings: Settings) -> Path:
    """Where configuration exports are committed: ``[config_backup] git_dir``, else a
    ``config-git`` folder beside the config file."""
    section = settings.config_backup
    if section.git_dir is not None:
        return section.git_dir
    if settings.config_path is None:
        raise UsageError("set [config_backup] git_dir (or run with --config)")
    return settings.config_path.parent / "config-git"
