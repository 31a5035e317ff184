"""The audit chain's pure parts: hashing, details hygiene, the head file."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest

from payapi.audit import (
    GENESIS_HASH,
    AuditDetailsError,
    AuditError,
    Head,
    Problem,
    VerifyResult,
    _clean_details,
    canonical_json,
    event_hash,
    read_head,
    write_head,
)

T0 = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)


def _h(**kw: object) -> str:
    base: dict[str, object] = {
        "seq": 1,
        "occurred_at": T0,
        "type": "client.created",
        "actor": "payapi-cli",
        "subject": "acme",
        "details": {"client_id": "c-1"},
        "prev_hash": GENESIS_HASH,
    }
    base.update(kw)
    return event_hash(**base)  # type: ignore[arg-type]


def test_event_hash_is_sha256_of_canonical_json() -> None:
    doc = (
        '{"actor":"payapi-cli","details":{"client_id":"c-1"},'
        '"occurred_at":"2024-05-01T12:00:00.000000+00:00","prev_hash":"' + GENESIS_HASH + '",'
        '"seq":1,"subject":"acme","type":"client.created"}'
    )
    assert _h() == hashlib.sha256(doc.encode()).hexdigest()


def test_event_hash_covers_every_field() -> None:
    base = _h()
    changes: tuple[dict[str, object], ...] = (
        {"seq": 2},
        {"occurred_at": T0 + timedelta(microseconds=1)},
        {"type": "client.deleted"},
        {"actor": "someone"},
        {"subject": None},
        {"details": {"client_id": "c-2"}},
        {"details": {}},
        {"prev_hash": "f" * 64},
    )
    for change in changes:
        assert _h(**change) != base, change


def test_event_hash_is_independent_of_key_order_and_timezone() -> None:
    assert _h(details={"a": 1, "b": 2}) == _h(details={"b": 2, "a": 1})
    plus2 = T0.astimezone(timezone(timedelta(hours=2)))
    assert _h(occurred_at=plus2) == _h()


def test_naive_timestamps_are_refused() -> None:
    with pytest.raises(AuditError, match="timezone-aware"):
        _h(occurred_at=datetime(2024, 5, 1, 12, 0, 0))


def test_canonical_json_is_compact_sorted_utf8() -> None:
    assert canonical_json({"b": [1, None], "a": "é"}) == '{"a":"é","b":[1,null]}'.encode()
    with pytest.raises(ValueError):
        canonical_json({"x": float("inf")})


@pytest.mark.parametrize(
    "details",
    [
        {"client_secret": "x"},
        {"password": "x"},
        {"new_api_key": "x"},
        {"apikey": "x"},
        {"token": "x"},
        {"Cookie": "x"},
        {"data_key": "x"},
        {"credentials": {"anything": "x"}},
        {"tokens": ["x"]},
        {"deep": [{"authorization": "Bearer x"}]},
    ],
)
def test_secret_looking_keys_cannot_hold_strings(details: dict[str, object]) -> None:
    with pytest.raises(AuditDetailsError, match="looks like a secret"):
        _clean_details(details)


def test_counts_and_flags_under_secret_looking_keys_are_fine() -> None:
    out = json.loads(
        _clean_details({"tokens_revoked": 3, "services_rotated": True, "token_ttl": None})
    )
    assert out == {"tokens_revoked": 3, "services_rotated": True, "token_ttl": None}


def test_details_conversions_and_refusals() -> None:
    out = json.loads(
        _clean_details({"amount": Decimal("10.50"), "at": T0, "path": Path("/x"), "t": (1, 2)})
    )
    assert out == {
        "amount": "10.50",
        "at": "2024-05-01T12:00:00.000000+00:00",
        "path": "/x",
        "t": [1, 2],
    }
    for bad in ({"x": object()}, {"x": float("nan")}, {"x": {1: "int key"}}, {"x": b"bytes"}):
        with pytest.raises(AuditDetailsError):
            _clean_details(bad)
    with pytest.raises(AuditDetailsError, match="JSON object"):
        _clean_details(["not", "a", "mapping"])  # type: ignore[arg-type]


def test_head_file_round_trip_is_atomic(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "head.json"
    assert read_head(path) is None
    write_head(path, Head(1, "a" * 64))
    write_head(path, Head(2, "b" * 64))
    assert read_head(path) == Head(2, "b" * 64)
    assert json.loads(path.read_text()) == {"seq": 2, "hash": "b" * 64}
    assert [p.name for p in path.parent.iterdir()] == ["head.json"]  # no temp files left


@pytest.mark.parametrize(
    "content",
    [
        "",
        "{",
        "[]",
        '{"seq": 1}',
        '{"seq": 0, "hash": "' + "a" * 64 + '"}',
        '{"seq": true, "hash": "' + "a" * 64 + '"}',
        '{"seq": 1, "hash": "xyz"}',
        '{"seq": "1", "hash": "' + "a" * 64 + '"}',
    ],
)
def test_malformed_head_file_is_an_error_not_absence(tmp_path: Path, content: str) -> None:
    path = tmp_path / "head.json"
    path.write_text(content)
    with pytest.raises(AuditError, match="not a valid head"):
        read_head(path)


def test_problem_line_and_result_json() -> None:
    p = Problem("deleted", 3, "seq 3 missing (gap before seq 4)")
    assert p.line() == "audit chain broken at seq 3: deleted (seq 3 missing (gap before seq 4))"
    assert Problem("head_missing", None, "x").line().startswith("audit chain broken at the head")
    r = VerifyResult(False, 2, 4, Head(4, "a" * 64), p)
    assert r.to_json() == {
        "ok": False,
        "events_checked": 2,
        "last_seq": 4,
        "head": {"seq": 4, "hash": "a" * 64},
        "problem": {"kind": "deleted", "seq": 3, "detail": "seq 3 missing (gap before seq 4)"},
        "notes": [],
    }
