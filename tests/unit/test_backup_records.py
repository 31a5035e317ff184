"""``config`` and WAL index entries without pydantic: the same bytes as the pydantic models
wrote before (repositories written by older payapi read, and the other way round), and
the same refusals."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from pydantic import BaseModel, ConfigDict

from payapi.backup.records import RecordError, RepositoryConfig, WalEntry, from_json, to_json


class OldWalEntry(BaseModel):  # as payapi.backup.manifest defined it
    model_config = ConfigDict(frozen=True)

    name: str
    size: int
    stored_size: int
    sha256: str
    stored_sha256: str
    archived_at: datetime
    tool_version: str = ""


class OldRepositoryConfig(BaseModel):
    format_version: int
    repository_id: str
    created_at: datetime
    tool_version: str
    chunk_size: int
    key_check: str


@pytest.mark.parametrize(
    "at",
    [
        datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
        datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=UTC),
        datetime(2026, 1, 2, 3, 4, 5, 7, tzinfo=timezone(timedelta(hours=2))),
    ],
)
def test_same_bytes_as_the_pydantic_models(at: datetime) -> None:
    fields = dict(
        name="00000001000000000000000A",
        size=16 << 20,
        stored_size=963154,
        sha256="a" * 64,
        stored_sha256="b" * 64,
        archived_at=at,
        tool_version="0.1.0",
    )
    assert to_json(WalEntry(**fields)) == OldWalEntry(**fields).model_dump_json().encode()
    assert from_json(WalEntry, OldWalEntry(**fields).model_dump_json()) == WalEntry(**fields)
    conf = dict(
        format_version=1,
        repository_id="r" * 32,
        created_at=at,
        tool_version="0.1.0",
        chunk_size=1 << 20,
        key_check="k€y",
    )
    old = OldRepositoryConfig(**conf).model_dump_json(indent=2).encode()
    assert to_json(RepositoryConfig(**conf), indent=2) == old
    assert from_json(RepositoryConfig, old) == RepositoryConfig(**conf)


def test_defaults_unknown_fields_and_refusals() -> None:
    doc = (
        '{"name":"n","size":1,"stored_size":2,"sha256":"s","stored_sha256":"t",'
        '"archived_at":"2026-01-02T03:04:05Z","later_field":true}'
    )
    entry = from_json(WalEntry, doc)
    assert entry.tool_version == "" and entry.archived_at.tzinfo is not None
    for bad in (
        "not json",
        "[]",
        doc.replace('"size":1,', ""),
        doc.replace('"size":1', '"size":"1"'),
        doc.replace('"size":1', '"size":true'),
        doc.replace('"2026-01-02T03:04:05Z"', '"yesterday"'),
    ):
        with pytest.raises(RecordError):
            from_json(WalEntry, bad)
