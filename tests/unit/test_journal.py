"""The journal: steps with start, end, duration and status; sinks that cannot break a run."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from payapi.core.journal import Event, Journal, Status, collect, note_sink


def ticking() -> object:
    t = [datetime(2026, 12, 6, 12, 0, tzinfo=UTC)]

    def clock() -> datetime:
        t[0] += timedelta(seconds=1)
        return t[0]

    return clock


def test_a_step_records_start_end_duration_and_status() -> None:
    j = Journal(clock=ticking())  # type: ignore[arg-type]
    with j.step("extracting"):
        j.progress(10, 100)
        j.note("half way")
    (step,) = j.steps
    assert step.name == "extracting"
    assert step.status is Status.OK
    assert step.duration == 1.0  # one tick between start and end; notes take none
    assert step.output == "half way"
    assert step.to_json()["status"] == "ok"


def test_a_failing_step_is_recorded_failed_with_the_error_and_reraises() -> None:
    j = Journal()
    with pytest.raises(RuntimeError), j.step("combining"):
        raise RuntimeError("pg_combinebackup\n failed")
    assert j.steps[0].status is Status.FAILED
    assert j.steps[0].output == "pg_combinebackup failed"


def test_sinks_see_every_event_and_nested_steps_end_innermost_first() -> None:
    j = Journal()
    events = collect(j)
    with j.step("verify"):
        with j.step("restore test"):
            j.progress(1, None)
        j.note("checked")
    assert [(e.name, e.event) for e in events] == [
        ("verify", Event.STARTED),
        ("restore test", Event.STARTED),
        ("restore test", Event.PROGRESS),
        ("restore test", Event.ENDED),
        ("verify", Event.NOTE),
        ("verify", Event.ENDED),
    ]
    assert [s.name for s in j.steps] == ["restore test", "verify"]


def test_a_note_outside_any_step_is_a_step_of_its_own() -> None:
    said: list[str] = []
    j = Journal(note_sink(said.append, prefix="restore test: "))
    j.note("initdb")
    with j.step("starting"):
        j.note("waiting for recovery")
    assert said == [
        "restore test: initdb",
        "restore test: starting",
        "restore test: waiting for recovery",
    ]
    assert [s.status for s in j.steps] == [Status.OK, Status.OK]


def test_a_failing_sink_is_dropped_and_never_stops_the_operation() -> None:
    calls: list[str] = []

    def broken(_step: object) -> None:
        calls.append("broken")
        raise OSError("terminal gone")

    j = Journal(broken)
    with j.step("one"):
        pass
    with j.step("two"):
        pass
    assert calls == ["broken"]
    assert [s.status for s in j.steps] == [Status.OK, Status.OK]


def test_skip_records_a_step_that_was_not_done() -> None:
    j = Journal()
    j.skip("pg_verifybackup", "not asked for")
    assert j.steps[0].status is Status.SKIPPED
    assert j.steps[0].duration == 0.0


def test_record_keeps_a_step_that_ran_before_the_journal_heard_of_it() -> None:
    said: list[str] = []
    j = Journal(note_sink(said.append))
    began = datetime(2026, 1, 1, tzinfo=UTC)
    j.record("assess", began, "primary is down")
    assert said == ["assess", "primary is down"]
    (step,) = j.steps
    assert step.status is Status.OK and step.started_at == began
    assert step.output == "primary is down" and (step.duration or 0) > 0


def test_a_prefixed_journal_reports_through_its_parent() -> None:
    said: list[str] = []
    parent = Journal(note_sink(said.append))
    part = parent.prefixed("dr: ")
    with part.step("copy: 3 WAL files"):
        part.note("copy: backup B1")
    assert said == ["dr: copy: 3 WAL files", "dr: copy: backup B1"]
    assert [s.name for s in parent.steps] == ["dr: copy: 3 WAL files"]


def test_note_sink_can_send_step_names_elsewhere() -> None:
    said: list[str] = []
    spinner: list[str] = []
    j = Journal(note_sink(said.append, started=spinner.append))
    with j.step("postgres"):
        j.note("made /root traversable")
    assert spinner == ["postgres"] and said == ["made /root traversable"]
