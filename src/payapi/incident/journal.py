"""The incident journal: append-only, hash-chained JSON lines on local disk.

Why local disk: a disaster may be the database itself, or the vault. Declaring, updating
and completing an incident must work, and its history must be readable, with every server
down; so the journal is a plain file (``incidents.jsonl``) in ``[incident] journal_dir``
and needs neither PostgreSQL nor the vault. :func:`copy_to_repository` puts a copy in the
backup repository when that is reachable, so the journal survives the loss of this host.

Why a chain (the audit log's idea, :mod:`payapi.audit`, without its database): every entry
commits to the one before it, so changing, removing or reordering an entry breaks the
chain from that point on, and :meth:`IncidentJournal.verify` says where and how.

Why a head file: a chain alone cannot show that its newest entries were removed (what
remains is a valid chain). After each append the newest ``{seq, hash}`` is also written
to ``incidents.head.json``.

Invariants:

- ``seq`` is 1, 2, 3, ... without gaps; entry ``n`` has ``prev_hash`` = ``hash`` of entry
  ``n-1`` (:data:`GENESIS_HASH` for ``n = 1``), and ``hash`` = :func:`entry_hash` of its own
  fields (the canonical JSON of :func:`payapi.audit.canonical_json`).
- Writers hold an exclusive ``flock`` on ``.lock`` from reading the tail until the head is
  written, so sequence numbers (and incident ids, allocated under the same lock) are unique.
- A line is written with one ``write`` and fsynced before the head is replaced (atomically,
  fsynced). A crash can therefore leave (a) a torn last line, which readers ignore and the
  next append cuts off (it was never acknowledged), or (b) a head one entry behind, which
  :meth:`verify` accepts and the next append catches up. Anything else is tampering.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from payapi.audit import canonical_json
from payapi.core.errors import PayapiError

if TYPE_CHECKING:
    from payapi.core.settings import Settings

__all__ = [
    "GENESIS_HASH",
    "JOURNAL_FILE",
    "CopyResult",
    "Entry",
    "IncidentJournal",
    "JournalError",
    "JournalProblem",
    "JournalVerifyResult",
    "copy_to_repository",
    "entry_hash",
]

GENESIS_HASH = "0" * 64
JOURNAL_FILE = "incidents.jsonl"
HEAD_FILE = "incidents.head.json"
LOCK_FILE = ".lock"
BACKUP_COMPONENT = "incidents"  # the journal's copies in the backup repository
BACKUP_TYPE = "journal"


class JournalError(PayapiError):
    """The journal cannot be read or written; one line for the operator."""


def _iso(when: datetime) -> str:
    if when.utcoffset() is None:
        raise ValueError("journal times must be timezone-aware")
    return when.astimezone(UTC).isoformat().replace("+00:00", "Z")


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def entry_hash(
    *, seq: int, at: str, incident: str | None, type: str, data: Any, prev_hash: str
) -> str:
    """SHA-256 (hex) of the canonical JSON of every field of an entry but its hash."""
    doc = {
        "seq": seq,
        "at": at,
        "incident": incident,
        "type": type,
        "data": data,
        "prev_hash": prev_hash,
    }
    return hashlib.sha256(canonical_json(doc)).hexdigest()


@dataclass(frozen=True, slots=True)
class Entry:
    """One line of the journal. ``at`` is kept as written (ISO 8601, UTC, ``Z``)."""

    seq: int
    at: str
    incident: str | None
    type: str
    data: Mapping[str, Any]
    prev_hash: str
    hash: str

    @property
    def time(self) -> datetime:
        return parse_time(self.at)

    def computed_hash(self) -> str:
        return entry_hash(
            seq=self.seq,
            at=self.at,
            incident=self.incident,
            type=self.type,
            data=dict(self.data),
            prev_hash=self.prev_hash,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "at": self.at,
            "incident": self.incident,
            "type": self.type,
            "data": dict(self.data),
            "prev_hash": self.prev_hash,
            "hash": self.hash,
        }

    @classmethod
    def from_json(cls, doc: Any) -> Entry:
        if not isinstance(doc, dict):
            raise ValueError("not a JSON object")
        data = doc["data"]
        if not isinstance(data, dict):
            raise ValueError("data is not an object")
        return cls(
            seq=int(doc["seq"]),
            at=str(doc["at"]),
            incident=None if doc["incident"] is None else str(doc["incident"]),
            type=str(doc["type"]),
            data=data,
            prev_hash=str(doc["prev_hash"]),
            hash=str(doc["hash"]),
        )


ProblemKind = Literal["edited", "removed", "reordered", "unreadable", "head_mismatch"]


@dataclass(frozen=True, slots=True)
class JournalProblem:
    """The first thing wrong with the chain; ``seq`` None when no entry is to blame."""

    kind: ProblemKind
    seq: int | None
    detail: str

    def line(self) -> str:
        where = f"at seq {self.seq}" if self.seq is not None else "at the head"
        return f"incident journal broken {where}: {self.kind} ({self.detail})"


@dataclass(frozen=True, slots=True)
class JournalVerifyResult:
    ok: bool
    entries_checked: int
    last_seq: int | None
    problem: JournalProblem | None = None
    notes: tuple[str, ...] = field(default=())

    def to_json(self) -> dict[str, Any]:
        p = self.problem
        return {
            "ok": self.ok,
            "entries_checked": self.entries_checked,
            "last_seq": self.last_seq,
            "problem": None
            if p is None
            else {"kind": p.kind, "seq": p.seq, "detail": p.detail, "message": p.line()},
            "notes": list(self.notes),
        }


@dataclass(frozen=True, slots=True)
class _Read:
    entries: tuple[Entry, ...]
    torn: bool  # the last line was cut off by a crash (ignored)
    bad_line: int | None = None  # 1-based number of an unparseable line that is not the last
    valid_bytes: int = 0  # length of the file up to the end of the last complete line


class IncidentJournal:
    """The journal in one folder. Cheap to construct; nothing is read until asked."""

    def __init__(self, directory: Path) -> None:
        self.dir = Path(directory)
        self.path = self.dir / JOURNAL_FILE
        self.head_path = self.dir / HEAD_FILE
        self._lock_depth = 0
        self._lock_fd: int | None = None

    # ------------------------------------------------------------------ locking

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the writers' lock (re-entrant within this object): read, decide, append."""
        if self._lock_depth:
            self._lock_depth += 1
            try:
                yield
            finally:
                self._lock_depth -= 1
            return
        self._ensure_dir()
        fd = os.open(self.dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            self._lock_fd, self._lock_depth = fd, 1
            try:
                yield
            finally:
                self._lock_depth, self._lock_fd = 0, None
        finally:
            os.close(fd)  # closing releases the flock

    def _ensure_dir(self) -> None:
        try:
            self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise JournalError(
                f"cannot create the incident journal folder {self.dir}: {exc.strerror or exc}"
            ) from None

    # ------------------------------------------------------------------ reading

    def _read(self) -> _Read:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return _Read((), False)
        except OSError as exc:
            raise JournalError(f"cannot read {self.path}: {exc.strerror or exc}") from None
        lines = raw.split(b"\n")
        entries: list[Entry] = []
        torn = False
        bad: int | None = None
        valid = 0
        offset = 0
        for number, line in enumerate(lines, start=1):
            last = number == len(lines)
            end = offset + len(line) + (0 if last else 1)
            if not line.strip():
                if not last:
                    valid = end
                offset = end
                continue
            try:
                entries.append(Entry.from_json(json.loads(line)))
            except (ValueError, KeyError, TypeError):
                if last:  # no newline after it: a write cut short by a crash
                    torn = True
                elif bad is None:
                    bad = number
            else:
                valid = end
            offset = end
        return _Read(tuple(entries), torn, bad, valid)

    def entries(self) -> tuple[Entry, ...]:
        """Every entry in file order (a torn last line is left out)."""
        return self._read().entries

    def for_incident(self, incident_id: str) -> tuple[Entry, ...]:
        return tuple(e for e in self.entries() if e.incident == incident_id)

    def read_head(self) -> tuple[int, str] | None:
        try:
            doc = json.loads(self.head_path.read_text(encoding="utf-8"))
            return int(doc["seq"]), str(doc["hash"])
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise JournalError(f"unreadable journal head {self.head_path}: {exc}") from None

    # ------------------------------------------------------------------ writing

    def append(
        self,
        *,
        type: str,
        data: Mapping[str, Any],
        at: datetime,
        incident: str | None = None,
    ) -> Entry:
        """Append one entry (fsynced), then move the head to it."""
        with self.locked():
            read = self._read()
            if read.bad_line is not None:
                raise JournalError(
                    f"{self.path} line {read.bad_line} is not a journal entry; refusing to "
                    "append (run `payapi incident verify`)"
                )
            if read.torn:
                self._cut_torn_tail(read.valid_bytes)
            last = read.entries[-1] if read.entries else None
            seq = 1 if last is None else last.seq + 1
            prev = GENESIS_HASH if last is None else last.hash
            stamp = _iso(at)
            body = json.loads(canonical_json(dict(data)))  # JSON-only values, or ValueError
            digest = entry_hash(
                seq=seq, at=stamp, incident=incident, type=type, data=body, prev_hash=prev
            )
            entry = Entry(seq, stamp, incident, type, body, prev, digest)
            line = canonical_json(entry.to_json()) + b"\n"
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
                try:
                    os.write(fd, line)
                    os.fsync(fd)
                finally:
                    os.close(fd)
                if last is None:
                    _fsync_dir(self.dir)
                self._write_head(seq, digest)
            except OSError as exc:
                raise JournalError(f"cannot write {self.path}: {exc.strerror or exc}") from None
            return entry

    def _cut_torn_tail(self, valid_bytes: int) -> None:
        with open(self.path, "r+b") as f:
            f.truncate(valid_bytes)
            f.flush()
            os.fsync(f.fileno())

    def _write_head(self, seq: int, digest: str) -> None:
        fd, tmp = tempfile.mkstemp(prefix=".head-", dir=self.dir)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(canonical_json({"seq": seq, "hash": digest}) + b"\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.head_path)
            _fsync_dir(self.dir)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    # ------------------------------------------------------------------ verifying

    def verify(self) -> JournalVerifyResult:
        """Check every entry and the head; report the first problem found.

        Detects an edited entry (any field, with or without a recomputed hash), a removed
        entry (a gap in the middle, or the newest ones via the head), a reordered pair, a
        line that is not an entry, and a head that disagrees with the file.
        """
        with self.locked():
            read = self._read()
            head = self.read_head()
        entries = read.entries
        notes: list[str] = []
        if read.torn:
            notes.append("the last line was cut off by a crash and is ignored")

        def broken(problem: JournalProblem, checked: int) -> JournalVerifyResult:
            last = entries[checked - 1].seq if checked else None
            return JournalVerifyResult(False, checked, last, problem, tuple(notes))

        if read.bad_line is not None:
            return broken(
                JournalProblem("unreadable", None, f"line {read.bad_line} is not an entry"), 0
            )
        expected, prev = 1, GENESIS_HASH
        positions = {e.seq: i for i, e in enumerate(entries)}
        for i, e in enumerate(entries):
            if e.seq != expected:
                if e.seq < expected or positions.get(expected, -1) > i:
                    return broken(
                        JournalProblem(
                            "reordered", e.seq, f"seq {e.seq} is where seq {expected} belongs"
                        ),
                        i,
                    )
                gone = f"seq {expected}" + (f"-{e.seq - 1}" if e.seq - 1 > expected else "")
                return broken(JournalProblem("removed", expected, f"{gone} missing"), i)
            if e.computed_hash() != e.hash:
                return broken(JournalProblem("edited", e.seq, "content does not match its hash"), i)
            if e.prev_hash != prev:
                return broken(
                    JournalProblem(
                        "edited",
                        e.seq - 1,
                        f"seq {e.seq} committed to another version of seq {e.seq - 1}",
                    ),
                    i,
                )
            expected, prev = e.seq + 1, e.hash
        n = len(entries)
        last_seq = entries[-1].seq if entries else None
        if head is None:
            if n > 1:
                return broken(JournalProblem("head_mismatch", None, "the head file is missing"), n)
            if n == 1:
                notes.append(
                    "no head yet (a crash after the first entry); the next append writes it"
                )
        else:
            h_seq, h_hash = head
            if last_seq is None or h_seq > last_seq:
                gone = f"seq {(last_seq or 0) + 1}" + (
                    f"-{h_seq}" if h_seq > (last_seq or 0) + 1 else ""
                )
                return broken(
                    JournalProblem("removed", (last_seq or 0) + 1, f"{gone} missing (the head)"),
                    n,
                )
            at_head = entries[positions[h_seq]] if h_seq in positions else None
            if at_head is None or at_head.hash != h_hash:
                return broken(JournalProblem("edited", h_seq, "the head records another hash"), n)
            if h_seq < last_seq - 1:
                return broken(
                    JournalProblem(
                        "head_mismatch", None, f"head at seq {h_seq}, file at {last_seq}"
                    ),
                    n,
                )
            if h_seq == last_seq - 1:
                notes.append("the head is one entry behind (a crash before it was written)")
        return JournalVerifyResult(True, n, last_seq, None, tuple(notes))

    def export(self) -> tuple[bytes, bytes]:
        """The journal's and the head's bytes, read under the lock (for a copy)."""
        with self.locked():
            try:
                body = self.path.read_bytes() if self.path.exists() else b""
                head = self.head_path.read_bytes() if self.head_path.exists() else b""
            except OSError as exc:
                raise JournalError(f"cannot read {self.path}: {exc.strerror or exc}") from None
        return body, head


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- repository copy


@dataclass(frozen=True, slots=True)
class CopyResult:
    """What :func:`copy_to_repository` did: ``stored`` a new backup, found the newest
    copy already current, or could not (``error``, one line)."""

    ok: bool
    backup_id: str | None = None
    stored: bool = False
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "backup_id": self.backup_id,
            "stored": self.stored,
            "error": self.error,
        }


def copy_to_repository(settings: Settings, journal: IncidentJournal | None = None) -> CopyResult:
    """Store the journal (and its head) in the backup repository as a backup of component
    ``incidents``; best effort: any failure is returned, never raised, because an
    unreachable repository must not stop an incident from being declared."""
    from payapi.backup.service import open_repository

    journal = journal or IncidentJournal(settings.incident_journal_dir())
    try:
        body, head = journal.export()
        if not body:
            return CopyResult(True, None, False, None)
        digest = hashlib.sha256(body).hexdigest()
        repo = open_repository(settings)
        backups = repo.list_backups(BACKUP_COMPONENT)
        if backups and backups[-1].meta.get("journal_sha256") == digest:
            return CopyResult(True, backups[-1].backup_id, False, None)
        with repo.begin_backup(BACKUP_COMPONENT, BACKUP_TYPE, None) as writer:
            writer.add_bytes(JOURNAL_FILE, body)
            if head:
                writer.add_bytes(HEAD_FILE, head)
            writer.set_meta(journal_sha256=digest, lines=body.count(b"\n"))
            info = writer.commit()
        return CopyResult(True, info.backup_id, True, None)
    except PayapiError as exc:
        return CopyResult(False, None, False, str(exc))
    except OSError as exc:
        return CopyResult(False, None, False, " ".join(str(exc).split()))
