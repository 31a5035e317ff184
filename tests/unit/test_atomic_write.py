"""core.atomic: a file is replaced whole or not at all; nothing but the file is left."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from payapi.core import atomic
from payapi.core.redaction import is_sensitive_name


def test_write_replaces_the_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "new" / "report.xml"
    atomic.write_atomic(target, b"one")
    atomic.write_atomic(target, b"two", mode=0o600)
    assert target.read_bytes() == b"two"
    assert os.stat(target).st_mode & 0o777 == 0o600
    assert [p.name for p in target.parent.iterdir()] == ["report.xml"]


def test_a_failed_write_keeps_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "report.xml"
    atomic.write_atomic(target, b"old")

    def broken(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(atomic.os, "fsync", broken)
    with pytest.raises(OSError, match="No space"):
        atomic.write_atomic(target, b"half")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["report.xml"]


@pytest.mark.parametrize(
    ("name", "sensitive"),
    [
        ("client_secret", True),
        ("API_KEY", True),
        ("tokens", True),
        ("ref", False),
        ("owner", False),
    ],
)
def test_sensitive_names(name: str, sensitive: bool) -> None:
    assert is_sensitive_name(name) is sensitive
