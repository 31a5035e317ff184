"""What an asyncpg failure means to a service, and what the service does about it.

SAPI and the vault reach PostgreSQL through a multi-host DSN
(``postgresql://h1:p1,h2:p2/db?target_session_attrs=read-write``); asyncpg picks the
host that matches ``target_session_attrs`` **only when it connects**. After a failover the
pooled connections still point at the old leader: dead (the process is gone) or, worse,
alive on a server that came back read-only as a replica. So every service needs the same
two answers, given here once:

- :func:`classify` (deciding, pure): is this exception "the database is not available
  right now" (HTTP 503, retry) rather than a bug, and must the pool reconnect to pick the
  server again?
- :func:`discard_connections` (doing): expire the pool's connections, so that the next
  acquire opens new ones and asyncpg checks ``target_session_attrs`` again.

``payapi.sapi.db`` and ``payapi.vault.availability`` each map a :class:`Failure` to their
service's 503 in one place.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

import asyncpg
from asyncpg.exceptions import (
    InsufficientResourcesError,
    InternalClientError,
    OperatorInterventionError,
    QueryCanceledError,
    SerializationError,
    TargetServerAttributeNotMatched,
)

Kind = Literal["unreachable", "read_only", "timeout", "overloaded", "conflict"]

# asyncpg reports a call on a closed connection or pool as a plain InterfaceError (the
# class it also uses for API misuse, which is a bug): these messages are the closed ones.
_CLOSED = re.compile(r"connection is closed|pool is clos(?:ed|ing)")
# When a server dies, its backends send a FATAL to idle clients and hang up. Between the
# two, asyncpg's protocol is draining that error (its state 2, ERROR_CONSUME) or, once
# the socket is gone, "failed"; a query started on such a pooled connection is refused
# with an InternalClientError before anything is sent. Seen here about once in ten kill -9
# of a leader under load: without this it was a 500.
_BROKEN_PROTOCOL = re.compile(
    r"another operation \(2\) is in progress|protocol is in the \"failed\" state"
)

WRITABLE_SQL = (
    "SELECT NOT pg_catalog.pg_is_in_recovery()"
    " AND pg_catalog.current_setting('transaction_read_only') = 'off'"
)
"""True on a server that accepts writes: not a standby, and not made read-only (a leader
being demoted, or ``default_transaction_read_only``)."""

# asyncpg's own default when neither the DSN nor the environment names one.
_DEFAULT_TARGET = "any"
_STANDBY_TARGETS = frozenset({"any", "standby", "prefer-standby", "read-only"})


@dataclass(frozen=True, slots=True)
class Failure:
    kind: Kind
    reconnect: bool
    """The pool's connections may point at the wrong server: replace them all."""


def classify(exc: BaseException) -> Failure | None:
    """The unavailability ``exc`` stands for, or None when it is not one (a bug: 500).

    Read-only and lost connections reconnect: after a failover every pooled connection to
    the old leader is as wrong as the one that failed. Timeouts and overload do not: the
    server may be right and merely busy, and reconnecting the whole pool would make an
    overload worse.
    """
    if isinstance(exc, asyncpg.ReadOnlySQLTransactionError):
        return Failure("read_only", reconnect=True)
    if isinstance(exc, QueryCanceledError):  # statement_timeout, or cancelled by an admin
        return Failure("timeout", reconnect=False)
    if isinstance(
        exc,
        asyncpg.PostgresConnectionError  # 08xxx: lost, refused, rejected
        | OperatorInterventionError  # 57Pxx: shutting down, crashed, starting up
        | TargetServerAttributeNotMatched,  # no host is the writer (or standby) we need
    ):
        return Failure("unreachable", reconnect=True)
    if isinstance(exc, asyncpg.InterfaceError):
        if _CLOSED.search(str(exc)):
            return Failure("unreachable", reconnect=True)
        return None
    if isinstance(exc, InternalClientError) and _BROKEN_PROTOCOL.search(str(exc)):
        return Failure("unreachable", reconnect=True)
    if isinstance(exc, InsufficientResourcesError):  # too many connections, disk full
        return Failure("overloaded", reconnect=False)
    if isinstance(exc, SerializationError):
        # A hot standby cancels a read that conflicts with the replay of WAL: retryable.
        return Failure("conflict", reconnect=False)
    if isinstance(exc, TimeoutError):  # asyncio's too (the same class since 3.11)
        return Failure("timeout", reconnect=False)
    if isinstance(exc, OSError):  # refused, reset, unreachable host
        return Failure("unreachable", reconnect=True)
    return None


def target_session_attrs(dsn: str, environ: dict[str, str] | None = None) -> str:
    """The ``target_session_attrs`` asyncpg will use for ``dsn``: the DSN's, else
    ``PGTARGETSESSIONATTRS``, else asyncpg's default ``any``."""
    query = parse_qs(urlsplit(dsn).query)
    values = query.get("target_session_attrs")
    if values:
        return values[-1]
    env = os.environ if environ is None else environ
    return env.get("PGTARGETSESSIONATTRS", _DEFAULT_TARGET)


def accepts_standby(dsn: str, environ: dict[str, str] | None = None) -> bool:
    """Whether a connection made with ``dsn`` may land on a read-only server by design
    (a standby vault's ``any``/``prefer-standby``), rather than only on a writer."""
    return target_session_attrs(dsn, environ) in _STANDBY_TARGETS


def host_count(dsn: str) -> int:
    """How many hosts a (multi-host) DSN names."""
    netloc = urlsplit(dsn).netloc.rpartition("@")[2]
    return max(1, len([h for h in netloc.split(",") if h]))


def seeks_writer(dsn: str, environ: dict[str, str] | None = None) -> bool:
    """An ``any`` DSN over several hosts: any server will do, but the writer is better.
    With plain ``any`` asyncpg takes the first host that answers, so a standby vault left
    on a replica after its region's leader moved to another member stayed a standby vault
    beside a writer, and a failback waited for it in vain (seen under load)."""
    return target_session_attrs(dsn, environ) == "any" and host_count(dsn) > 1


async def connect_writer_first(*args: Any, **kwargs: Any) -> Any:
    """``asyncpg.connect`` for a pool whose DSN :func:`seeks_writer`: the writer among
    the hosts when there is one, else what the DSN accepts. (Typed ``Any``: the pool
    passes its own ``connection_class``, so this is whatever class that is.)"""
    try:
        return await asyncpg.connect(*args, **{**kwargs, "target_session_attrs": "read-write"})
    except (TargetServerAttributeNotMatched, OSError, asyncpg.PostgresError):
        # No writer (one host refused, the others standbys: asyncpg reports the last
        # host's error): the DSN's own choice. Its failure, if any, is the one raised.
        return await asyncpg.connect(*args, **kwargs)


async def discard_connections(*pools: Any) -> None:
    """Expire every connection of ``pools`` (None entries skipped): idle ones are replaced
    at their next acquire, busy ones when they are released. asyncpg re-checks
    ``target_session_attrs`` only when it connects, so this is how a pool leaves a
    server that is no longer the writer."""
    for pool in pools:
        if pool is not None:
            await pool.expire_connections()
