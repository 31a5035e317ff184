"""The Redis a restore in place stops and starts comes from ``[redis]`` (never from the
files in the config's folder), and EAPI's key layout is one module."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from payapi.core.settings import RedisSettings, load_settings
from payapi.eapi.cachekeys import (
    GEN_KEY,
    classify_key,
    client_tokens_key,
    new_generation,
    token_key,
    verification_key,
)
from payapi.systems.redis import (
    LocalRedisControl,
    RedisControl,
    RedisControlUnavailable,
    redis_control,
    where,
)


def test_no_control_unless_configured(tmp_path: Path) -> None:
    with pytest.raises(RedisControlUnavailable, match=r"set \[redis\] control"):
        redis_control(RedisSettings())
    with pytest.raises(RedisControlUnavailable, match="data_dir"):
        redis_control(RedisSettings(control="local"))
    with pytest.raises(RedisControlUnavailable, match="loopback"):
        redis_control(
            RedisSettings(url="redis://cache.example:6380/0", control="local", data_dir=tmp_path)
        )


def test_a_local_control_runs_the_server_of_the_url(tmp_path: Path) -> None:
    control = redis_control(
        RedisSettings(url="redis://127.0.0.1:56379/0", control="local", data_dir=tmp_path / "r")
    )
    assert isinstance(control, LocalRedisControl) and isinstance(control, RedisControl)
    assert control.server.port == 56379
    assert control.data_dir == tmp_path / "r" and control.dbfilename == "dump.rdb"
    assert str(tmp_path / "r") in control.describe()


def test_a_relative_data_dir_is_relative_to_the_config(tmp_path: Path) -> None:
    config = tmp_path / "payapi.toml"
    config.write_text('[redis]\ncontrol = "local"\ndata_dir = "redis"\n')
    assert load_settings(config).redis.data_dir == tmp_path / "redis"


def test_where_never_shows_credentials() -> None:
    assert where("redis://user:hunter2@127.0.0.1:6380/2") == "127.0.0.1:6380/2"


def test_restoring_redis_without_a_control_is_one_line(tmp_path: Path) -> None:
    # A lab.json beside the config used to be taken as permission to stop "the lab's"
    # Redis; now only the configuration says what may be stopped.
    (tmp_path / "lab.json").write_text("{}")
    config = tmp_path / "payapi.toml"
    config.write_text(f'[backup]\nrepository = "file://{tmp_path / "repo"}"\n')
    res = subprocess.run(
        [sys.executable, "-m", "payapi", "--config", str(config), "restore", "-c", "redis",
         "--yes"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert res.returncode != 0 and "Traceback" not in res.stderr
    assert "set [redis] control" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_the_key_layout() -> None:
    assert token_key("ab") == "payapi:tok:ab"
    assert client_tokens_key("c1") == "payapi:ctok:c1"
    assert verification_key("c1") == "payapi:ver:c1"
    assert classify_key(token_key("ab").encode()) == "tokens"
    assert classify_key(client_tokens_key("c").encode()) == "token_sets"
    assert classify_key(GEN_KEY.encode()) == "generation"
    assert classify_key(b"other") == "other"
    assert new_generation(None, 10**30) == 10**30 + 1


def test_url_at_keeps_the_scheme_credentials_and_db() -> None:
    from payapi.systems.redis import url_at

    assert url_at("redis://:pw@127.0.0.1:7000/3", ("127.0.0.1", 7001)) == (
        "redis://:pw@127.0.0.1:7001/3"
    )
    assert url_at("rediss://u:p@a:1/0", ("::1", 5)) == "rediss://u:p@[::1]:5/0"


def test_primary_url_without_sentinels_is_the_configured_url() -> None:
    from payapi.core.settings import RedisSettings
    from payapi.systems.redis import SentinelError, primary_url

    assert primary_url(RedisSettings(url="redis://127.0.0.1:7000/1")) == "redis://127.0.0.1:7000/1"
    nobody = RedisSettings(sentinels=["127.0.0.1:1"], sentinel_master="payapi")
    with pytest.raises(SentinelError, match="no Sentinel sees a running primary"):
        primary_url(nobody, timeout=0.2)
