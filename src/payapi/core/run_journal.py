"""A journal file of JSON lines, one per run (runbook runs, drills): ``<run_id>.jsonl``.

Invariants:

- A record is one line, appended with ``write``, ``flush`` and ``fsync`` before the
  executor goes on: a line that is in the file was durable before the side effect it
  announces (a ``start``) or after the one it reports (an ``end``).
- A run killed mid-write leaves at most a truncated last line. Readers ignore it (it
  never makes the journal unreadable); a writer cuts it off before appending, so that it
  never glues onto the next record.
- One process drives a run at a time: it holds an exclusive ``flock`` on the file (the
  kernel releases it when the process dies, even by SIGKILL), so ``resume`` of a run that
  is still going is refused instead of running its steps twice.
- The folder is fsynced after a journal is created, so a new run survives a crash.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from payapi.core.errors import PayapiError, UsageError

SUFFIX = ".jsonl"
RUN_ID_RE = re.compile(r"^[0-9]{8}T[0-9]{6}Z-[a-z][a-z0-9_-]{0,62}-[0-9a-f]{6}$")


class RunJournalError(PayapiError):
    """A run's journal cannot be created, read or locked."""


class RunBusy(RunJournalError):
    """Another process is driving this run right now."""


@dataclass(frozen=True)
class Read:
    """What a journal file holds: its records, and how many lines were damaged (a
    truncated last line, or a line that is not a JSON object)."""

    records: list[dict[str, Any]]
    damaged_lines: int = 0


def path_of(journal_dir: Path, run_id: str) -> Path:
    if not RUN_ID_RE.match(run_id):
        raise UsageError(f"not a run id: {run_id!r} (see: payapi runbook runs)")
    return journal_dir / f"{run_id}{SUFFIX}"


def parse(data: bytes) -> Read:
    """The records of a journal's bytes; a damaged line is skipped and counted."""
    records: list[dict[str, Any]] = []
    damaged = 0
    for line in data.split(b"\n"):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            damaged += 1
            continue
        if isinstance(record, dict):
            records.append(record)
        else:
            damaged += 1
    return Read(records, damaged)


def read(path: Path) -> Read:
    try:
        return parse(path.read_bytes())
    except FileNotFoundError:
        raise UsageError(f"no run {path.stem} in {path.parent}") from None
    except OSError as exc:
        raise RunJournalError(f"cannot read {path}: {exc.strerror or exc}") from None


def run_ids(journal_dir: Path) -> list[str]:
    """Every run in the folder, oldest first (run ids start with their UTC time)."""
    if not journal_dir.is_dir():
        return []
    return sorted(p.stem for p in journal_dir.glob(f"*{SUFFIX}") if RUN_ID_RE.match(p.stem))


def is_busy(path: Path) -> bool:
    """True while some process holds the run's lock (it is running now)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


class Writer:
    """Appends records to one run's journal while holding its lock."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd = fd

    def append(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, ensure_ascii=False, separators=(",", ":"), default=str)
        data = (line + "\n").encode("utf-8")
        try:
            written = 0
            while written < len(data):
                written += os.write(self._fd, data[written:])
            os.fsync(self._fd)
        except OSError as exc:
            raise RunJournalError(f"cannot write {self.path}: {exc.strerror or exc}") from None

    def read(self) -> Read:
        return read(self.path)


@contextlib.contextmanager
def open_writer(path: Path, *, create: bool) -> Iterator[Writer]:
    """The journal at ``path``, locked for this process, ready to append.

    ``create``: a new run (the file must not exist); else an existing one (resume). A
    truncated last line left by a killed writer is cut off first.
    """
    flags = os.O_RDWR | os.O_APPEND | (os.O_CREAT | os.O_EXCL if create else 0)
    try:
        if create:
            path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, flags, 0o640)
    except FileExistsError:
        raise RunJournalError(f"run journal {path} already exists") from None
    except FileNotFoundError:
        raise UsageError(f"no run {path.stem} in {path.parent}") from None
    except OSError as exc:
        raise RunJournalError(f"cannot open {path}: {exc.strerror or exc}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunBusy(f"run {path.stem} is being driven by another process") from None
        if create:
            _fsync_dir(path.parent)
        else:
            _cut_partial_tail(fd)
        yield Writer(path, fd)
    finally:
        os.close(fd)  # releases the lock


def _cut_partial_tail(fd: int) -> None:
    size = os.fstat(fd).st_size
    if size == 0:
        return
    tail = os.pread(fd, min(size, 1 << 20), max(0, size - (1 << 20)))
    if tail.endswith(b"\n"):
        return
    cut = tail.rfind(b"\n")
    keep = 0 if cut < 0 and size <= len(tail) else size - len(tail) + cut + 1
    os.ftruncate(fd, keep)
    os.fsync(fd)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
