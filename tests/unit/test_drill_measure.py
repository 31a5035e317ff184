"""The RTO/RPO arithmetic of a drill with made-up samples and an injected clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from payapi.drills.measure import abort_due, judge, measure, probe_outage, rpo_of
from payapi.drills.model import DrillRecord, DrillStatus, Measurements, Sample, VerdictKind

T0 = datetime(2026, 12, 7, 10, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def s(probe: str, sent: float, ok: bool, ref: str | None = None, took: float = 0.1) -> Sample:
    return Sample(probe, at(sent), at(sent + took), ok, ref if ok else None, "" if ok else "503")


def payments(pattern: str, start: float = 0.0, step: float = 1.0) -> list[Sample]:
    """One sample per character: ``.`` acknowledged (ref p<i>), ``x`` failed."""
    return [s("payments", start + i * step, c == ".", f"p{i}") for i, c in enumerate(pattern)]


def test_the_outage_runs_from_the_injection_to_the_first_success_after_the_first_failure() -> None:
    samples = payments("...xxxx...")  # injected at 2.5 s; fails from 3 s; back at 7 s
    o = probe_outage(samples, "payments", at(2.5))
    assert o.first_failure_at == at(3.1)
    assert o.restored_at == at(7.1)
    assert o.outage_seconds == 7.1 - 2.5
    assert (o.attempts, o.successes) == (7, 3)


def test_a_probe_that_never_failed_measures_zero_and_one_that_never_came_back_none() -> None:
    assert probe_outage(payments("....."), "payments", at(1.5)).outage_seconds == 0.0
    never = probe_outage(payments("..xxx"), "payments", at(1.5))
    assert never.outage_seconds is None and never.first_failure_at is not None
    assert probe_outage(payments(".."), "payments", at(5)).outage_seconds is None  # no samples


def test_failures_before_the_injection_do_not_count() -> None:
    o = probe_outage(payments("x......"), "payments", at(2.0))
    assert o.first_failure_at is None and o.outage_seconds == 0.0


def test_rpo_counts_the_missing_acknowledged_writes_and_their_span() -> None:
    samples = payments("..........")
    none_missing = rpo_of(samples, "payments", {f"p{i}" for i in range(10)})
    assert (none_missing.acknowledged, none_missing.missing, none_missing.window_seconds) == (
        10,
        0,
        0.0,
    )
    lost = rpo_of(samples, "payments", {f"p{i}" for i in range(10)} - {"p4", "p5", "p7"})
    assert (lost.missing, lost.missing_refs) == (3, ("p4", "p5", "p7"))
    assert lost.window_seconds == 3.0
    assert (lost.first_missing_at, lost.last_missing_at) == (at(4.1), at(7.1))


def test_measure_takes_the_headline_from_payments_and_detection_from_any_probe() -> None:
    samples = [*payments("....xxx..."), s("tokens", 2.6, False), s("tokens", 3.6, True, "t")]
    m = measure(
        samples,
        injected_at=at(2.5),
        recovery_started_at=at(3.0),
        normal_at=at(12),
        alerts=[at(1.0), at(2.65)],  # an alert before the injection is not a detection
        found={"payments": {f"p{i}" for i in range(10)}},
    )
    assert m.detected_at == at(2.65)
    assert m.service_restored_at == at(7.1)
    assert m.rto_seconds is not None and abs(m.rto_seconds - 4.6) < 1e-9
    assert m.rpo is not None and m.rpo.missing == 0
    assert m.probes["tokens"].outage_seconds is not None
    assert "tokens" not in m.rpo_by_probe  # not checked: no RPO, never a guess


def test_judge_met_breached_and_not_measured() -> None:
    m = measure(payments("..xxx....."), injected_at=at(1.5), found={"payments": {"p0", "p1"}})
    # p5..p9 were acknowledged after recovery and are missing: 4 s of acknowledgements
    v = judge("database", "payments", rto_objective=60, rpo_objective=0, measurements=m)
    assert v.rto_verdict is VerdictKind.MET and v.rpo_verdict is VerdictKind.BREACHED
    assert v.verdict is VerdictKind.BREACHED
    assert v.margin_seconds is not None and abs(v.margin_seconds - (60 - 3.6)) < 1e-9
    ok = measure(payments("..xxx....."), injected_at=at(1.5), found={"payments": set(
        f"p{i}" for i in range(10))})  # fmt: skip
    met = judge("database", "payments", rto_objective=60, rpo_objective=900, measurements=ok)
    assert met.verdict is VerdictKind.MET
    slow = judge("database", "payments", rto_objective=2, rpo_objective=900, measurements=ok)
    assert slow.verdict is VerdictKind.BREACHED and slow.margin_seconds is not None
    assert slow.margin_seconds < 0
    unchecked = judge("redis", "tokens", rto_objective=60, rpo_objective=900, measurements=ok)
    assert unchecked.verdict is VerdictKind.NOT_MEASURED  # no tokens probe at all
    no_objective = judge("kubernetes", "payments", rto_objective=None, rpo_objective=None,
                         measurements=ok)  # fmt: skip
    assert no_objective.verdict is VerdictKind.NOT_MEASURED


def test_an_outage_still_open_past_its_objective_is_a_breach_with_a_lower_bound() -> None:
    m = measure(payments("..xxxx"), injected_at=at(1.5), found={"payments": {"p0", "p1"}})
    open_ = judge(
        "redis", "payments", rto_objective=3, rpo_objective=60, measurements=m,
        observed_until=at(6),
    )  # fmt: skip
    assert open_.verdict is VerdictKind.BREACHED and open_.rto_seconds is None
    assert open_.margin_seconds == 3 - 4.5 and "not restored" in open_.detail
    early = judge(
        "redis", "payments", rto_objective=30, rpo_objective=60, measurements=m,
        observed_until=at(6),
    )  # fmt: skip
    assert early.rto_verdict is VerdictKind.NOT_MEASURED


def test_abort_is_due_when_the_probe_stays_down_past_the_limit() -> None:
    down = probe_outage(payments("..xxxx"), "payments", at(1.5))
    assert not abort_due(down, injected_at=at(1.5), now=at(5), limit_seconds=10)
    assert abort_due(down, injected_at=at(1.5), now=at(12), limit_seconds=10)
    back = probe_outage(payments("..xx.."), "payments", at(1.5))
    assert not abort_due(back, injected_at=at(1.5), now=at(60), limit_seconds=10)


def test_nothing_injected_means_no_figures() -> None:
    m = measure(payments("...."), injected_at=None, normal_at=at(4))
    assert m.rto_seconds is None and m.detected_at is None and m.probes == {}


def test_a_record_round_trips_through_json() -> None:
    m = measure(payments("..xx.."), injected_at=at(1.5), found={"payments": {"p0"}})
    v = judge("database", "payments", rto_objective=60, rpo_objective=900, measurements=m)
    rec = DrillRecord(
        drill_id="d1",
        drill="db-failure",
        scenario="failure",
        component="db",
        environment="lab",
        tabletop=False,
        status=DrillStatus.COMPLETED,
        started_at=T0,
        ended_at=at(10),
        measurements=m,
        verdicts=(v,),
    )
    back = DrillRecord.from_json(rec.to_json())
    assert back.to_json() == rec.to_json()
    assert Measurements.from_json(m.to_json()).to_json() == m.to_json()
