"""Copies of backups and WAL into secondary repositories (``payapi.backup.copy`` and
``payapi backup copy``): a file:// primary copied into a file:// and an s3:// secondary
(a real ``moto_server``), each with its own key.

What is proven here:
- a copy keeps every backup's id, type, parent, times, WAL range and metadata, records
  the same plaintext checksums, is verified (and marked verified) in the destination,
  and is re-encrypted under the destination's key;
- copying again copies nothing; what the destination lost is copied again;
- a corrupted object in the destination is found by ``verify`` (and the CLI exits 1);
- an interrupted copy leaves nothing listed and the next run completes it; a damaged
  source backup is a problem, and the other backups are still copied;
- ``wal push`` also pushes to the secondaries (``push`` / ``require`` / ``copy`` modes).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from payapi.backup.copy import CopyReport, copy_backups, copy_repository, copy_wal
from payapi.backup.crypto import HEADER_BYTES, load_repository_key, write_key_file
from payapi.backup.errors import CorruptObject, WrongKey
from payapi.backup.repository import DATA, SERIES_TAG, WAL, Repository
from payapi.backup.wal import PUSH_BACKOFF_SECONDS, RepositoryRef, _backoff_marker
from payapi.core.journal import Journal
from tests.integration.moto_s3 import moto_s3

BUCKET = "payapi-copies"
CHUNK = 4096
SEGS = [f"0000000100000000000000{i:02X}" for i in range(1, 5)]


@pytest.fixture(scope="module")
def dr_s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with moto_s3(tmp_path_factory.mktemp("moto"), (BUCKET,)) as endpoint:
        yield endpoint


class Site:
    """A primary repository and one secondary, with their key files and a config."""

    def __init__(self, root: Path, dst_url: str, endpoint: str | None) -> None:
        self.root = root
        self.src_url = f"file://{root / 'primary'}"
        self.dst_url = dst_url
        self.endpoint = endpoint
        self.src_key_file = root / "primary.key"
        self.dst_key_file = root / "dr.key"
        write_key_file(self.src_key_file)
        write_key_file(self.dst_key_file)
        self.src = self.open_src()
        self.src.init(chunk_size=CHUNK)
        self.dst = self.open_dst()
        self.dst.init(chunk_size=CHUNK)
        self.config = root / "payapi.toml"
        s3 = f's3_endpoint_url = "{endpoint}"\n' if endpoint else ""
        self.config.write_text(
            f'[backup]\nrepository = "{self.src_url}"\nkey_file = "{self.src_key_file}"\n\n'
            f'[backup.secondary.dr]\nurl = "{dst_url}"\nkey_file = "{self.dst_key_file}"\n{s3}'
        )

    def open_src(self) -> Repository:
        return Repository.open(self.src_url, load_repository_key(self.src_key_file))

    def open_dst(self, key_file: Path | None = None) -> Repository:
        options: dict[str, Any] = {"s3_endpoint_url": self.endpoint} if self.endpoint else {}
        key = load_repository_key(key_file or self.dst_key_file)
        return Repository.open(self.dst_url, key, **options)

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "payapi", "--config", str(self.config), *args]
        return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)

    def close(self) -> None:
        self.src.close()
        self.dst.close()


@pytest.fixture(params=["file", "s3"])
def site(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Site]:
    if request.param == "file":
        s = Site(tmp_path, f"file://{tmp_path / 'dr'}", None)
    else:
        endpoint = request.getfixturevalue("dr_s3")
        s = Site(tmp_path, f"s3://{BUCKET}/dr-{uuid.uuid4().hex[:10]}", endpoint)
    yield s
    s.close()


def populate(repo: Repository, tmp: Path) -> dict[str, str]:
    """A database full + incremental (WAL ranges, metadata), a vault full, WAL."""
    with repo.begin_backup("database", "full") as w:
        w.add_bytes("base.tar", os.urandom(3 * CHUNK) + b"compressible " * 2000)
        w.add_bytes("backup_manifest", b'{"x": 1}')
        w.set_wal_range(SEGS[0], SEGS[1])
        w.set_meta(pg_major=18, timeline=1, system_identifier="7123")
        full = w.commit().backup_id
    with repo.begin_backup("database", "incremental", full) as w:
        w.add_bytes("base.tar", os.urandom(CHUNK))
        w.set_wal_range(SEGS[2], SEGS[2])
        incr = w.commit().backup_id
    with repo.begin_backup("vault", "full") as w:
        w.add_bytes("secrets.rows.jsonl", b'{"id": 1}\n' * 100)
        w.set_meta(format="payapi-vault/1", tables={"secrets": {"rows": 100}})
        vault = w.commit().backup_id
    for name in [*SEGS, "00000002.history"]:
        seg = tmp / name
        seg.write_bytes(os.urandom(2 * CHUNK) if name in SEGS else b"1\t0/3000000\tno reason\n")
        repo.put_wal(name, seg)
    return {"full": full, "incr": incr, "vault": vault}


def _tamper(repo: Repository, key: str, pos: int) -> None:
    data = bytearray(repo.store.get_bytes(key))
    data[pos] ^= 0x40
    repo.store.put_bytes(key, bytes(data))


_COMPARED = ("backup_id", "component", "type", "parent", "started_at", "finished_at",
             "wal_start", "wal_end", "bytes", "objects", "meta")  # fmt: skip


def _view(repo: Repository) -> list[tuple[Any, ...]]:
    return [tuple(getattr(b, f) for f in _COMPARED) for b in repo.list_backups()]


# --- the library -------------------------------------------------------------------------


def test_copy_keeps_everything_is_verified_there_and_is_idempotent(
    site: Site, tmp_path: Path
) -> None:
    ids = populate(site.src, tmp_path)
    journal = Journal()
    report = copy_repository(site.src, site.dst, journal=journal)
    steps = [s.name for s in journal.steps]
    assert report.ok, report.problems
    # Parents before children: the full before its incremental.
    assert report.copied.index(ids["full"]) < report.copied.index(ids["incr"])
    assert set(report.copied) == set(ids.values()) == set(report.verified)
    assert sorted(report.wal_copied) == sorted([*SEGS, "00000002.history"])
    assert any("copy: backup" in s for s in steps)

    assert _view(site.dst) == _view(site.src)
    assert all(b.verified_at is not None for b in site.dst.list_backups())
    for bid in ids.values():
        mine, theirs = site.src.read_manifest(bid), site.dst.read_manifest(bid)
        assert [(o.name, o.size, o.sha256) for o in mine.objects] == [
            (o.name, o.size, o.sha256) for o in theirs.objects
        ]
        for o in mine.objects:
            copied = site.dst.open_object(bid, o.name).read()
            assert copied == site.src.open_object(bid, o.name).read()
        # Re-encrypted: other stored bytes, under the destination's key.
        assert [o.stored_sha256 for o in mine.objects] != [o.stored_sha256 for o in theirs.objects]
    seg = tmp_path / "fetched"
    site.dst.get_wal(SEGS[1], seg)
    src_seg = tmp_path / "src-fetched"
    site.src.get_wal(SEGS[1], src_seg)
    assert seg.read_bytes() == src_seg.read_bytes()
    assert site.dst.verify().ok
    with pytest.raises(WrongKey):
        site.open_dst(site.src_key_file)

    again = copy_repository(site.src, site.dst)
    assert again.ok and again.copied == [] and again.wal_copied == []
    assert set(again.skipped) == set(ids.values()) and again.wal_skipped == 5

    # What the destination lost is copied again, and only that.
    site.dst.delete_backup(ids["vault"])
    site.dst.delete_wal([SEGS[3]])
    third = copy_repository(site.src, site.dst)
    assert third.ok and third.copied == [ids["vault"]] and third.wal_copied == [SEGS[3]]
    assert _view(site.dst) == _view(site.src)


def test_objects_are_tagged_with_their_series_in_s3(dr_s3: str, tmp_path: Path) -> None:
    site = Site(tmp_path, f"s3://{BUCKET}/tags-{uuid.uuid4().hex[:10]}", dr_s3)
    ids = populate(site.src, tmp_path)
    assert copy_repository(site.src, site.dst).ok
    client = boto3.client("s3", endpoint_url=site.endpoint)
    prefix = site.dst_url.split("/", 3)[3] + "/"

    def tags(key: str) -> dict[str, str]:
        got = client.get_object_tagging(Bucket=BUCKET, Key=prefix + key)["TagSet"]
        return {t["Key"]: t["Value"] for t in got}

    assert tags(f"{DATA}{ids['full']}/base.tar") == {SERIES_TAG: "database/full"}
    assert tags(f"manifests/{ids['incr']}") == {SERIES_TAG: "database/incremental"}
    assert tags(f"verified/{ids['vault']}") == {SERIES_TAG: "vault/full"}
    assert tags(f"{WAL}{SEGS[0]}") == {SERIES_TAG: "database/wal"}
    assert tags(f"wal-index/{SEGS[0]}") == {SERIES_TAG: "database/wal"}
    assert tags("config") == {}
    site.close()


def test_corrupted_object_in_the_destination_is_found(site: Site, tmp_path: Path) -> None:
    ids = populate(site.src, tmp_path)
    assert copy_repository(site.src, site.dst).ok
    _tamper(site.dst, f"{DATA}{ids['full']}/base.tar", HEADER_BYTES + 4 + 50)
    report = site.dst.verify()
    assert [(p.backup_id, p.object, p.kind) for p in report.problems] == [
        (ids["full"], "base.tar", "corrupt")
    ]
    res = site.cli("backup", "verify", "--repository", "dr", "--json")
    assert res.returncode == 1
    assert json.loads(res.stdout)["ok"] is False
    last = res.stderr.strip().splitlines()[-1]
    assert ids["full"] in last and "base.tar" in last
    # The primary is fine, and says so.
    assert site.cli("backup", "verify").returncode == 0
    # A plain copy trusts what is there (and verified); --recheck reads it back and repairs.
    assert copy_repository(site.src, site.dst).skipped != []
    _tamper(site.dst, f"{WAL}{SEGS[2]}", HEADER_BYTES + 4 + 7)
    [fixed] = json.loads(site.cli("backup", "copy", "--recheck", "--json").stdout)
    assert fixed["ok"] and fixed["copied"] == [ids["full"]] and fixed["wal_copied"] == 1
    assert any(n.startswith(f"copy of backup {ids['full']} fails verification") and
               n.endswith("copied again") for n in fixed["notes"])  # fmt: skip
    assert any(n.startswith(f"WAL: {WAL}{SEGS[2]}: corrupt") for n in fixed["notes"])
    assert site.cli("backup", "verify", "--repository", "dr").returncode == 0
    assert _view(site.dst) == _view(site.src)
    usage = site.cli("backup", "copy", "--recheck", "--no-verify")
    assert usage.returncode == 2


def test_an_interrupted_copy_is_invisible_and_the_next_one_completes(
    site: Site, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = populate(site.src, tmp_path)
    real = site.src.iter_object

    def failing(backup_id: str, name: str) -> Iterator[bytes]:
        if backup_id == ids["vault"]:
            yield b"the first bytes"
            raise OSError("network dropped")
        yield from real(backup_id, name)

    monkeypatch.setattr(site.src, "iter_object", failing)
    with pytest.raises(OSError, match="network dropped"):
        copy_backups(site.src, site.dst)
    assert ids["vault"] not in {b.backup_id for b in site.dst.list_backups()}
    assert not list(site.dst.store.list(f"{DATA}{ids['vault']}/"))  # aborted: nothing left
    monkeypatch.undo()
    report = copy_repository(site.src, site.dst)
    assert report.ok and ids["vault"] in report.copied
    assert _view(site.dst) == _view(site.src)


def test_a_damaged_source_backup_is_a_problem_and_the_rest_is_copied(
    site: Site, tmp_path: Path
) -> None:
    ids = populate(site.src, tmp_path)
    _tamper(site.src, f"{DATA}{ids['vault']}/secrets.rows.jsonl", HEADER_BYTES + 4 + 10)
    report = copy_repository(site.src, site.dst)
    assert not report.ok
    assert len(report.problems) == 1 and ids["vault"] in report.problems[0]
    assert "corrupt" in report.problems[0]
    assert set(report.copied) == {ids["full"], ids["incr"]}
    assert ids["vault"] not in {b.backup_id for b in site.dst.list_backups()}
    assert site.dst.verify().ok
    res = site.cli("backup", "copy", "--json")
    assert res.returncode == 1
    out = json.loads(res.stdout)
    assert out[0]["repository"] == "dr" and out[0]["ok"] is False
    assert res.stderr.strip().splitlines()[-1].startswith("error: copy to dr failed: backup")


def test_copy_of_chosen_backups_brings_parents_and_their_wal(site: Site, tmp_path: Path) -> None:
    ids = populate(site.src, tmp_path)
    report = copy_repository(site.src, site.dst, backup_ids=[ids["incr"]])
    assert report.ok
    assert report.copied == [ids["full"], ids["incr"]]
    # The full's range is SEGS[0..1], the incremental's SEGS[2]; history files always.
    assert sorted(report.wal_copied) == sorted([*SEGS[:3], "00000002.history"])
    assert site.dst.list_wal() == sorted([*SEGS[:3], "00000002.history"])


def test_a_different_backup_under_the_same_id_is_never_overwritten(
    site: Site, tmp_path: Path
) -> None:
    ids = populate(site.src, tmp_path)
    original = site.src.get_backup(ids["vault"])
    with site.dst.begin_backup(
        "vault", "full", backup_id=ids["vault"], started_at=original.started_at
    ) as w:
        w.add_bytes("other", b"not the same backup")
        w.commit()
    report = copy_backups(site.src, site.dst)
    assert report.problems == [
        f"backup {ids['vault']}: the destination holds a different backup under this id"
    ]
    assert site.dst.read_manifest(ids["vault"]).objects[0].name == "other"


def test_copy_wal_skips_what_is_there_and_reports_what_vanished(
    site: Site, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    populate(site.src, tmp_path)
    first = copy_wal(site.src, site.dst, [SEGS[0]])
    assert first.ok and first.wal_copied == [SEGS[0]]
    listed = site.src.list_wal
    monkeypatch.setattr(site.src, "list_wal", lambda: [*listed(), "0000000100000000000000FF"])
    report = copy_wal(site.src, site.dst, report=CopyReport(site.src.url, site.dst.url))
    assert report.ok and report.wal_skipped == 1
    assert report.notes == ["WAL 0000000100000000000000FF was removed from the source meanwhile"]


# --- the CLI -----------------------------------------------------------------------------


def test_cli_copy_list_and_usage_errors(site: Site, tmp_path: Path) -> None:
    ids = populate(site.src, tmp_path)
    res = site.cli("backup", "copy", "--json")
    assert res.returncode == 0, res.stderr
    [entry] = json.loads(res.stdout)
    assert entry["repository"] == "dr" and entry["ok"] and entry["wal_copied"] == 5
    assert set(entry["copied"]) == set(ids.values())
    again = site.cli("backup", "copy", "--to", "dr")
    assert again.returncode == 0 and "0 backups copied" in again.stdout
    listed = json.loads(site.cli("backup", "list", "--repository", "dr", "--json").stdout)
    assert {b["backup_id"] for b in listed} == set(ids.values())
    assert all(b["verified_at"] for b in listed)

    # A secondary that does not exist yet is initialized by the first copy (its own key).
    fresh_key = tmp_path / "fresh.key"
    write_key_file(fresh_key)
    with open(site.config, "a") as f:
        f.write(f'\n[backup.secondary.fresh]\nurl = "file://{tmp_path / "fresh"}"\n'
                f'key_file = "{fresh_key}"\n')  # fmt: skip
    [made] = json.loads(site.cli("backup", "copy", "--to", "fresh", "--json").stdout)
    assert made["ok"] and made["notes"][0].startswith("initialized the repository at file://")
    assert set(made["copied"]) == set(ids.values())
    with Repository.open(f"file://{tmp_path / 'fresh'}", load_repository_key(fresh_key)) as r:
        assert r.verify().ok and len(r.list_backups()) == 3
    [again_fresh] = json.loads(site.cli("backup", "copy", "--to", "fresh", "--json").stdout)
    assert again_fresh["notes"] == [] and again_fresh["copied"] == []

    # Retention works on a secondary by its name too (with the secondary's key).
    kept = site.cli("retention", "plan", "--repository", "dr", "--json")
    assert kept.returncode == 0, kept.stderr
    assert json.loads(kept.stdout)["repository"] == site.dst.url

    nope = site.cli("backup", "copy", "--to", "nope")
    assert nope.returncode == 2 and "no secondary repository named 'nope'" in nope.stderr
    unknown = site.cli("backup", "list", "--repository", "nope")
    assert unknown.returncode == 2 and "no backup repository named 'nope'" in unknown.stderr
    bare = tmp_path / "bare.toml"
    bare.write_text(site.config.read_text().split("[backup.secondary")[0])
    res = subprocess.run(
        [sys.executable, "-m", "payapi", "--config", str(bare), "backup", "copy"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert res.returncode == 2 and "no secondary repository" in res.stderr


# --- wal push to the secondaries ------------------------------------------------------------

PushSite = Callable[..., Path]


def _push_config(tmp: Path, secondaries: dict[str, dict[str, str]]) -> tuple[Path, Path]:
    """A primary and secondaries (file://), initialized unless their url says /missing."""
    key_file = tmp / "primary.key"
    key = write_key_file(key_file)
    with Repository.open(f"file://{tmp / 'primary'}", key) as r:
        r.init()
    text = f'[backup]\nrepository = "file://{tmp / "primary"}"\nkey_file = "{key_file}"\n'
    for name, table in secondaries.items():
        if "missing" not in table["url"]:
            own = table.get("key_file")
            k = load_repository_key(Path(own)) if own else key
            with Repository.open(table["url"], k) as r:
                r.init()
        text += f"\n[backup.secondary.{name}]\n" + "".join(
            f'{k} = "{v}"\n' for k, v in table.items()
        )
    config = tmp / "payapi.toml"
    config.write_text(text)
    return config, key_file


def _push(config: Path, segment: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "payapi", "--config", str(config), "wal", "push", str(segment)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_wal_push_also_pushes_to_the_secondaries(tmp_path: Path) -> None:
    own_key = tmp_path / "dr.key"
    write_key_file(own_key)
    config, key_file = _push_config(
        tmp_path,
        {
            "dr": {"url": f"file://{tmp_path / 'dr'}", "key_file": str(own_key)},
            "same-key": {"url": f"file://{tmp_path / 'same'}"},
            "cold": {"url": f"file://{tmp_path / 'cold'}", "wal": "copy"},
            "down": {"url": f"file://{tmp_path / 'missing'}"},
        },
    )
    seg = tmp_path / SEGS[0]
    seg.write_bytes(os.urandom(3 * CHUNK))
    res = _push(config, seg)
    # The primary and the reachable secondaries have it; the one that is down is a
    # warning on stderr (the server log), not a failed archive.
    assert res.returncode == 0, res.stderr
    assert res.stderr.strip() == (
        f"warning: push to secondary down: no repository at file://{tmp_path / 'missing'} "
        "(initialize it first)"
    )
    key = load_repository_key(key_file)
    for name, k in (("primary", key), ("dr", load_repository_key(own_key)), ("same", key)):
        with Repository.open(f"file://{tmp_path / name}", k) as r:
            assert r.list_wal() == [SEGS[0]], name
            out = tmp_path / f"out-{name}"
            r.get_wal(SEGS[0], out)
            assert out.read_bytes() == seg.read_bytes()
    with Repository.open(f"file://{tmp_path / 'cold'}", key) as r:
        assert r.list_wal() == []
    # Again: a no-op where it is; the secondary that failed is left alone for a while.
    again = _push(config, seg)
    assert again.returncode == 0
    assert again.stderr.startswith("warning: push to secondary down skipped: it failed")
    # Once the back-off has passed it is tried again (and, being back, gets the segment).
    down = RepositoryRef(url=f"file://{tmp_path / 'missing'}")
    with Repository.open(down.url, key) as r:
        r.init()
    past = time.time() - PUSH_BACKOFF_SECONDS - 1
    os.utime(_backoff_marker(down), (past, past))
    assert _push(config, seg).stderr == ""
    assert not _backoff_marker(down).exists()
    with Repository.open(down.url, key) as r:
        assert r.list_wal() == [SEGS[0]]


def test_wal_push_fails_when_a_required_secondary_fails(tmp_path: Path) -> None:
    config, key_file = _push_config(
        tmp_path, {"must": {"url": f"file://{tmp_path / 'missing'}", "wal": "require"}}
    )
    seg = tmp_path / SEGS[0]
    seg.write_bytes(b"x" * 100)
    res = _push(config, seg)
    assert res.returncode == 1
    assert res.stderr.startswith("error: push to secondary must: no repository at")
    with Repository.open(f"file://{tmp_path / 'primary'}", load_repository_key(key_file)) as r:
        assert r.list_wal() == [SEGS[0]]  # the primary has it; PostgreSQL will retry


def test_wal_push_to_an_explicit_repository_goes_there_only(tmp_path: Path) -> None:
    config, key_file = _push_config(tmp_path, {"dr": {"url": f"file://{tmp_path / 'dr'}"}})
    seg = tmp_path / SEGS[0]
    seg.write_bytes(b"y" * 100)
    res = subprocess.run(
        [sys.executable, "-m", "payapi", "--config", str(config), "wal", "push",
         "--repository", "dr", str(seg)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    key = load_repository_key(key_file)
    with Repository.open(f"file://{tmp_path / 'dr'}", key) as r:
        assert r.list_wal() == [SEGS[0]]
        fetched = tmp_path / "fetched"
        fetch = subprocess.run(
            [sys.executable, "-m", "payapi", "--config", str(config), "wal", "fetch",
             "--repository", "dr", SEGS[0], str(fetched)],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert fetch.returncode == 0 and fetched.read_bytes() == seg.read_bytes()
    with Repository.open(f"file://{tmp_path / 'primary'}", key) as r:
        assert r.list_wal() == []


def test_verify_wal_names_missing_and_corrupt_segments(site: Site, tmp_path: Path) -> None:
    populate(site.src, tmp_path)
    _tamper(site.src, f"{WAL}{SEGS[1]}", HEADER_BYTES + 4 + 5)
    report = site.src.verify_wal([SEGS[0], SEGS[1], "0000000100000000000000EE"])
    assert [(p.object, p.kind) for p in report.problems] == [
        (f"{WAL}{SEGS[1]}", "corrupt"),
        ("wal-index/0000000100000000000000EE", "missing"),
    ]
    assert report.wal_checked == 2
    with pytest.raises(CorruptObject):
        site.src.get_wal(SEGS[1], tmp_path / "x")
