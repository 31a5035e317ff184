"""On a real Patroni pair and a DR standby cluster: `payapi health check` (JSON keys and
exit codes, for the active and the standby region), `payapi plan check` judging the vault
and the database from replication, and `payapi failover` (refusals are one line with exit
2; a switchover works and prints the JSON contract). One cluster for the module; the
switchover runs last."""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from payapi.backup.crypto import write_key_file
from payapi.backup.repository import Repository
from payapi.cli.main import app
from payapi.core.settings import Settings, VaultSettings
from payapi.servers.postgres import psql
from payapi.servers.uvicorn import ServerThread
from payapi.vault.app import create_app
from payapi.vault.bootstrap import bootstrap
from tests.pg_ha import HaCluster, ha_cluster, roles

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def ha(session_dir: Path) -> Iterator[HaCluster]:
    with ha_cluster(session_dir / "failover", dr=True) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def config(ha: HaCluster, session_dir: Path) -> Path:
    root = session_dir / "failover"
    key_file = root / "repository.key"
    url = f"file://{root / 'repo'}"
    with Repository.open(url, write_key_file(key_file)) as repo:
        repo.init()
    path = root / "payapi.toml"
    path.write_text(
        f'[backup]\nrepository = "{url}"\nkey_file = "{key_file}"\n\n'
        "[patroni]\nsynchronous_mode = true\nttl = 10\nloop_wait = 2\nretry_timeout = 3\n\n"
        + ha.regions_toml()
    )
    return path


def run(config: Path, *args: str) -> tuple[int, str, str]:
    res = CliRunner().invoke(app, ["--config", str(config), *args])
    assert res.exception is None or isinstance(res.exception, SystemExit), res.exception
    return res.exit_code, res.stdout, res.stderr


def test_health_check_of_the_dr_region_is_healthy_standby(config: Path) -> None:
    code, out, _ = run(config, "health", "check", "--environment", "dr", "--json")
    data = json.loads(out)
    assert set(data) == {"environment", "healthy", "components"}
    assert all(set(c) == {"healthy", "detail"} for c in data["components"].values())
    assert code == 0, data
    assert data["environment"] == "dr" and data["healthy"] is True
    c = data["components"]
    assert "dr1 standby_leader" in c["postgres"]["detail"]
    assert "behind primary" in c["replication"]["detail"]
    assert c["sapi"]["detail"].startswith("standby: replicas 0")
    assert c["redis"] == {"healthy": True, "detail": "not configured"}


def test_health_check_of_the_primary_wants_its_services_running(config: Path) -> None:
    code, out, _ = run(config, "health", "check", "--json")
    data = json.loads(out)
    assert code == 1 and data["environment"] == "primary" and data["healthy"] is False
    c = data["components"]
    assert c["postgres"]["healthy"] and c["replication"]["healthy"], c
    assert "synchronous standby pg2 streaming" in c["replication"]["detail"]
    assert c["sapi"] == {"healthy": False, "detail": "not running: no URL configured"}


def test_health_check_of_an_unknown_environment_exits_2(config: Path) -> None:
    code, out, err = run(config, "health", "check", "--environment", "mars", "--json")
    assert code == 2 and out == "" and "no region named 'mars'" in err


def test_plan_check_judges_the_vault_and_the_database_from_replication(config: Path) -> None:
    # No backup at all: without replication the vault and the database would be VIOLATION.
    code, out, _ = run(config, "plan", "check", "--json")
    data = json.loads(out)
    by_name = {c["name"]: c for c in data["components"]}
    for name in ("database", "vault"):
        c = by_name[name]
        assert c["status"] != "VIOLATION", c
        assert c["exposure_seconds"] is not None and c["exposure_seconds"] < 60
        repl = c["replication"]
        assert repl["in_region"]["sync_standby"] == "pg2"
        assert repl["dr"][0]["region"] == "dr" and repl["dr"][0]["lag_seconds"] is not None
        assert any("replication protects it" in n for n in c["notes"])
    # The packaged plan's Redis and configuration have no backup here: those stay VIOLATION.
    assert by_name["redis"]["replication"] is None
    assert code == 1


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
    assert code == 2 and "region primary: no Sentinel configured" in err
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
    assert [s["status"] for s in data["steps"]] == ["ok"] * len(names)
    assert names[:2] == ["observe the cluster", "choose the target"]
    assert psql(ha.members[1].dsn(), "SELECT pg_is_in_recovery()") == [["f"]]
    assert psql(ha.members[1].dsn(), "SELECT count(*) FROM acked") == [["50"]]
    ha.wait_pair()
    assert roles(ha.client())["pg2"] == "leader"


@pytest.fixture(scope="module")
def vaults(ha: HaCluster, session_dir: Path) -> Iterator[list[str]]:
    """Two vault servers (active and standby) on the region's database, reaching it
    through a multi-host DSN that follows the writer."""
    hosts = ",".join(f"127.0.0.1:{m.pg_port}" for m in ha.members)
    dsn = f"postgresql://postgres@{hosts}/postgres?target_session_attrs=read-write"
    key = secrets.token_bytes(32)
    asyncio.run(bootstrap(dsn, "payapi", "admin", data_key=key))
    key_file = session_dir / "failover" / "vault-data.key"
    key_file.write_bytes(base64.b64encode(key))
    key_file.chmod(0o600)
    servers = []
    try:
        for _ in range(2):
            settings = Settings(vault=VaultSettings(dsn=dsn, data_key_file=key_file))
            servers.append(ServerThread(create_app(settings)))
        yield [server.start() for server in servers]
    finally:
        for server in servers:
            server.stop()


def test_a_vault_failover_moves_the_database_and_waits_for_the_standby_vault(
    ha: HaCluster, config: Path, vaults: list[str]
) -> None:
    with_vaults = config.with_name("with-vaults.toml")
    with_vaults.write_text(
        config.read_text()
        + f'[[regions.primary.vault]]\nname = "vault1"\nrole = "leader"\nurl = "{vaults[0]}"\n\n'
        + f'[[regions.primary.vault]]\nname = "vault2"\nrole = "standby"\nurl = "{vaults[1]}"\n'
    )
    leader = next(n for n, r in roles(ha.client()).items() if r == "leader")
    code, out, err = run(with_vaults, "failover", "-c", "vault", "--switchover", "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["component"] == "vault" and data["from"] == leader and data["to"] != leader
    assert data["vault"] == ["vault2"]
    assert data["steps"][-1]["name"] == "vault vault2 serves on the new leader"
    code, out, _ = run(with_vaults, "health", "check", "--json")
    assert (
        "vault1 ok (active), vault2 ok (active)" in json.loads(out)["components"]["vault"]["detail"]
    )
