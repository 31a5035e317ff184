"""Which asyncpg failures are "the database is unavailable" (503), and which reconnect."""

from __future__ import annotations

import asyncpg
import pytest
from asyncpg import exceptions as pgexc

from payapi import pgfailure

# asyncpg's words for a connection whose server hung up, and for one used concurrently.
LOST = 'cannot switch to state 12; protocol is in the "failed" state'
BUSY = "cannot switch to state 3; another operation (12) is in progress"


@pytest.mark.parametrize(
    ("exc", "kind", "reconnect"),
    [
        (asyncpg.ReadOnlySQLTransactionError("cannot execute INSERT"), "read_only", True),
        (pgexc.ConnectionDoesNotExistError("closed mid-operation"), "unreachable", True),
        (pgexc.CannotConnectNowError("the database system is starting up"), "unreachable", True),
        (pgexc.AdminShutdownError("terminating connection"), "unreachable", True),
        (pgexc.TargetServerAttributeNotMatched("none match"), "unreachable", True),
        (asyncpg.InterfaceError("cannot call fetch(): connection is closed"), "unreachable", True),
        (asyncpg.InterfaceError("pool is closing"), "unreachable", True),
        (ConnectionRefusedError(111, "refused"), "unreachable", True),
        (
            pgexc.InternalClientError(
                "cannot switch to state 12; another operation (2) is in progress"
            ),
            "unreachable",
            True,
        ),
        (
            pgexc.InternalClientError(LOST),
            "unreachable",
            True,
        ),
        (TimeoutError(), "timeout", False),
        (pgexc.QueryCanceledError("statement timeout"), "timeout", False),
        (pgexc.TooManyConnectionsError("too many clients"), "overloaded", False),
        (pgexc.SerializationError("conflict with recovery"), "conflict", False),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else str(v),
)
def test_unavailable(exc: BaseException, kind: str, reconnect: bool) -> None:
    assert pgfailure.classify(exc) == pgfailure.Failure(kind, reconnect)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "exc",
    [
        asyncpg.InterfaceError("cannot perform operation: another operation is in progress"),
        pgexc.InternalClientError(BUSY),
        pgexc.InternalClientError("unknown error in protocol implementation"),
        asyncpg.UniqueViolationError("duplicate key"),
        asyncpg.UndefinedTableError("relation does not exist"),
        ValueError("bug"),
        RuntimeError("bug"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_bugs_stay_bugs(exc: BaseException) -> None:
    assert pgfailure.classify(exc) is None


@pytest.mark.parametrize(
    ("dsn", "env", "target", "standby_ok"),
    [
        ("postgresql://u@h1:1,h2:2/db?target_session_attrs=read-write", {}, "read-write", False),
        ("postgresql://u@h1:1/db?target_session_attrs=primary", {}, "primary", False),
        ("postgresql://a:1,b:2/d?target_session_attrs=prefer-standby", {}, "prefer-standby", True),
        ("postgresql://u@h1:1/db", {}, "any", True),
        ("postgresql://u@h1:1/db", {"PGTARGETSESSIONATTRS": "read-write"}, "read-write", False),
        (
            "postgresql://u@h/db?target_session_attrs=any",
            {"PGTARGETSESSIONATTRS": "read-write"},
            "any",
            True,
        ),
    ],
)
def test_target_session_attrs(dsn: str, env: dict[str, str], target: str, standby_ok: bool) -> None:
    assert pgfailure.target_session_attrs(dsn, env) == target
    assert pgfailure.accepts_standby(dsn, env) is standby_ok


@pytest.mark.parametrize(
    ("dsn", "hosts", "seeks"),
    [
        ("postgresql://u@h1:1,h2:2/db?target_session_attrs=any", 2, True),
        ("postgresql://h1:1,h2:2,h3:3/db", 3, True),  # no attrs: asyncpg's default, any
        ("postgresql://u:p@h1:1/db?target_session_attrs=any", 1, False),  # one host: no choice
        ("postgresql://u@h1:1,h2:2/db?target_session_attrs=prefer-standby", 2, False),
        ("postgresql://u@h1:1,h2:2/db?target_session_attrs=read-write", 2, False),
    ],
)
def test_an_any_dsn_over_several_hosts_seeks_the_writer(dsn: str, hosts: int, seeks: bool) -> None:
    assert pgfailure.host_count(dsn) == hosts
    assert pgfailure.seeks_writer(dsn, {}) is seeks
