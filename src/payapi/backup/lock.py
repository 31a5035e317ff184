"""A lock with a lease, so that a purge never runs while a backup of the same component does.

Why: a backup's manifest (with its ``wal_start``/``wal_end``) is written last, so while a
backup runs, retention cannot see which WAL it needs; a purge at that moment could delete
it. Both take the lock of the component (:func:`lock_name`) for as long as they work.

The lock is one small record stored under a name in a :class:`LockStore` — the backup
repository's ``locks/`` prefix, or a local directory (:class:`LocalFileLockStore`). The
record says who holds it (:class:`Holder`: host, pid, started_at, lease_until). The store
needs put-if-absent (``create``) and compare-and-swap (``replace``/``delete`` only if the
record is still the one the caller read); S3 offers both as conditional requests
(``If-None-Match: *`` and ``If-Match: <etag>``).

Invariants:

- At most one holder: a record is only created if absent, and only replaced or deleted
  if unchanged since it was read, so two breakers cannot both win.
- A held lock is broken only when its lease has expired, or when its holder is a process
  on *this* host that no longer exists (then at once, whatever the lease says). Every
  break is a warning log line naming the lock, the holder and the reason.
- A holder that lost its lock (broken after its lease expired) finds out at its next
  :meth:`Lock.renew` (:class:`LockLost`) and must stop.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from payapi.core.errors import PayapiError
from payapi.core.logs import get_logger
from payapi.servers.procs import pid_alive

__all__ = [
    "DEFAULT_LEASE",
    "Held",
    "Holder",
    "LocalFileLockStore",
    "Lock",
    "LockError",
    "LockHeld",
    "LockLost",
    "LockStore",
    "MemoryLockStore",
    "ObjectLockStore",
    "lock_name",
    "pid_alive",
]

DEFAULT_LEASE = timedelta(minutes=15)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")

log = get_logger("payapi.backup.lock")


class LockError(PayapiError):
    """The lock could not be taken, renewed or released; one line for the operator."""


class LockHeld(LockError):
    """Someone else holds the lock (and it may not be broken)."""

    def __init__(self, name: str, holder: Holder) -> None:
        self.name = name
        self.holder = holder
        super().__init__(f"lock {name!r} is held by {holder.describe()}")


class LockLost(LockError):
    """The caller no longer holds the lock it thought it held."""


def lock_name(component: str) -> str:
    """The lock a backup and a purge of ``component`` share: ``component-<name>``."""
    return f"component-{component}"


def _check_name(name: str) -> str:
    if not _NAME.match(name):
        raise LockError(f"invalid lock name {name!r} (letters, digits, '.', '_', '-')")
    return name


def _utcnow() -> datetime:
    return datetime.now(UTC)


# --------------------------------------------------------------------------- holder


@dataclass(frozen=True, slots=True)
class Holder:
    """Who holds a lock, until when. ``token`` tells two holders of one process apart."""

    host: str
    pid: int
    started_at: datetime
    lease_until: datetime
    label: str = ""
    token: str = ""

    def to_bytes(self) -> bytes:
        """Deterministic bytes: the same holder always serializes the same way."""
        return json.dumps(
            {
                "host": self.host,
                "pid": self.pid,
                "started_at": self.started_at.isoformat(),
                "lease_until": self.lease_until.isoformat(),
                "label": self.label,
                "token": self.token,
            },
            sort_keys=True,
            separators=(",", ":"),
        ).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> Holder:
        """Parse a stored record; ValueError (one line) if it is not one."""
        try:
            raw: Any = json.loads(data.decode("utf-8"))
            if not isinstance(raw, dict):
                raise ValueError("not an object")
            holder = cls(
                host=str(raw["host"]),
                pid=int(raw["pid"]),
                started_at=datetime.fromisoformat(str(raw["started_at"])),
                lease_until=datetime.fromisoformat(str(raw["lease_until"])),
                label=str(raw.get("label", "")),
                token=str(raw.get("token", "")),
            )
        except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
            raise ValueError(f"not a lock record: {exc}") from None
        if holder.started_at.utcoffset() is None or holder.lease_until.utcoffset() is None:
            raise ValueError("not a lock record: naive timestamps")
        return holder

    def describe(self) -> str:
        what = f" ({self.label})" if self.label else ""
        return (
            f"pid {self.pid} on {self.host}{what} since {self.started_at.isoformat()}, "
            f"lease until {self.lease_until.isoformat()}"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "pid": self.pid,
            "started_at": self.started_at.isoformat(),
            "lease_until": self.lease_until.isoformat(),
            "label": self.label,
        }


# --------------------------------------------------------------------------- stores


class LockStore(Protocol):
    """Where lock records live. Every method is atomic with respect to the others."""

    def create(self, key: str, data: bytes) -> bool:
        """Store ``data`` under ``key`` if nothing is there; False if something is."""
        ...

    def read(self, key: str) -> bytes | None:
        """The record under ``key``, or None."""
        ...

    def replace(self, key: str, expected: bytes, data: bytes) -> bool:
        """Overwrite the record only if it is still ``expected``; False otherwise."""
        ...

    def delete(self, key: str, expected: bytes) -> bool:
        """Remove the record only if it is still ``expected``; False otherwise."""
        ...


class LocalFileLockStore:
    """Lock records as files ``<directory>/<key>``, created with ``O_CREAT | O_EXCL``.

    Every operation holds an exclusive ``flock`` on ``<directory>/.guard``, so a reader
    never sees a half-written record and compare-and-swap is atomic between processes of
    this host (the directory must be local: flock is not reliable over NFS).
    """

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    def _path(self, key: str) -> Path:
        return self.directory / _check_name(key)

    @contextlib.contextmanager
    def _guard(self) -> Iterator[None]:
        self.directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.directory / ".guard", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing the descriptor releases the flock

    def _fsync_dir(self) -> None:
        fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _read(self, path: Path) -> bytes | None:
        try:
            return path.read_bytes()
        except FileNotFoundError:
            return None

    def create(self, key: str, data: bytes) -> bool:
        path = self._path(key)
        with self._guard():
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                return False
            try:
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            self._fsync_dir()
            return True

    def read(self, key: str) -> bytes | None:
        path = self._path(key)
        with self._guard():
            return self._read(path)

    def replace(self, key: str, expected: bytes, data: bytes) -> bool:
        path = self._path(key)
        with self._guard():
            if self._read(path) != expected:
                return False
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, path)
            self._fsync_dir()
            return True

    def delete(self, key: str, expected: bytes) -> bool:
        path = self._path(key)
        with self._guard():
            if self._read(path) != expected:
                return False
            path.unlink()
            self._fsync_dir()
            return True


class _ObjectStore(Protocol):
    """The part of :class:`~payapi.systems.objectstore.base.Store` that
    :class:`ObjectLockStore` uses."""

    def put_bytes(self, key: str, data: bytes, *, exclusive: bool = False) -> None: ...

    def get_bytes(self, key: str) -> bytes: ...

    def delete(self, key: str) -> None: ...


class ObjectLockStore:
    """Lock records as objects ``<prefix><key>`` of a repository store (S3, or a folder).

    ``create`` is the store's exclusive put, so it is atomic. ``replace`` and ``delete``
    compare, then act: a store without conditional writes leaves a window of one request
    between the two, in which a renewal or a concurrent break can be missed. Prefer
    :class:`LocalFileLockStore` for a repository on a local disk.
    """

    def __init__(self, store: _ObjectStore, prefix: str = "locks/") -> None:
        self.store = store
        self.prefix = prefix

    def _key(self, key: str) -> str:
        return self.prefix + _check_name(key)

    def create(self, key: str, data: bytes) -> bool:
        from payapi.backup.errors import AlreadyExists

        try:
            self.store.put_bytes(self._key(key), data, exclusive=True)
        except AlreadyExists:
            return False
        return True

    def read(self, key: str) -> bytes | None:
        from payapi.backup.errors import NotFound

        try:
            return self.store.get_bytes(self._key(key))
        except NotFound:
            return None

    def replace(self, key: str, expected: bytes, data: bytes) -> bool:
        if self.read(key) != expected:
            return False
        self.store.put_bytes(self._key(key), data)
        return True

    def delete(self, key: str, expected: bytes) -> bool:
        if self.read(key) != expected:
            return False
        self.store.delete(self._key(key))
        return True


class MemoryLockStore:
    """A :class:`LockStore` in memory (tests, and one process with several threads)."""

    def __init__(self) -> None:
        self._data: dict[str, bytes] = {}
        self._mutex = threading.Lock()

    def create(self, key: str, data: bytes) -> bool:
        with self._mutex:
            if key in self._data:
                return False
            self._data[key] = data
            return True

    def read(self, key: str) -> bytes | None:
        with self._mutex:
            return self._data.get(key)

    def replace(self, key: str, expected: bytes, data: bytes) -> bool:
        with self._mutex:
            if self._data.get(key) != expected:
                return False
            self._data[key] = data
            return True

    def delete(self, key: str, expected: bytes) -> bool:
        with self._mutex:
            if self._data.get(key) != expected:
                return False
            del self._data[key]
            return True


# --------------------------------------------------------------------------- lock


class Lock:
    """Take, renew and release named locks in a :class:`LockStore`.

    ``clock``, ``sleep`` and ``is_alive`` are injectable for tests; ``host`` and ``pid``
    default to this process.
    """

    def __init__(
        self,
        store: LockStore,
        *,
        clock: Callable[[], datetime] = _utcnow,
        sleep: Callable[[float], None] = time.sleep,
        is_alive: Callable[[int, datetime | None], bool] = pid_alive,
        host: str | None = None,
        pid: int | None = None,
    ) -> None:
        self.store = store
        self.clock = clock
        self.sleep = sleep
        self.is_alive = is_alive
        self.host = host if host is not None else socket.gethostname()
        self.pid = pid if pid is not None else os.getpid()

    def inspect(self, name: str) -> Holder | None:
        """Who holds ``name`` now (None if nobody, or if the record is unreadable)."""
        raw = self.store.read(_check_name(name))
        if raw is None:
            return None
        try:
            return Holder.from_bytes(raw)
        except ValueError:
            return None

    def breakable(self, holder: Holder, now: datetime) -> str | None:
        """Why ``holder`` may be broken at ``now``; None if it holds the lock rightly."""
        if holder.host == self.host and not self.is_alive(holder.pid, holder.started_at):
            return f"holder pid {holder.pid} on this host ({self.host}) is dead"
        if holder.lease_until <= now:
            return f"lease expired at {holder.lease_until.isoformat()}"
        return None

    def acquire(
        self,
        name: str,
        holder: str = "",
        lease: timedelta = DEFAULT_LEASE,
        *,
        wait: timedelta = timedelta(0),
        poll: float = 1.0,
    ) -> Holder:
        """Take lock ``name`` for ``lease``; ``holder`` says who/why (``"retention purge"``).

        Breaks a dead or expired holder (with a log line) and retries; waits up to
        ``wait`` for a live holder to release; else raises :class:`LockHeld`.
        """
        key = _check_name(name)
        if lease <= timedelta(0):
            raise LockError(f"lock {name!r}: the lease must be positive")
        token = uuid.uuid4().hex
        deadline = self.clock() + wait
        for _ in range(10_000):
            now = self.clock()
            me = Holder(self.host, self.pid, now, now + lease, holder, token)
            if self.store.create(key, me.to_bytes()):
                return me
            raw = self.store.read(key)
            if raw is None:
                continue  # released between our create and read: try again
            try:
                current = Holder.from_bytes(raw)
            except ValueError as exc:
                log.warning("lock broken", lock=name, reason=str(exc), holder=None)
                self.store.delete(key, raw)
                continue
            why = self.breakable(current, now)
            if why is not None:
                if self.store.delete(key, raw):
                    log.warning("lock broken", lock=name, reason=why, holder=current.describe())
                continue
            remaining = (deadline - self.clock()).total_seconds()
            if remaining <= 0:
                raise LockHeld(name, current)
            self.sleep(min(poll, remaining))
        raise LockError(f"lock {name!r}: gave up after too many contended attempts")

    def renew(self, name: str, holder: Holder, lease: timedelta = DEFAULT_LEASE) -> Holder:
        """Extend our lease to ``now + lease``; :class:`LockLost` if it is no longer ours."""
        key = _check_name(name)
        now = self.clock()
        renewed = replace(holder, lease_until=now + lease)
        if not self.store.replace(key, holder.to_bytes(), renewed.to_bytes()):
            current = self.inspect(name)
            who = current.describe() if current else "nobody"
            raise LockLost(f"lock {name!r} is no longer ours (now held by {who})")
        return renewed

    def release(self, name: str, holder: Holder) -> bool:
        """Give the lock back; False (and a log line) if it was no longer ours."""
        key = _check_name(name)
        if self.store.delete(key, holder.to_bytes()):
            return True
        log.warning("lock not released: no longer ours", lock=name, holder=holder.describe())
        return False

    @contextlib.contextmanager
    def hold(
        self,
        name: str,
        holder: str = "",
        lease: timedelta = DEFAULT_LEASE,
        *,
        wait: timedelta = timedelta(0),
    ) -> Iterator[Held]:
        """``with lock.hold("component-database", "retention purge") as held:`` …

        Call ``held.renew()`` now and then (it renews once half the lease has passed).
        """
        taken = self.acquire(name, holder, lease, wait=wait)
        held = Held(self, name, taken, lease)
        try:
            yield held
        finally:
            self.release(name, held.holder)


class Held:
    """A lock this process holds; :meth:`renew` keeps it from expiring."""

    def __init__(self, lock: Lock, name: str, holder: Holder, lease: timedelta) -> None:
        self.lock = lock
        self.name = name
        self.holder = holder
        self.lease = lease

    def renew(self, *, force: bool = False) -> None:
        """Renew when half the lease has passed (or always, with ``force``)."""
        left = self.holder.lease_until - self.lock.clock()
        if force or left < self.lease / 2:
            self.holder = self.lock.renew(self.name, self.holder, self.lease)
