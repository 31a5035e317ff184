"""The RDB scanner against RDB files written by a real Redis: every value type and encoding
Redis 6.2 writes, in several databases, must count exactly as Redis itself counts."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis as redis_sync

from payapi.backup.rdb import RdbError, classify_key, lzf_decompress, scan_file, scan_stream
from payapi.servers.procs import free_port
from payapi.servers.redis import RedisServer


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    s = RedisServer(workdir=tmp_path / "redis", port=free_port())
    s.start()
    yield s
    s.stop()


def _populate(c: redis_sync.Redis) -> None:
    c.set("int", 12345)
    c.set("neg", -7)
    c.set("big-int", 2**40)
    c.set("short", "hello")
    c.set("compressible:" + "k" * 100, "v" * 5000)  # LZF key and value
    c.set("binary", bytes(range(256)))
    c.set("empty", "")
    c.hset("hash-small", mapping={"a": "1", "b": "2"})
    c.hset("hash-big", mapping={f"f{i}": "x" * 100 for i in range(600)})
    c.sadd("set-int", *range(10))
    c.sadd("set-big", *[f"m{i}" for i in range(600)])
    c.zadd("zset-small", {"a": 1.5, "b": 2})
    c.zadd("zset-big", {f"m{i}": i / 3 for i in range(300)})
    c.zadd("zset-inf", {"lo": float("-inf"), "hi": float("inf")})
    c.rpush("list", *[f"e{i}" for i in range(1000)])
    c.rpush("list-small", "a")
    c.xadd("stream", {"k": "v"})
    c.xadd("stream", {"k": "w"})
    c.xgroup_create("stream", "g1", id="0")
    c.xreadgroup("g1", "consumer-1", {"stream": ">"}, count=1)  # one pending entry
    c.xgroup_create("stream", "g2", id="$")
    c.set("ttl-ms", "v", px=3_600_000)
    c.set("ttl-s", "v", ex=7200)
    c.set("payapi:tok:" + "a" * 64, "client")
    c.sadd("payapi:ctok:client", "a" * 64)
    c.hset("payapi:ver:client", "mac", "1.0")
    c.incr("payapi:rl:client:x:1")
    c.incr("payapi:gen")


def _save(server: RedisServer) -> Path:
    c = redis_sync.Redis(host="127.0.0.1", port=server.port)
    try:
        c.save()
    finally:
        c.close()
    return server.workdir / "dump.rdb"


def test_every_value_type_counts_like_redis(server: RedisServer) -> None:
    c0 = redis_sync.Redis(host="127.0.0.1", port=server.port, db=0)
    c5 = redis_sync.Redis(host="127.0.0.1", port=server.port, db=5)
    try:
        _populate(c0)
        c5.set("x", 1)
        c5.set("y", 2, ex=100)
        sizes = {0: c0.dbsize(), 5: c5.dbsize()}
    finally:
        c0.close()
        c5.close()
    path = _save(server)
    summary = scan_file(path)
    assert summary.rdb_version == 9
    assert summary.keys() == sizes
    assert summary.expires() == {0: 2, 5: 1}
    assert summary.aux["redis-ver"].startswith("6.2")
    assert summary.classes["tokens"] == 1
    assert summary.classes["token_sets"] == 1
    assert summary.classes["verifications"] == 1
    assert summary.classes["rate_limits"] == 1
    assert summary.classes["generation"] == 1
    assert summary.classes["other"] == sum(sizes.values()) - 5
    assert summary.bytes == path.stat().st_size
    # The same bytes as a stream, in awkward chunk sizes.
    data = path.read_bytes()
    chunks = [data[i : i + 7] for i in range(0, len(data), 7)]
    assert scan_stream(chunks).keys() == sizes


def test_alive_at_follows_expiry(server: RedisServer) -> None:
    c = redis_sync.Redis(host="127.0.0.1", port=server.port)
    try:
        c.set("a", 1, px=10_000)
        c.set("b", 1, px=20_000)
        c.set("c", 1)
    finally:
        c.close()
    path = _save(server)
    now = time.time_ns() // 1_000_000
    s = scan_file(path, as_of=now, horizon_ms=60_000)
    assert s.alive_at(now) == {0: 3}
    assert s.alive_at(now + 15_000) == {0: 2}
    assert s.alive_at(now + 30_000) == {0: 1}
    with pytest.raises(ValueError):
        s.alive_at(now + 120_000)
    later = scan_file(path, as_of=now + 15_000, horizon_ms=0)
    assert later.alive_at(now + 15_000) == {0: 2}


def test_truncated_and_foreign_input_is_an_error(server: RedisServer, tmp_path: Path) -> None:
    c = redis_sync.Redis(host="127.0.0.1", port=server.port)
    try:
        c.set("k", "v" * 100)
    finally:
        c.close()
    data = _save(server).read_bytes()
    with pytest.raises(RdbError, match="truncated"):
        scan_stream([data[:-20]])
    with pytest.raises(RdbError, match="after the end"):
        scan_stream([data + b"extra"])
    with pytest.raises(RdbError, match="magic"):
        scan_stream([b"NOTREDIS0" + data[9:]])
    bad = tmp_path / "bad.rdb"
    bad.write_bytes(data[:-3])
    with pytest.raises(RdbError):
        scan_file(bad)


def test_lzf_and_classes() -> None:
    # "aaaaaaaaaa": a literal "a" then a back reference of 9 bytes at distance 1.
    assert lzf_decompress(bytes([0, 0x61, 0xE0, 0x00, 0x00]), 10) == b"a" * 10
    with pytest.raises(RdbError):
        lzf_decompress(bytes([0, 0x61, 0xE0, 0x00]), 10)
    assert classify_key(b"payapi:tok:abc") == "tokens"
    assert classify_key(b"payapi:gen") == "generation"
    assert classify_key(b"payapi:generation") == "other"
    assert classify_key(b"something") == "other"
