"""The pure decisions of a regional failover, and the Patroni member configuration."""

from __future__ import annotations

from pathlib import Path

import pytest

from payapi.core.settings import Settings
from payapi.recovery.regional_plan import (
    RefusedError,
    RegionProbe,
    choose_source,
    refuse_failover,
)
from payapi.servers.patroni import DcsTimings, StandbyOf, member_config
from payapi.systems.patroni import parse_cluster

DOWN = RegionProbe(
    "primary", patroni_answers=False, leader=None, standby_cluster=False, writable=False
)
UP = RegionProbe(
    "primary", patroni_answers=True, leader="primary-pg1", standby_cluster=False, writable=True
)


def test_a_reachable_region_is_not_failed_away_from_without_force() -> None:
    why = refuse_failover(UP, force=False)
    assert why is not None and "reachable" in why and "--force" in why
    assert refuse_failover(UP, force=True) is None
    assert refuse_failover(DOWN, force=False) is None
    assert "unreachable" in DOWN.describe()


def _settings() -> Settings:
    return Settings.model_validate(
        {"regions": {"primary": {"role": "primary"}, "dr": {"role": "standby"}}}
    )


def test_the_source_is_what_dns_names_else_the_primary() -> None:
    s = _settings()
    assert choose_source(s, "dr", None) == "primary"
    assert choose_source(s, "primary", "dr") == "dr"
    with pytest.raises(RefusedError, match="already serves"):
        choose_source(s, "dr", "dr")
    with pytest.raises(RefusedError, match="already serves"):
        choose_source(s, "dr", "dr", target_writable=True)
    # The record moved but the database was never promoted: a re-run completes it.
    assert choose_source(s, "dr", "dr", target_writable=False) == "primary"


def test_member_config_of_a_standby_cluster_lists_every_upstream_host() -> None:
    conf = member_config(
        scope="payapi-dr",
        name="dr-pg1",
        workdir=Path("/x"),
        pg_port=1,
        rest_port=2,
        etcd_url="http://127.0.0.1:3",
        parameters={"archive_command": "payapi wal push %p"},
        timings=DcsTimings(ttl=10, loop_wait=2, retry_timeout=3),
        standby_of=StandbyOf((("127.0.0.1", 10), ("127.0.0.1", 11)), restore_command="r %f %p"),
        bin_dir=Path("/bin"),
    )
    dcs = conf["bootstrap"]["dcs"]
    assert dcs["ttl"] == 10 and dcs["synchronous_mode"] is True
    assert dcs["standby_cluster"]["host"] == "127.0.0.1,127.0.0.1"
    assert dcs["standby_cluster"]["port"] == "10,11"
    assert dcs["standby_cluster"]["restore_command"] == "r %f %p"
    assert conf["postgresql"]["parameters"]["archive_command"] == "payapi wal push %p"
    assert conf["postgresql"]["listen"] == "127.0.0.1:1"
    assert "password" not in str(conf)


def test_parse_cluster_reads_roles_and_lag() -> None:
    view = parse_cluster(
        {
            "scope": "s",
            "members": [
                {
                    "name": "a",
                    "role": "leader",
                    "state": "running",
                    "host": "h",
                    "port": 1,
                    "timeline": 2,
                },
                {
                    "name": "b",
                    "role": "sync_standby",
                    "state": "streaming",
                    "host": "h",
                    "port": 2,
                    "lag": 42,
                },
                {"name": "c", "role": "replica", "state": "stopped", "lag": "unknown"},
            ],
        }
    )
    assert view.leader is not None and view.leader.name == "a"
    assert view.member("b") is not None and view.member("b").lag_bytes == 42  # type: ignore[union-attr]
    assert view.member("c").lag_bytes is None  # type: ignore[union-attr]
    assert not view.standby_cluster
