"""Improvement actions from drill findings (the seed's "Improvement Actions": specific
action items with an owner, followed until closed). Open actions appear in every later
drill report, so a finding cannot be forgotten between two drills.

The store is ``actions.jsonl`` in the drills folder: append-only events, one JSON object
per line, ``added`` (``id``, ``title``, ``owner``, ``drill_id``, ``due``, ``at``) and
``closed`` (``id``, ``note``, ``at``). Invariants:

- A writer holds an exclusive ``flock`` on ``actions.lock`` from reading the events until
  its event is appended, so two people adding at once get two different ids.
- An event is durable (``write``, ``fsync``; the folder fsynced when the file is created)
  before the command says it is done.
- A process killed mid-write leaves at most a truncated last line: readers skip it, the
  next writer cuts it off before appending, so it never glues onto a good event.
- Ids are ``ACT-001``, ``ACT-002``… in the order actions were added; never reused.

:func:`fold` (pure) turns events into :class:`Action` values; :func:`add`, :func:`close`,
:func:`list_actions` and :func:`open_actions` are the service functions the CLI and the
drill runner call.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from payapi.core.atomic import fsync_dir
from payapi.core.errors import PayapiError, UsageError
from payapi.drills import journal

__all__ = [
    "ACTIONS_FILE",
    "Action",
    "ActionsError",
    "add",
    "close",
    "fold",
    "list_actions",
    "open_actions",
    "parse_due",
    "read_events",
]

ACTIONS_FILE = "actions.jsonl"
LOCK_FILE = "actions.lock"
ID_RE = re.compile(r"^ACT-(\d{3,})$")
MAX_TEXT = 500  # a title, an owner or a note is one line, not a document


class ActionsError(PayapiError):
    """The actions file cannot be read or written."""


@dataclass(frozen=True, slots=True)
class Action:
    id: str
    title: str
    owner: str
    created_at: datetime
    drill_id: str | None = None
    due: date | None = None
    closed_at: datetime | None = None
    note: str = ""

    @property
    def open(self) -> bool:
        return self.closed_at is None

    @property
    def status(self) -> str:
        return "open" if self.open else "closed"

    def overdue(self, today: date) -> bool:
        """Open past its due date."""
        return self.open and self.due is not None and today > self.due

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "owner": self.owner,
            "status": self.status,
            "drill_id": self.drill_id,
            "due": self.due.isoformat() if self.due else None,
            "created_at": self.created_at.isoformat(),
            "closed_at": self.closed_at.isoformat() if self.closed_at else None,
            "note": self.note,
        }


def _number(action_id: str) -> int:
    m = ID_RE.match(action_id)
    return int(m.group(1)) if m else 0


def fold(events: Iterable[Mapping[str, Any]]) -> list[Action]:
    """The actions the events describe, in id order. An event that does not make sense
    (a close of an unknown id, a malformed line) is ignored rather than fatal: the file
    is append-only and the other actions must stay readable."""
    actions: dict[str, Action] = {}
    for e in events:
        try:
            kind, action_id, at = e["type"], str(e["id"]), datetime.fromisoformat(str(e["at"]))
            if kind == "added" and action_id not in actions:
                due = e.get("due")
                actions[action_id] = Action(
                    id=action_id,
                    title=str(e["title"]),
                    owner=str(e["owner"]),
                    created_at=at,
                    drill_id=e.get("drill_id"),
                    due=date.fromisoformat(due) if due else None,
                )
            elif kind == "closed" and action_id in actions and actions[action_id].open:
                actions[action_id] = replace(
                    actions[action_id], closed_at=at, note=str(e.get("note", ""))
                )
        except (KeyError, ValueError, TypeError):
            continue
    return sorted(actions.values(), key=lambda a: _number(a.id))


def next_id(actions: Iterable[Action]) -> str:
    return f"ACT-{max((_number(a.id) for a in actions), default=0) + 1:03d}"


def parse_due(text: str) -> date:
    """``--due``: an ISO date (``2026-06-30``)."""
    try:
        return date.fromisoformat(text.strip())
    except ValueError:
        raise UsageError(f"--due: not a date: {text!r} (e.g. 2026-06-30)") from None


def _line(text: str, what: str) -> str:
    one = " ".join(str(text).split())
    if not one:
        raise UsageError(f"{what}: must not be empty")
    if len(one) > MAX_TEXT:
        raise UsageError(f"{what}: at most {MAX_TEXT} characters")
    return one


# --------------------------------------------------------------------------- the file


def read_events(folder: Path) -> list[dict[str, Any]]:
    """Every complete event of the folder's actions file (none when there is no file);
    a damaged line (a torn last line) is skipped."""
    try:
        data = (folder / ACTIONS_FILE).read_bytes()
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise ActionsError(f"cannot read {folder / ACTIONS_FILE}: {exc.strerror or exc}") from None
    out: list[dict[str, Any]] = []
    for line in data.split(b"\n"):
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict):
            out.append(event)
    return out


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o640)
    except OSError as exc:
        raise ActionsError(f"cannot open {folder / LOCK_FILE}: {exc.strerror or exc}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _append(folder: Path, event: dict[str, Any]) -> None:
    """Append one event durably (the caller holds the lock)."""
    path = folder / ACTIONS_FILE
    line = (json.dumps(event, ensure_ascii=False, separators=(",", ":")) + "\n").encode()
    try:
        created = not path.exists()
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o640)
        try:
            size = os.fstat(fd).st_size
            if size:
                data = os.pread(fd, size, 0)
                if not data.endswith(b"\n"):  # a torn line: cut it before appending
                    os.ftruncate(fd, data.rfind(b"\n") + 1)
            view = memoryview(line)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        if created:
            fsync_dir(folder)
    except OSError as exc:
        raise ActionsError(f"cannot write {path}: {exc.strerror or exc}") from None


# --------------------------------------------------------------------------- service


def list_actions(folder: Path, *, open_only: bool = False) -> list[Action]:
    actions = fold(read_events(folder))
    return [a for a in actions if a.open] if open_only else actions


def open_actions(folder: Path) -> list[Action]:
    """The open actions: what every report of a drill written now shows."""
    return list_actions(folder, open_only=True)


def add(
    folder: Path,
    *,
    title: str,
    owner: str,
    now: datetime,
    drill_id: str | None = None,
    due: date | None = None,
) -> Action:
    """Record a new open action. ``drill_id``, when given, must be a drill of the folder
    (a typo would tie the finding to nothing)."""
    title, owner = _line(title, "--title"), _line(owner, "--owner")
    if drill_id is not None and not journal.journal_path(folder, drill_id).exists():
        raise UsageError(f"no drill {drill_id} in {folder} (see: payapi drill history)")
    with _locked(folder):
        action = Action(
            id=next_id(fold(read_events(folder))),
            title=title,
            owner=owner,
            created_at=now.astimezone(UTC),
            drill_id=drill_id,
            due=due,
        )
        _append(
            folder,
            {
                "type": "added",
                "id": action.id,
                "title": action.title,
                "owner": action.owner,
                "drill_id": action.drill_id,
                "due": due.isoformat() if due else None,
                "at": action.created_at.isoformat(),
            },
        )
    return action


def close(folder: Path, action_id: str, *, now: datetime, note: str = "") -> Action:
    """Close an open action, with an optional note (what was done)."""
    want = action_id.strip().upper()
    if not ID_RE.match(want):
        raise UsageError(f"not an action id: {action_id!r} (e.g. ACT-001)")
    note = " ".join(note.split())
    if len(note) > MAX_TEXT:
        raise UsageError(f"--note: at most {MAX_TEXT} characters")
    with _locked(folder):
        found = next((a for a in fold(read_events(folder)) if a.id == want), None)
        if found is None:
            raise UsageError(f"no action {want} (see: payapi drill action list --all)")
        if not found.open:
            raise UsageError(f"action {want} is already closed ({found.closed_at:%Y-%m-%d})")
        at = now.astimezone(UTC)
        _append(folder, {"type": "closed", "id": want, "note": note, "at": at.isoformat()})
    return replace(found, closed_at=at, note=note)
