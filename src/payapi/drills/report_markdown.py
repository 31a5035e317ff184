"""A drill's Markdown summary: what a reviewer reads in the post-test review (pure).

The drill, its scenario and status, the Go/No-Go and checklist, the timeline of markers,
the verdict table against the plan, the probes, the steps, the open improvement actions.
A tabletop drill is marked so at the top, and its steps show what the runbook expects
and what the participants said. Cells are one line; ``|``, ``<`` and ``>`` are escaped,
so a step's output can neither break a table nor inject HTML into a rendered page.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from payapi.drills import report_text as t
from payapi.drills.actions import Action
from payapi.drills.model import DrillRecord

__all__ = ["render_markdown"]


def cell(text: object) -> str:
    out = t.one_line(text).replace("\\", "\\\\").replace("|", "\\|")
    return out.replace("<", "&lt;").replace(">", "&gt;") or " "


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return lines


def render_markdown(
    record: DrillRecord, *, actions: Sequence[Action] = (), generated_at: datetime
) -> str:
    r = record
    out: list[str] = [f"# Drill report: {cell(r.drill)}", ""]
    if r.tabletop:
        out += [
            "> **TABLETOP** exercise: every step was walked through and nothing was "
            "executed; no figure was measured.",
            "",
        ]
    status = r.status.name + (f" ({cell(r.reason)})" if r.reason else "")
    facts = [
        ("Drill id", f"`{r.drill_id}`"),
        ("Scenario", cell(r.scenario)),
        ("Component", cell(r.component or "-")),
        ("Environment", cell(r.environment or "-")),
        ("Mode", "TABLETOP" if r.tabletop else "live"),
        ("Status", f"**{status}**"),
        ("Overall verdict", f"**{t.overall_verdict(r)}**"),
        ("Started", t.utc(r.started_at)),
        ("Ended", t.utc(r.ended_at, missing="did not end")),
        ("Incident", cell(r.incident_id or "-")),
        ("Participants", cell(", ".join(r.participants) or "-")),
    ]
    out += ["| | |", "|---|---|", *(f"| {k} | {v} |" for k, v in facts), ""]

    out += ["## Pre-test checklist", ""]
    if r.checklist is None:
        out += ["No checklist was recorded.", ""]
    else:
        for item in r.checklist.items:
            by = f" ({cell(item.by)})" if item.by else ""
            out.append(f"- [{'x' if item.done else ' '}] {cell(item.item)}{by}")
        out += ["", f"**Go/No-Go: {t.go_no_go(r)}**", ""]

    out += ["## Timeline", ""]
    rows = [(row.title, row.at, row.since_injection) for row in t.timeline_rows(r)]
    out += [*_table(("Marker", "Time (UTC)", "Since injection"), rows), ""]

    out += ["## Verdicts against the plan", ""]
    verdicts = t.verdict_rows(r)
    if verdicts:
        out += _table(t.VerdictRow.HEADERS, [v.cells() for v in verdicts])
        notes = [f"- {cell(v.component)}: {cell(v.detail)}" for v in verdicts if v.detail]
        out += ["", *notes] if notes else []
    else:
        out.append(f"No verdict: {t.NOT_MEASURED} (nothing was judged against the plan).")
    out.append("")

    probes = t.probe_rows(r)
    if probes:
        out += ["## Probes", "", *_table(t.ProbeRow.HEADERS, [p.cells() for p in probes]), ""]

    out += ["## Steps", ""]
    steps = t.step_rows(r)
    if not steps:
        out.append("No step was recorded.")
    elif r.tabletop:
        headers = ("Step", "Phase", "Expected", "Took", "Status", "What it would do", "Notes")
        out += _table(
            headers,
            [(s.name, s.phase, s.expected, s.duration, s.status, s.output, s.notes) for s in steps],
        )
    else:
        headers = ("Step", "Phase", "Start", "End", "Duration", "Status", "Output")
        out += _table(
            headers,
            [(s.name, s.phase, s.start, s.end, s.duration, s.status, s.output) for s in steps],
        )
    out.append("")

    out += ["## Open improvement actions", ""]
    open_actions = t.action_rows(actions)
    if open_actions:
        out += _table(t.ActionRow.HEADERS, [a.cells() for a in open_actions])
    else:
        out.append("None.")
    out += ["", "---", f"Generated {t.utc(generated_at)} by payapi."]
    return "\n".join(out) + "\n"
