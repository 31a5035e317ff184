"""The backup repository end to end, on a local directory and on an S3-compatible server.

Every behavioural test runs twice: against ``file://`` and against ``s3://`` served by a
real ``moto_server`` process on loopback. Tampering is done on the stored bytes through
the store itself, exactly as a disk error or an attacker would.
"""

from __future__ import annotations

import base64
import contextlib
import io
import os
import signal
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from payapi.backup.crypto import HEADER_BYTES, generate_key
from payapi.backup.errors import (
    AlreadyExists,
    CorruptObject,
    MissingObject,
    NotFound,
    RepositoryError,
    RepositoryFull,
    RepositoryUnreachable,
    WalConflict,
    WrongKey,
)
from payapi.backup.repository import DATA, MANIFESTS, WAL, WAL_INDEX, Repository
from payapi.servers.procs import free_port
from tests.integration.s3_server import BUCKET

CHUNK = 4096
SEG = "000000010000000000000001"
MARKER = b"PLAINTEXT-MARKER-d41d8cd98f00b204"


# --- fixtures (s3_endpoint, the session's moto server, is in conftest.py) ---------------------


@pytest.fixture(params=["file", "s3"])
def repo_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "file":
        return f"file://{tmp_path}/repo"
    request.getfixturevalue("s3_endpoint")
    return f"s3://{BUCKET}/t-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def store_options(repo_url: str, request: pytest.FixtureRequest) -> dict[str, Any]:
    if repo_url.startswith("s3://"):
        return {"s3_endpoint_url": request.getfixturevalue("s3_endpoint")}
    return {}


class Clock:
    """An injected clock: each call is one minute after the previous one."""

    def __init__(self) -> None:
        self.t = datetime(2026, 11, 27, 1, 45, tzinfo=UTC)

    def __call__(self) -> datetime:
        self.t += timedelta(minutes=1)
        return self.t


OpenRepo = Callable[..., Repository]


@pytest.fixture
def open_repo(repo_url: str, store_options: dict[str, Any]) -> Iterator[OpenRepo]:
    opened: list[Repository] = []

    def _open(key: bytes, **kw: Any) -> Repository:
        options = {**store_options, "chunk_size": CHUNK, **kw}
        repo = Repository.open(repo_url, key, **options)
        opened.append(repo)
        return repo

    yield _open
    for repo in opened:
        repo.close()


@pytest.fixture
def key() -> bytes:
    return generate_key()


@pytest.fixture
def repo(open_repo: OpenRepo, key: bytes) -> Repository:
    r = open_repo(key, clock=Clock())
    r.init()
    return r


def _backup(repo: Repository, objects: dict[str, bytes], **kw: Any) -> str:
    with repo.begin_backup(kw.pop("component", "db"), kw.pop("type", "full"), **kw) as w:
        for name, data in objects.items():
            w.add_bytes(name, data)
        return w.commit().backup_id


def _tamper(repo: Repository, key: str, fn: Callable[[bytes], bytes]) -> None:
    repo.store.put_bytes(key, fn(repo.store.get_bytes(key)))


def _flip(pos: int) -> Callable[[bytes], bytes]:
    def f(data: bytes) -> bytes:
        b = bytearray(data)
        b[pos] ^= 0x40
        return bytes(b)

    return f


def _one_line(exc: BaseException) -> str:
    text = str(exc)
    assert "\n" not in text and text
    return text


# --- repository life cycle -------------------------------------------------------------------


def test_init_open_and_wrong_key(open_repo: OpenRepo, key: bytes, repo_url: str) -> None:
    fresh = open_repo(key)
    assert not fresh.initialized
    with pytest.raises(NotFound, match="no repository at"):
        fresh.list_backups()
    config = fresh.init()
    with pytest.raises(AlreadyExists):
        fresh.init()
    again = open_repo(key)
    assert again.config == config
    assert again.list_backups() == []
    other = generate_key()
    with pytest.raises(WrongKey) as exc:
        open_repo(other)
    text = _one_line(exc.value)
    assert text == f"wrong repository key for {again.url}"
    for k in (key, other):
        assert base64.b64encode(k).decode() not in text and k.hex() not in text


def test_round_trips(repo: Repository, tmp_path: Path) -> None:
    big = os.urandom(5 * CHUNK) + b"compressible " * 3000  # many chunks
    src = tmp_path / "base.tar"
    src.write_bytes(big)
    with repo.begin_backup("db", "full") as w:
        empty = w.add_bytes("empty", b"")
        small = w.add_object("small.txt", [b"hello ", b"world"])
        large = w.add_file("base.tar", src)
        w.add_object("sub/dir/stream.bin", io.BytesIO(big[:CHUNK]))
        w.set_wal_range(SEG, "000000010000000000000003")
        w.set_meta(pg_version=18, start_lsn="0/2000028", timeline=1)
        info = w.commit()
    assert (empty.size, small.size, large.size) == (0, 11, len(big))
    assert large.chunks > 5 and large.stored_size < large.size
    assert info.objects == 4 and info.bytes == 11 + len(big) + CHUNK
    assert info.backup_id.endswith(info.backup_id[-6:]) and "-db-full-" in info.backup_id
    assert (info.wal_start, info.wal_end) == (SEG, "000000010000000000000003")
    assert info.meta["start_lsn"] == "0/2000028"

    [listed] = repo.list_backups()
    assert listed == info
    manifest = repo.read_manifest(info.backup_id)
    assert [o.name for o in manifest.objects] == [
        "empty",
        "small.txt",
        "base.tar",
        "sub/dir/stream.bin",
    ]
    assert repo.open_object(info.backup_id, "empty").read() == b""
    assert repo.open_object(info.backup_id, "small.txt").read() == b"hello world"
    with repo.open_object(info.backup_id, "base.tar") as f:
        parts = []
        while piece := f.read(1000):  # odd read sizes across chunk boundaries
            parts.append(piece)
    assert b"".join(parts) == big
    dest = tmp_path / "restored.tar"
    repo.restore_object(info.backup_id, "base.tar", dest)
    assert dest.read_bytes() == big
    with pytest.raises(NotFound, match="not part of backup"):
        repo.open_object(info.backup_id, "nope")
    with pytest.raises(NotFound, match="not found"):
        repo.read_manifest("20261127T014500Z-db-full-000000")
    assert repo.verify().ok


def test_list_sorted_filtered_and_incremental_parents(repo: Repository) -> None:
    full = _backup(repo, {"a": b"1"})
    vault = _backup(repo, {"a": b"2"}, component="vault")
    incr = _backup(repo, {"a": b"3"}, type="incremental", parent=full)
    assert [b.backup_id for b in repo.list_backups()] == [full, vault, incr]
    assert [b.backup_id for b in repo.list_backups("db")] == [full, incr]
    assert repo.list_backups("db")[1].parent == full
    assert repo.list_backups("redis") == []
    with pytest.raises(NotFound, match="parent backup"):
        repo.begin_backup("db", "incremental", parent="20261127T014500Z-db-full-000000")
    with pytest.raises(ValueError, match="invalid component"):
        repo.begin_backup("Bad-Name", "full")
    repo.delete_backup(full)
    report = repo.verify()
    assert [(p.backup_id, p.kind) for p in report.problems] == [(incr, "missing")]
    assert "parent backup" in report.problems[0].detail


def test_plaintext_and_key_never_stored(repo: Repository, key: bytes, tmp_path: Path) -> None:
    _backup(repo, {"base.tar": MARKER * 500, "tiny": MARKER})
    seg = tmp_path / SEG
    seg.write_bytes(MARKER * 2000)
    repo.put_wal(SEG, seg)
    stored = [(e.key, repo.store.get_bytes(e.key)) for e in repo.store.list()]
    assert {k.split("/")[0] for k, _ in stored} >= {"config", "data", "manifests", "wal"}
    for name, data in stored:
        assert MARKER not in data, name
        assert key not in data and base64.b64encode(key) not in data, name
        assert b"base.tar" not in data or name.startswith(DATA), name  # manifests encrypted


# --- corruption is found and named -----------------------------------------------------------


def test_flipped_byte_in_data_object(repo: Repository) -> None:
    bid = _backup(repo, {"base.tar": os.urandom(3 * CHUNK), "other": b"fine"})
    _tamper(repo, f"{DATA}{bid}/base.tar", _flip(HEADER_BYTES + 4 + 100))
    report = repo.verify()
    assert [(p.backup_id, p.object, p.kind) for p in report.problems] == [
        (bid, "base.tar", "corrupt")
    ]
    assert "authentication failed at chunk 0" in report.problems[0].detail
    assert not report.backup_ok(bid)
    with pytest.raises(CorruptObject) as exc:
        repo.open_object(bid, "base.tar").read()
    assert _one_line(exc.value).startswith(f"corrupt object base.tar in backup {bid}")
    assert repo.verify(bid).problems == report.problems


def test_flipped_byte_in_manifest(repo: Repository) -> None:
    good = _backup(repo, {"a": b"x"})
    bad = _backup(repo, {"a": b"y"})
    _tamper(repo, MANIFESTS + bad, _flip(-3))
    assert [b.backup_id for b in repo.list_backups()] == [good]  # never looks valid
    with pytest.raises(CorruptObject, match="manifest"):
        repo.list_backups(strict=True)
    report = repo.verify()
    assert [(p.backup_id, p.object, p.kind) for p in report.problems] == [
        (bad, "manifest", "manifest")
    ]
    assert report.backup_ok(good)


def test_flipped_byte_in_wal_segment(repo: Repository, tmp_path: Path) -> None:
    seg = tmp_path / SEG
    seg.write_bytes(os.urandom(2 * CHUNK))
    repo.put_wal(SEG, seg)
    _tamper(repo, WAL + SEG, _flip(-1))
    report = repo.verify()
    assert [(p.backup_id, p.object, p.kind) for p in report.problems] == [
        (None, WAL + SEG, "corrupt")
    ]
    scratch = tmp_path / "pg_wal"
    scratch.mkdir()
    with pytest.raises(CorruptObject, match=SEG):
        repo.get_wal(SEG, scratch / "RECOVERYXLOG")
    assert list(scratch.iterdir()) == []  # nothing half-written left behind


def test_a_push_that_loses_the_index_race_settles_the_stored_segment(
    repo: Repository, tmp_path: Path
) -> None:
    """Two pushes of one segment: A wins the index, B's object lands last. Before B
    settles, the index does not describe the stored bytes (no restore could read them);
    B's settlement makes its own entry the index."""
    from payapi.backup.crypto import DataKey, ObjectEncryptor
    from payapi.backup.manifest import WalEntry

    seg = tmp_path / SEG
    seg.write_bytes(os.urandom(2 * CHUNK))
    assert repo.put_wal(SEG, seg)  # A
    enc = ObjectEncryptor(DataKey.new(repo.key), WAL + SEG, repo.chunk_size)
    with open(seg, "rb") as f:
        repo.store.put(WAL + SEG, enc.encrypt(f))  # B's object, written after A's index
    ours = WalEntry(
        name=SEG,
        size=enc.size,
        stored_size=enc.stored_size,
        sha256=enc.sha256,
        stored_sha256=enc.stored_sha256,
        archived_at=datetime.now(UTC),
    )
    assert [p.detail for p in repo.verify().problems] == [
        "SHA-256 of the stored bytes differs from the record"
    ]
    assert repo._settle_wal_race(SEG, WAL + SEG, ours)
    assert repo.verify().problems == []
    repo.get_wal(SEG, tmp_path / "RECOVERYXLOG")
    assert (tmp_path / "RECOVERYXLOG").read_bytes() == seg.read_bytes()
    assert repo._settle_wal_race(SEG, WAL + SEG, ours)  # settled: nothing more to do


def test_flipped_byte_in_wal_index(repo: Repository, tmp_path: Path) -> None:
    seg = tmp_path / SEG
    seg.write_bytes(b"w" * 100)
    repo.put_wal(SEG, seg)
    _tamper(repo, WAL_INDEX + SEG, _flip(-2))
    report = repo.verify()
    assert [(p.object, p.kind) for p in report.problems] == [(WAL_INDEX + SEG, "corrupt")]


def test_truncated_object(repo: Repository, tmp_path: Path) -> None:
    bid = _backup(repo, {"base.tar": os.urandom(3 * CHUNK)})
    _tamper(repo, f"{DATA}{bid}/base.tar", lambda d: d[: len(d) // 2])
    [problem] = repo.verify().problems
    assert (problem.object, problem.kind) == ("base.tar", "corrupt")
    assert "truncated" in problem.detail
    scratch = tmp_path / "restore"
    scratch.mkdir()
    with pytest.raises(CorruptObject, match="truncated"):
        repo.restore_object(bid, "base.tar", scratch / "base.tar")
    assert list(scratch.iterdir()) == []


def test_truncated_at_chunk_boundary(repo: Repository) -> None:
    """Whole trailing chunks removed: every remaining tag is valid, the final flag is not."""
    bid = _backup(repo, {"base.tar": os.urandom(3 * CHUNK)})
    key = f"{DATA}{bid}/base.tar"
    blob = repo.store.get_bytes(key)
    first_len = int.from_bytes(blob[HEADER_BYTES : HEADER_BYTES + 4], "big")
    repo.store.put_bytes(key, blob[: HEADER_BYTES + 4 + first_len])
    [problem] = repo.verify().problems
    assert problem.kind == "corrupt" and "truncated" in problem.detail


def test_reordered_chunks(repo: Repository) -> None:
    bid = _backup(repo, {"base.tar": os.urandom(2 * CHUNK) + b"z" * 10})
    key = f"{DATA}{bid}/base.tar"
    blob = repo.store.get_bytes(key)
    pos, frames = HEADER_BYTES, []
    while pos < len(blob):
        n = int.from_bytes(blob[pos : pos + 4], "big")
        frames.append(blob[pos : pos + 4 + n])
        pos += 4 + n
    assert len(frames) == 3
    repo.store.put_bytes(key, blob[:HEADER_BYTES] + frames[1] + frames[0] + frames[2])
    [problem] = repo.verify().problems
    assert problem.kind == "corrupt" and "chunk 0" in problem.detail


def test_missing_and_swapped_and_extra_objects(repo: Repository) -> None:
    a = _backup(repo, {"base.tar": b"A" * 100, "x": b"1"})
    b = _backup(repo, {"base.tar": b"B" * 100, "x": b"2"})
    repo.store.delete(f"{DATA}{a}/x")
    repo.store.put_bytes(f"{DATA}{b}/base.tar", repo.store.get_bytes(f"{DATA}{a}/base.tar"))
    repo.store.put_bytes(f"{DATA}{b}/intruder", b"junk")
    problems = {(p.backup_id, p.object, p.kind) for p in repo.verify().problems}
    assert problems == {
        (a, "x", "missing"),
        (b, "base.tar", "corrupt"),  # an object from another backup does not open here
        (b, "intruder", "unlisted"),
    }
    with pytest.raises(MissingObject) as exc:
        repo.open_object(a, "x")
    assert isinstance(exc.value, NotFound) and isinstance(exc.value, CorruptObject)
    assert "missing" in _one_line(exc.value)


# --- crashes, reruns and orphans -------------------------------------------------------------


def test_crash_before_commit_then_rerun(repo: Repository) -> None:
    crashed = repo.begin_backup("db", "full")
    crashed.add_bytes("base.tar", b"half a backup")
    # The process dies here: no commit, no abort.
    assert repo.list_backups() == []
    report = repo.verify()
    assert report.ok and report.orphans == [f"{DATA}{crashed.backup_id}"]

    rerun = _backup(repo, {"base.tar": b"a whole backup"})
    assert [b.backup_id for b in repo.list_backups()] == [rerun]
    assert repo.prune_orphans(older_than=timedelta(days=1)) == []  # too recent to be sure
    assert repo.prune_orphans() == [f"{DATA}{crashed.backup_id}"]
    assert repo.verify().orphans == []
    assert repo.open_object(rerun, "base.tar").read() == b"a whole backup"
    with pytest.raises(MissingObject):  # its commit now refuses to write a holey manifest
        crashed.commit()
    assert [b.backup_id for b in repo.list_backups()] == [rerun]


def test_abort_and_context_manager(repo: Repository) -> None:
    with pytest.raises(RuntimeError), repo.begin_backup("db", "full") as w:
        w.add_bytes("base.tar", b"x" * 10)
        raise RuntimeError("pg_basebackup died")
    assert not any(True for _ in repo.store.list(DATA))
    w2 = repo.begin_backup("db", "full")
    w2.add_bytes("a", b"1")
    with pytest.raises(AlreadyExists):
        w2.add_bytes("a", b"2")
    w2.abort()
    with pytest.raises(RepositoryError, match="aborted"):
        w2.add_bytes("b", b"x")
    assert repo.list_backups() == [] and repo.verify().orphans == []


_KILLED_BACKUP = textwrap.dedent(
    """
    import os, signal, sys
    from payapi.backup.repository import Repository
    url, key_hex, endpoint = sys.argv[1], sys.argv[2], sys.argv[3] or None
    repo = Repository.open(url, bytes.fromhex(key_hex), s3_endpoint_url=endpoint,
                           part_size=5 << 20)
    w = repo.begin_backup("db", "full")
    w.add_bytes("first", b"complete object")
    def source():
        for _ in range(8):
            yield os.urandom(1 << 20)
        os.kill(os.getpid(), signal.SIGKILL)  # killed in the middle of an upload
    w.add_object("second", source())
    """
)


def test_backup_killed_mid_upload(
    repo: Repository, repo_url: str, key: bytes, store_options: dict[str, Any]
) -> None:
    endpoint = store_options.get("s3_endpoint_url") or ""
    proc = subprocess.run(
        [sys.executable, "-c", _KILLED_BACKUP, repo_url, key.hex(), endpoint],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert repo.list_backups() == []
    assert [k.key.rsplit("/", 1)[-1] for k in repo.store.list(DATA)] == ["first"]
    removed = repo.prune_orphans()
    assert len(removed) == 1 and removed[0].startswith(DATA)
    assert list(repo.store.list(DATA)) == []
    if repo_url.startswith("file://"):
        root = Path(repo_url[len("file://") :])
        assert [p for p in root.rglob(".tmp-*")] == []  # the temp file was cleaned too
    else:
        uploads = repo.store.client.list_multipart_uploads(Bucket=BUCKET)  # type: ignore[attr-defined]
        prefix = repo.store.prefix  # type: ignore[attr-defined]
        assert [u for u in uploads.get("Uploads", []) if u["Key"].startswith(prefix)] == []
    rerun = _backup(repo, {"first": b"complete object", "second": b"again"})
    assert [b.backup_id for b in repo.list_backups()] == [rerun]
    assert repo.verify().ok


def test_delete_backup_manifest_first(repo: Repository) -> None:
    bid = _backup(repo, {"a": b"1", "b": b"2"})
    keep = _backup(repo, {"a": b"3"})
    repo.mark_verified(bid, datetime(2026, 11, 28, tzinfo=UTC), {"restore_test": "ok"})
    assert repo.get_backup(bid).verified_at == datetime(2026, 11, 28, tzinfo=UTC)
    # A deletion interrupted after its first step: the backup is already gone from lists.
    repo.store.delete(MANIFESTS + bid)
    assert [b.backup_id for b in repo.list_backups()] == [keep]
    assert sorted(repo.prune_orphans()) == [f"{DATA}{bid}", f"verified/{bid}"]
    repo.delete_backup(keep)
    with pytest.raises(NotFound):
        repo.delete_backup(keep)
    assert list(repo.store.list(DATA)) == [] and repo.list_backups() == []


def test_mark_verified_is_listed(repo: Repository) -> None:
    bid = _backup(repo, {"a": b"1"})
    assert repo.list_backups()[0].verified_at is None
    at = datetime(2026, 11, 27, 3, 0, tzinfo=UTC)
    report = repo.verify(bid)
    assert report.backup_ok(bid) and report.objects_checked == 1
    repo.mark_verified(bid, at, {"objects": report.objects_checked})
    assert repo.list_backups()[0].verified_at == at
    with pytest.raises(NotFound):
        repo.mark_verified("20261127T014500Z-db-full-000000", at, {})
    _tamper(repo, f"verified/{bid}", _flip(-1))
    assert [(p.object, p.kind) for p in repo.verify().problems] == [
        ("verification record", "corrupt")
    ]


# --- WAL -------------------------------------------------------------------------------------


def test_wal_push_get_idempotent_and_conflict(repo: Repository, tmp_path: Path) -> None:
    seg = tmp_path / SEG
    seg.write_bytes(os.urandom(3 * CHUNK))
    assert repo.put_wal(SEG, seg) is True
    assert repo.put_wal(SEG, seg) is False  # same content twice: harmless
    other = tmp_path / "other"
    other.write_bytes(os.urandom(3 * CHUNK))
    with pytest.raises(WalConflict) as exc:
        repo.put_wal(SEG, other)
    assert SEG in _one_line(exc.value)
    dest = tmp_path / "RECOVERYXLOG"
    repo.get_wal(SEG, dest)
    assert dest.read_bytes() == seg.read_bytes()
    history = tmp_path / "00000002.history"
    history.write_text("1\t0/3000000\tbefore 2026-11-27\n")
    repo.put_wal(history.name, history)
    assert repo.list_wal() == [SEG, "00000002.history"]
    assert repo.wal_entry(SEG).size == 3 * CHUNK
    with pytest.raises(NotFound, match="000000010000000000000009 not found"):
        repo.get_wal("000000010000000000000009", tmp_path / "x")
    assert not (tmp_path / "x").exists()
    with pytest.raises(ValueError, match="invalid WAL"):
        repo.put_wal("../etc/passwd", seg)
    report = repo.verify()
    assert report.ok and report.wal_checked == 2
    assert repo.delete_wal([SEG, "000000010000000000000009"]) == 1
    assert repo.list_wal() == ["00000002.history"]
    assert list(repo.store.list(WAL + SEG)) == []


def test_wal_push_killed_between_segment_and_index(repo: Repository, tmp_path: Path) -> None:
    seg = tmp_path / SEG
    seg.write_bytes(b"real segment")
    repo.store.put_bytes(WAL + SEG, b"half written garbage")  # no index entry
    assert repo.list_wal() == []
    assert repo.verify().orphans == [WAL + SEG]
    assert repo.put_wal(SEG, seg) is True  # the retry simply redoes it
    repo.get_wal(SEG, tmp_path / "out")
    assert (tmp_path / "out").read_bytes() == b"real segment"
    assert repo.verify().ok and repo.verify().orphans == []


def test_wal_push_imports_stay_light(tmp_path: Path, key: bytes) -> None:
    """``wal push`` runs once per segment: a file repository never imports boto3."""
    repo = Repository.open(f"file://{tmp_path}/repo", key)
    repo.init()
    seg = tmp_path / SEG
    seg.write_bytes(b"w" * 1000)
    code = textwrap.dedent(
        f"""
        import sys
        from payapi.backup.repository import Repository
        repo = Repository.open({repo.url!r}, bytes.fromhex({key.hex()!r}))
        assert repo.put_wal({SEG!r}, {str(seg)!r})
        heavy = [m for m in ("boto3", "botocore", "fastapi", "asyncpg", "structlog")
                 if m in sys.modules]
        assert not heavy, heavy
        """
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    assert repo.list_wal() == [SEG]


# --- S3 specifics ----------------------------------------------------------------------------


def test_s3_multipart_and_server_side_encryption(s3_endpoint: str, key: bytes) -> None:
    url = f"s3://{BUCKET}/mp-{uuid.uuid4().hex[:8]}"
    repo = Repository.open(url, key, s3_endpoint_url=s3_endpoint, part_size=5 << 20)
    repo.init()
    data = os.urandom(7 << 20) + b"\x00" * (6 << 20)  # > 2 parts after compression
    with repo.begin_backup("db", "full") as w:
        entry = w.add_object("base.tar", io.BytesIO(data))
        bid = w.commit().backup_id
    client = repo.store.client  # type: ignore[attr-defined]
    head = client.head_object(Bucket=BUCKET, Key=f"{repo.store.prefix}{DATA}{bid}/base.tar")  # type: ignore[attr-defined]
    assert head["ServerSideEncryption"] == "AES256"
    assert "-" in head["ETag"]  # a multipart ETag
    assert head["ContentLength"] == entry.stored_size
    assert repo.open_object(bid, "base.tar").read() == data
    assert repo.verify().ok
    repo.close()


def test_s3_transient_errors_are_retried(s3_endpoint: str, key: bytes) -> None:
    from botocore.awsrequest import AWSResponse, HTTPHeaders

    url = f"s3://{BUCKET}/retry-{uuid.uuid4().hex[:8]}"
    repo = Repository.open(url, key, s3_endpoint_url=s3_endpoint, max_attempts=5)
    repo.init()
    calls: list[str] = []

    class _Raw:
        def stream(self, **_: Any) -> Iterator[bytes]:
            yield b"<Error><Code>SlowDown</Code><Message>Reduce your rate</Message></Error>"

    def flaky(request: Any, **_: Any) -> AWSResponse | None:
        calls.append(request.url)
        if len(calls) <= 2:
            return AWSResponse(request.url, 503, HTTPHeaders(), _Raw())
        return None

    events = repo.store.client.meta.events  # type: ignore[attr-defined]
    events.register("before-send.s3.PutObject", flaky)
    bid = _backup(repo, {"a": b"survives two 503s"})
    assert len(calls) >= 3
    assert repo.open_object(bid, "a").read() == b"survives two 503s"
    repo.close()


def test_s3_unreachable_and_missing_bucket(s3_endpoint: str, key: bytes) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(RepositoryUnreachable) as exc:
        Repository.open(f"s3://{BUCKET}/x", key, s3_endpoint_url=dead, max_attempts=2)
    assert _one_line(exc.value).startswith(f"repository unreachable: s3://{BUCKET}/x/")
    with pytest.raises(RepositoryUnreachable, match="bucket no-such-bucket does not exist"):
        Repository.open("s3://no-such-bucket/x", key, s3_endpoint_url=s3_endpoint)


# --- a full disk -----------------------------------------------------------------------------


@contextlib.contextmanager
def _small_tmpfs(path: Path, size: str) -> Iterator[Path]:
    path.mkdir()
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {proc.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def test_full_disk_is_one_line_and_leaves_nothing_valid(tmp_path: Path, key: bytes) -> None:
    with _small_tmpfs(tmp_path / "small", "2m") as mnt:
        repo = Repository.open(f"file://{mnt}/repo", key, chunk_size=CHUNK)
        repo.init()
        ok = _backup(repo, {"a": b"fits"})
        with pytest.raises(RepositoryFull) as exc, repo.begin_backup("db", "full") as w:
            w.add_object("base.tar", (os.urandom(1 << 16) for _ in range(64)))  # 4 MiB
        assert _one_line(exc.value).startswith("repository full:")
        assert [b.backup_id for b in repo.list_backups()] == [ok]
        assert list((mnt / "repo").rglob(".tmp-*")) == []
        assert [e.key for e in repo.store.list(DATA)] == [f"{DATA}{ok}/a"]
        # Space comes back: the rerun works.
        assert _backup(repo, {"a": b"fits again"}) in {b.backup_id for b in repo.list_backups()}
        assert repo.verify().ok
