"""The pure half of the PostgreSQL engine, restore planning and the WAL command line."""

from __future__ import annotations

import io
import json
import os
import random
import tarfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from payapi.backup import wal
from payapi.backup.manifest import BackupInfo
from payapi.backup.pg_format import (
    PgBackupError,
    TarTap,
    format_lsn,
    lsn_segment,
    parse_backup_label,
    parse_lsn,
    parse_manifest,
    parse_segment,
    segment_name,
    wal_range,
)
from payapi.backup.postgres import basebackup_argv, choose_parent
from payapi.backup.restore_plan import (
    Lineage,
    RestoreError,
    Target,
    backup_chain,
    choose_base,
    missing_segments,
    parse_history,
    parse_recovery_log,
    parse_target,
    parse_waldump_commits,
    recovery_settings,
)
from payapi.servers.postgres import parse_major

SEG = 16 << 20
T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def test_lsn_round_trip_and_segments() -> None:
    assert parse_lsn("0/2000028") == 0x2000028
    assert format_lsn(0x1_0000_0060) == "1/00000060"
    assert format_lsn(parse_lsn("16/B374D848")) == "16/B374D848"
    with pytest.raises(ValueError):
        parse_lsn("nonsense")
    assert lsn_segment(0x2000028, 1, SEG) == "000000010000000000000002"
    assert lsn_segment(0x1_0300_0000, 3, SEG) == "000000030000000100000003"
    assert parse_segment("000000030000000100000003", SEG) == (3, 0x100 + 3)
    assert segment_name(3, 0x103, SEG) == "000000030000000100000003"
    assert parse_segment("00000002.history", SEG) is None
    assert parse_segment("000000010000000000000002.00000028.backup", SEG) is None


LABEL = """START WAL LOCATION: 0/2000028 (file 000000010000000000000002)
CHECKPOINT LOCATION: 0/2000080
BACKUP METHOD: streamed
BACKUP FROM: primary
START TIME: 2026-11-27 01:59:42 UTC
LABEL: payapi 20261127T015942Z-database-full-abcdef
START TIMELINE: 1
INCREMENTAL FROM LSN: 0/1000028
INCREMENTAL FROM TLI: 1
"""


def test_backup_label_and_manifest() -> None:
    bl = parse_backup_label(LABEL)
    assert (bl.start_lsn, bl.checkpoint_lsn, bl.timeline) == (0x2000028, 0x2000080, 1)
    assert bl.incremental_from_lsn == 0x1000028
    with pytest.raises(PgBackupError):
        parse_backup_label("START TIMELINE: 1\n")
    manifest = json.dumps(
        {
            "PostgreSQL-Backup-Manifest-Version": 2,
            "System-Identifier": 7712665103185114335,
            "Files": [{"Path": "backup_label"}],
            "WAL-Ranges": [{"Timeline": 1, "Start-LSN": "0/2000028", "End-LSN": "0/3000000"}],
        }
    ).encode()
    summary = parse_manifest(manifest)
    assert summary.system_identifier == "7712665103185114335"
    # The end LSN sits on a segment boundary: the last needed segment is the one before.
    assert wal_range(summary, 1, SEG) == ("000000010000000000000002", "000000010000000000000002")
    with pytest.raises(PgBackupError):
        parse_manifest(b"{}")


def test_version_1_manifest_has_no_system_identifier() -> None:
    # PostgreSQL 13-16 write manifest version 1, without System-Identifier.
    manifest = json.dumps(
        {
            "PostgreSQL-Backup-Manifest-Version": 1,
            "Files": [{"Path": "backup_label"}],
            "WAL-Ranges": [{"Timeline": 1, "Start-LSN": "0/2000028", "End-LSN": "0/2000100"}],
        }
    ).encode()
    summary = parse_manifest(manifest)
    assert summary.system_identifier == ""
    assert (summary.timeline, summary.start_lsn, summary.end_lsn) == (1, 0x2000028, 0x2000100)


def _tar(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest.mark.parametrize("seed", range(5))
def test_tar_tap_keeps_wanted_members_whatever_the_chunking(seed: int) -> None:
    rnd = random.Random(seed)
    members = {
        "base/1/1234": os.urandom(70_000),
        "backup_label": LABEL.encode(),
        "deep/" + "x" * 150 + "/file": b"long name",  # a GNU long-name record
        "global/empty": b"",
        "backup_manifest": b'{"x": 1}' * 1000,
    }
    blob = _tar(members)
    tap = TarTap(["backup_label", "backup_manifest"])
    pos = 0
    while pos < len(blob):
        n = rnd.choice([1, 7, 511, 512, 513, 4096, 65536])
        tap.feed(blob[pos : pos + n])
        pos += n
    assert tap.captured == {
        "backup_label": members["backup_label"],
        "backup_manifest": members["backup_manifest"],
    }
    assert tap.members == len(members) and tap.ended


def _info(
    bid: str,
    type_: str = "full",
    *,
    finished: datetime = T0,
    parent: str | None = None,
    tli: int = 1,
    end: str = "0/3000000",
    sysid: str = "42",
    **meta: Any,
) -> BackupInfo:
    return BackupInfo(
        backup_id=bid,
        component="database",
        type=type_,
        parent=parent,
        started_at=finished - timedelta(minutes=1),
        finished_at=finished,
        wal_start="000000010000000000000002",
        meta={"timeline": tli, "end_lsn": end, "system_identifier": sysid, **meta},
    )


def test_choose_parent_is_the_newest_physical_backup_of_the_server() -> None:
    backups = [
        _info("a", finished=T0),
        _info("b", "incremental", finished=T0 + timedelta(hours=1), parent="a"),
        _info("c", "logical", finished=T0 + timedelta(hours=2)),
        _info("d", finished=T0 + timedelta(hours=3), sysid="other"),
    ]
    assert choose_parent(backups, "42").backup_id == "b"  # type: ignore[union-attr]
    assert choose_parent(backups, "nobody") is None


def test_choose_base_for_each_target() -> None:
    a = _info("a", finished=T0, end="0/3000000", next_xid=700)
    b = _info("b", "incremental", finished=T0 + timedelta(hours=1), parent="a",
              end="0/5000000", next_xid=800)  # fmt: skip
    c = _info("c", "logical", finished=T0 + timedelta(hours=2))
    backups = [a, b, c]
    assert choose_base(backups, Target()).backup_id == "b"
    at = Target("time", time=T0 + timedelta(minutes=30))
    assert choose_base(backups, at).backup_id == "a"
    assert choose_base(backups, Target("time", time=T0 + timedelta(hours=1))).backup_id == "b"
    with pytest.raises(RestoreError, match="no backup finished before"):
        choose_base(backups, Target("time", time=T0 - timedelta(seconds=1)))
    assert choose_base(backups, Target("lsn", lsn=parse_lsn("0/4000000"))).backup_id == "a"
    assert choose_base(backups, Target("xid", xid=750)).backup_id == "a"
    assert choose_base(backups, Target("xid", xid=900)).backup_id == "b"
    assert choose_base(backups, Target(), backup_id="c").backup_id == "c"
    with pytest.raises(RestoreError, match="logical dump"):
        choose_base(backups, at, backup_id="c")
    with pytest.raises(RestoreError, match="not found"):
        choose_base(backups, Target(), backup_id="zzz")


def test_choose_base_follows_the_lineage() -> None:
    """After an in-place PITR that branched timeline 2 off timeline 1 at 0/4000000, a
    backup taken later on timeline 1 (the abandoned future) is never a base."""
    before = _info("before", finished=T0, tli=1, end="0/3000000")
    abandoned = _info("abandoned", finished=T0 + timedelta(hours=2), tli=1, end="0/6000000")
    on_two = _info("on2", finished=T0 + timedelta(hours=3), tli=2, end="0/7000000")
    lineage = Lineage(2, tuple(parse_history("1\t0/4000000\tbefore 2026-11-27 12:30\n")))
    late = Target("time", time=T0 + timedelta(hours=2, minutes=30))
    pick = choose_base([before, abandoned, on_two], late, lineage=lineage)
    assert pick.backup_id == "before"
    assert choose_base([before, abandoned, on_two], Target(), lineage=lineage).backup_id == "on2"
    assert lineage.includes(1, parse_lsn("0/4000000"))
    assert not lineage.includes(1, parse_lsn("0/4000001"))
    assert not lineage.includes(3, 0)


def test_backup_chain() -> None:
    a, b = _info("a"), _info("b", "incremental", parent="a")
    c = _info("c", "incremental", parent="b")
    assert [x.backup_id for x in backup_chain([c, a, b], c)] == ["a", "b", "c"]
    with pytest.raises(RestoreError, match="missing"):
        backup_chain([c, b], c)


def test_missing_segments() -> None:
    names = ["000000010000000000000002", "000000010000000000000004", "00000001.history"]
    first, last = "000000010000000000000002", "000000010000000000000005"
    assert missing_segments(names, first, last, SEG) == [
        "000000010000000000000003",
        "000000010000000000000005",
    ]
    assert missing_segments(names, first, "000000020000000000000005", SEG) == []


def test_targets_and_recovery_settings() -> None:
    assert parse_target() == Target("latest")
    t = parse_target(time="2026-11-27T12:00:00")  # no zone: UTC
    assert t.time == T0
    assert parse_target(time="2026-11-27 13:00:00+01:00").time == T0
    with pytest.raises(ValueError, match="one recovery target"):
        parse_target(time="2026-11-27T12:00:00Z", lsn="0/1")
    with pytest.raises(ValueError, match="ISO 8601"):
        parse_target(time="yesterday")
    with pytest.raises(ValueError):
        parse_target(xid="abc")
    s = recovery_settings(t, restore_command="payapi wal fetch '%f' %p", timeline=3, port=5499)
    assert s["recovery_target_time"] == "'2026-11-27 12:00:00.000000+00'"
    assert s["recovery_target_action"] == "'promote'"
    assert s["recovery_target_timeline"] == "'3'"  # pinned, never 'latest'
    assert s["archive_mode"] == "off" and s["archive_command"] == "''"
    assert s["restore_command"] == "'payapi wal fetch ''%f'' %p'"
    assert s["port"] == "5499"
    latest = recovery_settings(Target(), restore_command="x", timeline=1, port=1)
    assert not any(k.startswith("recovery_target_") and k != "recovery_target_timeline"
                   for k in latest)  # fmt: skip
    prod = recovery_settings(Target("immediate"), restore_command="x", timeline=1, port=1,
                             archive={"archive_mode": "on"})  # fmt: skip
    assert prod["archive_mode"] == "on" and prod["recovery_target"] == "'immediate'"


def test_waldump_and_recovery_log_parsing() -> None:
    dump = (
        "rmgr: Transaction len (rec/tot): 34/34, tx: 744, lsn: 0/03000060, prev 0/03000028, "
        "desc: COMMIT 2026-11-27 01:59:44.277763 UTC\n"
        "rmgr: Transaction len (rec/tot): 34/34, tx: 745, lsn: 0/03000090, prev 0/03000060, "
        "desc: ABORT 2026-11-27 01:59:45.000001 UTC; inval msgs: catcache 7\n"
    )
    commits = parse_waldump_commits(dump)
    assert max(commits) == datetime(2026, 11, 27, 1, 59, 45, 1, tzinfo=UTC)
    log = (
        "2026-11-27 02:07:28.099 UTC [1] LOG:  recovery stopping before commit of "
        "transaction 760, time 2026-11-27 02:07:19.5+00\n"
        "2026-11-27 02:07:28.100 UTC [1] LOG:  last completed transaction was at log time "
        "2026-11-27 02:07:18.8+00\n"
    )
    got = parse_recovery_log(log)
    assert got["stopped"] == "before commit of transaction 760"
    assert got["last_transaction_at"] == "2026-11-27T02:07:18.800000+00:00"


# --------------------------------------------------------------------------- wal CLI


def test_wal_argv_fast_path_grammar() -> None:
    inv = wal.parse_argv(["--config", "/c.toml", "wal", "push", "pg_wal/0001"])
    assert inv == wal.Invocation("push", ("pg_wal/0001",), config="/c.toml")
    inv = wal.parse_argv(
        ["--config=/c", "wal", "fetch", "--abort-on-damage", "--repository=file:///r",
         "--key-file", "/k", "N", "pg_wal/RECOVERYXLOG"]
    )  # fmt: skip
    assert inv is not None and inv.abort_on_damage and inv.key_file == "/k"
    assert inv.repository == "file:///r" and inv.args == ("N", "pg_wal/RECOVERYXLOG")
    # Anything unusual goes to the full CLI (help, typos, wrong arity).
    assert wal.parse_argv(["wal", "push", "--help"]) is None
    assert wal.parse_argv(["wal", "push"]) is None
    assert wal.parse_argv(["wal", "push", "--abort-on-damage", "x"]) is None
    assert wal.parse_argv(["backup", "run"]) is None
    assert wal.parse_argv(["--version"]) is None


def test_wal_repository_settings_match_the_settings_framework(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from payapi.core.settings import load_settings

    for k in list(os.environ):
        if k.upper().startswith("PAYAPI_"):
            monkeypatch.delenv(k)
    cfg = tmp_path / "payapi.toml"
    cfg.write_text(
        '[backup]\nrepository = "file:///srv/repo"\nkey_file = "keys/repo.key"\n'
        'key_env = "MY_KEY"\n'
    )
    ref = wal.repository_ref(cfg, environ={})
    settings = load_settings(cfg).backup
    assert ref.url == settings.repository
    assert ref.key_file == settings.key_file == (tmp_path / "keys/repo.key").resolve()
    assert ref.key_env == settings.key_env == "MY_KEY"
    over = wal.repository_ref(cfg, environ={"PAYAPI_BACKUP__REPOSITORY": "file:///other"})
    assert over.url == "file:///other"
    with pytest.raises(wal.WalError, match="no backup repository"):
        wal.repository_ref(None, environ={})


def test_archive_and_restore_commands_are_absolute_and_quoted() -> None:
    cmd = wal.archive_command("/lab dir/payapi.toml", python="/venv/bin/python")
    assert cmd == "/venv/bin/python -m payapi --config '/lab dir/payapi.toml' wal push %p"
    rc = wal.restore_command(Path("/c.toml"), python="/p", key_file="/k")
    assert rc == "/p -m payapi --config /c.toml wal fetch --abort-on-damage --key-file /k %f %p"
    assert wal.guc_string("it's") == "'it''s'"


def test_basebackup_command_line() -> None:
    argv = basebackup_argv(Path("/b"), "postgresql://x", incremental_manifest=Path("/m"))
    assert argv[:5] == ["/b/pg_basebackup", "-d", "postgresql://x", "-D", "-"]
    assert "-X" in argv and argv[argv.index("-X") + 1] == "fetch"
    assert argv[-1] == "--incremental=/m"


def test_parse_major_reads_distribution_version_strings() -> None:
    assert parse_major("postgres (PostgreSQL) 18.6\n") == 18
    assert parse_major("postgres (PostgreSQL) 15.20 (Debian 15.20-0+deb12u1)\n") == 15
    assert parse_major("pg_basebackup (PostgreSQL) 17.2 (Ubuntu 17.2-1.pgdg24.04+1)") == 17
    assert parse_major("postgres (PostgreSQL) 19devel") == 19
    assert parse_major("nothing here") is None


def test_settings_of_a_pre_17_data_directory_omit_summarize_wal(tmp_path: Path) -> None:
    # A restored PostgreSQL 15 backup gets the lab's settings too; an unknown setting
    # would stop it from starting.
    from payapi.servers.postgres import PgCluster

    for major, expected in (("15", False), ("18", True)):
        datadir = tmp_path / major
        datadir.mkdir()
        (datadir / "PG_VERSION").write_text(f"{major}\n")
        PgCluster(datadir=datadir, port=5999, logfile=datadir / "log").write_settings()
        conf = (datadir / "postgresql.auto.conf").read_text()
        assert ("summarize_wal" in conf) is expected
        assert "port = 5999" in conf


def test_extract_object_writes_and_syncs_every_member(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A restore is durable when it returns: every regular file and directory is fsynced.
    import payapi.backup.materialize as restore_mod
    from payapi.backup.crypto import generate_key
    from payapi.backup.repository import Repository

    members = {f"base/1/{n}": os.urandom(n * 700) for n in range(1, 30)}
    members["global/pg_control"] = b"c" * 8192
    members["PG_VERSION"] = b"15\n"
    synced: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(restore_mod.os, "fsync", fsync)
    with Repository.open(f"file://{tmp_path / 'repo'}", generate_key(), chunk_size=4096) as repo:
        repo.init()
        with repo.begin_backup("database", "full") as writer:
            writer.add_bytes("base.tar", _tar(members))
            bid = writer.commit().backup_id
        dest = tmp_path / "restored"
        restore_mod.extract_object(repo, bid, "base.tar", dest)
    for name, data in members.items():
        assert (dest / name).read_bytes() == data
    assert {str(dest / n) for n in members} <= set(synced)
    assert {str(dest), str(dest / "base"), str(dest / "base" / "1")} <= set(synced)
