"""Errors of object stores.

:class:`StoreError` is also the backup repository's error root
(``payapi.backup.errors.RepositoryError`` is this class): a repository is an object store
with a format, and a caller that catches the repository's errors must also catch a
store's ``NotFound`` or ``Unreachable``. Messages name the store URL (without credentials)
and the key, never an object's content.
"""

from __future__ import annotations

from payapi.core.errors import PayapiError


class StoreError(PayapiError):
    """Base class: something about an object store (or the repository on it) failed."""


class NotFound(StoreError):
    """A store, object (or a repository's backup or WAL segment) does not exist."""


class AlreadyExists(StoreError):
    """Something that must be written once already exists."""


class StoreUnreachable(StoreError):
    """The store cannot be reached (connection refused, timeout, missing bucket)."""


class StoreFull(StoreError):
    """The store has no space left (ENOSPC, EDQUOT, quota exceeded)."""
