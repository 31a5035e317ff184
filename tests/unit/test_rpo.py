"""The RPO check's decisions: pure assess() over hand-made observations, injected clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from payapi.core.plan import load_plan
from payapi.ops.rpo import (
    ArchiverObservation,
    BackupObservation,
    Observations,
    Status,
    assess,
    human_duration,
    report,
)

NOW = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)
PLAN = load_plan()

_ids = iter(range(10_000))


def backup(
    component: str,
    age: timedelta,
    type_: str = "full",
    *,
    verified: bool = True,
    duration: timedelta = timedelta(seconds=30),
) -> BackupObservation:
    finished = NOW - age
    return BackupObservation(
        backup_id=f"b{next(_ids)}-{component}-{type_}",
        component=component,
        type=type_,
        started_at=finished - duration,
        finished_at=finished,
        verified_at=finished + timedelta(seconds=5) if verified else None,
    )


def archiving_ok(last_archived_ago: timedelta, *, pending: bool = True) -> ArchiverObservation:
    # Segment 0x10 archived; the insert position is in segment 0x11.
    insert = "0/11000028" if not pending else "0/11002000"
    return ArchiverObservation(
        reachable=True,
        archive_mode="on",
        archived_count=16,
        last_archived_wal="000000010000000000000010",
        last_archived_at=NOW - last_archived_ago,
        insert_lsn=insert,
    )


def healthy(**overrides: object) -> Observations:
    """Everything fresh: every managed component well within its RPO."""
    fields: dict[str, object] = {
        "observed_at": NOW,
        "backups": (
            backup("vault", timedelta(minutes=1), "incremental"),
            backup("vault", timedelta(hours=5), "full"),
            backup("redis", timedelta(minutes=2), "snapshot"),
            backup("database", timedelta(hours=3), "full"),
            backup("configuration", timedelta(minutes=3), "git"),
        ),
        "wal_newest": "000000010000000000000010",
        "wal_newest_at": NOW - timedelta(seconds=40),
        "database": archiving_ok(timedelta(seconds=40)),
    }
    fields.update(overrides)
    return Observations(**fields)  # type: ignore[arg-type]


def by_name(obs: Observations, now: datetime = NOW) -> dict[str, object]:
    return {s.name: s for s in assess(PLAN, obs, now)}


def status(obs: Observations, name: str, now: datetime = NOW) -> Status:
    return next(s.status for s in assess(PLAN, obs, now) if s.name == name)


def test_every_component_of_the_plan_gets_one_status_in_plan_order() -> None:
    statuses = assess(PLAN, healthy(), NOW)
    assert [s.name for s in statuses] == list(PLAN.components)


def test_healthy_platform_is_ok_and_unmanaged_components_say_so() -> None:
    got = {s.name: s for s in assess(PLAN, healthy(), NOW)}
    for name in ("payment-eapi", "payment-sapi", "vault", "redis", "database"):
        assert got[name].status is Status.OK, (name, got[name].reasons)
    assert got["monitoring"].status is Status.NOT_MANAGED
    assert "does not operate" in got["monitoring"].reasons[0]
    for name in ("kubernetes", "configuration", "container-images"):
        assert got[name].status is Status.NOT_MANAGED
        assert got[name].reasons == ("the plan sets no RPO for it",)
    # NOT MANAGED still reports what exists: the configuration's newest backup.
    assert got["configuration"].last_backup is not None


# ---------------------------------------------------------------- vault (backups of any type)


@pytest.mark.parametrize(
    ("age", "expected"),
    [
        (timedelta(minutes=2), Status.OK),
        (timedelta(minutes=3, seconds=30), Status.OK),  # 4m of exposure: exactly 80 %
        (timedelta(minutes=4, seconds=15), Status.AT_RISK),
        (timedelta(minutes=4, seconds=29), Status.AT_RISK),  # 4m59s: still within the RPO
        (timedelta(minutes=4, seconds=31), Status.VIOLATION),  # 5m01s > 5m
        (timedelta(hours=2), Status.VIOLATION),
    ],
)
def test_vault_exposure_against_its_5m_rpo(age: timedelta, expected: Status) -> None:
    # The backup took 30 s: its recovery point is when it started.
    obs = healthy(
        backups=(
            backup("vault", age, "incremental"),
            backup("database", timedelta(hours=1)),
        )
    )
    assert status(obs, "vault") is expected


def test_vault_turns_violation_when_its_last_backup_is_older_than_its_rpo_as_time_passes() -> None:
    obs = healthy()  # vault incremental 1 min old (started 1m30s ago)
    assert status(obs, "vault", NOW) is Status.OK
    assert status(obs, "vault", NOW + timedelta(minutes=3)) is Status.AT_RISK
    later = NOW + timedelta(minutes=4)  # 5m30s since the backup started
    vault = next(s for s in assess(PLAN, obs, later) if s.name == "vault")
    assert vault.status is Status.VIOLATION
    assert vault.exposure == timedelta(minutes=5, seconds=30)
    assert "exceeds the RPO 5m00s" in vault.reasons[0]


def test_incremental_counts_for_exposure_and_the_full_for_nothing_more() -> None:
    obs = healthy()
    vault = next(s for s in assess(PLAN, obs, NOW) if s.name == "vault")
    assert vault.last_backup is not None and vault.last_backup.type == "incremental"
    assert vault.exposure == timedelta(minutes=1, seconds=30)


def test_no_backup_at_all_is_a_violation() -> None:
    obs = healthy(backups=(backup("database", timedelta(hours=1)),))
    got = by_name(obs)
    for name in ("vault", "redis", "payment-eapi"):
        s = got[name]
        assert s.status is Status.VIOLATION  # type: ignore[attr-defined]
        assert "no backup of" in s.reasons[0]  # type: ignore[attr-defined]
        assert s.exposure is None  # type: ignore[attr-defined]


def test_backups_under_an_alias_count_for_the_component() -> None:
    # Engines may label backups with an alias (db, conjur, config); observe() resolves
    # them, so assess sees canonical names only.
    obs = healthy()
    assert status(obs, "database") is Status.OK


# ---------------------------------------------------------------- verification


def test_newest_verified_backup_older_than_the_plans_cadence_is_at_risk() -> None:
    # vault: test restores weekly (plan) → the newest verified backup may be 7 days old.
    fresh_unverified = backup("vault", timedelta(minutes=1), "incremental", verified=False)
    old_verified = backup("vault", timedelta(days=8), "full")
    obs = healthy(backups=(fresh_unverified, old_verified, backup("database", timedelta(hours=1))))
    vault = next(s for s in assess(PLAN, obs, NOW) if s.name == "vault")
    assert vault.status is Status.AT_RISK
    assert vault.verification_max_age == timedelta(weeks=1)
    assert "newest verified backup is 8d00h old" in vault.reasons[0]
    assert vault.last_verified is old_verified


def test_no_verified_backup_is_fine_while_backups_are_young_then_at_risk() -> None:
    young = healthy(
        backups=(
            backup("vault", timedelta(minutes=1), "incremental", verified=False),
            backup("vault", timedelta(days=2), verified=False),
            backup("database", timedelta(hours=1)),
        )
    )
    assert status(young, "vault") is Status.OK
    old = healthy(
        backups=(
            backup("vault", timedelta(minutes=1), "incremental", verified=False),
            backup("vault", timedelta(days=9), verified=False),
            backup("database", timedelta(hours=1)),
        )
    )
    vault = next(s for s in assess(PLAN, old, NOW) if s.name == "vault")
    assert vault.status is Status.AT_RISK
    assert "no verified backup" in vault.reasons[0]


def test_redis_verification_cadence_is_the_monthly_full_recovery_test() -> None:
    redis = next(s for s in assess(PLAN, healthy(), NOW) if s.name == "redis")
    assert redis.verification_max_age == PLAN.tests["component"].frequency.delta


# ---------------------------------------------------------------- database and WAL


def test_database_exposure_is_time_since_the_last_archived_segment() -> None:
    db = next(s for s in assess(PLAN, healthy(), NOW) if s.name == "database")
    assert db.status is Status.OK
    assert db.exposure == timedelta(seconds=40)
    assert db.wal is not None and db.wal.archiving == "ok"
    assert db.wal.lag == timedelta(seconds=40)


def test_wal_archiving_failing_is_a_violation_even_with_a_fresh_backup() -> None:
    failing = ArchiverObservation(
        reachable=True,
        archive_mode="on",
        archived_count=16,
        last_archived_wal="000000010000000000000010",
        last_archived_at=NOW - timedelta(minutes=2),
        failed_count=7,
        last_failed_wal="000000010000000000000011",
        last_failed_at=NOW - timedelta(seconds=10),
        insert_lsn="0/12000100",
    )
    obs = healthy(
        backups=(*healthy().backups, backup("database", timedelta(minutes=1))),
        database=failing,
    )
    db = next(s for s in assess(PLAN, obs, NOW) if s.name == "database")
    assert db.status is Status.VIOLATION
    assert db.wal is not None and db.wal.archiving == "failing"
    assert db.wal.failed_count == 7
    assert any("WAL archiving is failing" in r for r in db.reasons)
    assert "000000010000000000000011" in " ".join(db.reasons)


def test_archiving_that_recovered_is_not_failing() -> None:
    recovered = ArchiverObservation(
        reachable=True,
        archive_mode="on",
        last_archived_wal="000000010000000000000010",
        last_archived_at=NOW - timedelta(seconds=20),
        failed_count=3,
        last_failed_wal="000000010000000000000010",
        last_failed_at=NOW - timedelta(minutes=1),
        insert_lsn="0/11000100",
    )
    assert not recovered.failing
    assert status(healthy(database=recovered), "database") is Status.OK


def test_never_archived_and_failing_is_failing() -> None:
    never = ArchiverObservation(
        reachable=True,
        archive_mode="on",
        failed_count=1,
        last_failed_wal="000000010000000000000001",
        last_failed_at=NOW - timedelta(seconds=5),
    )
    assert never.failing
    assert status(healthy(database=never), "database") is Status.VIOLATION


def test_archive_mode_off_is_a_violation() -> None:
    off = ArchiverObservation(reachable=True, archive_mode="off")
    db = next(s for s in assess(PLAN, healthy(database=off), NOW) if s.name == "database")
    assert db.status is Status.VIOLATION
    assert db.wal is not None and db.wal.archiving == "off"


def test_idle_database_with_everything_archived_has_no_exposure() -> None:
    obs = healthy(database=archiving_ok(timedelta(hours=2), pending=False))
    db = next(s for s in assess(PLAN, obs, NOW) if s.name == "database")
    assert db.status is Status.OK
    assert db.exposure == timedelta(0)
    assert db.wal is not None and db.wal.lag == timedelta(hours=2)


def test_pending_wal_after_an_old_archive_is_a_violation() -> None:
    obs = healthy(
        database=archiving_ok(timedelta(minutes=20)),
        wal_newest_at=NOW - timedelta(minutes=20),
    )
    db = next(s for s in assess(PLAN, obs, NOW) if s.name == "database")
    assert db.status is Status.VIOLATION
    assert db.exposure == timedelta(minutes=20)


def test_without_wal_the_base_backup_bounds_the_exposure() -> None:
    obs = healthy(
        wal_newest=None,
        wal_newest_at=None,
        database=ArchiverObservation(reachable=True, archive_mode="on"),
        backups=(backup("database", timedelta(minutes=5), duration=timedelta(minutes=1)),),
    )
    db = next(s for s in assess(PLAN, obs, NOW) if s.name == "database")
    assert db.exposure == timedelta(minutes=6)
    assert db.status is Status.OK


def test_no_base_backup_means_nothing_to_restore_whatever_the_wal() -> None:
    obs = healthy(backups=(backup("vault", timedelta(minutes=1)),))
    db = next(s for s in assess(PLAN, obs, NOW) if s.name == "database")
    assert db.status is Status.VIOLATION
    assert db.exposure is None
    assert any("cannot be restored" in n for n in db.notes)


def test_archive_that_does_not_reach_the_repository_counts_what_the_repository_holds() -> None:
    # The database archived segment 0x10 a moment ago, but the repository's newest is
    # 0x08 from an hour ago: archive_command writes somewhere else.
    obs = healthy(
        wal_newest="000000010000000000000008",
        wal_newest_at=NOW - timedelta(hours=1),
        backups=(backup("database", timedelta(hours=3)),),
    )
    db = next(s for s in assess(PLAN, obs, NOW) if s.name == "database")
    assert db.status is Status.VIOLATION
    assert db.exposure is not None and db.exposure > timedelta(minutes=59)
    assert any("does archive_command write to this repository" in n for n in db.notes)


def test_unreachable_database_is_at_risk_and_judged_from_the_repository() -> None:
    down = ArchiverObservation(reachable=False, error="ConnectionRefusedError: refused")
    db = next(s for s in assess(PLAN, healthy(database=down), NOW) if s.name == "database")
    assert db.status is Status.AT_RISK
    assert db.exposure == timedelta(seconds=40)  # the repository's newest segment
    assert "database unreachable" in db.reasons[0]
    assert db.wal is not None and db.wal.database_reachable is False


def test_unconfigured_database_is_at_risk() -> None:
    db = next(s for s in assess(PLAN, healthy(database=None), NOW) if s.name == "database")
    assert db.status is Status.AT_RISK
    assert "payment_dsn is not configured" in db.reasons[0]


def test_unreachable_database_with_stale_repository_is_a_violation() -> None:
    down = ArchiverObservation(reachable=False, error="timeout")
    obs = healthy(database=down, wal_newest_at=NOW - timedelta(hours=1))
    assert status(obs, "database") is Status.VIOLATION


def test_pending_is_unknown_after_a_backup_label() -> None:
    obs = ArchiverObservation(
        reachable=True,
        archive_mode="on",
        last_archived_wal="000000010000000000000010.00000028.backup",
        last_archived_at=NOW,
        insert_lsn="0/11000028",
    )
    assert obs.pending is None


# ---------------------------------------------------------------- stateless services


def test_stateless_services_are_as_exposed_as_the_configuration_backup() -> None:
    obs = healthy(
        backups=(
            *healthy().backups[:4],
            backup("configuration", timedelta(minutes=20), "git"),
        )
    )
    got = by_name(obs)
    for name in ("payment-eapi", "payment-sapi"):
        s = got[name]
        assert s.status is Status.VIOLATION  # type: ignore[attr-defined]
        assert s.source_component == "configuration"  # type: ignore[attr-defined]
        assert s.exposure == timedelta(minutes=20, seconds=30)  # type: ignore[attr-defined]
        assert s.retention == PLAN.backups_for("configuration")  # type: ignore[attr-defined]


def test_retention_per_component_follows_the_plans_backup_table() -> None:
    got = {s.name: s for s in assess(PLAN, healthy(), NOW)}
    redis = [(r.type, r.retention.text) for r in got["redis"].retention]
    assert redis == [("snapshot", "7d")]
    db = [(r.type, r.retention.text) for r in got["database"].retention]
    assert db == [("full", "30d"), ("wal", "7d")]


def test_plan_inconsistency_is_noted_not_hidden() -> None:
    vault = next(s for s in assess(PLAN, healthy(), NOW) if s.name == "vault")
    assert any("backups alone cannot meet it" in n for n in vault.notes)
    assert vault.backup_interval == timedelta(hours=1)


# ---------------------------------------------------------------- report, json


def test_report_json_contract_and_exit_code() -> None:
    ok = report(PLAN, healthy(), NOW)
    assert ok.exit_code == 0
    data = ok.to_json()
    assert set(data) >= {"components", "checked_at"}
    assert data["checked_at"] == NOW.isoformat()
    assert len(data["components"]) == len(PLAN.components)
    for c in data["components"]:
        assert set(c) >= {
            "name",
            "status",
            "rpo_seconds",
            "exposure_seconds",
            "last_backup_at",
            "last_verified_at",
        }
    vault = next(c for c in data["components"] if c["name"] == "vault")
    assert vault["rpo_seconds"] == 300
    assert vault["exposure_seconds"] == 90
    bad = report(PLAN, healthy(), NOW + timedelta(hours=1))
    assert bad.exit_code == 1


def test_assess_rejects_naive_times() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        assess(PLAN, healthy(), datetime(2026, 1, 1))


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (59, "59s"), (90, "1m30s"), (3600, "1h00m"), (3 * 86400 + 7200, "3d02h")],
)
def test_human_duration(seconds: int, text: str) -> None:
    assert human_duration(timedelta(seconds=seconds)) == text
