"""Write a whole file or nothing: a temporary file in the same folder, fsynced, renamed.

A reader (a person, a CI job collecting JUnit files, node_exporter) sees either the old
file or the complete new one, never half of one, even when the writer is killed or the
machine loses power mid-write: ``rename`` within one folder is atomic, the data is on
disk before the rename (``fsync`` of the file), and the rename itself is on disk before
we return (``fsync`` of the folder). A killed writer leaves at most a hidden
``.<name>.<random>.tmp`` beside the file, which no reader mistakes for the file.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

__all__ = ["write_atomic"]


def write_atomic(path: Path, data: bytes, *, mode: int = 0o644) -> Path:
    """Replace ``path`` with ``data`` atomically; the folder is created if missing.

    Raises OSError as the file system does (the old file, if any, is then untouched).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.chmod(tmp, mode)  # O_CREAT's mode is filtered by the umask
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    fsync_dir(path.parent)
    return path


def fsync_dir(folder: Path) -> None:
    """Make a rename or a new file in ``folder`` durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
