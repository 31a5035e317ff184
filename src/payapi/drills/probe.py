"""The traffic probe: synthetic writes at a fixed rate while a drill runs, each attempt
recorded locally (the ground truth the RPO is counted against).

One thread per probe calls its :class:`Attempt` on a fixed schedule (a late attempt
skips the ticks it missed rather than bursting to catch up, so the rate stays what the
spec says). Every attempt becomes a :class:`~payapi.drills.model.Sample`, appended to the
samples file as one JSON line (flushed at once, fsynced at most every second) and kept
in memory for the runner's live decisions. An attempt that raises is a failed sample
naming the exception's class: a probe never stops because its target is down.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Protocol

from payapi.drills.model import Sample

__all__ = ["Attempt", "AttemptResult", "Probe", "SampleFile"]


@dataclass(frozen=True, slots=True)
class AttemptResult:
    ok: bool
    ref: str | None = None  # names the acknowledged write (never a secret)
    detail: str = ""  # one line: an HTTP status, an error class


class Attempt(Protocol):
    def __call__(self) -> AttemptResult: ...


def _utcnow() -> datetime:
    return datetime.now(UTC)


class SampleFile:
    """Appends samples to one file, thread-safe; fsync at most every ``fsync_every``."""

    def __init__(self, path: Path, *, fsync_every: float = 1.0) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._f: IO[str] = open(path, "a", encoding="utf-8")  # noqa: SIM115 (closed in close())
        self._lock = threading.Lock()
        self._every = fsync_every
        self._synced = time.monotonic()

    def append(self, sample: Sample) -> None:
        line = json.dumps(sample.to_json(), separators=(",", ":")) + "\n"
        with self._lock:
            self._f.write(line)
            self._f.flush()
            if time.monotonic() - self._synced >= self._every:
                os.fsync(self._f.fileno())
                self._synced = time.monotonic()

    def close(self) -> None:
        with self._lock:
            if not self._f.closed:
                self._f.flush()
                os.fsync(self._f.fileno())
                self._f.close()


class Probe:
    """Runs the attempts of several probes, each at its own interval (seconds)."""

    def __init__(
        self,
        attempts: Mapping[str, tuple[Attempt, float]],
        sink: SampleFile | None = None,
        *,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        self._attempts = dict(attempts)
        self._sink = sink
        self._clock = clock
        self._samples: list[Sample] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._attempts)

    def start(self) -> None:
        self._stop.clear()
        for name, (attempt, interval) in self._attempts.items():
            t = threading.Thread(
                target=self._run, args=(name, attempt, interval), name=f"probe-{name}", daemon=True
            )
            t.start()
            self._threads.append(t)

    def stop(self, timeout: float = 15.0) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=timeout)
        self._threads.clear()
        if self._sink is not None:
            self._sink.close()

    def samples(self) -> list[Sample]:
        with self._lock:
            return list(self._samples)

    def _record(self, sample: Sample) -> None:
        with self._lock:
            self._samples.append(sample)
        if self._sink is not None:
            # A full disk must not stop the probe: the sample is kept in memory.
            with contextlib.suppress(OSError, ValueError):
                self._sink.append(sample)

    def _run(self, name: str, attempt: Attempt, interval: float) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            at = self._clock()
            try:
                result = attempt()
            except Exception as exc:  # the probe must outlive its target
                result = AttemptResult(False, None, type(exc).__name__)
            end = self._clock()
            self._record(Sample(name, at, end, result.ok, result.ref if result.ok else None,
                                result.detail[:200]))  # fmt: skip
            next_at += interval
            now = time.monotonic()
            if next_at < now:  # late: skip the missed ticks, keep the rate
                next_at = now + interval - ((now - next_at) % interval)
            self._stop.wait(max(0.0, next_at - now))
