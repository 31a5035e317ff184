"""RPO from replication: the database and the vault are judged on the better of their
backups and what replication protects them with (ops.rpo_replication), pure."""

from __future__ import annotations

from datetime import timedelta

from payapi.ops.rpo import ArchiverObservation, Observations, Status, assess, report
from payapi.ops.rpo_replication import ReplicationObservations, protection
from payapi.replication.observe import PgObservation, RegionObservation
from payapi.systems.patroni import ClusterView, MemberView
from tests.unit.test_rpo import NOW, PLAN, backup, healthy


def mv(name: str, role: str, state: str = "streaming") -> MemberView:
    return MemberView(name, role, state, "127.0.0.1", 1, "", 1, 0)


def pg(name: str, *, writable: bool, lsn: str, **kw: object) -> PgObservation:
    return PgObservation(
        name,
        reachable=True,
        observed_at=NOW,
        in_recovery=not writable,
        current_lsn=lsn if writable else None,
        replay_lsn=None if writable else lsn,
        **kw,  # type: ignore[arg-type]
    )


def regions(
    *,
    dr_lsn: str = "0/3000000",
    sync: bool = True,
    dr: bool = True,
    dr_replayed_ago: timedelta | None = None,
    dr_reachable: bool = True,
) -> ReplicationObservations:
    members = (mv("pg1", "leader", "running"), mv("pg2", "sync_standby" if sync else "replica"))
    primary = RegionObservation(
        "primary",
        "primary",
        NOW,
        postgres_members=("pg1", "pg2"),
        patroni_configured=True,
        cluster=ClusterView("p", members, False),
        postgres=(
            pg("pg1", writable=True, lsn="0/3000000", last_commit_at=NOW),
            pg("pg2", writable=False, lsn="0/3000000"),
        ),
        sync_expected=True,
    )
    replayed = NOW - dr_replayed_ago if dr_replayed_ago is not None else NOW
    dr_pg = (
        pg("dr1", writable=False, lsn=dr_lsn, last_replay_at=replayed)
        if dr_reachable
        else PgObservation("dr1", reachable=False, error="refused")
    )
    standby = RegionObservation(
        "dr",
        "standby",
        NOW,
        postgres_members=("dr1",),
        patroni_configured=True,
        cluster=ClusterView("d", (mv("dr1", "standby_leader", "running"),), True),
        postgres=(dr_pg,),
    )
    return ReplicationObservations("primary", (primary, standby) if dr else (primary,))


def stale_vault(**kw: object) -> Observations:
    """The vault's newest backup is an hour old (beyond its 5-minute RPO)."""
    base = healthy()
    kept = [b for b in base.backups if b.component != "vault"]
    backups = (*kept, backup("vault", timedelta(hours=1), "full"))
    fields: dict[str, object] = {"backups": backups}
    fields.update(kw)
    return healthy(**fields)


def status_of(obs: Observations, name: str, now=NOW):  # type: ignore[no-untyped-def]
    return next(s for s in assess(PLAN, obs, now) if s.name == name)


def test_without_regions_nothing_changes() -> None:
    vault = status_of(stale_vault(), "vault")
    assert vault.status is Status.VIOLATION and vault.replication is None


def test_a_caught_up_dr_region_keeps_the_vault_ok_with_an_old_backup() -> None:
    vault = status_of(stale_vault(replication=regions()), "vault")
    assert vault.status is Status.OK, vault.reasons
    assert vault.exposure == timedelta(0)
    assert any("DR region dr (dr1) is 0.0s behind (caught up)" in n for n in vault.notes)
    data = vault.to_json()
    assert data["exposure_seconds"] == 0
    assert data["replication"]["in_region"]["sync_standby"] == "pg2"
    assert data["replication"]["dr"][0]["measured_by"] == "caught up"


def test_with_no_backup_at_all_replication_protects() -> None:
    obs = healthy(backups=(), replication=regions())
    vault = status_of(obs, "vault")
    assert vault.status is Status.OK
    assert "no backup yet: replication protects it (backups are the fallback)" in vault.notes


def test_a_dr_region_lagging_beyond_the_rpo_is_a_violation() -> None:
    obs = stale_vault(
        replication=regions(dr_lsn="0/2000000", dr_replayed_ago=timedelta(minutes=20))
    )
    vault = status_of(obs, "vault")
    assert vault.status is Status.VIOLATION
    assert vault.exposure == timedelta(minutes=20)  # commit timestamps: 20 min behind
    assert vault.to_json()["replication"]["dr"][0]["measured_by"] == "commit timestamps"


def test_backups_newer_than_the_dr_lag_win() -> None:
    obs = healthy(replication=regions(dr_lsn="0/2000000", dr_replayed_ago=timedelta(minutes=20)))
    vault = status_of(obs, "vault")
    assert vault.exposure is not None and vault.exposure < timedelta(minutes=5)
    assert vault.status is not Status.VIOLATION


def test_a_lost_synchronous_standby_is_at_risk() -> None:
    obs = stale_vault(replication=regions(sync=False))
    db = status_of(obs, "database")
    assert db.status is Status.AT_RISK
    assert any("no synchronous standby is streaming in region primary" in r for r in db.reasons)


def test_an_unknown_dr_lag_is_at_risk_and_falls_back_to_the_backups() -> None:
    obs = stale_vault(replication=regions(dr_reachable=False))
    vault = status_of(obs, "vault")
    assert vault.status is Status.VIOLATION  # the backup is an hour old
    assert any("DR lag unknown" in r for r in vault.reasons)


def test_without_a_standby_region_the_backups_decide() -> None:
    vault = status_of(stale_vault(replication=regions(dr=False)), "vault")
    assert vault.status is Status.VIOLATION
    assert any("no standby region" in n for n in vault.notes)


def test_archiving_off_is_at_risk_while_replication_keeps_the_database_within_its_rpo() -> None:
    off = ArchiverObservation(reachable=True, archive_mode="off")
    protected = status_of(healthy(database=off, replication=regions()), "database")
    assert protected.status is Status.AT_RISK
    assert any("archive_mode=off" in r for r in protected.reasons)
    alone = status_of(healthy(database=off), "database")
    assert alone.status is Status.VIOLATION


def test_a_dr_lag_judged_later_grows_with_the_time_since_the_observation() -> None:
    obs = stale_vault(replication=regions())
    later = NOW + timedelta(minutes=10)
    vault = status_of(obs, "vault", later)
    assert vault.exposure == timedelta(minutes=10)
    assert vault.status is Status.VIOLATION


def test_redis_is_not_protected_by_the_database_replication() -> None:
    redis = status_of(stale_vault(replication=regions()), "redis")
    assert redis.replication is None


def test_the_report_carries_the_protection_for_the_metrics() -> None:
    rep = report(PLAN, stale_vault(replication=regions()), NOW)
    assert rep.replication is not None and rep.replication.sync_standby == "pg2"
    assert [m.member for m in rep.replication.members] == ["pg1", "pg2", "dr1"]
    assert protection(ReplicationObservations("elsewhere", ()), NOW) is None
