"""Runs one drill: steady state, injection, recovery, restore-normal, verification, and
the measurements, all in the drill's journal.

The runner decides the order and the waiting; the system under test acts, behind
:class:`DrillSystem` (the lab's implementation is :mod:`payapi.lab.drill_system`, wired by
the CLI). As in chaostoolkit-lib, restoring normal operation is in ``finally``: an abort
condition, Ctrl-C, SIGTERM or a failed step still runs it (with SIGINT and SIGTERM
ignored while it runs, so a second Ctrl-C cannot leave the platform half restored), and
the journal so far is kept. A runner killed with SIGKILL leaves a journal without an end;
:func:`restore_normal` finishes such a drill.
"""

from __future__ import annotations

import contextlib
import signal
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any, Protocol

from payapi.core import run_journal
from payapi.core.errors import PayapiError, UsageError
from payapi.core.plan import Plan
from payapi.drills import journal as files
from payapi.drills.measure import abort_due, judge, measure, probe_outage
from payapi.drills.model import (
    Checklist,
    DrillRecord,
    DrillStatus,
    Measurements,
    Sample,
    StepRecord,
    Verdict,
    VerdictKind,
)
from payapi.drills.probe import Attempt, Probe, SampleFile
from payapi.drills.spec import DrillSpec

__all__ = [
    "DrillAborted",
    "DrillRefused",
    "DrillSystem",
    "TabletopStep",
    "Terminated",
    "restore_normal",
    "run",
    "sigterm_interrupts",
]

# A probe that has not failed counts as "kept serving" after this long of successes.
QUIET_SECONDS = 3.0
POLL_SECONDS = 0.25
HEALTH_RETRY_SECONDS = 2.0


class DrillRefused(UsageError):
    """The checklist or the steady state said no: nothing was injected (exit 2)."""


class DrillAborted(PayapiError):
    """An abort condition stopped the drill."""


class Terminated(BaseException):  # named like KeyboardInterrupt, its sibling
    """SIGTERM, raised in the main thread so that ``finally`` restores normal operation."""


@dataclass(frozen=True)
class TabletopStep:
    phase: str
    name: str
    what: str  # what would be done, in words
    expected_seconds: float | None = None


class DrillSystem(Protocol):
    """What a drill acts on. Every method returns one line for the journal or raises a
    :class:`PayapiError` whose message is one line (never a secret)."""

    environment: str

    def health(self) -> tuple[bool, str]: ...
    def probes(self, spec: DrillSpec, tag: str) -> Mapping[str, tuple[Attempt, float]]: ...
    def found(self, probe: str, refs: Sequence[str]) -> set[str]: ...
    def inject(self, spec: DrillSpec) -> str: ...
    def recover(self, spec: DrillSpec) -> str: ...
    def restore_normal(self, spec: DrillSpec) -> str: ...
    def describe(self, spec: DrillSpec) -> list[TabletopStep]: ...


Ask = Callable[[TabletopStep], str]


def _utcnow() -> datetime:
    return datetime.now(UTC)


@contextlib.contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """While a drill runs in the main thread, SIGTERM raises :class:`Terminated` and
    SIGINT raises KeyboardInterrupt (even where SIGINT was inherited ignored)."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise Terminated

    try:
        previous = signal.signal(signal.SIGTERM, handler)
        # A process started in the background (a CI job, `cmd &`) inherits SIGINT
        # ignored, and Python then never raises KeyboardInterrupt: Ctrl-C (or kill -INT)
        # must still stop a drill and restore normal operation.
        previous_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, previous_int)


@contextlib.contextmanager
def _signals_ignored() -> Iterator[None]:
    saved: list[tuple[int, Any]] = []
    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            saved.append((sig, signal.signal(sig, signal.SIG_IGN)))
    except ValueError:  # not the main thread
        pass
    try:
        yield
    finally:
        for number, old in saved:
            signal.signal(number, old)


Listener = Callable[[dict[str, Any]], None]


class _Journal:
    def __init__(
        self,
        writer: run_journal.Writer,
        clock: Callable[[], datetime],
        listener: Listener | None = None,
    ) -> None:
        self.w = writer
        self.clock = clock
        self.listener = listener

    def write(self, record: dict[str, Any]) -> None:
        self.w.append(record)
        if self.listener is not None:
            # As in chaostoolkit: whoever listens (a progress display) never stops a drill.
            with contextlib.suppress(Exception):
                self.listener(record)

    def marker(self, name: str) -> datetime:
        at = self.clock()
        self.write({"type": "marker", "name": name, "at": at.isoformat()})
        return at

    def phase(self, name: str) -> None:
        self.write({"type": "phase", "phase": name, "at": self.clock().isoformat()})

    @contextlib.contextmanager
    def step(self, name: str, phase: str, **extra: Any) -> Iterator[list[str]]:
        """A step: its start is journaled before it acts, its end after. The body
        appends its one-line output to the list it is given."""
        started = self.clock()
        self.phase(phase)
        self.write({"type": "step_started", "name": name, "phase": phase,
                    "started_at": started.isoformat()})  # fmt: skip
        out: list[str] = []
        status = "ok"
        try:
            yield out
        except BaseException as exc:
            status = "failed"
            out.append(_one_line(exc))
            raise
        finally:
            rec = StepRecord(name, phase, started, self.clock(), status, "; ".join(out), **extra)
            self.write({"type": "step", **rec.to_json()})


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted (Ctrl-C)"
    if isinstance(exc, Terminated):
        return "terminated (SIGTERM)"
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def objectives(plan: Plan, component: str) -> tuple[float | None, float | None]:
    c = plan.component(component)
    rto = float(c.rto.seconds) if c.rto is not None and c.rto.seconds is not None else None
    rpo = float(c.rpo.seconds) if c.rpo is not None and c.rpo.seconds is not None else None
    return rto, rpo


def abort_limit(spec: DrillSpec, plan: Plan) -> float:
    """Seconds after the injection past which a probe still down aborts the drill."""
    limits = [spec.abort.max_seconds]
    for j in spec.judge:
        rto, _ = objectives(plan, j.component)
        if rto is not None:
            limits.append(spec.abort.rto_factor * rto)
    return min(limits)


def _restored(samples: Sequence[Sample], probe: str, injected_at: datetime, now: datetime) -> bool:
    o = probe_outage(samples, probe, injected_at)
    if o.first_failure_at is not None:
        return o.restored_at is not None
    quiet = [s for s in samples if s.probe == probe and s.ok and s.at >= injected_at]
    return bool(quiet) and (now - injected_at).total_seconds() >= QUIET_SECONDS


def verdicts_of(
    spec: DrillSpec,
    plan: Plan,
    m: Measurements,
    *,
    observed_until: datetime | None,
    tabletop: bool = False,
) -> tuple[Verdict, ...]:
    out = []
    for j in spec.judge:
        rto, rpo = objectives(plan, j.component)
        if tabletop:
            nm = VerdictKind.NOT_MEASURED
            detail = "tabletop: nothing was executed"
            out.append(
                Verdict(plan.resolve(j.component), j.probe, rto, rpo, None, None, nm, nm, nm,
                        None, detail)
            )  # fmt: skip
            continue
        v = judge(
            plan.resolve(j.component),
            j.probe,
            rto_objective=rto,
            rpo_objective=rpo,
            measurements=m,
            observed_until=observed_until,
        )
        out.append(v)
    return tuple(out)


def run(
    spec: DrillSpec,
    system: DrillSystem,
    plan: Plan,
    folder: Path,
    *,
    checklist: Checklist | None,
    tabletop: bool = False,
    ask: Ask | None = None,
    participants: Sequence[str] = (),
    clock: Callable[[], datetime] = _utcnow,
    sleep: Callable[[float], None] = time.sleep,
    on_start: Callable[[str], str | None] | None = None,
    listener: Listener | None = None,
) -> DrillRecord:
    """Run (or, ``tabletop``, walk through) one drill; its record afterwards.

    Refusals before anything is injected (an incomplete checklist, no Go, a steady
    state that does not hold) raise :class:`DrillRefused` after journaling the refusal.
    """
    drill_id = files.new_drill_id(spec.name, clock())
    folder.mkdir(parents=True, exist_ok=True)
    with run_journal.open_writer(files.journal_path(folder, drill_id), create=True) as w:
        j = _Journal(w, clock, listener)
        j.write({
            "type": "start",
            "drill_id": drill_id,
            "drill": spec.name,
            "scenario": spec.scenario,
            "component": spec.component,
            "environment": system.environment,
            "tabletop": tabletop,
            "started_at": clock().isoformat(),
            "checklist": checklist.to_json() if checklist else None,
            "participants": list(participants),
            "spec": spec.model_dump(mode="json"),
        })  # fmt: skip
        if on_start is not None:
            incident_id = on_start(drill_id)  # the drill's [DRILL] incident, if one was declared
            if incident_id:
                j.write({"type": "incident", "incident_id": incident_id})
        refusal = _checklist_refusal(checklist)
        if refusal is not None:
            j.write({"type": "end", "status": str(DrillStatus.REFUSED), "reason": refusal,
                     "ended_at": clock().isoformat()})  # fmt: skip
            raise DrillRefused(f"drill {drill_id} refused: {refusal}")
        if tabletop:
            _tabletop(spec, system, plan, j, ask)
        else:
            _execute(spec, system, plan, j, folder, drill_id, sleep)
    return files.load(folder, drill_id, with_samples=True)


def _checklist_refusal(checklist: Checklist | None) -> str | None:
    if checklist is None:
        return "no Pre-Test Checklist (--checklist FILE)"
    undone = [i.item for i in checklist.items if not i.done or not i.by]
    if undone:
        return f"checklist item not done (or not signed by anyone): {undone[0]}"
    if not checklist.go:
        return "the Go/No-Go decision is No-Go"
    return None


def _tabletop(
    spec: DrillSpec, system: DrillSystem, plan: Plan, j: _Journal, ask: Ask | None
) -> None:
    for step in system.describe(spec):
        with j.step(step.name, step.phase, expected_seconds=step.expected_seconds) as out:
            out.append(f"would: {step.what}")
            note = ask(step) if ask is not None else ""
            if note:
                out.append(f"notes: {note}")
    v = verdicts_of(spec, plan, Measurements(), observed_until=None, tabletop=True)
    j.write({"type": "result", "measurements": Measurements().to_json(),
             "verdicts": [x.to_json() for x in v]})  # fmt: skip
    j.write({"type": "end", "status": str(DrillStatus.COMPLETED), "reason": "tabletop",
             "ended_at": j.clock().isoformat()})  # fmt: skip


def _execute(
    spec: DrillSpec,
    system: DrillSystem,
    plan: Plan,
    j: _Journal,
    folder: Path,
    drill_id: str,
    sleep: Callable[[float], None],
) -> None:
    status, reason = DrillStatus.COMPLETED, ""
    probe: Probe | None = None
    injected_at: datetime | None = None
    recovery_started_at: datetime | None = None
    restored_at: datetime | None = None
    normal_at: datetime | None = None
    tried_injection = False
    refused: DrillRefused | None = None
    try:
        with j.step("steady-state", "steady") as out:
            if spec.steady_state.health:
                out.append(_healthy_within(system, spec.steady_state.health_wait_seconds,
                                           j.clock, sleep))  # fmt: skip
            attempts = system.probes(spec, drill_id)
            sink = SampleFile(files.samples_path(folder, drill_id))
            probe = Probe(attempts, sink, clock=j.clock)
            probe.start()
            since = j.clock()
            sleep(spec.steady_state.seconds)
            samples = probe.samples()
            for name in spec.steady_state.probes:
                mine = [s for s in samples if s.probe == name and s.at >= since]
                rate = sum(s.ok for s in mine) / len(mine) if mine else 0.0
                if rate < spec.steady_state.min_success_rate:
                    raise DrillRefused(
                        f"steady state does not hold: the {name} probe succeeded"
                        f" {rate:.0%} < {spec.steady_state.min_success_rate:.0%}"
                    )
                out.append(f"{name} {rate:.0%} of {len(mine)}")
        with j.step("inject", "inject") as out:
            tried_injection = True
            out.append(system.inject(spec))
            injected_at = j.marker("injected_at")
        with j.step("recover", "recover") as out:
            recovery_started_at = j.marker("recovery_started_at")
            if spec.recovery.delay_seconds:
                out.append(f"waited {spec.recovery.delay_seconds:g}s first (the spec's delay)")
                sleep(spec.recovery.delay_seconds)
            if spec.recovery.kind != "automatic":
                out.append(system.recover(spec))
            else:
                out.append("automatic: the engines recover by themselves")
            if spec.recovery.restored_by == "recovery":
                restored_at = j.marker("service_restored_at")
            _wait_restored(spec, plan, probe, injected_at, j.clock, sleep, out)
        sleep(spec.settle_seconds)
    except DrillRefused as exc:
        status, reason, refused = DrillStatus.REFUSED, str(exc), exc
    except DrillAborted as exc:
        status, reason = DrillStatus.ABORTED, str(exc)
    except (KeyboardInterrupt, Terminated) as exc:
        status, reason = DrillStatus.ABORTED, _one_line(exc)
    except Exception as exc:  # a failed step ends the drill; normal is restored below
        status, reason = DrillStatus.FAILED, _one_line(exc)
    finally:
        with _signals_ignored():
            if tried_injection:
                try:
                    with j.step("restore-normal", "restore") as out:
                        out.append(system.restore_normal(spec))
                    normal_at = j.marker("normal_at")
                except Exception as exc:  # journaled by the step; the drill failed
                    if status is DrillStatus.COMPLETED:
                        status, reason = DrillStatus.FAILED, f"restore-normal: {_one_line(exc)}"
            observed_until = j.clock()
            if probe is not None:
                probe.stop()
            samples = probe.samples() if probe is not None else []
            found = _verify(system, spec, j, samples) if injected_at is not None else {}
            m = measure(
                samples,
                injected_at=injected_at,
                recovery_started_at=recovery_started_at,
                normal_at=normal_at,
                found=found,
            )
            if spec.recovery.restored_by == "recovery" and injected_at is not None:
                m = _restored_by_recovery(m, restored_at, injected_at)
            v = verdicts_of(spec, plan, m, observed_until=observed_until)
            j.write({"type": "result", "measurements": m.to_json(),
                     "verdicts": [x.to_json() for x in v]})  # fmt: skip
            j.write({"type": "end", "status": str(status), "reason": reason,
                     "ended_at": j.clock().isoformat()})  # fmt: skip
    if refused is not None:
        raise DrillRefused(f"drill {drill_id} refused: {reason}")


def _healthy_within(
    system: DrillSystem,
    seconds: float,
    clock: Callable[[], datetime],
    sleep: Callable[[float], None],
) -> str:
    """The health check's line once it passes; :class:`DrillRefused` when it has not
    passed ``seconds`` after the first try."""
    deadline = clock().timestamp() + seconds
    while True:
        healthy, detail = system.health()
        if healthy:
            return detail
        if clock().timestamp() >= deadline:
            raise DrillRefused(f"steady state does not hold: {detail}")
        sleep(min(HEALTH_RETRY_SECONDS, max(deadline - clock().timestamp(), 0.0)))


def _wait_restored(
    spec: DrillSpec,
    plan: Plan,
    probe: Probe | None,
    injected_at: datetime,
    clock: Callable[[], datetime],
    sleep: Callable[[float], None],
    out: list[str],
) -> None:
    if probe is None:
        return
    judged = sorted({jd.probe for jd in spec.judge})
    limit = abort_limit(spec, plan)
    while True:
        now = clock()
        samples = probe.samples()
        if all(_restored(samples, p, injected_at, now) for p in judged):
            took = (now - injected_at).total_seconds()
            out.append(f"{', '.join(judged)} serving again {took:.1f}s after the injection")
            return
        for p in judged:
            o = probe_outage(samples, p, injected_at)
            if abort_due(o, injected_at=injected_at, now=now, limit_seconds=limit) or (
                (now - injected_at).total_seconds() > limit
            ):
                raise DrillAborted(
                    f"abort condition: the {p} probe is not serving {limit:g}s after the injection"
                )
        sleep(POLL_SECONDS)


def _verify(
    system: DrillSystem, spec: DrillSpec, j: _Journal, samples: Sequence[Sample]
) -> dict[str, set[str]]:
    """Look for every acknowledged write after recovery; a probe whose check fails has
    no RPO (NOT MEASURED), never a guess."""
    found: dict[str, set[str]] = {}
    for name in spec.all_probes():
        refs = [s.ref for s in samples if s.probe == name and s.ok and s.ref is not None]
        try:
            with j.step(f"verify-{name}", "verify") as out:
                found[name] = system.found(name, refs)
                out.append(f"{len(found[name])} of {len(refs)} acknowledged writes found")
        except Exception:  # noqa: S112 (journaled as the step's failure: no RPO, no guess)
            continue
    return found


def _restored_by_recovery(
    m: Measurements, restored_at: datetime | None, injected_at: datetime
) -> Measurements:
    """A corruption leaves the service answering but wrong: it failed at the injection
    and is restored when the correction is done (never, when it was not), whatever the
    probes saw."""
    from dataclasses import replace

    rto = None if restored_at is None else (restored_at - injected_at).total_seconds()
    probes = {
        k: replace(o, first_failure_at=injected_at, restored_at=restored_at, outage_seconds=rto)
        for k, o in m.probes.items()
    }
    return replace(m, service_restored_at=restored_at, rto_seconds=rto, probes=probes)


def restore_normal(
    spec_of: Callable[[str], DrillSpec],
    system: DrillSystem,
    folder: Path,
    *,
    clock: Callable[[], datetime] = _utcnow,
) -> list[dict[str, Any]]:
    """Finish every drill of the folder whose runner died: run its restore-normal
    (idempotent), then end its journal as aborted. With none, nothing is done: the
    caller may still run the system's restore-normal on its own."""
    done: list[dict[str, Any]] = []
    for drill_id in files.drill_ids(folder):
        path = files.journal_path(folder, drill_id)
        rec = files.load(folder, drill_id)
        if rec.status is not DrillStatus.ABORTED or rec.reason != files.RUNNER_DIED:
            continue
        spec = spec_of(rec.drill)
        try:
            with run_journal.open_writer(path, create=False) as w:
                done.append(_finish_dead_run(_Journal(w, clock), spec, system, drill_id))
        except run_journal.RunBusy:
            continue  # its runner is alive after all
    return done


def _finish_dead_run(
    j: _Journal, spec: DrillSpec, system: DrillSystem, drill_id: str
) -> dict[str, Any]:
    ok, detail = True, ""
    try:
        with j.step("restore-normal", "restore") as out:
            detail = system.restore_normal(spec)
            out.append(detail)
        j.marker("normal_at")
        reason = "the runner died; normal operation restored by payapi drill restore-normal"
    except Exception as exc:  # journaled; the caller reports it
        ok, detail = False, _one_line(exc)
        reason = f"the runner died; restore-normal failed: {detail}"
    j.write({"type": "end", "status": str(DrillStatus.ABORTED), "reason": reason,
             "ended_at": j.clock().isoformat()})  # fmt: skip
    return {"drill_id": drill_id, "ok": ok, "detail": detail}
