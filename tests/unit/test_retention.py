"""GFS retention as a pure function: every rule with an injected clock, no I/O."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta

import pytest

from payapi.backup.retention import (
    RetentionPlan,
    decide,
    simulate,
    synthetic_daily_history,
)
from payapi.backup.retention_policy import (
    GFS,
    BackupRef,
    Forever,
    PointInTime,
    PolicyError,
    RetentionPolicy,
    SeriesPolicy,
    WalRef,
    Window,
    parse_rule,
    period_of,
    wal_position,
)
from payapi.core.plan import load_plan

DAY = timedelta(days=1)


def at(text: str) -> datetime:
    """``'2026-03-04'`` or ``'2026-03-04T05:00'`` as an aware UTC datetime."""
    t = datetime.fromisoformat(text)
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t


def full(
    bid: str,
    when: str | datetime,
    *,
    verified: bool = True,
    component: str = "database",
    wal: tuple[str, str] | None = None,
) -> BackupRef:
    finished = at(when) if isinstance(when, str) else when
    return BackupRef(
        backup_id=bid,
        component=component,
        type="full",
        finished_at=finished,
        verified_at=finished + timedelta(minutes=5) if verified else None,
        wal_start=wal[0] if wal else None,
        wal_end=wal[1] if wal else None,
    )


def daily(start: str, days: int, *, hour: int = 1, verified: bool = True) -> list[BackupRef]:
    first = at(start).replace(hour=hour)
    out = []
    for i in range(days):
        t = first + i * DAY
        out.append(full(f"d{t:%Y%m%d}", t, verified=verified))
    return out


def policy(text: str) -> RetentionPolicy:
    return RetentionPolicy.parse(text)


def kept(plan: RetentionPlan) -> set[str]:
    return {d.backup_id for d in plan.kept}


def removed(plan: RetentionPlan) -> set[str]:
    return {d.backup_id for d in plan.removed}


def keepers(plan: RetentionPlan, rule: str) -> set[str]:
    return {d.backup_id for d in plan.kept if rule in d.rules}


def run(
    backups: Sequence[BackupRef],
    text: str,
    now: datetime | None = None,
    wal: Iterable[WalRef] = (),
) -> RetentionPlan:
    when = now or max(b.finished_at for b in backups) + timedelta(hours=1)
    return decide(backups, list(wal), policy(text), when)


def assert_chains_whole(plan: RetentionPlan, backups: Sequence[BackupRef]) -> None:
    by_id = {b.backup_id: b for b in backups}
    keep = kept(plan)
    for bid in keep:
        parent = by_id[bid].parent
        while parent is not None:
            assert parent in keep, f"{bid} is kept but its ancestor {parent} is not"
            parent = by_id[parent].parent


# --------------------------------------------------------------------------- parsing


@pytest.mark.parametrize(
    "text",
    [
        "WINDOW(30d)",
        "GFS(daily=30d, weekly=90d, monthly=1y, annual=7y)",
        "GFS(weekly=90d)",
        "PITR(7d)",
        "FOREVER",
    ],
)
def test_rules_print_what_they_parse(text: str) -> None:
    assert str(parse_rule(text)) == text


def test_rule_parsing_is_lenient_about_case_spacing_and_tier_order() -> None:
    rule = parse_rule("gfs( annual=7y,daily=30d )")
    assert str(rule) == "GFS(daily=30d, annual=7y)"
    assert parse_rule("window(30d)") == Window.parse_args("30d")


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("WINDOW", "needs a duration"),
        ("WINDOW(thirty days)", "unparseable duration"),
        ("WINDOW(indefinite)", "positive duration"),
        ("GFS(hourly=1d)", "unknown retention tier 'hourly'"),
        ("GFS(daily=30d, daily=7d)", "appears twice"),
        ("GFS(daily)", "not tier=duration"),
        ("KEEP(3)", "unknown retention rule 'KEEP'"),
        ("FOREVER(1y)", "takes no arguments"),
        ("", "unparseable"),
    ],
)
def test_bad_rules_fail_with_one_line(text: str, fragment: str) -> None:
    with pytest.raises(PolicyError) as exc:
        parse_rule(text) if text else SeriesPolicy.parse(text)
    assert fragment in str(exc.value)
    assert "\n" not in str(exc.value)


def test_series_policy_round_trips_and_rejects_pitr_mixed_with_others() -> None:
    text = "WINDOW(30d) + GFS(daily=30d, weekly=90d, monthly=1y, annual=7y)"
    assert str(SeriesPolicy.parse(text)) == text
    with pytest.raises(PolicyError, match="PITR is the WAL rule"):
        SeriesPolicy.parse("PITR(7d) + WINDOW(7d)")
    with pytest.raises(PolicyError, match="appears twice"):
        SeriesPolicy.parse("WINDOW(7d) + WINDOW(30d)")


def test_policy_round_trips_and_names_bad_series() -> None:
    text = "database/full: WINDOW(30d) + GFS(daily=30d)\ndatabase/wal: PITR(7d)"
    assert str(RetentionPolicy.parse(text)) == text
    assert str(RetentionPolicy.parse(text.replace("\n", "; "))) == text
    with pytest.raises(PolicyError, match="component/type"):
        RetentionPolicy.parse("database: WINDOW(7d)")
    with pytest.raises(PolicyError, match="appears twice"):
        RetentionPolicy.parse("database/full: WINDOW(7d); database/full: WINDOW(8d)")


def test_policy_from_the_plan_follows_the_backup_table() -> None:
    pol = RetentionPolicy.from_plan(load_plan())
    gfs = "GFS(daily=30d, weekly=90d, monthly=1y, annual=7y)"
    assert str(pol.series["database/full"]) == f"WINDOW(30d) + {gfs}"
    assert str(pol.series["vault/full"]) == f"WINDOW(30d) + {gfs}"
    assert str(pol.series["vault/incremental"]) == "WINDOW(7d)"
    assert str(pol.series["database/wal"]) == "PITR(7d)"
    assert str(pol.series["redis/snapshot"]) == "WINDOW(7d)"
    assert str(pol.series["configuration/git"]) == "FOREVER"
    assert isinstance(pol.pitr("database"), PointInTime)
    assert pol.pitr("vault") is None
    assert set(pol.only("vault").series) == {"vault/full", "vault/incremental"}
    assert isinstance(pol.series["configuration/git"].rules[0], Forever)
    assert isinstance(pol.series["database/full"].rules[1], GFS)


def test_backup_refs_are_parsed_defensively() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        BackupRef("a", "database", "full", datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="not a WAL name or an LSN"):
        BackupRef("a", "database", "full", at("2026-01-01"), wal_start="nope")
    with pytest.raises(ValueError, match="names itself"):
        BackupRef("a", "database", "incremental", at("2026-01-01"), parent="a")
    with pytest.raises(ValueError, match="appears twice"):
        run([full("a", "2026-01-01"), full("a", "2026-01-02")], "database/full: WINDOW(1d)")


# --------------------------------------------------------------------------- periods


@pytest.mark.parametrize(
    ("tier", "when", "period"),
    [
        ("weekly", "2026-12-31", "2026-W53"),
        ("weekly", "2027-01-03", "2026-W53"),  # a Sunday: still ISO week 53 of 2026
        ("weekly", "2027-01-04", "2027-W01"),
        ("weekly", "2025-12-29", "2026-W01"),  # a Monday of December in 2026's week 1
        ("daily", "2026-03-04T23:59", "2026-03-04"),
        ("monthly", "2026-02-28T23:00", "2026-02"),
        ("annual", "2026-12-31T23:59", "2026"),
    ],
)
def test_periods(tier: str, when: str, period: str) -> None:
    assert period_of(tier, at(when)) == period


def test_periods_are_taken_in_utc() -> None:
    # 2026-01-01 00:30 in UTC+02:00 is still 2025-12-31 in UTC.
    local = datetime.fromisoformat("2026-01-01T00:30:00+02:00")
    assert period_of("daily", local) == "2025-12-31"
    assert period_of("annual", local) == "2025"


# --------------------------------------------------------------------------- tiers alone


def test_daily_tier_alone_keeps_the_newest_verified_per_day_for_its_span() -> None:
    backups = daily("2026-01-01", 60)
    # A second, later backup on the last day; and an earlier one that day is superseded.
    extra = full("late", "2026-03-01T20:00")
    plan = run([*backups, extra], "database/full: GFS(daily=10d)")
    assert keepers(plan, "daily") == {"late", *(f"d202602{d:02d}" for d in range(20, 29))}
    assert "d20260301" in removed(plan)
    reasons = " ".join(plan.decision("d20260301").reasons)
    assert "daily: late is newer in 2026-03-01" in reasons
    assert len(kept(plan)) == 10


def test_weekly_tier_alone_keeps_the_newest_of_each_iso_week() -> None:
    backups = daily("2026-01-01", 70)  # Thu 2026-01-01 .. Thu 2026-03-11
    plan = run(backups, "database/full: GFS(weekly=28d)")
    weekly = keepers(plan, "weekly")
    # Sundays close ISO weeks; the last (partial) week is kept by its newest day.
    assert weekly == {"d20260215", "d20260222", "d20260301", "d20260308", "d20260311"}
    for bid in weekly:
        assert any(
            r.startswith("weekly: newest verified of 2026-W") for r in plan.decision(bid).reasons
        )


def test_monthly_tier_alone_keeps_month_ends() -> None:
    backups = daily("2025-01-01", 400)  # .. 2026-02-04
    plan = run(backups, "database/full: GFS(monthly=6*30d)".replace("6*30d", "180d"))
    assert keepers(plan, "monthly") == {
        "d20250831",
        "d20250930",
        "d20251031",
        "d20251130",
        "d20251231",
        "d20260131",
        "d20260204",
    }


def test_annual_tier_alone_keeps_year_ends() -> None:
    backups = [full(f"y{y}-{m}", f"{y}-{m:02d}-15") for y in range(2018, 2027) for m in (6, 12)]
    plan = run(backups, "database/full: GFS(annual=3y)")
    # 3y is 3 x 365.25 days back from 2026-12-15: 2023-12-15 is 1096 days old (2024 is a
    # leap year), so the oldest annual kept is 2024's.
    assert keepers(plan, "annual") == {"y2026-12", "y2025-12", "y2024-12"}
    assert kept(plan) == {"y2026-12", "y2025-12", "y2024-12"}
    plan = run(backups, "database/full: GFS(annual=4y)")
    assert kept(plan) == {"y2026-12", "y2025-12", "y2024-12", "y2023-12"}


def test_tiers_are_ored_and_each_reason_is_given() -> None:
    backups = daily("2025-01-01", 500)  # .. 2026-05-15
    plan = run(backups, "database/full: GFS(daily=7d, weekly=28d, monthly=90d)")
    assert keepers(plan, "daily") == {f"d202605{d:02d}" for d in range(9, 16)}
    assert keepers(plan, "weekly") == {
        "d20260419",
        "d20260426",
        "d20260503",
        "d20260510",
        "d20260515",
    }
    assert keepers(plan, "monthly") == {"d20260228", "d20260331", "d20260430", "d20260515"}
    both = plan.decision("d20260515")
    assert both.rules >= {"daily", "weekly", "monthly"}
    everything = keepers(plan, "daily") | keepers(plan, "weekly") | keepers(plan, "monthly")
    assert kept(plan) == everything


def test_a_year_boundary_inside_iso_week_53() -> None:
    # 2026-12-28 (Mon) .. 2027-01-03 (Sun) is ISO week 2026-W53; 2027-01-04 starts W01.
    backups = daily("2026-12-20", 20)  # .. 2027-01-08
    plan = run(backups, "database/full: GFS(weekly=14d, monthly=30d, annual=30d)")
    assert keepers(plan, "weekly") == {"d20261227", "d20270103", "d20270108"}
    assert keepers(plan, "monthly") == {"d20261231", "d20270108"}
    assert keepers(plan, "annual") == {"d20261231", "d20270108"}
    reasons = plan.decision("d20270103").reasons
    assert "weekly: newest verified of 2026-W53" in reasons


def test_month_boundaries_in_utc_not_local_time() -> None:
    # 23:30 at UTC-05:00 on Jan 31 is Feb 1 in UTC: the January winner is the earlier one.
    jan = full("jan", datetime.fromisoformat("2026-01-31T10:00:00-05:00"))
    feb = full("feb", datetime.fromisoformat("2026-01-31T23:30:00-05:00"))
    plan = run([jan, feb], "database/full: GFS(monthly=1y)")
    assert "monthly: newest verified of 2026-01" in plan.decision("jan").reasons
    assert "monthly: newest verified of 2026-02" in plan.decision("feb").reasons


# --------------------------------------------------------------------------- verification


def test_unverified_backups_never_count_for_a_tier_but_the_newest_is_always_kept() -> None:
    backups = daily("2026-01-01", 20)
    unverified = [full(f"u{i}", at("2026-01-21T01:00") + i * DAY, verified=False) for i in range(3)]
    plan = run([*backups, *unverified], "database/full: GFS(daily=30d)")
    # The tiers count back from the newest verified (2026-01-20) and keep verified only.
    assert keepers(plan, "daily") == {b.backup_id for b in backups}
    assert "u2" in keepers(plan, "newest")
    assert "d20260120" in keepers(plan, "newest-verified")
    # Newer than the newest verified: waiting for verification, so kept.
    assert keepers(plan, "pending") == {"u0", "u1", "u2"}


def test_an_unverified_backup_loses_its_period_to_an_older_verified_one() -> None:
    ok = full("ok", "2026-03-04T01:00")
    bad = full("bad", "2026-03-04T13:00", verified=False)
    newer = full("newer", "2026-03-05T01:00")
    plan = run([ok, bad, newer], "database/full: GFS(daily=7d)")
    assert kept(plan) == {"ok", "newer"}
    assert "gfs: not verified (tiers count verified backups only)" in plan.decision("bad").reasons


def test_no_verified_backup_at_all_keeps_only_the_newest_under_gfs() -> None:
    backups = daily("2026-01-01", 5, verified=False)
    plan = run(backups, "database/full: GFS(daily=30d)")
    assert kept(plan) == {"d20260105"}
    assert any("no verified backup" in n for n in plan.notes)


def test_window_keeps_unverified_recent_backups() -> None:
    backups = daily("2026-01-01", 10, verified=False)
    plan = run(backups, "database/full: WINDOW(3d)")
    assert kept(plan) == {"d20260108", "d20260109", "d20260110"}
    assert "window: older than 3d" in " ".join(plan.decision("d20260107").reasons)


# --------------------------------------------------------------------------- the clock


GFS_PLAN = "database/full: WINDOW(30d) + GFS(daily=30d, weekly=90d, monthly=1y, annual=7y)"


def test_a_stalled_backup_job_purges_nothing_the_tiers_kept() -> None:
    backups = daily("2025-01-01", 365)  # the job stopped after 2025-12-31
    on_the_day = run(backups, GFS_PLAN, now=at("2026-01-01"))
    sixty_days_later = run(backups, GFS_PLAN, now=at("2026-01-01") + 60 * DAY)
    years_later = run(backups, GFS_PLAN, now=at("2030-01-01"))
    assert kept(sixty_days_later) == kept(on_the_day)
    assert kept(years_later) == kept(on_the_day)
    assert len(keepers(sixty_days_later, "daily")) == 30
    assert sixty_days_later.anchors["database/full"] == at("2025-12-31T01:00")


def test_the_anchor_is_the_newest_verified_backup_not_the_newest() -> None:
    backups = daily("2026-01-01", 40)
    late = [full(f"late{i}", at("2026-03-01") + i * DAY, verified=False) for i in range(40)]
    plan = run([*backups, *late], "database/full: WINDOW(7d) + GFS(daily=7d)")
    assert plan.anchors["database/full"] == at("2026-02-09T01:00")
    # The verification job stalled: nothing after the last verified backup is removed.
    assert {b.backup_id for b in late} <= kept(plan)
    assert keepers(plan, "daily") == {f"d202602{d:02d}" for d in range(3, 10)}


def test_backups_stamped_after_now_are_kept() -> None:
    backups = [full("a", "2026-01-01"), full("b", "2026-01-10", verified=False)]
    plan = decide(backups, [], policy("database/full: GFS(daily=1d)"), at("2026-01-05"))
    assert "future" in plan.decision("b").rules


def test_decide_is_pure_and_refuses_a_naive_now() -> None:
    backups = daily("2026-01-01", 50)
    pol = policy(GFS_PLAN)
    first = decide(backups, [], pol, at("2026-03-01"))
    second = decide(list(reversed(backups)), [], pol, at("2026-03-01"))
    assert first == second
    with pytest.raises(ValueError, match="timezone-aware"):
        decide(backups, [], pol, datetime(2026, 3, 1))


def test_unmanaged_series_are_kept() -> None:
    snap = BackupRef("s1", "redis", "snapshot", at("2020-01-01"))
    plan = run([snap, full("f", "2026-01-01")], "database/full: WINDOW(1d)")
    assert plan.decision("s1").keep
    assert plan.decision("s1").reasons == ["unmanaged: the policy has no rule for redis/snapshot"]


def test_forever_keeps_everything() -> None:
    backups = [
        BackupRef(f"g{i}", "configuration", "git", at("2010-01-01") + i * 400 * DAY)
        for i in range(5)
    ]
    plan = run(backups, "configuration/git: FOREVER")
    assert len(kept(plan)) == 5


# --------------------------------------------------------------------------- chains


def incr(bid: str, parent: str, when: str | datetime, *, verified: bool = True) -> BackupRef:
    finished = at(when) if isinstance(when, str) else when
    return BackupRef(
        backup_id=bid,
        component="vault",
        type="incremental",
        finished_at=finished,
        parent=parent,
        verified_at=finished if verified else None,
    )


VAULT = "vault/full: WINDOW(3d) + GFS(daily=3d, monthly=1y)\nvault/incremental: WINDOW(2d)"


def vault_history() -> list[BackupRef]:
    """A full each day at 00:00 for 10 days and hourly incrementals chained on it."""
    out: list[BackupRef] = []
    for day in range(10):
        base = at("2026-01-01") + day * DAY
        fid = f"f{day}"
        out.append(full(fid, base, component="vault"))
        parent = fid
        for hour in range(1, 24):
            iid = f"f{day}-i{hour}"
            out.append(incr(iid, parent, base + timedelta(hours=hour)))
            parent = iid
    return out


def test_a_kept_incremental_keeps_its_whole_chain() -> None:
    history = vault_history()
    plan = run(history, VAULT)
    assert_chains_whole(plan, history)
    # 2 days of incrementals back from 2026-01-10 23:00 reach into day 8's chain.
    assert plan.decision("f8-i1").keep
    assert "chain" in plan.decision("f8-i1").rules
    assert "chain: parent of kept f8-i23" in plan.decision("f8-i22").reasons[-1]
    assert plan.decision("f8").keep


def test_an_incremental_whose_full_is_removed_is_removed_too() -> None:
    history = vault_history()
    plan = run(history, VAULT)
    # Day 3's full is outside every rule (and not a month end): it and its chain go.
    assert not plan.decision("f3").keep
    assert {f"f3-i{h}" for h in range(1, 24)} <= removed(plan)
    for d in plan.removed:
        if d.type == "incremental":
            assert d.reasons[0].startswith(("expired", "orphan"))


def test_orphan_incrementals_are_removed_even_when_new() -> None:
    history = [
        full("f0", "2026-01-01", component="vault"),
        incr("i1", "f0", "2026-01-01T01:00"),
        incr("lost1", "gone", "2026-01-01T02:00"),
        incr("lost2", "lost1", "2026-01-01T03:00"),
    ]
    plan = run(history, VAULT)
    assert kept(plan) == {"f0", "i1"}
    assert plan.decision("lost1").reasons == [
        "orphan: parent gone of lost1 is not in the repository"
    ]
    assert plan.decision("lost2").reasons == [
        "orphan: parent gone of lost1 is not in the repository"
    ]
    assert "i1" in keepers(plan, "newest")


def test_a_chain_that_loops_is_broken_not_followed_forever() -> None:
    a = incr("a", "b", "2026-01-01T01:00")
    b = incr("b", "a", "2026-01-01T02:00")
    plan = run([a, b, full("f", "2026-01-01", component="vault")], VAULT)
    assert removed(plan) == {"a", "b"}
    assert "loops" in plan.decision("a").reasons[0]


def test_gfs_promotes_a_full_whose_incrementals_expired() -> None:
    history = vault_history()
    plan = run(history, "vault/full: GFS(daily=30d)\nvault/incremental: WINDOW(1h)")
    assert {f"f{d}" for d in range(10)} <= kept(plan)
    assert {f"f{d}-i{h}" for d in range(9) for h in range(1, 24)} <= removed(plan)
    assert_chains_whole(plan, history)


# --------------------------------------------------------------------------- WAL


def seg(n: int, timeline: int = 1) -> str:
    return f"{timeline:08X}{n >> 8:08X}{n & 0xFF:08X}"


def test_wal_positions() -> None:
    assert wal_position("000000010000000A000000FF") == (10, 255)
    assert wal_position("A/FF000028") == (10, 255)
    assert wal_position("000000010000000000000003.partial") == (0, 3)
    assert wal_position("000000010000000000000003.00000028.backup") == (0, 3)
    assert wal_position("00000002.history") is None
    assert wal_position("garbage") is None
    assert seg(0x1FF) == "00000001000000010000FFFF"[:16] + "000000FF"


WAL_PLAN = "database/full: WINDOW(3d)\ndatabase/wal: PITR(7d)"


def db_history() -> list[BackupRef]:
    """A full each day for 20 days; day d's backup needs WAL segments 10d..10d+2."""
    return [
        full(f"b{d}", at("2026-01-01") + d * DAY, wal=(seg(10 * d), seg(10 * d + 2)))
        for d in range(20)
    ]


def test_wal_is_kept_for_the_pitr_window_from_its_base_backup() -> None:
    history = db_history()
    wal = [WalRef(seg(n)) for n in range(0, 200)]
    plan = run(history, WAL_PLAN, wal=wal)
    # Anchor 2026-01-20; window start 2026-01-13 = b12, the base backup.
    assert "pitr: base backup of the 7d point-in-time window" in plan.decision("b12").reasons
    assert plan.decision("b12").keep and not plan.decision("b11").keep
    assert set(plan.wal_keep) == {seg(n) for n in range(120, 200)}
    assert set(plan.wal_remove) == {seg(n) for n in range(0, 120)}


def test_wal_needed_by_each_kept_backup_is_kept() -> None:
    history = db_history()
    history[2] = BackupRef(  # a monthly-style keeper far outside the PITR window
        "keeper",
        "database",
        "archive",
        history[2].finished_at,
        verified_at=history[2].verified_at,
        wal_start=seg(20),
        wal_end=seg(22),
    )
    wal = [WalRef(seg(n)) for n in range(0, 200)]
    plan = run(history, WAL_PLAN + "\ndatabase/archive: FOREVER", wal=wal)
    assert plan.decision("keeper").keep
    assert {seg(20), seg(21), seg(22)} <= set(plan.wal_keep)
    assert seg(19) in plan.wal_remove and seg(23) in plan.wal_remove


def test_wal_base_prefers_a_verified_backup_and_falls_back_to_the_oldest() -> None:
    history = db_history()
    history[12] = full("b12", history[12].finished_at, verified=False, wal=(seg(120), seg(122)))
    plan = run(history, WAL_PLAN, wal=[WalRef(seg(n)) for n in range(200)])
    assert "pitr" in plan.decision("b11").rules
    assert min(plan.wal_keep) == seg(110)

    short = db_history()[:3]  # history shorter than the window: PITR from the oldest
    plan = run(short, WAL_PLAN, wal=[WalRef(seg(n)) for n in range(40)])
    assert "pitr" in plan.decision("b0").rules
    assert plan.wal_remove == ()


def test_history_files_and_unknown_names_are_kept_and_noted() -> None:
    history = db_history()
    wal = [
        WalRef(seg(1)),
        WalRef("00000002.history"),
        WalRef("00000001000000000000000A.00000028.backup"),
        WalRef("strange-file"),
    ]
    plan = run(history, WAL_PLAN, wal=wal)
    assert plan.wal_remove == (seg(1), "00000001000000000000000A.00000028.backup")
    assert "00000002.history" in plan.wal_keep and "strange-file" in plan.wal_keep
    assert any("unrecognised" in n for n in plan.notes)


def test_wal_of_a_component_without_pitr_or_ranges_is_kept() -> None:
    history = daily("2026-01-01", 10)  # no wal_start recorded
    wal = [WalRef(seg(n)) for n in range(5)]
    plan = run(history, WAL_PLAN, wal=wal)
    assert plan.wal_remove == ()
    assert any("no backup records a WAL range" in n for n in plan.notes)
    plan = run(history, "database/full: WINDOW(3d)", wal=wal)
    assert plan.wal_remove == ()


def test_wal_timelines_are_ordered_by_position() -> None:
    history = db_history()
    wal = [WalRef(seg(n, timeline=2)) for n in range(110, 130)]
    plan = run(history, WAL_PLAN, wal=wal)
    assert set(plan.wal_remove) == {seg(n, timeline=2) for n in range(110, 120)}


# --------------------------------------------------------------------------- simulate


def test_simulate_ten_years_of_dailies() -> None:
    pol = RetentionPolicy.from_plan(load_plan()).only("database")
    now = at("2036-06-15T12:00")
    history = synthetic_daily_history(3650, now)
    out = simulate(history, pol, now)
    assert out["kept"] + out["removed"] == 3650
    tiers = out["tiers"]
    assert tiers["daily"]["kept"] == 30
    assert 13 <= tiers["weekly"]["kept"] <= 14
    assert 12 <= tiers["monthly"]["kept"] <= 13
    assert 7 <= tiers["annual"]["kept"] <= 8
    # Overlaps are counted once: kept is the union, each tier adds what shorter ones did not.
    assert out["kept"] == sum(t["adds"] for t in tiers.values())
    assert 50 <= out["kept"] <= 60
    assert tiers["annual"]["oldest"].startswith("2029-12-31")
