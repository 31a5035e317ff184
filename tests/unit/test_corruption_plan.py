"""The pure corruption planner: rows before T and now → what to put back, and the counts."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from payapi.recovery.corruption_checks import REFERENCE_SQL
from payapi.recovery.corruption_plan import (
    REDACTED,
    CorrectionPlan,
    CorrectionPlanError,
    SecretVersion,
    plan_table,
    plan_vault,
    same_row,
    target_time,
)
from payapi.schemas import REFERENCE_PATTERN

T = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def _pay(i: int, amount: str = "10.00", **extra: object) -> dict[str, object]:
    return {"id": f"id-{i:03d}", "amount": Decimal(amount), "reference": f"ref-{i}", **extra}


def test_changed_deleted_created_and_unchanged_rows() -> None:
    before = [_pay(i) for i in range(20)]
    now = [_pay(i, "999.99") if i < 10 else _pay(i) for i in range(15)]  # 15..19 deleted
    now += [_pay(100 + i) for i in range(50)]  # created after T
    plan = plan_table("payments", ["id"], before, now)
    c = plan.counts()
    assert c == {
        "restored_rows": 15,
        "deleted_rows_restored": 5,
        "kept_rows": 50,
        "dropped_rows": 0,
        "unchanged_rows": 5,
    }
    updates = [ch for ch in plan.changes if ch.action == "update"]
    assert len(updates) == 10
    assert updates[0].diff() == {"amount": {"before": Decimal("10.00"), "now": Decimal("999.99")}}
    inserts = [ch for ch in plan.changes if ch.action == "insert"]
    assert {ch.key["id"] for ch in inserts} == {f"id-{i:03d}" for i in range(15, 20)}
    assert all(ch.now is None and ch.before is not None for ch in inserts)
    assert len(plan.kept) == 50 and plan.kept[0] == {"id": "id-100"}


def test_numerically_equal_amounts_are_unchanged() -> None:
    plan = plan_table("p", ["id"], [_pay(1, "12.50")], [_pay(1, "12.5")])
    assert plan.changes == () and plan.unchanged == 1
    assert same_row({"a": 1}, {"a": Decimal("1.0")})
    assert not same_row({"a": True}, {"a": 1})
    assert not same_row({"a": None}, {"a": "x"})


def test_composite_primary_key() -> None:
    before = [{"a": 1, "b": "x", "v": 1}, {"a": 1, "b": "y", "v": 2}]
    now = [{"a": 1, "b": "x", "v": 5}]
    plan = plan_table("t", ["a", "b"], before, now)
    assert [(c.action, c.key) for c in plan.changes] == [
        ("update", {"a": 1, "b": "x"}),
        ("insert", {"a": 1, "b": "y"}),
    ]


def test_operator_marks_rows_created_after_t_to_drop() -> None:
    before = [_pay(1)]
    now = [_pay(1), _pay(2), _pay(3)]
    plan = plan_table("payments", ["id"], before, now, drop=["id-003"])
    assert plan.counts()["dropped_rows"] == 1 and plan.counts()["kept_rows"] == 1
    (drop,) = plan.changes
    assert drop.action == "delete" and drop.before is None and drop.now == _pay(3)


@pytest.mark.parametrize(
    ("mark", "message"), [("id-001", "existed before"), ("id-404", "not a row")]
)
def test_dropping_a_pre_t_or_unknown_row_is_refused(mark: str, message: str) -> None:
    with pytest.raises(CorrectionPlanError, match=message):
        plan_table("payments", ["id"], [_pay(1)], [_pay(1), _pay(2)], drop=[mark])


def test_a_table_without_primary_key_is_refused() -> None:
    with pytest.raises(CorrectionPlanError, match="no primary key"):
        plan_table("t", [], [], [])


def test_plan_file_redacts_credential_columns_and_counts_are_integers() -> None:
    before = [{"id": 1, "api_key": "old-key-value", "note": "a"}]
    now = [{"id": 1, "api_key": "new-key-value", "note": "b"}]
    table = plan_table("clients", ["id"], before, now)
    plan = CorrectionPlan(since=T, tables=(table,), created_at=T, backup_id="b1")
    doc = json.loads(json.dumps(plan.to_json(), default=str))
    text = json.dumps(doc)
    assert "old-key-value" not in text and "new-key-value" not in text
    change = doc["tables"][0]["changes"][0]
    assert change["before"]["api_key"] == REDACTED
    assert change["diff"]["api_key"] == {"before": REDACTED, "now": REDACTED}
    assert change["diff"]["note"] == {"before": "a", "now": "b"}
    # The in-memory plan keeps the real values: --apply must write them back.
    assert table.changes[0].before == before[0]
    for key in ("restored_rows", "kept_rows", "deleted_rows_restored"):
        assert type(doc[key]) is int
    assert doc["target_time"] == "2026-03-01T11:59:59.999999+00:00"
    assert doc["format"] == "payapi-correction-plan/1"


def test_target_is_just_before_t() -> None:
    assert target_time(T) == T - timedelta(microseconds=1)
    assert target_time(T).tzinfo is not None


def test_the_sql_reference_pattern_is_the_api_one() -> None:
    assert REFERENCE_SQL == "^[A-Za-z0-9._-]{1,64}$"
    for ref in ("ok-1", "a" * 64, "a" * 65, "bad ref", "", "x\n"):
        api = bool(REFERENCE_PATTERN.match(ref))
        assert api == bool(re.fullmatch(r"[A-Za-z0-9._-]{1,64}", ref)), ref


def _v(n: int, digest: str) -> SecretVersion:
    return SecretVersion(n, digest * 64, None)


def test_vault_plan_restores_the_last_pre_t_version_as_new() -> None:
    before = {
        "a:variable:changed": [_v(1, "a"), _v(2, "b")],
        "a:variable:same": [_v(1, "c")],
        "a:variable:pruned": [_v(1, "d")],
        "a:variable:gone": [_v(1, "e")],
        "a:variable:empty-before": [],
        "a:variable:kept-by-operator": [_v(1, "f")],
    }
    now = {
        "a:variable:changed": [_v(1, "a"), _v(2, "b"), _v(3, "0")],
        "a:variable:same": [_v(1, "c")],
        "a:variable:pruned": [_v(5, "1"), _v(6, "2")],
        "a:variable:empty-before": [_v(1, "3")],
        "a:variable:new-after-t": [_v(1, "4")],
        "a:variable:kept-by-operator": [_v(1, "f"), _v(2, "5")],
    }
    plan = plan_vault(before, now, since=T, created_at=T, keep=["a:variable:kept-by-operator"])
    restores = {r.resource_id: r for r in plan.restores}
    assert set(restores) == {"a:variable:changed", "a:variable:pruned"}
    assert restores["a:variable:changed"].before.version == 2
    assert restores["a:variable:changed"].before_still_stored
    assert not restores["a:variable:pruned"].before_still_stored
    assert set(plan.kept) == {
        "a:variable:empty-before",
        "a:variable:new-after-t",
        "a:variable:kept-by-operator",
    }
    assert plan.missing == ("a:variable:gone",)
    c = plan.counts()
    assert (c["restored_rows"], c["deleted_rows_restored"], c["kept_rows"]) == (2, 1, 3)
    doc = json.dumps(plan.to_json())
    assert "a" * 13 not in doc  # at most a 12-hex-digit prefix of a digest
