"""The pure halves of Redis HA: host:port, the first sentinel.conf, INFO replication,
"is it safe to switch over", and the [redis] Sentinel settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from payapi.core.hostport import parse_hostport
from payapi.core.settings import ConfigError, RedisSettings, load_settings
from payapi.servers.procs import ServerError
from payapi.servers.sentinel import sentinel_conf
from payapi.systems.redis import _as_state, caught_up, parse_replication


def test_parse_hostport() -> None:
    assert parse_hostport("127.0.0.1:26379") == ("127.0.0.1", 26379)
    assert parse_hostport(" sentinel-1.internal:5000 ") == ("sentinel-1.internal", 5000)
    assert parse_hostport("[::1]:26379") == ("::1", 26379)
    for bad in ("127.0.0.1", ":26379", "h:0", "h:70000", "h:x", "::1:26379", "a b:1", ""):
        with pytest.raises(ValueError, match="is not host:port"):
            parse_hostport(bad)


def _conf(**kw: object) -> str:
    args: dict[str, object] = {
        "port": 26379,
        "workdir": Path("/w/s 1"),
        "master_name": "payapi",
        "master_host": "127.0.0.1",
        "master_port": 6380,
        "quorum": 2,
        "down_after_ms": 2000,
        "failover_timeout_ms": 10000,
    }
    args.update(kw)
    return sentinel_conf(**args)  # type: ignore[arg-type]


def test_sentinel_conf_monitor_comes_first_and_paths_are_quoted() -> None:
    lines = _conf().splitlines()
    assert "bind 127.0.0.1" in lines and "sentinel resolve-hostnames no" in lines
    assert 'dir "/w/s 1"' in lines
    monitor = lines.index("sentinel monitor payapi 127.0.0.1 6380 2")
    assert lines.index("sentinel down-after-milliseconds payapi 2000") > monitor
    assert lines.index("sentinel failover-timeout payapi 10000") > monitor


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"master_name": "two words"}, "master name"),
        ({"master_name": ""}, "master name"),
        ({"quorum": 0}, "quorum"),
        ({"down_after_ms": 0}, "timings"),
        ({"workdir": Path("/w/a\nport 1")}, "line break"),
    ],
)
def test_sentinel_conf_refuses_bad_input(kw: dict[str, object], message: str) -> None:
    with pytest.raises(ServerError, match=message):
        _conf(**kw)


def test_parse_replication_of_a_primary() -> None:
    info = parse_replication(
        {
            "role": "master",
            "connected_slaves": 2,
            "slave1": "ip=127.0.0.1,port=7002,state=wait_bgsave,offset=0,lag=0",
            "slave0": {"ip": "127.0.0.1", "port": 7001, "state": "online", "offset": 90, "lag": 1},
            "master_repl_offset": 100,
        }
    )
    assert info["role"] == "master" and info["offset"] == 100 and info["master"] is None
    assert [(r["port"], r["state"], r["offset"], r["lag_bytes"]) for r in info["replicas"]] == [
        (7001, "online", 90, 10),
        (7002, "wait_bgsave", 0, 100),
    ]
    assert info["replicas"][0]["lag"] == 1
    assert not caught_up(info)


def test_parse_replication_of_a_replica() -> None:
    info = parse_replication(
        {
            "role": "slave",
            "master_host": "127.0.0.1",
            "master_port": 7000,
            "master_link_status": "up",
            "slave_repl_offset": 77,
            "master_repl_offset": 80,
        }
    )
    assert info == {
        "role": "replica",
        "offset": 77,
        "replicas": [],
        "master": {"host": "127.0.0.1", "port": 7000, "link_up": True},
    }
    assert not caught_up(info)


def test_caught_up_needs_an_online_replica_with_the_whole_stream() -> None:
    def primary(*replicas: tuple[str, int]) -> dict[str, object]:
        info: dict[str, object] = {"role": "master", "master_repl_offset": 50}
        for i, (state, offset) in enumerate(replicas):
            info[f"slave{i}"] = {"ip": "h", "port": i, "state": state, "offset": offset}
        return info

    assert not caught_up(parse_replication(primary()))
    assert caught_up(parse_replication(primary(("online", 50))))
    # a replica still loading its first sync is not a promotion target; it does not block
    assert caught_up(parse_replication(primary(("online", 50), ("send_bulk", 0))))
    assert not caught_up(parse_replication(primary(("online", 50), ("online", 49))))


def test_sentinel_settings_go_together_and_are_host_port() -> None:
    s = RedisSettings(sentinels=["127.0.0.1:26379"], sentinel_master="payapi")
    assert s.uses_sentinel
    assert not RedisSettings().uses_sentinel
    with pytest.raises(ValueError, match="set together"):
        RedisSettings(sentinels=["127.0.0.1:26379"])
    with pytest.raises(ValueError, match="set together"):
        RedisSettings(sentinel_master="payapi")
    with pytest.raises(ValueError, match="is not host:port"):
        RedisSettings(sentinels=["127.0.0.1"], sentinel_master="payapi")


def test_a_bad_sentinel_in_the_config_file_is_one_line(tmp_path: Path) -> None:
    cfg = tmp_path / "payapi.toml"
    cfg.write_text('[redis]\nsentinels = ["nohost"]\nsentinel_master = "payapi"\n')
    with pytest.raises(ConfigError) as err:
        load_settings(cfg)
    assert "\n" not in str(err.value) and "is not host:port" in str(err.value)


def test_sentinel_state_from_any_reply_shape() -> None:
    flat = [b"name", b"payapi", b"flags", b"master", b"port", b"7000"]
    assert _as_state(flat) == {"name": "payapi", "flags": "master", "port": "7000"}
    resp3 = {"name": "payapi", "flags": {"s_down", "master"}, "port": 7000}
    assert _as_state(resp3) == {"name": "payapi", "flags": "master,s_down", "port": "7000"}
