"""The store factory and the file store's atomic, streaming writes."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from payapi.backup.errors import AlreadyExists, NotFound, RepositoryError
from payapi.systems.objectstore import open_store
from payapi.systems.objectstore.base import check_key
from payapi.systems.objectstore.file import FileStore


def test_factory_by_scheme(tmp_path: Path) -> None:
    assert isinstance(open_store(f"file://{tmp_path}"), FileStore)
    assert isinstance(open_store(str(tmp_path)), FileStore)
    with pytest.raises(RepositoryError, match="unsupported repository URL ftp://host/x"):
        open_store("ftp://user:pw@host/x")
    with pytest.raises(RepositoryError, match="file:///absolute/path"):
        open_store("file://otherhost/x")


def test_factory_imports_boto3_only_for_s3(tmp_path: Path) -> None:
    code = (
        "import sys; from payapi.systems.objectstore import open_store; "
        f"open_store('file://{tmp_path}'); "
        "assert 'boto3' not in sys.modules and 'botocore' not in sys.modules; "
        "open_store('s3://bucket/prefix', endpoint_url='http://127.0.0.1:1'); "
        "assert 'boto3' in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize(
    "key", ["", "/abs", "a//b", "../x", "a/../b", ".hidden", "a/.tmp-x", "a b"]
)
def test_invalid_keys(key: str) -> None:
    with pytest.raises(RepositoryError, match="invalid object key"):
        check_key(key)


def test_put_get_list_delete(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    store.put("data/b1/base.tar", [b"ab", b"cd"])
    store.put_bytes("manifests/b1", b"m")
    assert store.get_bytes("data/b1/base.tar") == b"abcd"
    assert sorted(e.key for e in store.list()) == ["data/b1/base.tar", "manifests/b1"]
    assert [e.key for e in store.list("data/")] == ["data/b1/base.tar"]
    assert [e.size for e in store.list("manifests/")] == [1]
    store.put_bytes("manifests/b1", b"replaced")
    with pytest.raises(AlreadyExists):
        store.put_bytes("manifests/b1", b"x", exclusive=True)
    assert store.get_bytes("manifests/b1") == b"replaced"
    store.delete("data/b1/base.tar")
    store.delete("data/b1/base.tar")  # absent: fine
    assert not (tmp_path / "data" / "b1").exists()  # empty dirs tidied
    with pytest.raises(NotFound, match=r"data/b1/base\.tar not found"):
        store.open("data/b1/base.tar")
    assert not store.exists("data/b1/base.tar") and store.exists("manifests/b1")


def test_failed_write_leaves_nothing(tmp_path: Path) -> None:
    store = FileStore(tmp_path)

    def source() -> Iterator[bytes]:
        yield b"first part"
        raise OSError("source disk failed")

    with pytest.raises(OSError, match="source disk failed"):  # the source's error, unchanged
        store.put("data/b1/x", source())
    assert list(store.list()) == []
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == []


def test_cleanup_removes_stale_temp_files(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / ".tmp-x-123").write_bytes(b"half")
    assert list(store.list()) == []
    assert store.cleanup() == 1
    assert not (tmp_path / "data" / ".tmp-x-123").exists()
