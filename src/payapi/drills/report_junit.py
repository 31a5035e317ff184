"""A drill as JUnit XML, so CI systems list drills beside tests (pure).

One ``<testsuite>`` per drill, one ``<testcase>`` per verdict: ``MET`` passes,
``BREACHED`` is a ``<failure>``, ``NOT MEASURED`` is ``<skipped>`` (nothing proved
either way). A drill that did not complete adds a testcase for its status: a failed or
aborted drill (or one that is still running, or whose runner died) fails it, a refused
drill skips it. A completed drill without verdicts (a tabletop) has one passing status
testcase, so its suite is not empty. Testcase names are stable across drills
(``<component> RTO/RPO``), so a CI's history follows one component's results.

Built with :mod:`xml.etree.ElementTree`, which escapes every text and attribute;
characters XML 1.0 cannot carry are removed first (:func:`report_text.xml_safe`).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from payapi.drills import report_text as t
from payapi.drills.model import DrillRecord, DrillStatus, VerdictKind

__all__ = ["STATUS_CASE", "render_junit"]

STATUS_CASE = "drill status"


def _secs(value: float | None) -> str:
    return f"{max(value or 0.0, 0.0):.3f}"


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    el = ET.SubElement(parent, tag, {k: t.xml_safe(v) for k, v in attrs.items()})
    if text:
        el.text = t.xml_safe(text)
    return el


def render_junit(record: DrillRecord) -> bytes:
    r = record
    duration = (r.ended_at - r.started_at).total_seconds() if r.ended_at else None
    suites = ET.Element("testsuites", {"name": "payapi drills"})
    suite = _sub(
        suites,
        "testsuite",
        name=f"drill {r.drill} {r.drill_id}",
        timestamp=r.started_at.isoformat(),
        time=_secs(duration),
    )
    props = _sub(suite, "properties")
    for name, value in (
        ("drill_id", r.drill_id),
        ("drill", r.drill),
        ("scenario", r.scenario),
        ("component", r.component or ""),
        ("environment", r.environment),
        ("status", str(r.status)),
        ("tabletop", str(r.tabletop).lower()),
        ("incident_id", r.incident_id or ""),
    ):
        _sub(props, "property", name=name, value=value)

    classname = f"drills.{r.drill}"
    failures = skipped = 0
    components = [v.component for v in r.verdicts]
    for verdict, row in zip(r.verdicts, t.verdict_rows(r), strict=True):
        shared = components.count(row.component) > 1  # judged by two probes
        case = _sub(
            suite,
            "testcase",
            classname=classname,
            name=f"{row.component} RTO/RPO" + (f" [{row.probe}]" if shared else ""),
            time=_secs(verdict.rto_seconds),
        )
        summary = (
            f"RTO {row.rto} (objective {row.rto_objective}), RPO window {row.rpo_window} "
            f"(objective {row.rpo_objective}), missing {row.missing}, margin {row.margin}"
        )
        detail = f"{summary}\n{row.detail}" if row.detail else summary
        if row.kind is VerdictKind.BREACHED:
            failures += 1
            _sub(case, "failure", detail, message=f"BREACHED: {summary}", type="BREACHED")
        elif row.kind is VerdictKind.NOT_MEASURED:
            skipped += 1
            _sub(case, "skipped", message=f"{t.NOT_MEASURED}: {row.detail or summary}")
        else:
            _sub(case, "system-out", summary)

    if r.status is not DrillStatus.COMPLETED or not r.verdicts:
        case = _sub(suite, "testcase", classname=classname, name=STATUS_CASE, time=_secs(duration))
        why = t.one_line(r.reason) or str(r.status)
        if r.status is DrillStatus.REFUSED:
            skipped += 1
            _sub(case, "skipped", message=f"refused: {why}")
        elif r.status is not DrillStatus.COMPLETED:
            failures += 1
            _sub(case, "failure", why, message=f"{r.status.name}: {why}", type=r.status.name)

    tests = len(suite.findall("testcase"))
    for el in (suite, suites):
        el.set("tests", str(tests))
        el.set("failures", str(failures))
        el.set("errors", "0")
        el.set("skipped", str(skipped))
    suites.set("time", suite.get("time", "0"))
    ET.indent(suites)
    data: bytes = ET.tostring(suites, encoding="utf-8", xml_declaration=True)
    return data + b"\n"
