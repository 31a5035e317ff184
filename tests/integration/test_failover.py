"""`payapi failover` on a real Patroni pair (and a DR standby cluster): refusals are one
line with exit 2, a switchover works and prints the JSON contract."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from payapi.cli.main import app
from payapi.servers.postgres import psql
from tests.pg_ha import HaCluster, ha_cluster, roles

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def ha(session_dir: Path) -> Iterator[HaCluster]:
    with ha_cluster(session_dir / "failover", dr=True) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def config(ha: HaCluster, session_dir: Path) -> Path:
    path = session_dir / "failover" / "payapi.toml"
    path.write_text(
        "[patroni]\nsynchronous_mode = true\nttl = 10\nloop_wait = 2\nretry_timeout = 3\n\n"
        + ha.regions_toml()
    )
    return path


def run(config: Path, *args: str) -> tuple[int, str, str]:
    res = CliRunner().invoke(app, ["--config", str(config), *args])
    assert res.exception is None or isinstance(res.exception, SystemExit), res.exception
    return res.exit_code, res.stdout, res.stderr


def test_a_failover_to_a_member_that_does_not_exist_is_refused(config: Path) -> None:
    code, out, err = run(config, "failover", "--component", "db", "--to", "pg9")
    assert code == 2, err
    assert out == ""
    assert err.strip().count("\n") == 0
    assert "no member named 'pg9' in the cluster (members: pg1, pg2)" in err


def test_bad_usage_is_refused_with_one_line(config: Path) -> None:
    code, _, err = run(config, "failover", "--component", "disk")
    assert code == 2 and "unknown component 'disk'" in err and err.strip().count("\n") == 0
    code, _, err = run(config, "failover", "--component", "db", "--region", "mars")
    assert code == 2 and "no region named 'mars'" in err
    code, _, err = run(config, "failover", "--component", "redis")
    assert code == 2 and "Sentinel support lands separately" in err
    code, _, err = run(config, "failover", "--component", "vault")
    assert code == 2 and "no vault member configured" in err


def test_a_switchover_to_an_async_dr_member_is_refused(config: Path) -> None:
    # The DR region's cluster has one member: it leads, so there is nothing to hand over to.
    code, _, err = run(config, "failover", "-c", "db", "--region", "dr", "--switchover")
    assert code == 2 and "no member besides the leader" in err


def test_a_switchover_moves_the_leader_and_prints_the_contract(ha: HaCluster, config: Path) -> None:
    psql(ha.members[0].dsn(), "CREATE TABLE IF NOT EXISTS acked (n int)")
    psql(ha.members[0].dsn(), "INSERT INTO acked SELECT generate_series(1, 50)")
    code, out, err = run(config, "failover", "-c", "db", "--switchover", "--json")
    assert code == 0, err
    data = json.loads(out)
    assert set(data) == {"component", "region", "from", "to", "seconds", "steps"}
    assert (data["component"], data["region"], data["from"], data["to"]) == (
        "db",
        "primary",
        "pg1",
        "pg2",
    )
    assert data["seconds"] > 0
    names = [s["name"] for s in data["steps"]]
    assert names[-1] == "pg2 accepts writes" and "switchover pg1 -> pg2" in names
    assert all(set(s) == {"name", "status", "seconds"} for s in data["steps"])
    assert all(s["status"] in ("ok", "skipped") for s in data["steps"])
    assert psql(ha.members[1].dsn(), "SELECT pg_is_in_recovery()") == [["f"]]
    assert psql(ha.members[1].dsn(), "SELECT count(*) FROM acked") == [["50"]]
    ha.wait_pair()
    assert roles(ha.client())["pg2"] == "leader"
