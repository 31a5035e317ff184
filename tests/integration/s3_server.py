"""The tests' S3-compatible server: one real ``moto_server`` process on loopback per test
session, started by whichever test needs it first (:func:`shared_server`) and stopped when
the session ends (``tests/integration/conftest.py``). The ``s3_endpoint`` fixture and
``moto_s3()`` both hand it out; tests and test modules work under their own bucket or
prefix. The credentials are moto's dummies, never real ones.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from payapi.servers.procs import chown_to_lab_user, free_port, is_root, port_open

BUCKET = "payapi-backups"
REGION = "us-east-1"
ACCESS_KEY = "testing"
SECRET_KEY = "testing"  # moto's dummy credentials
AWS_ENV = {
    "AWS_ACCESS_KEY_ID": ACCESS_KEY,
    "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
    "AWS_DEFAULT_REGION": REGION,
}


class MotoServer:
    """``moto_server -H 127.0.0.1 -p PORT``, its output in ``log``."""

    def __init__(self, log: Path) -> None:
        self.log = log
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30) -> None:
        moto = Path(sys.executable).parent / "moto_server"
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                [str(moto), "-H", "127.0.0.1", "-p", str(self.port)],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while not port_open(self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"moto_server did not start: {self.log.read_text()[-2000:]}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc = None


_shared: MotoServer | None = None


def shared_server(log_dir: Path) -> MotoServer:
    """The session's server, started now (its log in ``log_dir``) if it is not running."""
    global _shared
    if _shared is None or _shared.proc is None or _shared.proc.poll() is not None:
        server = MotoServer(log_dir / "moto.log")
        server.start()
        atexit.register(server.stop)
        _shared = server
    return _shared


def stop_shared_server() -> None:
    global _shared
    if _shared is not None:
        _shared.stop()
        _shared = None


def create_bucket(endpoint: str, bucket: str) -> None:
    """Create ``bucket`` unless it exists (several users share the one server)."""
    s3 = client(endpoint)
    try:
        s3.create_bucket(Bucket=bucket)
    except s3.exceptions.BucketAlreadyOwnedByYou:
        pass
    except s3.exceptions.BucketAlreadyExists:
        pass
    finally:
        s3.close()


def client(endpoint: str) -> Any:
    """A boto3 S3 client for the test server (the dummy credentials given explicitly)."""
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        region_name=REGION,
    )


def objects(endpoint: str, prefix: str) -> Iterator[tuple[str, bytes]]:
    """Every object under ``prefix`` in the bucket, read back as stored: (key, bytes)."""
    s3 = client(endpoint)
    try:
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
            for obj in page.get("Contents", []):
                body = s3.get_object(Bucket=BUCKET, Key=obj["Key"])["Body"]
                yield obj["Key"], body.read()
    finally:
        s3.close()


def delete_prefix(endpoint: str, prefix: str) -> None:
    """Remove everything under ``prefix`` (the server keeps objects in memory)."""
    s3 = client(endpoint)
    try:
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
            keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
            if keys:
                s3.delete_objects(Bucket=BUCKET, Delete={"Objects": keys, "Quiet": True})
    finally:
        s3.close()


def write_credentials(folder: Path) -> dict[str, str]:
    """A shared credentials file and a config file (region) in ``folder``, readable by the
    lab user only; returns the environment that points boto3 at them."""
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)
    credentials = folder / "credentials"
    credentials.write_text(
        f"[default]\naws_access_key_id = {ACCESS_KEY}\naws_secret_access_key = {SECRET_KEY}\n"
    )
    config = folder / "config"
    config.write_text(f"[default]\nregion = {REGION}\n")
    for path in (credentials, config):
        path.chmod(0o600)
    if is_root():
        chown_to_lab_user(folder)
    return {
        "AWS_SHARED_CREDENTIALS_FILE": str(credentials),
        "AWS_CONFIG_FILE": str(config),
    }


@contextlib.contextmanager
def without_aws_environ() -> Iterator[None]:
    """No ``AWS_*`` variable in this process's environment for the duration (so that what
    is started meanwhile, e.g. PostgreSQL and its archiver, cannot inherit credentials)."""
    saved = {k: v for k, v in os.environ.items() if k.upper().startswith("AWS_")}
    for k in saved:
        del os.environ[k]
    try:
        yield
    finally:
        os.environ.update(saved)
