"""Improvement actions: add, list, close; ids in order and never reused; a torn last line
(a writer killed mid-line) is skipped and cut off by the next writer."""

from __future__ import annotations

import json
import threading
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from payapi.core.errors import UsageError
from payapi.drills import actions
from tests.unit.drill_records import record, write_journal

NOW = datetime(2026, 12, 8, 9, 0, tzinfo=UTC)


def test_add_list_close(tmp_path: Path) -> None:
    write_journal(tmp_path, record())
    drill_id = record().drill_id
    a1 = actions.add(tmp_path, title="Document the Sentinel quorum", owner="ada", now=NOW)
    a2 = actions.add(
        tmp_path,
        title="  Alert on\nreplica lag ",
        owner="grace",
        now=NOW,
        drill_id=drill_id,
        due=date(2027, 1, 15),
    )
    assert (a1.id, a2.id) == ("ACT-001", "ACT-002")
    assert a2.title == "Alert on replica lag" and a2.drill_id == drill_id
    assert [a.id for a in actions.list_actions(tmp_path, open_only=True)] == ["ACT-001", "ACT-002"]

    closed = actions.close(tmp_path, "act-001", now=NOW, note="runbook updated")
    assert closed.status == "closed" and closed.note == "runbook updated"
    assert [a.id for a in actions.list_actions(tmp_path, open_only=True)] == ["ACT-002"]
    assert actions.open_actions(tmp_path) == actions.list_actions(tmp_path, open_only=True)
    every = actions.list_actions(tmp_path)
    assert [(a.id, a.status) for a in every] == [("ACT-001", "closed"), ("ACT-002", "open")]
    assert every[1].to_json()["due"] == "2027-01-15"
    assert every[1].overdue(date(2027, 1, 16)) and not every[1].overdue(date(2027, 1, 15))
    # A closed action keeps its id: the next one is ACT-003.
    assert actions.add(tmp_path, title="t", owner="o", now=NOW).id == "ACT-003"


@pytest.mark.parametrize(
    ("call", "needle"),
    [
        (lambda d: actions.add(d, title=" ", owner="o", now=NOW), "--title"),
        (lambda d: actions.add(d, title="t", owner="", now=NOW), "--owner"),
        (
            lambda d: actions.add(d, title="t", owner="o", now=NOW, drill_id="nope"),
            "not a drill id",
        ),
        (
            lambda d: actions.add(
                d, title="t", owner="o", now=NOW, drill_id="20261207T100000Z-x-abcdef"
            ),
            "no drill",
        ),
        (lambda d: actions.close(d, "ACT-009", now=NOW), "no action ACT-009"),
        (lambda d: actions.close(d, "9", now=NOW), "not an action id"),
        (lambda d: actions.parse_due("next week"), "--due"),
    ],
)
def test_bad_requests_are_usage_errors(tmp_path: Path, call: object, needle: str) -> None:
    with pytest.raises(UsageError, match=needle):
        call(tmp_path)  # type: ignore[operator]


def test_closing_twice_is_refused(tmp_path: Path) -> None:
    actions.add(tmp_path, title="t", owner="o", now=NOW)
    actions.close(tmp_path, "ACT-001", now=NOW)
    with pytest.raises(UsageError, match="already closed"):
        actions.close(tmp_path, "ACT-001", now=NOW)


def test_a_torn_last_line_is_skipped_then_cut_off(tmp_path: Path) -> None:
    actions.add(tmp_path, title="first", owner="o", now=NOW)
    path = tmp_path / actions.ACTIONS_FILE
    with path.open("ab") as f:
        f.write(b'{"type": "added", "id": "ACT-002", "tit')  # killed mid-write
    assert [a.title for a in actions.list_actions(tmp_path)] == ["first"]
    assert actions.add(tmp_path, title="second", owner="o", now=NOW).id == "ACT-002"
    lines = path.read_text().splitlines()
    assert [json.loads(line)["title"] for line in lines] == ["first", "second"]


def test_concurrent_adds_get_distinct_ids(tmp_path: Path) -> None:
    def work(n: int) -> None:
        for i in range(5):
            actions.add(tmp_path, title=f"{n}-{i}", owner="o", now=NOW)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ids = [a.id for a in actions.list_actions(tmp_path)]
    assert ids == [f"ACT-{i:03d}" for i in range(1, 21)]


def test_no_field_is_named_like_a_secret(tmp_path: Path) -> None:
    from payapi.core.redaction import is_sensitive_name

    actions.add(tmp_path, title="t", owner="o", now=NOW, due=date(2027, 1, 1))
    actions.close(tmp_path, "ACT-001", now=NOW)
    keys = {k for e in actions.read_events(tmp_path) for k in e}
    keys |= set(actions.list_actions(tmp_path)[0].to_json())
    assert not [k for k in keys if is_sensitive_name(k)]
