"""One journal of what a long operation did: steps with start, end, duration and status.

Backups, restores, copies, the lab, and (next) runbooks and drills all report through a
:class:`Journal`. An operation opens steps (``with journal.step("extracting"):``), may
attach notes (``journal.note("…")``) and byte progress (``journal.progress(done,
total)``) to the step it is in, and never knows who listens. Listeners (*sinks*) see every
event as an immutable :class:`Step` snapshot: the CLI renders them as today's messages and
progress bars, a runbook writes them as JSON lines, a test collects them.

As in chaostoolkit-lib's run journal, a sink that fails never stops the operation: its
exception is logged and the sink is dropped. A step that raises is recorded as
``failed`` (with the error's one-line message as its output) and the exception goes on.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

log = logging.getLogger(__name__)


class Status(StrEnum):
    RUNNING = "running"
    OK = "ok"
    FAILED = "failed"
    SKIPPED = "skipped"


class Event(StrEnum):
    """What happened to the step in this snapshot (sinks switch on it)."""

    STARTED = "started"
    NOTE = "note"
    PROGRESS = "progress"
    ENDED = "ended"


@dataclass(frozen=True)
class Step:
    """One step as it stands at one event. ``output`` is the step's last note (or, for
    a failed step, the error); ``done``/``total`` its byte progress when it has one."""

    name: str
    status: Status
    started_at: datetime
    event: Event = Event.STARTED
    ended_at: datetime | None = None
    output: str = ""
    done: int | None = None
    total: int | None = None

    @property
    def duration(self) -> float | None:
        if self.ended_at is None:
            return None
        return (self.ended_at - self.started_at).total_seconds()

    def to_json(self) -> dict[str, Any]:
        return {
            "step": self.name,
            "status": str(self.status),
            "start": self.started_at.isoformat(),
            "end": self.ended_at.isoformat() if self.ended_at else None,
            "duration": self.duration,
            "output": self.output,
        }


Sink = Callable[[Step], None]


def _utcnow() -> datetime:
    return datetime.now(UTC)


class Journal:
    """Collects the steps of one operation and tells its sinks about every event.

    Steps may nest (a restore test inside a verify); notes and progress go to the
    innermost open step, or to an implicit step named after the note when none is open.
    Thread-safe: workers may report progress while the main thread opens steps.
    """

    def __init__(self, *sinks: Sink, clock: Callable[[], datetime] = _utcnow) -> None:
        self._sinks: list[Sink] = list(sinks)
        self._clock = clock
        self._open: list[Step] = []
        self._lock = threading.RLock()
        self.steps: list[Step] = []  # finished steps, in the order they ended

    @classmethod
    def silent(cls) -> Journal:
        """A journal nobody listens to (it still records its steps)."""
        return cls()

    def prefixed(self, prefix: str) -> Journal:
        """A journal for one part of this operation (one secondary of a copy, say): its
        events reach this journal's sinks with ``prefix`` before the name and the note,
        and its finished steps are recorded here too."""
        child = Journal(clock=self._clock)

        def forward(step: Step) -> None:
            shown = replace(
                step, name=prefix + step.name, output=prefix + step.output if step.output else ""
            )
            if step.event is Event.ENDED:
                with self._lock:
                    self.steps.append(shown)
            self._tell(shown)

        child.add_sink(forward)
        return child

    def add_sink(self, sink: Sink) -> None:
        with self._lock:
            self._sinks.append(sink)

    def _tell(self, step: Step) -> None:
        for sink in list(self._sinks):
            try:
                sink(step)
            except Exception:  # a listener must never stop the operation
                log.exception("journal sink %r failed; it is dropped", sink)
                with contextlib.suppress(ValueError):
                    self._sinks.remove(sink)

    @property
    def current(self) -> Step | None:
        with self._lock:
            return self._open[-1] if self._open else None

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        """A step: started now, ended when the block ends (failed if it raises)."""
        started = Step(name, Status.RUNNING, self._clock())
        with self._lock:
            self._open.append(started)
        self._tell(started)
        try:
            yield
        except BaseException as exc:
            self._end(Status.FAILED, " ".join(str(exc).split()) or type(exc).__name__)
            raise
        else:
            self._end(Status.OK, None)

    def skip(self, name: str, why: str = "") -> None:
        """Record a step that was decided against (nothing was done)."""
        now = self._clock()
        done = Step(name, Status.SKIPPED, now, Event.ENDED, now, why)
        with self._lock:
            self.steps.append(done)
        self._tell(done)

    def record(self, name: str, started_at: datetime, output: str = "") -> None:
        """Record a step that already ran, from ``started_at`` until now: work done
        before the operation could know it would go ahead (an assessment that may
        refuse), so a refusal prints nothing but its one line."""
        began = Step(name, Status.RUNNING, started_at)
        self._tell(began)
        if output:
            self._tell(replace(began, event=Event.NOTE, output=output))
        done = replace(began, status=Status.OK, event=Event.ENDED, ended_at=self._clock())
        with self._lock:
            self.steps.append(replace(done, output=output))
        self._tell(replace(done, output=output))

    def _end(self, status: Status, output: str | None) -> None:
        with self._lock:
            step = self._open.pop()
            ended = replace(
                step,
                status=status,
                event=Event.ENDED,
                ended_at=self._clock(),
                output=step.output if output is None else output,
            )
            self.steps.append(ended)
        self._tell(ended)

    def _update(self, **changes: Any) -> Step | None:
        with self._lock:
            if not self._open:
                return None
            self._open[-1] = replace(self._open[-1], **changes)
            return self._open[-1]

    def note(self, message: str) -> None:
        """A message about the current step (one line). Outside any step, the message
        is a step of its own, done at once: what a plain progress message used to be."""
        updated = self._update(output=message, event=Event.NOTE)
        if updated is not None:
            self._tell(updated)
            return
        with self.step(message):
            pass

    def progress(self, done: int, total: int | None = None) -> None:
        """Bytes (or items) done so far in the current step, and the total if known."""
        updated = self._update(done=done, total=total, event=Event.PROGRESS)
        if updated is not None:
            self._tell(updated)


def collect(journal: Journal) -> list[Step]:
    """Every event the journal emits from now on, in a list (for tests and reports)."""
    events: list[Step] = []
    journal.add_sink(events.append)
    return events


def note_sink(
    say: Callable[[str], None],
    *,
    prefix: str = "",
    started: Callable[[str], None] | None = None,
) -> Sink:
    """A sink that says each step's name when it starts and each note: the plain
    one-message-per-phase rendering that the CLI and the lab use. With ``started``,
    step names go there instead (a spinner's text) and only notes are said."""
    on_start = started or say

    def sink(step: Step) -> None:
        if step.event is Event.STARTED:
            on_start(prefix + step.name)
        elif step.event is Event.NOTE and step.output:
            say(prefix + step.output)

    return sink
