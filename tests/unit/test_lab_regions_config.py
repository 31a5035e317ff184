"""The two-region lab's configs: valid settings and a consistent topology, no secrets."""

from __future__ import annotations

from pathlib import Path

from payapi.core.settings import load_settings
from payapi.core.topology import topology_from_settings
from payapi.lab.regions import TwoRegionLab


def test_each_region_config_loads_and_names_both_regions(tmp_path: Path) -> None:
    lab = TwoRegionLab(tmp_path / "lab")
    lab.dir.mkdir()
    lab.write_configs()
    for name in ("primary", "dr"):
        s = load_settings(lab.region_dir(name) / "payapi.toml")
        topo = topology_from_settings(s)
        assert {r.name for r in topo.regions} == {"primary", "dr"}
        assert s.regions["primary"].sapi.control == "local"
        assert s.regions["dr"].sapi.replicas == 0
        assert s.topology.dns_record == "api.payments.lab"
        assert "target_session_attrs=read-write" in s.sapi.dsn
    primary = load_settings(lab.region_dir("primary") / "payapi.toml")
    assert primary.redis.sentinels and primary.redis.sentinel_master == "payapi"
    assert len(primary.regions["primary"].postgres) == 2
    assert [m.role for m in primary.regions["dr"].postgres] == ["standby_leader"]
    dr = load_settings(lab.region_dir("dr") / "payapi.toml")
    assert "target_session_attrs=any" in dr.vault.dsn  # the DR vault reads from a standby
    assert lab.config_path.read_text() == (lab.region_dir("primary") / "payapi.toml").read_text()
    assert not [ln for ln in lab.config_path.read_text().splitlines() if "password =" in ln]


def test_the_operator_config_follows_the_active_region(tmp_path: Path) -> None:
    lab = TwoRegionLab(tmp_path / "lab")
    lab.dir.mkdir()
    lab.write_configs()
    lab.set_active("dr")
    assert lab.config_path.read_text() == (lab.region_dir("dr") / "payapi.toml").read_text()
    primary = lab.region("primary")
    assert primary.standby_of is not None  # not serving: streams from DR
    assert lab.region("dr").standby_of is None
    # Roles follow the serving region: `plan check` and `health check` judge DR now.
    settings = load_settings(lab.config_path)
    topology = topology_from_settings(settings)
    assert topology.primary.name == "dr"
    assert settings.regions["dr"].sapi.replicas == 1
    assert settings.regions["primary"].sapi.replicas == 0
    assert [m.role for m in settings.regions["primary"].postgres] == ["standby_leader", "replica"]
    dr = load_settings(lab.region_dir("dr") / "payapi.toml")
    assert dr.redis.control == "local" and dr.redis.data_dir is not None  # seeded in place
