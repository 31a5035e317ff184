"""The repository's two records that ``wal push`` and ``wal fetch`` read and write:
``config`` and a WAL index entry, as NamedTuples (standard library only).

``wal push`` is PostgreSQL's ``archive_command``: one process per 16 MB segment, whose
start-up is most of its cost. pydantic alone takes longer to import than the push takes
to compress, encrypt and store the segment, so these two records do without it (and
without dataclasses, whose import costs about 15 ms). Their JSON is byte for byte what
the pydantic models wrote before (field order, compact separators, UTF-8, datetimes in
ISO 8601 with ``Z`` for UTC), and reading is as strict as it was: a missing field or a
wrong type is :class:`RecordError` (the callers turn it into their usual
"unreadable"/"does not parse" errors); unknown fields are ignored.
"""

import json
from datetime import datetime
from typing import Any, NamedTuple, TypeVar

from payapi.core.errors import PayapiError


class RecordError(PayapiError):
    """A record's JSON is not one of these records."""


def _dump_datetime(value: datetime) -> str:
    text = value.isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def _load_datetime(value: object) -> datetime:
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            pass
    raise RecordError("not a datetime")


class WalEntry(NamedTuple):
    """The per-segment index of an archived WAL segment (written after the segment)."""

    name: str
    size: int
    stored_size: int
    sha256: str
    stored_sha256: str
    archived_at: datetime
    tool_version: str = ""


class RepositoryConfig(NamedTuple):
    """``config``: plaintext, small, written once by ``init``. Holds no key material."""

    format_version: int
    repository_id: str
    created_at: datetime
    tool_version: str
    chunk_size: int
    key_check: str


R = TypeVar("R", WalEntry, RepositoryConfig)


def to_json(record: WalEntry | RepositoryConfig, *, indent: int | None = None) -> bytes:
    """The record as JSON: compact, or indented as ``config`` is written."""
    doc: dict[str, Any] = {
        k: _dump_datetime(v) if isinstance(v, datetime) else v for k, v in record._asdict().items()
    }
    separators = (",", ":") if indent is None else (",", ": ")
    return json.dumps(doc, ensure_ascii=False, indent=indent, separators=separators).encode()


def from_json(cls: type[R], data: bytes | str) -> R:
    """Parse one record; :class:`RecordError` if it is not one."""
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise RecordError("not JSON") from None
    if not isinstance(doc, dict):
        raise RecordError("not a JSON object")
    values: dict[str, Any] = {}
    for name, kind in cls.__annotations__.items():
        if name not in doc:
            if name in cls._field_defaults:
                continue
            raise RecordError(f"{name}: missing")
        value = doc[name]
        if kind is datetime:
            value = _load_datetime(value)
        elif not isinstance(value, kind) or isinstance(value, bool):
            raise RecordError(f"{name}: not {kind.__name__}")
        values[name] = value
    return cls(**values)
