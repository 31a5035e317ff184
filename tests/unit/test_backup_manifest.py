"""Manifest models: derived totals, JSON round trip, verify report helpers."""

from __future__ import annotations

from datetime import UTC, datetime

from payapi.backup.manifest import Manifest, ObjectEntry, VerifyProblem, VerifyReport

T0 = datetime(2026, 11, 27, 1, 45, tzinfo=UTC)
T1 = datetime(2026, 11, 27, 1, 50, tzinfo=UTC)


def _manifest() -> Manifest:
    return Manifest(
        repository_id="r1",
        backup_id="20261127T014500Z-db-full-abcdef",
        component="db",
        type="full",
        started_at=T0,
        finished_at=T1,
        wal_start="000000010000000000000002",
        wal_end="000000010000000000000003",
        tool_version="0.1.0",
        meta={"pg_version": 18, "timeline": 1},
        objects=[
            ObjectEntry(name="base.tar", size=100, stored_size=40, sha256="a", stored_sha256="b"),
            ObjectEntry(name="pg_wal.tar", size=50, stored_size=20, sha256="c", stored_sha256="d"),
        ],
    )


def test_info_totals_and_fields() -> None:
    m = _manifest()
    info = m.info(verified_at=T1)
    assert (info.bytes, info.stored_bytes, info.objects) == (150, 60, 2)
    assert (info.wal_start, info.wal_end, info.verified_at) == (m.wal_start, m.wal_end, T1)
    assert info.meta == {"pg_version": 18, "timeline": 1}
    assert m.entry("pg_wal.tar") is not None and m.entry("nope") is None


def test_json_round_trip() -> None:
    m = _manifest()
    assert Manifest.model_validate_json(m.model_dump_json()) == m


def test_verify_report_helpers() -> None:
    report = VerifyReport(started_at=T0, backups=["a", "b"])
    assert report.ok and report.backup_ok("a") and not report.backup_ok("zzz")
    report.problems.append(
        VerifyProblem(backup_id="a", object="base.tar", kind="corrupt", detail="x")
    )
    assert not report.ok and not report.backup_ok("a") and report.backup_ok("b")
    assert str(report.problems_for("a")[0]) == "backup a: base.tar: corrupt: x"


def test_typed_meta_writes_exactly_the_keys_given_and_reads_old_manifests() -> None:
    from datetime import UTC, datetime

    from payapi.backup.manifest import BackupInfo
    from payapi.backup.postgres import PgMeta

    written = PgMeta(timeline=2, end_lsn=None, system_identifier="7712665103185114335").dump()
    assert written == {"timeline": 2, "end_lsn": None, "system_identifier": "7712665103185114335"}
    now = datetime.now(UTC)
    old = BackupInfo(
        backup_id="b1", component="database", type="full", started_at=now, finished_at=now,
        meta={"timeline": "3", "end_lsn": "0/3000000", "system_identifier": 7712665103185114335,
              "something_newer": True},
    )  # fmt: skip
    meta = PgMeta.of(old)
    assert meta.end() == (3, 0x3000000)
    assert meta.system_identifier == "7712665103185114335"
    assert meta.segment_size == 16 << 20
