"""A drill on an environment the operator names (``--environment staging``), not the lab:
only on a config that says it is that environment, and only the failures its configured
controls can cause. The one-region lab, relabelled ``staging`` in a copy of its config,
stands in for such an environment (its services have ``control = "local"``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.scenarios.conftest import LabHandle, run_cli
from tests.scenarios.test_drills import SEED_CHECKLIST

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def staging(lab: LabHandle, tmp_path: Path) -> Path:
    text = lab.config.read_text()
    assert 'environment = "lab"' in text
    config = lab.config.with_name("staging.toml")
    config.write_text(text.replace('environment = "lab"', 'environment = "staging"', 1))
    return config


@pytest.fixture
def checklist(tmp_path: Path) -> Path:
    items = [{"item": i, "done": True, "by": "Grace Hopper"} for i in SEED_CHECKLIST]
    path = tmp_path / "checklist.yaml"
    path.write_text(yaml.safe_dump({"items": items, "go": True}))
    return path


def drill(config: Path, checklist: Path, *args: str) -> tuple[int, str, str]:
    res = run_cli("drill", "run", *args, "--yes", "--checklist", str(checklist), "--json",
                  config=config, check=False)  # fmt: skip
    return res.returncode, res.stdout, res.stderr


def test_an_eapi_failure_drill_runs_on_the_named_environment(
    lab: LabHandle, staging: Path, checklist: Path
) -> None:
    try:
        rc, out, err = drill(staging, checklist, "--component", "eapi", "--scenario",
                             "failure", "--environment", "staging")  # fmt: skip
        assert rc == 0, err
        data = json.loads(out)
        assert data["status"] == "completed"
        m = data["measurements"]
        assert m["rto_seconds"] is not None and m["rpo"]["missing"] == 0
        journal = Path(data["reports"]["json"]).read_text()
        assert "killed 1 of eapi with no grace (the local eapi process" in journal
        assert "component-eapi" in journal  # recovered by its runbook
    finally:
        lab.ensure_running()


def test_outside_the_lab_only_what_the_controls_can_cause_is_injected(
    staging: Path, checklist: Path
) -> None:
    rc, _, err = drill(staging, checklist, "--component", "db", "--scenario", "failure",
                       "--environment", "staging")  # fmt: skip
    assert rc == 2 and "runs only on the lab" in err and "Traceback" not in err


def test_a_config_of_another_environment_is_refused(staging: Path, checklist: Path) -> None:
    rc, _, err = drill(staging, checklist, "--component", "eapi", "--scenario", "failure",
                       "--environment", "production")  # fmt: skip
    assert rc == 2 and "this config is for environment 'staging'" in err
    assert len(err.strip().splitlines()) == 1
