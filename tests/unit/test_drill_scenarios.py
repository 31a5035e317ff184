"""The shipped drill scenarios the issue names, and the lab's way of taking a store or a
channel down and bringing it back (idempotent, nothing deleted)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from payapi.drills import spec as specs
from payapi.lab.drill_system import LabDrillError, LabDrillSystem


@pytest.mark.parametrize(
    ("scenario", "component"),
    [
        ("failure", "eapi"),
        ("failure", "sapi"),
        ("failure", "vault"),
        ("failure", "redis"),
        ("failure", "db"),
        ("corruption", "db"),
        ("region-outage", None),
        ("security-breach", None),
        ("vendor-outage", "vault"),
        ("vendor-outage", "object-store"),
        ("full-exercise", None),
    ],
)
def test_every_scenario_of_the_issue_is_shipped(scenario: str, component: str | None) -> None:
    found = specs.find(specs.load_all(), scenario=scenario, component=component)
    assert found.scenario == scenario


def test_the_full_exercise_is_an_outage_a_second_failure_and_the_channel_down() -> None:
    s = specs.find(specs.load_all(), scenario="full-exercise")
    assert s.injection.kind == "region-outage" and s.injection.channel_down
    assert s.recovery.kind == "region-failover" and s.recovery.component_failure == "eapi"


def test_an_unknown_second_failure_is_refused() -> None:
    text = (
        "name: x\ntitle: x\nscenario: x\ninjection: {kind: region-outage}\n"
        "recovery: {kind: region-failover, component_failure: dns}\n"
        "judge: [{component: database, probe: payments}]\n"
    )
    with pytest.raises(specs.DrillSpecError, match="component_failure"):
        specs.parse(text, "mine.yaml")


class _Lab:
    def __init__(self, root: Path) -> None:
        self.dir = root
        self.config_path = root / "payapi.toml"

    @property
    def backups_dir(self) -> Path:
        return self.dir / "backups"

    def channel_dir(self, tier: str) -> Path:
        return self.dir / "channels" / tier


def _system(tmp_path: Path) -> LabDrillSystem:
    lab: Any = _Lab(tmp_path)
    return LabDrillSystem(lab)


def test_a_store_taken_away_comes_back_whole_and_twice_is_nothing(tmp_path: Path) -> None:
    sys = _system(tmp_path)
    repo = tmp_path / "backups"
    (repo / "wal").mkdir(parents=True)
    (repo / "config").write_text("x")
    sys._take_away(repo, "the store")
    assert not repo.exists()
    with pytest.raises(LabDrillError, match="already down"):
        sys._take_away(repo, "the store")
    (repo / "wal").mkdir(parents=True)  # an empty folder made meanwhile is no data
    assert sys._put_back(repo)
    assert (repo / "config").read_text() == "x"
    assert not sys._put_back(repo)  # idempotent


def test_a_store_written_while_down_is_not_overwritten(tmp_path: Path) -> None:
    sys = _system(tmp_path)
    repo = tmp_path / "backups"
    repo.mkdir()
    (repo / "config").write_text("x")
    sys._take_away(repo, "the store")
    repo.mkdir()
    (repo / "stray").write_text("y")
    with pytest.raises(LabDrillError, match="written while it was down"):
        sys._put_back(repo)
    assert (repo / "stray").exists() and (tmp_path / "backups.drill-unreachable").exists()


def test_a_channel_down_is_a_file_where_its_folder_was(tmp_path: Path) -> None:
    sys = _system(tmp_path)
    sys._channel_down()
    folder = tmp_path / "channels" / "primary"
    assert folder.is_file()
    assert sys._put_back(folder) and folder.is_dir()


def test_tabletop_walks_the_new_scenarios_in_words(tmp_path: Path) -> None:
    sys = _system(tmp_path)
    full = specs.find(specs.load_all(), scenario="full-exercise")
    steps = {s.name: s.what for s in sys.describe(full)}
    assert "primary communication channel" in steps["inject"]
    assert "recover component eapi --region" in steps["recover"]
    assert "backup channel" in steps["recover"]
    store = specs.find(specs.load_all(), scenario="vendor-outage", component="object-store")
    steps = {s.name: s.what for s in sys.describe(store)}
    assert "unreachable" in steps["inject"] and "drain" in steps["recover"]


def test_the_full_exercise_is_the_region_outage_drill_plus_its_extra_failures() -> None:
    # The scenario suite runs the region outage as part of the full exercise only: this
    # keeps the two specs from drifting apart unseen.
    shipped = specs.load_all()
    outage = specs.find(shipped, scenario="region-outage")
    full = specs.find(shipped, scenario="full-exercise")
    assert outage.injection.model_copy(update={"channel_down": True}) == full.injection
    assert outage.recovery.model_copy(update={"component_failure": "eapi"}) == full.recovery
    assert (outage.judge, outage.probes, outage.abort) == (full.judge, full.probes, full.abort)
