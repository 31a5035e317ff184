"""The session's S3-compatible server (``moto_server``), as a context manager that test
modules can turn into their own fixtures (see :mod:`tests.integration.s3_server`: one
server per session, however many modules use it).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration import s3_server

AWS_ENV = s3_server.AWS_ENV


@contextlib.contextmanager
def moto_s3(log_dir: Path, buckets: tuple[str, ...] = ()) -> Iterator[str]:
    """The session's ``moto_server`` (started now if nobody has yet, its log in
    ``log_dir``) with ``buckets`` created; yield its endpoint URL. The AWS variables are
    set for the duration (credentials of the fake server only)."""
    endpoint = s3_server.shared_server(log_dir).endpoint
    mp = pytest.MonkeyPatch()
    for k, v in AWS_ENV.items():
        mp.setenv(k, v)
    try:
        for bucket in buckets:
            s3_server.create_bucket(endpoint, bucket)
        yield endpoint
    finally:
        mp.undo()
