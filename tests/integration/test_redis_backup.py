"""Redis snapshots and restores end to end: real redis-server processes, a file repository.

What is proven here:
- a snapshot taken while a thread keeps writing is consistent: restored into a stopped
  Redis, the key count is exactly what the backup recorded (and keys written after the
  snapshot are not there);
- a restore never brings back a verification-cache entry, nor a token revoked after the
  snapshot, and moves the revocation generation past every earlier value;
- rebuild starts Redis empty (only the generation) and serving;
- keys that expire between the snapshot and the restore do not fail the verification;
- the backup leaves no RDB in a persistence-less Redis's directory (which its next start
  would load), and a restore removes the one it put there once it is loaded.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis as redis_sync

from payapi.backup.crypto import generate_key
from payapi.backup.errors import NotFound
from payapi.backup.rdb import scan_file
from payapi.backup.redis_backup import COMPONENT, OBJECT, TYPE, run_redis_backup
from payapi.backup.redis_restore import (
    RedisRestoreError,
    Revocations,
    restore_redis,
    revocations_from_events,
)
from payapi.backup.repository import Repository
from payapi.core.settings import RedisSettings
from payapi.eapi.cache import GEN_KEY, Cache, token_digest
from payapi.servers.procs import free_port
from payapi.servers.redis import RedisServer
from payapi.systems.redis import LocalRedisControl


@pytest.fixture
def repo(tmp_path: Path) -> Iterator[Repository]:
    r = Repository.open(f"file://{tmp_path / 'repo'}", generate_key(), chunk_size=64 * 1024)
    r.init()
    yield r
    r.close()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    s = RedisServer(workdir=tmp_path / "redis", port=free_port())
    s.start()
    yield s
    s.stop()


def _int(raw: object) -> int:
    assert isinstance(raw, bytes | str)
    return int(raw)


def _client(server: RedisServer, db: int = 0) -> redis_sync.Redis:
    return redis_sync.Redis(host="127.0.0.1", port=server.port, db=db)


def _settings(server: RedisServer) -> RedisSettings:
    return RedisSettings(url=server.url)


def _keyspace(server: RedisServer) -> dict[int, int]:
    c = _client(server)
    try:
        info = c.info("keyspace")
    finally:
        c.close()
    return {int(k[2:]): int(v["keys"]) for k, v in info.items()}


def _fill(server: RedisServer, n: int, prefix: str = "seed", db: int = 0) -> None:
    c = _client(server, db)
    try:
        for start in range(0, n, 1000):
            pipe = c.pipeline(transaction=False)
            for i in range(start, min(n, start + 1000)):
                pipe.set(f"{prefix}:{i}", f"value-{i}-" + "x" * 40)
            pipe.execute()
    finally:
        c.close()


class Writer(threading.Thread):
    """Writes new keys as fast as it can until stopped (the 'write load')."""

    def __init__(self, server: RedisServer) -> None:
        super().__init__(daemon=True)
        self.server = server
        self.stop_event = threading.Event()
        self.written = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        c = _client(self.server)
        try:
            while not self.stop_event.is_set():
                pipe = c.pipeline(transaction=False)
                for _ in range(50):
                    pipe.set(f"load:{self.written}", "v")
                    self.written += 1
                pipe.execute()
        except BaseException as exc:  # pragma: no cover - reported by the test
            self.error = exc
        finally:
            c.close()


def test_snapshot_under_write_load_restores_the_recorded_key_count(
    repo: Repository, server: RedisServer
) -> None:
    _fill(server, 60_000)
    _fill(server, 500, prefix="other", db=3)
    writer = Writer(server)
    writer.start()
    try:
        while writer.written < 2000:  # the load is really running
            time.sleep(0.01)
        before = writer.written
        info = run_redis_backup(repo, _settings(server))
        during = writer.written - before
    finally:
        writer.stop_event.set()
        writer.join(10)
    assert writer.error is None
    assert during > 0, "the writer made progress while the snapshot was taken"

    assert info.component == COMPONENT == "redis"
    assert info.type == TYPE == "snapshot"
    assert info.objects == 1 and info.bytes > 0
    recorded = {int(k): v for k, v in info.meta["keys"].items()}
    assert recorded[3] == 500
    assert 60_000 + 2000 <= recorded[0] <= 60_000 + writer.written
    assert info.meta["total_keys"] == sum(recorded.values())
    assert info.meta["redis_version"].startswith("6.")
    assert info.meta["key_classes"]["other"] == sum(recorded.values())
    assert "@" not in info.meta["source"]

    # The live Redis has moved on: more keys than the snapshot.
    assert _keyspace(server)[0] > recorded[0]

    result = restore_redis(repo, _settings(server), LocalRedisControl(server))
    assert result.mode == "restore" and result.verified
    assert result.backup_id == info.backup_id
    assert result.snapshot_keys == recorded
    assert result.loaded_keys == recorded
    # Only the generation is added (there were no tokens, no verification entries).
    assert result.final_keys == {0: recorded[0] + 1, 3: 500}
    assert _keyspace(server) == result.final_keys
    assert result.dropped == {"verifications": 0, "tokens": 0, "token_sets": 0}
    c = _client(server)
    try:
        assert c.exists(f"load:{recorded[0] - 60_000 - 1}")  # the last key in the snapshot
        assert not c.exists(f"load:{writer.written - 1}")  # written after it
        assert _int(c.get(GEN_KEY)) == result.generation
    finally:
        c.close()
    # The restored file is gone from the persistence-less Redis's dir, staging too.
    assert sorted(p.name for p in server.workdir.iterdir()) == ["redis.log", "redis.pid"]
    json_out = result.to_json()
    assert json_out["final_keys"] == {"0": recorded[0] + 1, "3": 500}
    assert json_out["component"] == "redis"


def _token_keys(server: RedisServer) -> set[str]:
    c = _client(server)
    try:
        return {k.decode() for k in c.scan_iter(match="payapi:tok:*")}
    finally:
        c.close()


async def _eapi_state(server: RedisServer) -> dict[str, str]:
    """What EAPI would have put there: tokens of two clients, verifications, a generation."""
    cache = Cache.from_url(server.url, timeout=2.0)
    try:
        await cache.store_token("token-alice-1", "alice", 900)
        await cache.store_token("token-alice-2", "alice", 900)
        await cache.store_token("token-bob-1", "bob", 900)
        _until, gen = await cache.verified_until("alice", "mac-a")
        await cache.remember_verification("alice", "mac-a", time.time() + 300, 300, gen)
        await cache.remember_verification("bob", "mac-b", time.time() + 300, 300, gen)
        await cache.forget_verifications("carol")  # bumps the generation
        await cache.hit([("client:alice", 100)])  # a rate-limit counter
        assert await cache.token_client("token-bob-1") == "bob"
    finally:
        await cache.aclose()
    return {"alice": token_digest("token-alice-1"), "bob": token_digest("token-bob-1")}


async def test_restore_drops_verifications_and_tokens_revoked_since(
    repo: Repository, server: RedisServer
) -> None:
    digests = await _eapi_state(server)
    info = run_redis_backup(repo, _settings(server))
    assert info.meta["key_classes"]["tokens"] == 3
    assert info.meta["key_classes"]["verifications"] == 2
    snapshot_at = datetime.fromisoformat(info.meta["snapshot_at"])

    # After the snapshot: alice revokes a token (POST /api/v1/revoke), and bob's token
    # is still fine. The audit chain says "token.revoked" with subject alice.
    cache = Cache.from_url(server.url, timeout=2.0)
    try:
        assert await cache.revoke_token("token-alice-1")
        live_gen = _int(await cache.redis.get(GEN_KEY))
    finally:
        await cache.aclose()
    revs = revocations_from_events(
        [("token.revoked", "alice"), ("auth.failure", "x")], snapshot_at - timedelta(seconds=1)
    )
    assert revs.client_ids == frozenset({"alice"}) and not revs.all_tokens

    result = restore_redis(repo, _settings(server), LocalRedisControl(server), revocations=revs)
    assert result.verified and result.tokens == "partially dropped"
    assert result.dropped == {"verifications": 2, "tokens": 2, "token_sets": 1}
    assert _token_keys(server) == {f"payapi:tok:{digests['bob']}"}
    c = _client(server)
    try:
        assert not list(c.scan_iter(match="payapi:ver:*"))
        assert not c.exists("payapi:ctok:alice")
        assert c.exists("payapi:ctok:bob")
        gen = _int(c.get(GEN_KEY))
    finally:
        c.close()
    assert gen == result.generation > live_gen
    cache = Cache.from_url(server.url, timeout=2.0)
    try:
        assert await cache.token_client("token-alice-1") is None  # revoked: stays revoked
        assert await cache.token_client("token-alice-2") is None  # dropped with alice's
        assert await cache.token_client("token-bob-1") == "bob"  # kept
        # A verification looked up before the restore (old generation) is not cached.
        stored = await cache.remember_verification("bob", "m", time.time() + 60, 60, "1")
        assert not stored
    finally:
        await cache.aclose()


async def test_restore_without_a_revocation_record_drops_every_token(
    repo: Repository, server: RedisServer
) -> None:
    await _eapi_state(server)
    run_redis_backup(repo, _settings(server))
    result = restore_redis(repo, _settings(server), LocalRedisControl(server))
    assert result.verified and result.tokens == "dropped"
    assert result.dropped == {"verifications": 2, "tokens": 3, "token_sets": 2}
    assert _token_keys(server) == set()
    c = _client(server)
    try:
        keys = sorted(k.decode() for k in c.scan_iter(match="payapi:*"))
    finally:
        c.close()
    # Rate limits and the generation survive; nothing that authenticates anybody does.
    assert keys[0] == GEN_KEY and all(k.startswith("payapi:rl:") for k in keys[1:])

    # An emergency rotation since the snapshot drops every token too.
    await _eapi_state(server)
    info = run_redis_backup(repo, _settings(server))
    revs = revocations_from_events(
        [("credentials.emergency_rotation", "all-clients")], info.started_at
    )
    result = restore_redis(repo, _settings(server), LocalRedisControl(server), revocations=revs)
    assert result.tokens == "dropped" and _token_keys(server) == set()


async def test_restore_keeps_tokens_when_nothing_was_revoked(
    repo: Repository, server: RedisServer
) -> None:
    digests = await _eapi_state(server)
    info = run_redis_backup(repo, _settings(server))
    revs = Revocations(since=info.started_at - timedelta(minutes=1))
    result = restore_redis(repo, _settings(server), LocalRedisControl(server), revocations=revs)
    assert result.tokens == "kept"
    assert _token_keys(server) == {f"payapi:tok:{d}" for d in _all_digests(digests)}
    assert result.dropped["verifications"] == 2

    with pytest.raises(ValueError, match="do not cover"):
        restore_redis(
            repo,
            _settings(server),
            LocalRedisControl(server),
            revocations=Revocations(since=datetime.now(UTC) + timedelta(hours=1)),
        )


def _all_digests(d: dict[str, str]) -> set[str]:
    return {d["alice"], d["bob"], token_digest("token-alice-2")}


def test_rebuild_starts_empty_and_serving(repo: Repository, server: RedisServer) -> None:
    _fill(server, 1000)
    c = _client(server)
    try:
        c.set(GEN_KEY, 7)
    finally:
        c.close()
    run_redis_backup(repo, _settings(server))  # a snapshot exists; rebuild ignores it
    result = restore_redis(repo, _settings(server), LocalRedisControl(server), rebuild=True)
    assert result.mode == "rebuild" and result.verified and result.backup_id is None
    assert result.final_keys == {0: 1}
    assert _keyspace(server) == {0: 1}
    c = _client(server)
    try:
        assert _int(c.get(GEN_KEY)) == result.generation > 7
        assert c.ping()
        c.set("after-rebuild", "1")
        assert c.get("after-rebuild") == b"1"
    finally:
        c.close()


def test_keys_expiring_between_snapshot_and_restore_do_not_fail_verification(
    repo: Repository, server: RedisServer
) -> None:
    c = _client(server)
    try:
        pipe = c.pipeline(transaction=False)
        for i in range(200):
            pipe.set(f"short:{i}", "v", px=400)
            pipe.set(f"long:{i}", "v", ex=3600)
            pipe.set(f"forever:{i}", "v")
        pipe.execute()
    finally:
        c.close()
    info = run_redis_backup(repo, _settings(server))
    assert info.meta["keys"] == {"0": 600}
    assert info.meta["expires"] == {"0": 400}
    time.sleep(0.6)  # the short ones are past their expiry now
    result = restore_redis(repo, _settings(server), LocalRedisControl(server))
    assert result.verified
    assert result.loaded_keys == {0: 400}
    assert result.final_keys == {0: 401}


def test_backup_leaves_no_rdb_behind_and_sets_the_switch_if_needed(
    repo: Repository, server: RedisServer
) -> None:
    _fill(server, 100)
    c = _client(server)
    try:
        c.config_set("rdb-del-sync-files", "no")  # as a Redis not started by the lab
        run_redis_backup(repo, _settings(server))
        assert c.config_get("rdb-del-sync-files") == {"rdb-del-sync-files": "yes"}
    finally:
        c.close()
    deadline = time.monotonic() + 10
    while (server.workdir / "dump.rdb").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not (server.workdir / "dump.rdb").exists()
    # Restart: still empty (the lab's Redis keeps nothing across restarts).
    server.stop()
    server.start()
    assert _keyspace(server) == {}


def test_stored_object_is_the_rdb_and_scans_to_the_recorded_counts(
    repo: Repository, server: RedisServer, tmp_path: Path
) -> None:
    _fill(server, 300)
    info = run_redis_backup(repo, _settings(server))
    dest = tmp_path / "out.rdb"
    repo.restore_object(info.backup_id, OBJECT, dest)
    assert dest.read_bytes()[:9] == b"REDIS0009"
    summary = scan_file(dest)
    assert {str(k): v for k, v in summary.keys().items()} == info.meta["keys"]
    assert [b.backup_id for b in repo.list_backups("redis")] == [info.backup_id]


def test_restore_errors_are_clear(repo: Repository, server: RedisServer) -> None:
    with pytest.raises(NotFound, match="no Redis backup"):
        restore_redis(repo, _settings(server), LocalRedisControl(server))
    with repo.begin_backup("vault", "full", None) as w:
        w.add_bytes("x", b"y")
        other = w.commit()
    with pytest.raises(RedisRestoreError, match="not Redis"):
        restore_redis(repo, _settings(server), LocalRedisControl(server), backup_id=other.backup_id)
    assert server.is_running()  # nothing was stopped


def test_backup_of_an_unreachable_redis_is_one_clear_error(repo: Repository) -> None:
    from payapi.backup.redis_backup import RedisBackupError

    url = f"redis://:hunter2@127.0.0.1:{free_port()}/0"
    with pytest.raises(RedisBackupError) as err:
        run_redis_backup(repo, RedisSettings(url=url))
    assert "unreachable" in str(err.value) and "hunter2" not in str(err.value)
    assert repo.list_backups() == []


def test_a_snapshot_redis_refuses_leaves_the_live_redis_untouched(
    repo: Repository, server: RedisServer, tmp_path: Path
) -> None:
    _fill(server, 50)
    good = run_redis_backup(repo, _settings(server))
    rdb = tmp_path / "good.rdb"
    repo.restore_object(good.backup_id, OBJECT, rdb)
    data = bytearray(rdb.read_bytes())
    data[-1] ^= 0xFF  # a wrong CRC64: the scanner does not check it, Redis does
    with repo.begin_backup(COMPONENT, TYPE, None) as w:
        w.add_bytes(OBJECT, bytes(data))
        w.set_meta(keys=good.meta["keys"])
        bad = w.commit()
    _fill(server, 10, prefix="live")
    with pytest.raises(RedisRestoreError, match="private Redis"):
        restore_redis(repo, _settings(server), LocalRedisControl(server), backup_id=bad.backup_id)
    assert server.is_running()
    assert _keyspace(server) == {0: 60}
    assert [p.name for p in server.workdir.iterdir() if p.name.startswith(".payapi")] == []
