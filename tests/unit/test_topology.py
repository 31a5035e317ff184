"""The topology model: one region from today's settings, two from [regions.NAME] tables,
validation that names keys and never values, and `payapi topology show`."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, get_args

import pytest
from typer.testing import CliRunner

from payapi.cli.main import app
from payapi.core.errors import PayapiError
from payapi.core.settings import (
    ConfigError,
    MemberRoleName,
    RegionRoleName,
    Settings,
    load_settings,
)
from payapi.core.topology import (
    PRIMARY_REGION,
    Deployment,
    Member,
    MemberRole,
    Region,
    RegionRole,
    Service,
    Topology,
    TopologyError,
    UnknownRegionError,
    redact_url,
    topology_from_settings,
)

SECRET = "s3cr3t-Pa55"  # a test value that must never be printed

TWO_REGIONS = f"""
[topology]
endpoint = "http://127.0.0.1:8443"
dns_record = "api.payments.example.com"
dns_zone = "payments.example.com"

[regions.primary]
role = "primary"
etcd = ["http://127.0.0.1:2379"]
sentinels = ["127.0.0.1:26379", "127.0.0.1:26380", "127.0.0.1:26381"]
sentinel_master = "payapi"
eapi = {{ url = "http://127.0.0.1:8000" }}
sapi = {{ url = "http://127.0.0.1:8100", replicas = 2 }}

[[regions.primary.postgres]]
name = "pg-a"
role = "leader"
url = "postgresql://payapi:{SECRET}@127.0.0.1:5432/payments"
patroni_url = "http://127.0.0.1:8008"

[[regions.primary.postgres]]
name = "pg-b"
role = "sync_standby"
url = "host=127.0.0.1 port=5433 dbname=payments password={SECRET}"
patroni_url = "http://127.0.0.1:8009"

[[regions.primary.redis]]
name = "redis-a"
role = "leader"
url = "redis://:{SECRET}@127.0.0.1:6379/0"

[[regions.primary.redis]]
name = "redis-b"
role = "replica"
url = "redis://127.0.0.1:6380/0"

[[regions.primary.vault]]
name = "vault-a"
role = "leader"
url = "http://127.0.0.1:8200"

[[regions.primary.vault]]
name = "vault-b"
role = "standby"
url = "http://127.0.0.1:8201"

[regions.dr]
role = "standby"
etcd = ["http://127.0.0.1:3379"]
eapi = {{ url = "http://127.0.0.1:9000", replicas = 0 }}
sapi = {{ url = "http://127.0.0.1:9100", replicas = 0 }}

[[regions.dr.postgres]]
name = "pg-dr"
role = "standby_leader"
url = "postgresql://payapi:{SECRET}@127.0.0.1:6432/payments"
patroni_url = "http://127.0.0.1:9008"

[[regions.dr.redis]]
name = "redis-dr"
role = "replica"
url = "redis://127.0.0.1:7379/0"

[[regions.dr.vault]]
name = "vault-dr"
role = "replica"
url = "http://127.0.0.1:9200"
"""


@pytest.fixture(autouse=True)
def _no_env_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PAYAPI_CONFIG", raising=False)


def _config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "payapi.toml"
    path.write_text(text)
    return path


def _load(tmp_path: Path, text: str) -> Settings:
    return load_settings(_config(tmp_path, text))


# --------------------------------------------------------------------------- one region


def test_todays_settings_are_one_region_named_primary() -> None:
    settings = Settings(
        postgres={"payment_dsn": f"postgresql://payapi:{SECRET}@db:5432/payments"},
        redis={"url": "redis://cache:6379/0"},
        vault={"url": "http://vault:8200"},
        eapi={"url": "http://eapi:8000"},
    )
    t = topology_from_settings(settings)
    assert t.names == (PRIMARY_REGION,)
    assert t.primary is t.region("primary")
    assert t.primary.role is RegionRole.PRIMARY
    assert t.standbys == ()
    assert t.endpoint is None
    pg = t.primary.leader_of(Service.POSTGRES)
    assert pg is not None and pg.url == settings.postgres.payment_dsn  # callers get the DSN
    assert pg.role is MemberRole.LEADER
    redis = t.primary.leader_of(Service.REDIS)
    assert redis is not None and redis.url == "redis://cache:6379/0"
    vault = t.primary.leader_of(Service.VAULT)
    assert vault is not None and vault.url == "http://vault:8200"
    assert t.primary.eapi == Deployment("http://eapi:8000", 1)
    assert t.primary.sapi.url == "http://127.0.0.1:8100"  # the listen address when no url
    assert t.primary.etcd_urls == () and t.primary.sentinels == ()


def test_defaults_only_have_no_postgres_member_and_an_existing_config_loads_unchanged(
    tmp_path: Path,
) -> None:
    t = topology_from_settings(Settings())
    assert [m.service for m in t.primary.members] == [Service.REDIS, Service.VAULT]
    settings = _load(tmp_path, '[postgres]\npayment_dsn = "postgresql:///payments"\n[backup]\n')
    assert settings.regions == {}
    assert settings.topology.endpoint is None
    assert topology_from_settings(settings).primary.leader_of(Service.POSTGRES) is not None


def test_one_region_with_an_endpoint(tmp_path: Path) -> None:
    settings = _load(tmp_path, '[topology]\ndns_record = "api.example.com"\n')
    t = topology_from_settings(settings)
    assert t.names == ("primary",)
    assert t.endpoint is not None and t.endpoint.dns_record == "api.example.com"
    assert t.endpoint.url is None and t.endpoint.dns_ttl_seconds == 60


# --------------------------------------------------------------------------- two regions


def test_two_regions_are_parsed_in_file_order(tmp_path: Path) -> None:
    t = topology_from_settings(_load(tmp_path, TWO_REGIONS))
    assert t.names == ("primary", "dr")
    assert t.primary.name == "primary"
    assert [r.name for r in t.standbys] == ["dr"]
    p = t.region("primary")
    assert [(m.name, m.role) for m in p.members_of(Service.POSTGRES)] == [
        ("pg-a", MemberRole.LEADER),
        ("pg-b", MemberRole.SYNC_STANDBY),
    ]
    assert p.members_of(Service.POSTGRES)[1].patroni_url == "http://127.0.0.1:8009"
    assert p.leader_of(Service.REDIS) is not None
    assert [m.role for m in p.members_of(Service.VAULT)] == [MemberRole.LEADER, MemberRole.STANDBY]
    assert len(p.sentinels) == 3 and p.sentinel_master == "payapi"
    assert p.etcd_urls == ("http://127.0.0.1:2379",)
    assert p.sapi == Deployment("http://127.0.0.1:8100", 2)
    dr = t.region("dr")
    assert dr.role is RegionRole.STANDBY
    leader = dr.leader_of(Service.POSTGRES)
    assert leader is not None and leader.role is MemberRole.STANDBY_LEADER
    assert dr.eapi.replicas == 0 and dr.sapi.replicas == 0
    assert dr.members_of(Service.VAULT)[0].role is MemberRole.REPLICA
    assert dr.sentinels == ()
    assert t.endpoint is not None
    assert t.endpoint.url == "http://127.0.0.1:8443"
    assert t.endpoint.dns_zone == "payments.example.com"


def test_unknown_region_is_a_clear_usage_error(tmp_path: Path) -> None:
    t = topology_from_settings(_load(tmp_path, TWO_REGIONS))
    with pytest.raises(
        UnknownRegionError, match=r"no region named 'eu' \(configured: primary, dr\)"
    ):
        t.region("eu")
    assert issubclass(UnknownRegionError, PayapiError)
    assert issubclass(UnknownRegionError, ConfigError)
    assert UnknownRegionError("x").exit_code == 2


def test_the_configs_role_names_are_the_enums() -> None:
    assert set(get_args(RegionRoleName)) == {r.value for r in RegionRole}
    assert set(get_args(MemberRoleName)) == {r.value for r in MemberRole}


def test_the_value_objects_are_frozen(tmp_path: Path) -> None:
    t = topology_from_settings(_load(tmp_path, TWO_REGIONS))
    with pytest.raises(dataclasses.FrozenInstanceError):
        t.primary.name = "other"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        t.primary.members[0].url = "x"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        t.regions = ()  # type: ignore[misc]
    assert isinstance(t.regions, tuple) and isinstance(t.primary.members, tuple)
    assert hash(t) == hash(topology_from_settings(_load(tmp_path, TWO_REGIONS)))


# --------------------------------------------------------------------------- validation


def _region(role: str = "standby", **extra: Any) -> dict[str, Any]:
    return {"role": role, **extra}


@pytest.mark.parametrize(
    ("regions", "message"),
    [
        ({"a": _region(), "b": _region()}, "exactly one region must have role primary; 0 do"),
        (
            {"a": _region("primary"), "b": _region("primary")},
            r"exactly one region must have role primary; 2 do \(a, b\)",
        ),
        (
            {
                "a": _region("primary", postgres=[{"name": "x", "role": "leader", "url": "u"}]),
                "b": _region(redis=[{"name": "x", "role": "leader", "url": "u"}]),
            },
            "member names are not unique: x",
        ),
        (
            {
                "a": _region(
                    "primary",
                    postgres=[
                        {"name": "p1", "role": "leader", "url": "u"},
                        {"name": "p2", "role": "leader", "url": "u"},
                    ],
                )
            },
            r"region 'a': postgres has 2 leading members \(p1, p2\); at most one",
        ),
        (
            {"a": _region("primary", redis=[{"name": "r", "role": "sync_standby", "url": "u"}])},
            "redis member 'r' cannot be sync_standby",
        ),
        (
            {
                "a": _region(
                    "primary", postgres=[{"name": "p", "role": "standby_leader", "url": "u"}]
                )
            },
            "only a standby region's PostgreSQL has",
        ),
        (
            {
                "a": _region(
                    "primary",
                    vault=[{"name": "v", "role": "leader", "url": "u", "patroni_url": "u"}],
                )
            },
            "vault member 'v' has a patroni_url",
        ),
        (
            {
                "a": _region(
                    "primary", postgres=[{"name": "Bad_Name", "role": "leader", "url": "u"}]
                )
            },
            "member name 'Bad_Name'",
        ),
    ],
)
def test_inconsistent_topologies_are_one_line_errors(regions: dict[str, Any], message: str) -> None:
    settings = Settings(regions=regions)
    with pytest.raises(TopologyError, match=message) as caught:
        topology_from_settings(settings)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("name", ["DR", "1dr", "dr_1", "-dr", "a" * 33, ""])
def test_region_names_are_checked_when_the_config_loads(tmp_path: Path, name: str) -> None:
    with pytest.raises(ConfigError, match="region name"):
        _load(tmp_path, f'[regions."{name}"]\nrole = "primary"\n')


@pytest.mark.parametrize("name", ["dr", "eu-west-1", "a" * 32])
def test_good_region_names_load(tmp_path: Path, name: str) -> None:
    t = topology_from_settings(_load(tmp_path, f'[regions."{name}"]\nrole = "primary"\n'))
    assert t.names == (name,)


@pytest.mark.parametrize(
    "text",
    [
        # an unknown key whose value is a DSN
        f'[regions.dr]\nrole = "primary"\ndsn = "postgresql://u:{SECRET}@h/db"\n',
        # an unknown key in a member
        '[regions.dr]\nrole = "primary"\n[[regions.dr.postgres]]\nname = "p"\nrole = "leader"\n'
        f'url = "postgresql://u:{SECRET}@h/db"\npassword = "{SECRET}"\n',
        # a wrong type where a DSN is given
        f'[regions.dr]\nrole = "primary"\netcd = "http://u:{SECRET}@h:2379"\n',
        # an unknown role next to a DSN
        '[regions.dr]\nrole = "primary"\n[[regions.dr.redis]]\nname = "r"\nrole = "master"\n'
        f'url = "redis://:{SECRET}@h"\n',
        # a wrong type in [topology]
        f'[topology]\nendpoint = ["http://u:{SECRET}@h"]\n',
        # an unknown key in [topology]
        f'[topology]\nrecord = "http://u:{SECRET}@h"\n',
    ],
)
def test_a_dsn_password_never_appears_in_a_config_error(tmp_path: Path, text: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, text)
    assert SECRET not in str(caught.value)
    assert "regions" in str(caught.value) or "topology" in str(caught.value)


def test_topology_errors_never_quote_a_dsn() -> None:
    member = {"name": "p", "role": "leader", "url": f"postgresql://u:{SECRET}@h/db"}
    bad = [
        {"a": _region("primary", postgres=[member, {**member, "name": "q"}])},
        {"a": _region("primary", redis=[{**member, "role": "sync_standby"}])},
        {"a": _region("primary", redis=[{**member, "patroni_url": f"http://u:{SECRET}@h"}])},
        {"a": _region(postgres=[member])},
    ]
    for regions in bad:
        with pytest.raises(TopologyError) as caught:
            topology_from_settings(Settings(regions=regions))
        assert SECRET not in str(caught.value)


# --------------------------------------------------------------------------- redaction


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (f"postgresql://payapi:{SECRET}@db:5432/payments", "postgresql://payapi@db:5432/payments"),
        (f"postgresql://payapi:p@{SECRET}@db/payments", "postgresql://payapi@db/payments"),
        (f"redis://:{SECRET}@cache:6379/0", "redis://cache:6379/0"),
        (f"rediss://default:{SECRET}@cache:6380", "rediss://default@cache:6380"),
        ("http://127.0.0.1:8200", "http://127.0.0.1:8200"),
        (f"host=db password={SECRET} dbname=p", "host=db password=[redacted] dbname=p"),
        (f"host=db password = '{SECRET} x' dbname=p", "host=db password = [redacted] dbname=p"),
        (
            f"postgresql://db/p?sslpassword={SECRET}&x=1",
            "postgresql://db/p?sslpassword=[redacted]&x=1",
        ),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_a_members_repr_and_description_hold_no_password(tmp_path: Path) -> None:
    t = topology_from_settings(_load(tmp_path, TWO_REGIONS))
    assert SECRET not in repr(t)
    assert SECRET not in json.dumps(t.describe())
    member = Member("pg", Service.POSTGRES, MemberRole.LEADER, f"postgresql://u:{SECRET}@h/d")
    assert SECRET not in repr(member) and SECRET in member.url  # the caller still gets it


def test_a_topology_can_be_built_directly() -> None:
    t = Topology(
        (
            Region("dr", RegionRole.STANDBY),
            Region("primary", RegionRole.PRIMARY, eapi=Deployment(None, 0)),
        )
    )
    assert t.primary.name == "primary" and [r.name for r in t] == ["dr", "primary"]
    with pytest.raises(TopologyError, match="no region"):
        Topology(())
    with pytest.raises(TopologyError, match="region names are not unique: a"):
        Topology((Region("a", RegionRole.PRIMARY), Region("a", RegionRole.STANDBY)))


# --------------------------------------------------------------------------- CLI


def test_cli_topology_show_json_two_regions(tmp_path: Path) -> None:
    config = _config(tmp_path, TWO_REGIONS)
    res = CliRunner().invoke(app, ["--config", str(config), "topology", "show", "--json"])
    assert res.exit_code == 0, res.output
    assert SECRET not in res.output
    data = json.loads(res.stdout)
    assert data["primary"] == "primary"
    assert [r["name"] for r in data["regions"]] == ["primary", "dr"]
    assert [r["role"] for r in data["regions"]] == ["primary", "standby"]
    pg_a = data["regions"][0]["members"][0]
    assert pg_a == {
        "name": "pg-a",
        "service": "postgres",
        "role": "leader",
        "url": "postgresql://payapi@127.0.0.1:5432/payments",
        "patroni_url": "http://127.0.0.1:8008",
    }
    assert data["regions"][0]["members"][1]["url"].endswith("password=[redacted]")
    assert data["regions"][1]["eapi"] == {"url": "http://127.0.0.1:9000", "replicas": 0}
    assert data["endpoint"] == {
        "url": "http://127.0.0.1:8443",
        "dns_record": "api.payments.example.com",
        "dns_zone": "payments.example.com",
        "dns_ttl_seconds": 60,
    }


def test_cli_topology_show_json_one_region(tmp_path: Path) -> None:
    config = _config(tmp_path, f'[postgres]\npayment_dsn = "postgresql://u:{SECRET}@db/p"\n')
    res = CliRunner().invoke(app, ["--config", str(config), "topology", "show", "--json"])
    assert res.exit_code == 0, res.output
    assert SECRET not in res.output
    data = json.loads(res.stdout)
    assert data["primary"] == "primary" and data["endpoint"] is None
    assert next((m["name"], m["url"]) for m in data["regions"][0]["members"]) == (
        "postgres",
        "postgresql://u@db/p",
    )


def test_cli_topology_show_table(tmp_path: Path) -> None:
    config = _config(tmp_path, TWO_REGIONS)
    res = CliRunner().invoke(
        app, ["--config", str(config), "topology", "show"], env={"COLUMNS": "250"}
    )
    assert res.exit_code == 0, res.output
    assert SECRET not in res.output
    for word in ("pg-a", "sync_standby", "standby_leader", "vault-dr", "replicas 0"):
        assert word in res.stdout
    assert "password=[redacted]" in res.stdout  # printed literally, not read as markup
    assert "api.payments.example.com" in res.stdout


def test_cli_topology_show_bad_topology_is_an_error(tmp_path: Path) -> None:
    config = _config(tmp_path, '[regions.a]\nrole = "standby"\n')
    res = CliRunner().invoke(app, ["--config", str(config), "topology", "show", "--json"])
    assert res.exit_code != 0
    assert isinstance(res.exception, TopologyError)


def test_the_example_in_docs_topology_md_parses(tmp_path: Path) -> None:
    doc = Path(__file__).parents[2] / "docs" / "topology.md"
    example = doc.read_text().split("```toml\n", 1)[1].split("```", 1)[0]
    t = topology_from_settings(_load(tmp_path, example))
    assert t.names == ("primary", "dr") and t.primary.name == "primary"
    assert t.endpoint is not None and t.endpoint.dns_record == "api.payments.example.com"
