"""Where repository objects live: one abstract :class:`Store`, one module per kind.

A store knows nothing about encryption, manifests or backups. It keeps opaque objects
under ``/``-separated keys and promises three things the repository relies on:

- ``put`` is atomic: an object is either absent or complete, never half-written under its
  final key (file: temp name + fsync + rename; S3: single PUT or completed multipart).
- ``put(..., exclusive=True)`` refuses to replace an existing object (:class:`AlreadyExists`).
- Reads and writes stream: memory is bounded by a block/part size, never the object size.

Implementations live in their own modules (``file``, ``s3``); the factory that picks one
by URL scheme is :func:`payapi.systems.objectstore.open_store` (imported lazily, so that
``wal push`` to a local repository never imports boto3).
"""

from __future__ import annotations

import abc
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import datetime, timedelta
from typing import BinaryIO, NamedTuple

from payapi.systems.objectstore.errors import StoreError

_KEY_SEGMENT = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._+@=-]*$")


class StoreEntry(NamedTuple):  # not a dataclass: `wal push` does not import dataclasses
    key: str
    size: int
    modified: datetime


def check_key(key: str) -> str:
    """Keys are relative, ``/``-separated, without empty, dot or hidden segments."""
    parts = key.split("/")
    if not key or any(not _KEY_SEGMENT.match(p) for p in parts):
        raise StoreError(f"invalid object key {key!r}")
    return key


class Store(abc.ABC):
    """An object store holding a repository. ``url`` is safe to print (no credentials).

    ``tags_for``, when set (the repository sets it), gives the tags to attach to an object
    by its key: S3 stores send them as object tags, which lifecycle rules can select on;
    other stores ignore them.
    """

    url: str
    tags_for: Callable[[str], Mapping[str, str]] | None = None

    @abc.abstractmethod
    def put(self, key: str, blocks: Iterable[bytes], *, exclusive: bool = False) -> None:
        """Store the concatenation of ``blocks`` under ``key``, atomically."""

    def put_bytes(self, key: str, data: bytes, *, exclusive: bool = False) -> None:
        self.put(key, [data], exclusive=exclusive)

    @abc.abstractmethod
    def open(self, key: str) -> BinaryIO:
        """A readable stream of the object; :class:`NotFound` if it does not exist."""

    def get_bytes(self, key: str) -> bytes:
        with self.open(key) as f:
            return f.read()

    @abc.abstractmethod
    def exists(self, key: str) -> bool: ...

    @abc.abstractmethod
    def list(self, prefix: str = "") -> Iterator[StoreEntry]:
        """Every object whose key starts with ``prefix`` (in no particular order)."""

    @abc.abstractmethod
    def delete(self, key: str) -> None:
        """Remove ``key``; removing an absent object is not an error."""

    def delete_many(self, keys: Iterable[str]) -> None:
        for key in keys:
            self.delete(key)

    @abc.abstractmethod
    def cleanup(self, older_than: timedelta | None = None) -> int:
        """Remove leftovers of interrupted writes (temp files, unfinished uploads)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections; the store is unusable afterwards."""
