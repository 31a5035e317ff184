"""Fixtures shared by the integration tests: the session's S3-compatible server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration import s3_server


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The session's S3-compatible server (moto, on a free loopback port) with the bucket
    :data:`~tests.integration.s3_server.BUCKET`. Its dummy credentials are in this
    process's environment from now to the end of the session."""
    server = s3_server.shared_server(tmp_path_factory.mktemp("moto"))
    mp = pytest.MonkeyPatch()
    for k, v in s3_server.AWS_ENV.items():
        mp.setenv(k, v)
    try:
        s3_server.create_bucket(server.endpoint, s3_server.BUCKET)
        yield server.endpoint
    finally:
        mp.undo()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    s3_server.stop_shared_server()
