"""Session-wide real servers: PostgreSQL 18 and Redis from the pip-installed wheels.

Tests never use the machine's own PostgreSQL or Redis, and never mocks of them. Each test
that needs isolation asks for a fresh database (``fresh_db``) or a fresh Redis db number.
"""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from payapi.servers.postgres import PgCluster
from payapi.servers.procs import free_port
from payapi.servers.redis import RedisServer

# pytest-xdist's workers run with COLUMNS=80 and LINES=24 in their environment; rich reads
# them once, when the CLI's console is created, and then ignores the COLUMNS a test passes
# to CliRunner. Without them the console reads the environment at each print, as in a
# single pytest process.
for _name in ("COLUMNS", "LINES"):
    os.environ.pop(_name, None)


@pytest.fixture(scope="session")
def session_dir() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="payapi-test-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def pg(session_dir: Path) -> Iterator[PgCluster]:
    cluster = PgCluster(
        datadir=session_dir / "pg" / "data",
        port=free_port(),
        logfile=session_dir / "pg" / "postgres.log",
        # Durability is not what these tests measure; fsync off keeps the suite fast.
        settings={"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"},
    )
    cluster.init()
    cluster.start()
    yield cluster
    cluster.stop(mode="immediate")


@pytest.fixture
def fresh_db(pg: PgCluster) -> Iterator[str]:
    """A new, empty database for one test; returns its DSN."""
    name = "t_" + uuid.uuid4().hex[:12]
    pg.create_database(name)
    yield pg.dsn(name)
    pg.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def redis_server(session_dir: Path) -> Iterator[RedisServer]:
    server = RedisServer(workdir=session_dir / "redis", port=free_port())
    server.start()
    yield server
    server.stop()


_redis_dbs = itertools.count(1)


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """A Redis URL on a database number no other test in this session uses (1..15)."""
    n = next(_redis_dbs) % 15 + 1
    import redis as redis_sync

    client = redis_sync.Redis.from_url(f"redis://127.0.0.1:{redis_server.port}/{n}")
    client.flushdb()
    client.close()
    return f"redis://127.0.0.1:{redis_server.port}/{n}"


# Under pytest-xdist (``make test`` runs two workers) tests go to workers a group at a
# time (``--dist loadgroup``). A group is a module, so a module's tests keep their order
# and its module-scoped servers start once; the modules that share one of the session's
# labs form one group, so each lab starts once.
_LAB_GROUPS = {"two_region_lab": "two-region-lab", "lab": "lab"}


def xdist_group_of(item: pytest.Item) -> str:
    names = getattr(item, "fixturenames", ())
    for fixture, group in _LAB_GROUPS.items():
        if fixture in names:
            return group
    return item.nodeid.split("::", 1)[0]


@pytest.hookimpl(tryfirst=True)  # before xdist's own, which reads the marks
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        item.add_marker(pytest.mark.xdist_group(xdist_group_of(item)))
