"""The reports and the history of drills the real runner ran (against the runner tests'
fake system): a measured drill, a tabletop and a refused one, read back from their
journals by `payapi drill report` and `payapi drill history`."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from typer.testing import CliRunner

from payapi.cli.main import app
from payapi.drills import journal, runner
from payapi.drills.model import DrillStatus
from tests.unit.test_drill_runner import CHECKLIST, PLAN, FakeSystem, spec


def test_reports_and_history_of_drills_the_runner_ran(tmp_path: Path) -> None:
    cfg = tmp_path / "payapi.toml"
    cfg.write_text("")
    folder = tmp_path / "drills"
    live = runner.run(spec(), FakeSystem(slow=0.3), PLAN, folder, checklist=CHECKLIST)
    table = runner.run(spec(), FakeSystem(), PLAN, folder, checklist=CHECKLIST, tabletop=True,
                       ask=lambda step: f"we would {step.what}")  # fmt: skip
    with pytest.raises(runner.DrillRefused):
        runner.run(spec(), FakeSystem(), PLAN, folder, checklist=None)
    [refused_id] = set(journal.drill_ids(folder)) - {live.drill_id, table.drill_id}
    refused = journal.load(folder, refused_id)
    assert (live.status, table.status, refused.status) == (
        DrillStatus.COMPLETED,
        DrillStatus.COMPLETED,
        DrillStatus.REFUSED,
    )

    def report(drill_id: str) -> dict[str, object]:
        res = CliRunner().invoke(app, ["--config", str(cfg), "drill", "report", drill_id, "--json"])
        assert res.exit_code == 0, res.stderr
        out: dict[str, object] = json.loads(res.stdout)
        return out

    out = report(live.drill_id)
    paths = {k: Path(v) for k, v in out["reports"].items()}  # type: ignore[attr-defined]
    assert paths["html"].parent == folder / live.drill_id
    page = paths["html"].read_text()
    assert "<svg" in page and ">payments<" in page and "https://" not in page
    case = ET.parse(paths["junit"]).getroot().find("testsuite/testcase")
    assert case is not None and case.get("name") == "payment-eapi RTO/RPO"
    assert case.find("failure") is None and out["overall_verdict"] == "MET"
    data = json.loads(paths["json"].read_text())
    assert data["samples"] and [s["name"] for s in data["steps"]][:2] == ["steady-state", "inject"]

    out = report(table.drill_id)
    md = Path(out["reports"]["markdown"]).read_text()  # type: ignore[index]
    assert "**TABLETOP**" in md and "we would restart it" in md

    out = report(refused.drill_id)
    junit = ET.parse(out["reports"]["junit"]).getroot()  # type: ignore[index]
    status = junit.find("testsuite/testcase[@name='drill status']/skipped")
    assert status is not None and status.get("message", "").startswith("refused:")

    res = CliRunner().invoke(app, ["--config", str(cfg), "drill", "history", "--json"])
    assert res.exit_code == 0, res.stderr
    h = json.loads(res.stdout)
    assert [d["status"] for d in h["drills"]] == ["completed", "completed", "refused"]
    assert [d["test_type"] for d in h["drills"]] == ["component", "tabletop", "component"]
    assert h["trends"][0]["measured"] == 1 and h["unreadable"] == 0
