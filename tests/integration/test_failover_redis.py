"""`payapi failover --component redis` on a real Redis primary, replica and three
Sentinels (tests/redis_ha.py): Sentinel promotes the replica, the JSON names both."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from payapi.cli.main import app
from payapi.systems.redis import replication_info, sentinel_master
from tests.redis_ha import RedisHA, redis_ha

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def ha(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisHA]:
    with redis_ha(tmp_path_factory.mktemp("redis-failover")) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def config(ha: RedisHA, tmp_path_factory: pytest.TempPathFactory) -> Path:
    sentinels = ", ".join(f'"{a}"' for a in ha.sentinel_addrs)
    members = "".join(
        f'[[regions.primary.redis]]\nname = "redis-{i}"\nrole = "{role}"\n'
        f'url = "redis://127.0.0.1:{server.port}/0"\n\n'
        for i, (server, role) in enumerate(
            [(ha.primary, "leader"), *((r, "replica") for r in ha.replicas)]
        )
    )
    path = tmp_path_factory.mktemp("redis-failover-config") / "payapi.toml"
    path.write_text(
        f'[regions.primary]\nrole = "primary"\nsentinels = [{sentinels}]\n'
        f'sentinel_master = "{ha.master_name}"\n\n{members}'
    )
    return path


def run(config: Path, *args: str) -> tuple[int, str, str]:
    res = CliRunner().invoke(app, ["--config", str(config), *args])
    assert res.exception is None or isinstance(res.exception, SystemExit), res.exception
    return res.exit_code, res.stdout, res.stderr


def test_a_target_is_refused_sentinel_chooses(config: Path) -> None:
    code, out, err = run(config, "failover", "-c", "redis", "--to", "redis-1")
    assert code == 2 and out == "" and "Sentinel chooses the replica" in err
    assert err.strip().count("\n") == 0


def test_observe_redis_follows_sentinel_to_the_primary(ha: RedisHA, config: Path) -> None:
    from payapi.core.settings import load_settings
    from payapi.core.topology import topology_from_settings
    from payapi.replication.redis_observe import observe_redis
    from payapi.systems.redis import client

    ha.wait_ready()
    conn = client(ha.primary.url, 1.0)
    conn.set("observed", "1")
    conn.wait(1, 2000)  # the replica acknowledged the write (WAIT, Redis's own check)
    conn.close()
    region = topology_from_settings(load_settings(config)).region("primary")
    seen = observe_redis(region)
    assert seen.primary == "redis-0" and seen.error is None and seen.info is not None
    assert seen.info["role"] == "master"
    assert [r["state"] for r in seen.info["replicas"]] == ["online"]


def test_a_switchover_promotes_the_replica(ha: RedisHA, config: Path) -> None:
    code, out, err = run(config, "failover", "-c", "redis", "--switchover", "--json")
    assert code == 0, err
    data = json.loads(out)
    assert set(data) == {"component", "region", "from", "to", "seconds", "steps"}
    assert (data["component"], data["from"], data["to"]) == ("redis", "redis-0", "redis-1")
    assert [s["name"] for s in data["steps"]] == [
        "ask Sentinel for the primary",
        f"Sentinel switchover of {ha.master_name}",
    ]
    assert all(s["status"] == "ok" for s in data["steps"])
    new = ("127.0.0.1", ha.replicas[0].port)
    assert sentinel_master(ha.sentinel_addrs, ha.master_name) == new
    assert replication_info(ha.replicas[0].url)["role"] == "master"
