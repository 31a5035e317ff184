"""The incident journal: a hash chain on local disk that says which entry was tampered with."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from payapi.incident.journal import IncidentJournal, JournalError

T0 = datetime(2026, 5, 1, 14, 5, tzinfo=UTC)


def filled(tmp_path: Path, n: int = 4) -> IncidentJournal:
    j = IncidentJournal(tmp_path / "incidents")
    for i in range(n):
        j.append(type="note", data={"i": i}, at=T0 + timedelta(minutes=i), incident="INC-1")
    return j


def rewrite(j: IncidentJournal, change: object) -> None:
    lines = j.path.read_text().splitlines()
    docs = [json.loads(line) for line in lines]
    change(docs)  # type: ignore[operator]
    j.path.write_text("".join(json.dumps(d) + "\n" for d in docs))


def test_an_intact_journal_verifies_and_reads_back(tmp_path: Path) -> None:
    j = filled(tmp_path)
    result = j.verify()
    assert result.ok and result.entries_checked == 4 and result.last_seq == 4
    assert [e.data["i"] for e in j.entries()] == [0, 1, 2, 3]
    assert j.entries()[0].prev_hash == "0" * 64
    assert j.read_head() == (4, j.entries()[-1].hash)


def test_an_edited_entry_is_named(tmp_path: Path) -> None:
    j = filled(tmp_path)

    def edit(docs: list[dict[str, object]]) -> None:
        docs[1]["data"] = {"i": 99}

    rewrite(j, edit)
    result = j.verify()
    assert not result.ok and result.problem is not None
    assert (result.problem.kind, result.problem.seq) == ("edited", 2)
    assert "seq 2" in result.problem.line()


def test_an_edit_with_a_recomputed_hash_is_caught_by_the_next_entry(tmp_path: Path) -> None:
    from payapi.incident.journal import Entry

    j = filled(tmp_path)

    def edit(docs: list[dict[str, object]]) -> None:
        docs[1]["data"] = {"i": 99}
        e = Entry.from_json({**docs[1], "hash": ""})
        docs[1]["hash"] = e.computed_hash()

    rewrite(j, edit)
    problem = j.verify().problem
    assert problem is not None and (problem.kind, problem.seq) == ("edited", 2)


def test_a_removed_entry_is_named(tmp_path: Path) -> None:
    j = filled(tmp_path)
    rewrite(j, lambda docs: docs.pop(2))
    problem = j.verify().problem
    assert problem is not None and (problem.kind, problem.seq) == ("removed", 3)


def test_removing_the_newest_entry_is_caught_by_the_head(tmp_path: Path) -> None:
    j = filled(tmp_path)
    rewrite(j, lambda docs: docs.pop())
    problem = j.verify().problem
    assert problem is not None and (problem.kind, problem.seq) == ("removed", 4)


def test_a_reordered_pair_is_named(tmp_path: Path) -> None:
    j = filled(tmp_path)

    def swap(docs: list[object]) -> None:
        docs[1], docs[2] = docs[2], docs[1]

    rewrite(j, swap)
    problem = j.verify().problem
    assert problem is not None and problem.kind == "reordered" and problem.seq == 3


def test_a_torn_last_line_is_ignored_and_cut_off_by_the_next_append(tmp_path: Path) -> None:
    j = filled(tmp_path, 2)
    with j.path.open("ab") as f:
        f.write(b'{"seq": 3, "at": "2026-')  # a crash in the middle of a write
    result = j.verify()
    assert result.ok and result.entries_checked == 2 and result.notes
    j.append(type="note", data={"i": 2}, at=T0, incident="INC-1")
    assert [e.seq for e in j.entries()] == [1, 2, 3]
    assert j.verify().ok and not j.verify().notes


def test_a_head_one_behind_is_a_crash_not_tampering(tmp_path: Path) -> None:
    j = filled(tmp_path, 3)
    first_two = j.entries()[1]
    j.head_path.write_text(json.dumps({"seq": 2, "hash": first_two.hash}))
    result = j.verify()
    assert result.ok and any("behind" in n for n in result.notes)


def test_a_garbage_line_in_the_middle_refuses_appends(tmp_path: Path) -> None:
    j = filled(tmp_path, 2)
    lines = j.path.read_text().splitlines()
    j.path.write_text(lines[0] + "\nnot json\n" + lines[1] + "\n")
    assert j.verify().problem is not None
    with pytest.raises(JournalError, match="line 2"):
        j.append(type="note", data={}, at=T0)


def test_copy_to_repository_without_a_repository_is_a_result_not_an_error(
    tmp_path: Path,
) -> None:
    from payapi.core.settings import Settings
    from payapi.incident.journal import copy_to_repository

    j = filled(tmp_path, 1)
    result = copy_to_repository(Settings(), j)
    assert not result.ok and result.error and "repository" in result.error


def test_copy_to_repository_stores_the_journal_once(tmp_path: Path) -> None:
    from payapi.backup.crypto import write_key_file
    from payapi.core.settings import BackupSettings, Settings
    from payapi.incident.journal import copy_to_repository

    key = tmp_path / "backup.key"
    write_key_file(key)
    settings = Settings(backup=BackupSettings(repository=str(tmp_path / "repo"), key_file=key))
    from payapi.backup.service import open_repository

    open_repository(settings, create=True)
    j = filled(tmp_path, 2)
    first = copy_to_repository(settings, j)
    assert first.ok and first.stored and first.backup_id
    again = copy_to_repository(settings, j)
    assert again.ok and not again.stored and again.backup_id == first.backup_id
