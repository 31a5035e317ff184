"""The state document's pure parts: the payments checksum, the vault summary, compare."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

from payapi.ops.state import (
    EMPTY_SHA256,
    PaymentRow,
    compare,
    flatten,
    payment_line,
    payments_summary,
    redis_summary,
    vault_summary,
)

T0 = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)


def _rows(n: int) -> list[PaymentRow]:
    return [
        PaymentRow(
            id=f"00000000-0000-0000-0000-{i:012d}",
            client_id="shop-0123456789abcdef",
            amount=Decimal(f"{i}.50"),
            currency="USD" if i % 2 else "EUR",
            status="succeeded",
            reference=f"REF-{i}",
            created_at=T0 + timedelta(seconds=i),
            idempotency_key=f"key-{i}" if i % 3 else None,
        )
        for i in range(1, n + 1)
    ]


def test_the_checksum_does_not_depend_on_the_order_rows_are_read_in() -> None:
    rows = _rows(50)
    shuffled = rows[:]
    random.Random(7).shuffle(shuffled)
    a, b = payments_summary(rows), payments_summary(shuffled)
    assert a == b
    assert a["count"] == 50
    assert a["totals"] == {"EUR": "662.50", "USD": "637.50"}


def test_the_checksum_is_deterministic_and_sees_every_field() -> None:
    rows = _rows(3)
    base = payments_summary(rows)["checksum"]
    assert payments_summary(_rows(3))["checksum"] == base
    changed = [
        PaymentRow(**{**rows[0].__dict__, "amount": Decimal("1.51")}),
        PaymentRow(**{**rows[0].__dict__, "status": "failed"}),
        PaymentRow(**{**rows[0].__dict__, "reference": "REF-X"}),
        PaymentRow(**{**rows[0].__dict__, "idempotency_key": "other"}),
        PaymentRow(**{**rows[0].__dict__, "created_at": T0 + timedelta(microseconds=1)}),
    ]
    for row in changed:
        assert payments_summary([row, *rows[1:]])["checksum"] != base
    assert payments_summary(rows[1:])["checksum"] != base


def test_a_payment_line_is_canonical_and_holds_no_idempotency_key() -> None:
    row = _rows(1)[0]
    same_instant = PaymentRow(
        **{**row.__dict__, "created_at": row.created_at.astimezone(timezone(timedelta(hours=2)))}
    )
    assert payment_line(row) == payment_line(same_instant)
    assert b"key-1" not in payment_line(row)
    assert b'"1.50"' in payment_line(row)


def test_no_payments_is_the_hash_of_nothing() -> None:
    assert payments_summary([]) == {
        "count": 0,
        "checksum": EMPTY_SHA256,
        "by_status": {},
        "totals": {},
    }


def test_the_vault_summary_counts_variables_and_kept_versions() -> None:
    listing = [
        {"id": "payapi:variable:a", "secrets": [{"version": 1}, {"version": 2}]},
        {"id": "payapi:variable:b", "secrets": [{"version": 1}]},
        {"id": "payapi:variable:c"},
    ]
    s = vault_summary(listing)
    assert (s["variables"], s["versions"]) == (3, 3)
    assert vault_summary(list(reversed(listing))) == s
    replaced = [listing[0], {"id": "payapi:variable:b", "secrets": [{"version": 2}]}, listing[2]]
    assert vault_summary(replaced)["checksum"] != s["checksum"]


def test_redis_kinds_are_always_all_present() -> None:
    s = redis_summary({"tokens": 2, "weird": 1})
    assert s["keys"] == 3
    assert s["kinds"]["rate_limits"] == 0
    assert s["kinds"]["other"] == 1


def _doc(**over: object) -> dict[str, object]:
    doc: dict[str, object] = {
        "taken_at": "2026-01-01T00:00:00+00:00",
        "payments": {"count": 1, "checksum": "aa"},
        "redis": {"keys": 3, "kinds": {"tokens": 1, "rate_limits": 2}},
        "components": {"eapi": {"healthy": True, "detail": "ok"}},
        "replication": {"pg1": {"position": "0/1"}},
    }
    doc.update(over)
    return doc


def test_compare_allows_only_the_fields_that_move() -> None:
    same = compare(
        _doc(),
        _doc(
            taken_at="2026-01-01T00:01:00+00:00",
            redis={"keys": 1, "kinds": {"tokens": 1, "rate_limits": 0}},
            components={"eapi": {"healthy": True, "detail": "ok, lag 5 bytes"}},
            replication={"pg1": {"position": "0/9"}},
        ),
    )
    assert same.same and same.exit_code == 0
    assert {d.path for d in same.differences} == {
        "taken_at",
        "redis.keys",
        "redis.kinds.rate_limits",
        "components.eapi.detail",
        "replication.pg1.position",
    }
    moved = compare(_doc(), _doc(payments={"count": 2, "checksum": "bb"}))
    assert not moved.same and moved.exit_code == 1
    assert [d.path for d in moved.unexpected] == ["payments.checksum", "payments.count"]


def test_compare_sees_a_missing_part_and_honours_allow() -> None:
    sick = compare(_doc(), _doc(components={"eapi": {"healthy": False, "detail": "down"}}))
    assert [d.path for d in sick.unexpected] == ["components.eapi.healthy"]
    gone = compare(_doc(), {k: v for k, v in _doc().items() if k != "payments"})
    assert {d.after for d in gone.unexpected} == {"<missing>"}
    emptied = compare(_doc(), _doc(redis={"keys": 0, "kinds": {"tokens": 0, "rate_limits": 0}}))
    assert not emptied.same
    assert compare(_doc(), _doc(redis={}), allow=["redis"]).same
    assert compare(_doc(), _doc(redis=None), allow=["redis"]).same


def test_flatten_keeps_empty_mappings_as_leaves() -> None:
    assert flatten({"a": {"b": 1, "c": {}}, "d": [1]}) == {"a.b": 1, "a.c": {}, "d": [1]}
