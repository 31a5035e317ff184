"""Errors of the backup repository.

Every error is one line for the operator (the CLI prints ``str(exc)`` and exits non-zero).
No message ever contains key material or plaintext: they name the repository URL, the
backup id, the object name and what went wrong, nothing else.
"""

from __future__ import annotations

from payapi.systems.objectstore.errors import AlreadyExists, NotFound, StoreError
from payapi.systems.objectstore.errors import StoreFull as RepositoryFull
from payapi.systems.objectstore.errors import StoreUnreachable as RepositoryUnreachable

# One class, two names: the repository's errors are its store's (see
# payapi.systems.objectstore.errors), so ``except RepositoryError`` also catches a store's
# NotFound. It derives from payapi.core.errors.PayapiError.
RepositoryError = StoreError

__all__ = [
    "AlreadyExists",
    "CorruptObject",
    "KeyUnavailable",
    "MissingObject",
    "NotFound",
    "RepositoryError",
    "RepositoryFull",
    "RepositoryUnreachable",
    "WalConflict",
    "WrongKey",
]


class WrongKey(RepositoryError):
    """The repository key does not open this repository."""


class KeyUnavailable(RepositoryError):
    """No usable repository key: the key file or variable is missing or malformed."""


class CorruptObject(RepositoryError):
    """A stored object failed authentication, its checksum, or ended early."""

    def __init__(self, backup_id: str | None, name: str, reason: str) -> None:
        self.backup_id = backup_id
        self.name = name
        self.reason = reason
        where = f"in backup {backup_id}" if backup_id else "in the repository"
        super().__init__(f"corrupt object {name} {where}: {reason}")


class MissingObject(CorruptObject, NotFound):
    """An object a manifest lists is absent from the store: the backup is damaged."""

    def __init__(self, backup_id: str | None, name: str) -> None:
        CorruptObject.__init__(self, backup_id, name, "missing from the repository")


class WalConflict(RepositoryError):
    """A WAL segment with this name is already archived with different content."""
