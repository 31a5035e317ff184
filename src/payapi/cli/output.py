"""All user-facing CLI output goes through here (one place decides JSON vs. rich text).

Errors are one line on stderr; the exit code says what kind (1 failed, 2 bad usage).
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any, NoReturn

from rich.console import Console
from rich.text import Text

from payapi.core.errors import EXIT_FAILED, EXIT_USAGE
from payapi.core.journal import Event, Journal, Step, note_sink

console = Console()
err_console = Console(stderr=True)

__all__ = ["EXIT_FAILED", "EXIT_USAGE", "emit", "fail", "info", "journal", "to_json", "warn"]


def _default(obj: Any) -> Any:
    if isinstance(obj, Decimal):
        return str(obj)
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "isoformat"):
        return obj.isoformat()
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")


def to_json(data: Any) -> str:
    return json.dumps(data, indent=2, sort_keys=False, default=_default)


def emit(data: Any, *, as_json: bool, human: Callable[[Any], None] | None = None) -> None:
    """Print ``data`` as JSON (for automation) or through ``human`` (for people)."""
    if as_json or human is None:
        sys.stdout.write(to_json(data) + "\n")
        sys.stdout.flush()
    else:
        human(data)


def info(message: str) -> None:
    """A line on stderr, printed literally: messages carry config and user text, in which
    ``[backup]`` is a TOML table, not markup."""
    err_console.print(message, markup=False, highlight=False)


def warn(message: str) -> None:
    err_console.print(Text.assemble(("warning:", "yellow"), " ", message), highlight=False)


def fail(message: str, code: int = EXIT_FAILED) -> NoReturn:
    """One line on stderr and a non-zero exit."""
    line = " ".join(str(message).split())
    err_console.print(Text.assemble(("error:", "red"), " ", line), highlight=False, soft_wrap=True)
    raise SystemExit(code)


@contextlib.contextmanager
def journal(*, quiet: bool, prefix: str = "") -> Iterator[Journal]:
    """The journal a command hands to the operation it runs, rendered for people.

    Each step's name and each note become a line on stderr (as the commands always
    printed them); byte progress becomes a rich progress bar, only on a terminal. With
    ``quiet`` (``--json``) nothing is printed: the journal only records.
    """
    j = Journal()
    if quiet:
        yield j
        return
    j.add_sink(note_sink(info, prefix=prefix))
    bars = _Bars() if err_console.is_terminal else None
    if bars is not None:
        j.add_sink(bars.sink)
    try:
        yield j
    finally:
        if bars is not None:
            bars.close()


class _Bars:
    """A transient progress bar per step that reports byte progress."""

    def __init__(self) -> None:
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TaskID,
            TextColumn,
            TimeElapsedColumn,
            TransferSpeedColumn,
        )

        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeElapsedColumn(),
            console=err_console,
            transient=True,
        )
        self._tasks: dict[tuple[str, object], TaskID] = {}
        self._started = False

    def sink(self, step: Step) -> None:
        key = (step.name, step.started_at)
        if step.event is Event.PROGRESS and step.done is not None:
            if not self._started:
                self._progress.start()
                self._started = True
            task = self._tasks.get(key)
            if task is None:
                task = self._tasks[key] = self._progress.add_task(step.name, total=None)
            total = step.total if step.total and step.total >= step.done else None
            self._progress.update(task, completed=step.done, total=total)
        elif step.event is Event.ENDED and key in self._tasks:
            self._progress.remove_task(self._tasks.pop(key))

    def close(self) -> None:
        if self._started:
            self._progress.stop()
