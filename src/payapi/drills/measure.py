"""The RTO and RPO a drill achieved, from its probes' samples: pure arithmetic.

No clock and no I/O: every time comes in as an argument, so the rules below are tested
with made-up samples (``tests/unit/test_drill_measure.py``).

- A probe's **outage** starts at its first failed sample sent at or after the injection.
  It is **restored** at the answer of its first successful sample sent after that first
  failure. Its outage figure is ``restored_at - injected_at``; 0 when the probe never
  failed after the injection (it kept serving); unknown (None) when it failed and never
  came back, or sent nothing after the injection.
- **detected_at**: the earliest of the first failed sample of any probe and the first
  alert, when either is at or after the injection.
- **RTO** = ``service_restored_at - injected_at`` of the headline probe (the end-to-end
  payment through the global endpoint). When that probe never failed, the service was
  never lost: ``service_restored_at`` is the injection itself and the RTO is 0.
- **RPO** of a probe: its acknowledged writes (successful samples with a ``ref``) that
  are missing after recovery, counted, and the time their acknowledgements span (0 when
  none is missing).
- **Verdict** per judged component, against ``dr-plan.yaml``: ``MET`` when every measured
  figure is within its objective and both were measured, ``BREACHED`` when any measured
  figure exceeds its objective (an outage still open after the objective is a breach even
  though its end was never seen), ``NOT MEASURED`` otherwise.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime

from payapi.drills.model import Measurements, ProbeOutage, Rpo, Sample, Verdict, VerdictKind

__all__ = [
    "HEADLINE_PROBE",
    "abort_due",
    "detected_at",
    "judge",
    "measure",
    "overall",
    "probe_outage",
    "rpo_of",
]

HEADLINE_PROBE = "payments"


def _of(samples: Iterable[Sample], probe: str) -> list[Sample]:
    return sorted((s for s in samples if s.probe == probe), key=lambda s: s.at)


def probe_outage(samples: Iterable[Sample], probe: str, injected_at: datetime) -> ProbeOutage:
    after = [s for s in _of(samples, probe) if s.at >= injected_at]
    first_fail = next((s for s in after if not s.ok), None)
    restored = None
    if first_fail is not None:
        restored = next((s for s in after if s.ok and s.at > first_fail.at), None)
    if not after:
        outage: float | None = None
    elif first_fail is None:
        outage = 0.0
    elif restored is None:
        outage = None
    else:
        outage = (restored.end - injected_at).total_seconds()
    return ProbeOutage(
        probe=probe,
        attempts=len(after),
        successes=sum(1 for s in after if s.ok),
        first_failure_at=first_fail.end if first_fail else None,
        restored_at=restored.end if restored else None,
        outage_seconds=outage,
    )


def rpo_of(samples: Iterable[Sample], probe: str, found: Iterable[str]) -> Rpo:
    """The probe's acknowledged writes, and which of them ``found`` (the refs that exist
    after recovery) lacks."""
    acked = [s for s in _of(samples, probe) if s.ok and s.ref is not None]
    present = set(found)
    missing = sorted((s for s in acked if s.ref not in present), key=lambda s: s.end)
    if not missing:
        return Rpo(acknowledged=len(acked), missing=0, window_seconds=0.0)
    first, last = missing[0].end, missing[-1].end
    return Rpo(
        acknowledged=len(acked),
        missing=len(missing),
        window_seconds=(last - first).total_seconds(),
        first_missing_at=first,
        last_missing_at=last,
        missing_refs=tuple(str(s.ref) for s in missing),
    )


def detected_at(
    outages: Iterable[ProbeOutage], alerts: Iterable[datetime], injected_at: datetime
) -> datetime | None:
    times = [o.first_failure_at for o in outages if o.first_failure_at is not None]
    times += [a for a in alerts if a >= injected_at]
    return min(times, default=None)


def measure(
    samples: Sequence[Sample],
    *,
    injected_at: datetime | None,
    recovery_started_at: datetime | None = None,
    normal_at: datetime | None = None,
    alerts: Iterable[datetime] = (),
    found: Mapping[str, Iterable[str]] | None = None,
    headline: str = HEADLINE_PROBE,
) -> Measurements:
    """Every figure the samples allow. ``found`` maps a probe to the refs of its writes
    that exist after recovery; a probe not in it has no RPO (not checked)."""
    rpo_by_probe = {p: rpo_of(samples, p, refs) for p, refs in (found or {}).items()}
    if injected_at is None:  # nothing was injected (refused, or tabletop): no figures
        return Measurements(normal_at=normal_at, rpo_by_probe=rpo_by_probe)
    names = sorted({s.probe for s in samples})
    outages = {p: probe_outage(samples, p, injected_at) for p in names}
    head = outages.get(headline)
    restored = head.restored_at if head else None
    if head is not None and head.outage_seconds == 0.0:
        restored = injected_at  # it never failed: the service was never lost (RTO 0)
    return Measurements(
        injected_at=injected_at,
        detected_at=detected_at(outages.values(), alerts, injected_at),
        recovery_started_at=recovery_started_at,
        service_restored_at=restored,
        normal_at=normal_at,
        rto_seconds=head.outage_seconds if head else None,
        rpo=rpo_by_probe.get(headline),
        probes=outages,
        rpo_by_probe=rpo_by_probe,
    )


def judge(
    component: str,
    probe: str,
    *,
    rto_objective: float | None,
    rpo_objective: float | None,
    measurements: Measurements,
    observed_until: datetime | None = None,
) -> Verdict:
    """The verdict of one component, measured by one probe. ``observed_until``: when
    the probes stopped; an outage still open then and longer than the objective is a
    breach with a lower-bound margin."""
    outage = measurements.probes.get(probe)
    rpo = measurements.rpo_by_probe.get(probe)
    rto = outage.outage_seconds if outage else None
    notes: list[str] = []

    rto_margin: float | None = None
    if rto_objective is None:
        rto_v = VerdictKind.NOT_MEASURED
        notes.append("no RTO objective in the plan")
    elif rto is not None:
        rto_margin = rto_objective - rto
        rto_v = VerdictKind.MET if rto <= rto_objective else VerdictKind.BREACHED
        if outage is not None and outage.first_failure_at is None:
            notes.append(f"the {probe} probe never failed")
    elif (
        outage is not None
        and outage.first_failure_at is not None
        and observed_until is not None
        and measurements.injected_at is not None
        and (open_for := (observed_until - measurements.injected_at).total_seconds())
        > rto_objective
    ):
        rto_v = VerdictKind.BREACHED
        rto_margin = rto_objective - open_for
        notes.append(f"not restored within {open_for:.1f}s")
    else:
        rto_v = VerdictKind.NOT_MEASURED
        notes.append(f"the {probe} probe did not measure a recovery")

    rpo_margin: float | None = None
    if rpo_objective is None or rpo is None:
        rpo_v = VerdictKind.NOT_MEASURED
        notes.append("no RPO objective in the plan" if rpo is not None else "RPO not checked")
    else:
        rpo_margin = rpo_objective - rpo.window_seconds
        rpo_v = VerdictKind.MET if rpo.window_seconds <= rpo_objective else VerdictKind.BREACHED
        if rpo.missing:
            notes.append(f"{rpo.missing} of {rpo.acknowledged} acknowledged writes missing")

    return Verdict(
        component=component,
        probe=probe,
        rto_objective_seconds=rto_objective,
        rpo_objective_seconds=rpo_objective,
        rto_seconds=rto,
        rpo_window_seconds=rpo.window_seconds if rpo else None,
        rto_verdict=rto_v,
        rpo_verdict=rpo_v,
        verdict=overall((rto_v, rpo_v)),
        margin_seconds=rto_margin if rto_margin is not None else rpo_margin,
        detail="; ".join(notes),
    )


def overall(kinds: Iterable[VerdictKind]) -> VerdictKind:
    kinds = list(kinds)
    if VerdictKind.BREACHED in kinds:
        return VerdictKind.BREACHED
    if kinds and all(k is VerdictKind.MET for k in kinds):
        return VerdictKind.MET
    return VerdictKind.NOT_MEASURED


def abort_due(
    outage: ProbeOutage | None, *, injected_at: datetime, now: datetime, limit_seconds: float
) -> bool:
    """True when the probe is down and has not come back ``limit_seconds`` after the
    injection (the spec's abort condition, e.g. 2x the component's RTO objective)."""
    if outage is None or outage.first_failure_at is None or outage.restored_at is not None:
        return False
    return (now - injected_at).total_seconds() > limit_seconds
