"""The four drill reports, from a record whose probes fail after the injection and
recover: files written atomically, JUnit that parses with a failure per BREACHED
verdict, a self-contained HTML page with an inline SVG chart, the Markdown verdict
table, TABLETOP marking, and escaping of everything taken from the record."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from payapi.core.redaction import is_sensitive_name
from payapi.drills import chart, report
from payapi.drills.actions import Action
from payapi.drills.model import DrillStatus, StepRecord, VerdictKind
from payapi.drills.report_text import duration, margin
from tests.unit.drill_records import record, sec, tabletop

NOW = datetime(2026, 12, 8, 9, 0, tzinfo=UTC)
ACTION = Action("ACT-001", "Alert on <replica> | lag", "ada", NOW, due=None)
CLOSED = replace(ACTION, id="ACT-002", title="done already", closed_at=NOW)
# A reference that makes the browser fetch something: src= or href= to another host, a
# url(...) that is not an in-page #id (the chart's clip paths are), @import.
RESOURCE = re.compile(
    r"""(src|href)\s*=\s*["']?\s*(https?:)?//|url\(\s*["']?\s*(?!#)|@import""", re.I
)


def junit_cases(path: Path) -> dict[str, ET.Element]:
    root = ET.parse(path).getroot()
    suites = root.findall("testsuite")
    assert len(suites) == 1
    return {c.get("name", ""): c for c in suites[0].findall("testcase")}


def test_a_breached_drill_writes_four_consistent_reports(tmp_path: Path) -> None:
    rec = record(rto_objective=20.0, lost=[3, 4])  # down 25 s: the RTO is breached
    paths = report.write_reports(rec, tmp_path, actions=[ACTION, CLOSED], generated_at=NOW)
    files = paths.to_json()
    assert set(files) == {"json", "markdown", "html", "junit"}
    assert all(Path(p).is_file() and Path(p).parent == tmp_path for p in files.values())
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        Path(p).name for p in files.values()
    )

    cases = junit_cases(paths.junit)
    assert set(cases) == {"redis RTO/RPO", "payment-eapi RTO/RPO"}
    for case in cases.values():
        failure = case.find("failure")
        assert failure is not None and failure.get("type") == "BREACHED"
        assert "margin -5.0 s" in failure.get("message", "")
    suite = ET.parse(paths.junit).getroot().find("testsuite")
    assert suite is not None and suite.get("failures") == "2" and suite.get("tests") == "2"

    md = paths.markdown.read_text()
    assert "| Component | RTO objective | Measured RTO | RPO objective | Measured RPO window" in md
    assert "| payment-eapi | 20.0 s | 25.0 s | 15 min | 1.0 s | 2 of 31 | BREACHED | -5.0 s |" in md
    assert "**Go/No-Go: GO**" in md and "TABLETOP" not in md
    assert "| Service restored | 2026-12-07 10:00:25Z | +25.0 s |" in md
    assert "Alert on &lt;replica&gt; \\| lag" in md and "done already" not in md  # open only

    page = paths.html.read_text()
    assert page.startswith("<!DOCTYPE html>") and "<svg" in page and "</svg>" in page
    assert not RESOURCE.search(page)
    assert RESOURCE.search('<img src="https://cdn.example/x.png">')  # the check can fail
    assert "http://" not in page and "https://" not in page
    assert "<script" not in page
    assert "Alert on &lt;replica&gt; | lag" in page
    assert 'class="BREACHED"' in page

    data = json.loads(paths.json.read_text())
    assert data["overall_verdict"] == "BREACHED" and data["status"] == "completed"
    assert [a["id"] for a in data["open_actions"]] == ["ACT-001"]
    assert len(data["samples"]) == len(rec.samples)
    step = data["steps"][2]
    assert step["name"] == "sentinel failover" and step["duration_seconds"] == 13.0
    assert {"started_at", "ended_at", "status", "output"} <= set(step)
    assert data["measurements"]["rpo"]["missing"] == 2


def test_a_met_drill_passes_and_a_failed_one_adds_a_failing_status_case(tmp_path: Path) -> None:
    met = report.write_reports(record(), tmp_path / "met", generated_at=NOW)
    cases = junit_cases(met.junit)
    assert all(c.find("failure") is None and c.find("skipped") is None for c in cases.values())
    assert "MET" in met.markdown.read_text()

    failed = record(status=DrillStatus.ABORTED, reason="no recovery within 2x the RTO")
    cases = junit_cases(report.write_reports(failed, tmp_path / "aborted").junit)
    status = cases["drill status"].find("failure")
    assert status is not None and status.get("type") == "ABORTED"
    assert "no recovery within 2x the RTO" in status.get("message", "")


def test_not_measured_is_skipped_and_printed_never_guessed(tmp_path: Path) -> None:
    rec = record()
    unmeasured = replace(
        rec.verdicts[0],
        rto_seconds=None,
        rto_verdict=VerdictKind.NOT_MEASURED,
        verdict=VerdictKind.NOT_MEASURED,
        margin_seconds=None,
        detail="the tokens probe did not measure a recovery",
    )
    rec = replace(rec, verdicts=(unmeasured, rec.verdicts[1]))
    paths = report.write_reports(rec, tmp_path, generated_at=NOW)
    skipped = junit_cases(paths.junit)["redis RTO/RPO"].find("skipped")
    assert skipped is not None and "NOT MEASURED" in skipped.get("message", "")
    row = next(
        line for line in paths.markdown.read_text().splitlines() if line.startswith("| redis")
    )
    assert row.count("NOT MEASURED") == 3  # measured RTO, verdict, margin


def test_a_tabletop_report_is_marked_and_shows_expectations_and_notes(tmp_path: Path) -> None:
    paths = report.write_reports(tabletop(), tmp_path, actions=[ACTION], generated_at=NOW)
    md = paths.markdown.read_text()
    assert "**TABLETOP**" in md and "| Mode | TABLETOP |" in md
    assert "| Step | Phase | Expected | Took | Status | What it would do | Notes |" in md
    assert "| sentinel failover | recover | 30.0 s | 7 min | tabletop |" in md
    assert "nobody knew the Sentinel quorum" in md
    page = paths.html.read_text()
    assert 'class="tabletop"' in page and "<svg" in page and "nobody knew" in page
    cases = junit_cases(paths.junit)
    assert list(cases) == ["drill status"]  # a passing case: the suite is not empty
    assert cases["drill status"].find("failure") is None
    assert json.loads(paths.json.read_text())["tabletop"] is True


def test_text_from_the_record_is_escaped_everywhere(tmp_path: Path) -> None:
    nasty = '<script>alert("x")</script> & \x1b[31mred\x1b[0m $a$ | ]]>'
    rec = record(drill="redis-failure", reason=nasty, status=DrillStatus.FAILED)
    bad_step = StepRecord("inject <b>", "inject", sec(0), sec(1), "failed", nasty)
    rec = replace(rec, steps=(*rec.steps, bad_step), participants=(nasty,))
    paths = report.write_reports(rec, tmp_path, generated_at=NOW)
    page = paths.html.read_text()
    assert "<script>" not in page and "&lt;script&gt;" in page and "\x1b" not in page
    assert "<b>" not in page
    root = ET.parse(paths.junit).getroot()  # parses: the escape code is gone
    failure = root.find("testsuite/testcase[@name='drill status']/failure")
    assert failure is not None and '<script>alert("x")</script>' in failure.get("message", "")
    md = paths.markdown.read_text()
    assert "<script>" not in md and "\x1b" not in md


def test_no_field_is_named_like_a_secret_but_probe_names_survive(tmp_path: Path) -> None:
    rec = record()
    data = report.journal_json(rec, generated_at=NOW)
    assert "tokens" in data["measurements"]["probes"]  # a probe's name, not a field

    def fields(value: object, names: bool = False) -> set[str]:
        if isinstance(value, dict):
            out = set() if names else set(value)
            for k, v in value.items():
                out |= fields(v, names=k in ("probes", "rpo_by_probe") and not names)
            return out
        if isinstance(value, list):
            return set().union(*(fields(v) for v in value)) if value else set()
        return set()

    assert not [f for f in fields(data) if is_sensitive_name(f)]
    assert report.scrub({"x": {"api_key": "k", "probes": {"tokens": {"password": "p"}}}}) == {
        "x": {"api_key": "[redacted]", "probes": {"tokens": {"password": "[redacted]"}}}
    }


def test_result_json_has_the_contract_keys(tmp_path: Path) -> None:
    rec = record(rto_objective=20.0)
    paths = report.ReportPaths.in_folder(tmp_path, rec.drill_id)
    out = report.result_json(rec, paths=paths, actions=[ACTION])
    assert {"drill_id", "scenario", "component", "status", "measurements", "verdicts"} <= set(out)
    m = out["measurements"]
    assert {"injected_at", "detected_at", "service_restored_at", "normal_at", "rto_seconds"} <= set(
        m
    )
    assert {"acknowledged", "missing", "window_seconds"} <= set(m["rpo"])
    v = out["verdicts"][0]
    assert {
        "component",
        "rto_objective_seconds",
        "rpo_objective_seconds",
        "rto_seconds",
        "rpo_window_seconds",
        "verdict",
        "margin_seconds",
    } <= set(v)
    assert set(out["reports"]) == {"json", "markdown", "html", "junit"}
    assert out["open_actions"] == ["ACT-001"]
    # Not measured (a tabletop): the RPO is still an object, its figures null.
    rpo = report.result_json(tabletop())["measurements"]["rpo"]
    assert rpo == {"acknowledged": None, "missing": None, "window_seconds": None}


def test_a_drill_id_that_is_a_path_is_refused(tmp_path: Path) -> None:
    from payapi.core.errors import UsageError

    with pytest.raises(UsageError, match="not a drill id"):
        report.write_reports(record(drill_id="../../etc/passwd"), tmp_path)


def test_a_failed_write_leaves_no_report_that_looks_valid(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = report.write_atomic

    def fail_on_json(path: Path, data: bytes, **kw: int) -> Path:
        if path.suffix == ".json":
            raise OSError(28, "No space left on device")
        return real(path, data, **kw)

    monkeypatch.setattr(report, "write_atomic", fail_on_json)
    with pytest.raises(OSError):
        report.write_reports(record(), tmp_path)
    # The journal (written last) is absent, and nothing half-written is left.
    assert not list(tmp_path.glob("*.json")) and not list(tmp_path.glob(".*"))


def test_chart_data_places_markers_and_the_rto_objective() -> None:
    data = chart.chart_data(record(rto_objective=20.0))
    assert [s.probe for s in data.series] == ["payments", "tokens"]  # the headline first
    assert (data.markers[0].label, data.markers[0].x) == ("injected", 0.0)
    assert ("restored", 25.04) in [(m.label, round(m.x, 3)) for m in data.markers]
    assert [(o.x, o.visible) for o in data.objectives] == [(20.0, True)]
    far = chart.chart_data(record(rto_objective=3600.0))
    assert [(o.x, o.visible) for o in far.objectives] == [(3600.0, False)]
    assert far.notes == ("RTO objective (redis, payment-eapi) at +3,600 s: beyond the chart",)
    assert far.x_max == 40.0  # the data is not squashed into a sliver


def test_the_svg_is_an_inline_element_with_the_probes() -> None:
    svg = chart.timeline_svg(record(rto_objective=20.0))
    assert svg.startswith("<svg ") and svg.rstrip().endswith("</svg>")
    assert "xmlns" not in svg.split(">", 1)[0] and "DOCTYPE" not in svg
    assert ">payments<" in svg and ">tokens<" in svg and "RTO objective" in svg
    assert chart.timeline_svg(record(rto_objective=20.0)) == svg  # deterministic
    assert "Nothing to chart" in chart.timeline_svg(tabletop())


def test_nothing_imports_matplotlib_until_a_chart_is_drawn() -> None:
    code = (
        "import sys, payapi.cli.main, payapi.drills.report, payapi.drills.chart, "
        "payapi.drills.history\n"
        "assert 'matplotlib' not in sys.modules, 'imported at module load'"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stderr


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (None, "NOT MEASURED"),
        (25.04, "25.0 s"),
        (245, "4 min 05 s"),
        (3600, "1 h"),
        (9000, "2 h 30 min"),
    ],
)
def test_durations(seconds: float | None, text: str) -> None:
    assert duration(seconds) == text
    assert margin(-5.04) == "-5.0 s" and margin(3575) == "+59 min 35 s"
