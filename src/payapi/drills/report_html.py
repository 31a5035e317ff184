"""A drill's HTML report: one self-contained file (pure).

The same content as the Markdown summary, plus the timeline chart as inline SVG
(:mod:`payapi.drills.chart` draws it; this module only places it). The page references
nothing outside itself: the style sheet is inline, there is no script, no font, no image
file and no link to fetch, so it opens the same from a CI artefact, a mail attachment or
an air-gapped laptop. Every text from the record is escaped (:func:`html.escape`).
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from datetime import datetime

from payapi.drills import report_text as t
from payapi.drills.actions import Action
from payapi.drills.model import DrillRecord, VerdictKind

__all__ = ["render_html"]

_STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1200px;
       padding: 0 1em; color: #111827; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
h2 { font-size: 1.2em; margin-top: 1.6em; border-bottom: 1px solid #e5e7eb; }
table { border-collapse: collapse; margin: 0.5em 0; }
th, td { border: 1px solid #d1d5db; padding: 0.25em 0.6em; text-align: left;
         vertical-align: top; }
th { background: #f3f4f6; }
table.facts th { width: 11em; }
.MET { color: #15803d; font-weight: bold; }
.BREACHED, .ABORTED, .FAILED { color: #b91c1c; font-weight: bold; }
.NOT-MEASURED, .REFUSED, .RUNNING { color: #a16207; font-weight: bold; }
.tabletop { background: #fef3c7; border: 1px solid #f59e0b; padding: 0.6em 1em;
            font-weight: bold; }
.chart svg { max-width: 100%; height: auto; }
.note { color: #6b7280; }
"""


def e(text: object) -> str:
    return html.escape(t.one_line(text), quote=True)


def _badge(word: str) -> str:
    return f'<span class="{e(word.replace(" ", "-"))}">{e(word)}</span>'


def _table(
    headers: Sequence[str], rows: Sequence[Sequence[str]], *, raw: frozenset[int] = frozenset()
) -> str:
    """A table; the cells of the columns in ``raw`` are already HTML (badges)."""
    head = "".join(f"<th>{e(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{c if i in raw else e(c)}</td>" for i, c in enumerate(row)) + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render_html(
    record: DrillRecord, *, chart_svg: str, actions: Sequence[Action] = (), generated_at: datetime
) -> str:
    """The page. ``chart_svg`` is :func:`payapi.drills.chart.timeline_svg`'s element,
    inserted as it is (it is markup we drew, its texts escaped by matplotlib)."""
    r = record
    parts: list[str] = [f"<h1>Drill report: {e(r.drill)}</h1>"]
    if r.tabletop:
        parts.append(
            '<p class="tabletop">TABLETOP exercise: every step was walked through and '
            "nothing was executed; no figure was measured.</p>"
        )
    status = _badge(r.status.name) + (f" {e(r.reason)}" if r.reason else "")
    facts = [
        ("Drill id", f"<code>{e(r.drill_id)}</code>"),
        ("Scenario", e(r.scenario)),
        ("Component", e(r.component or "-")),
        ("Environment", e(r.environment or "-")),
        ("Mode", "TABLETOP" if r.tabletop else "live"),
        ("Status", status),
        ("Overall verdict", _badge(t.overall_verdict(r))),
        ("Started", e(t.utc(r.started_at))),
        ("Ended", e(t.utc(r.ended_at, missing="did not end"))),
        ("Incident", e(r.incident_id or "-")),
        ("Participants", e(", ".join(r.participants) or "-")),
    ]
    rows = "".join(f"<tr><th>{e(k)}</th><td>{v}</td></tr>" for k, v in facts)
    parts.append(f'<table class="facts">{rows}</table>')

    parts.append("<h2>Timeline</h2>")
    parts.append(f'<div class="chart">{chart_svg}</div>')
    timeline = [(row.title, row.at, row.since_injection) for row in t.timeline_rows(r)]
    parts.append(_table(("Marker", "Time (UTC)", "Since injection"), timeline))

    parts.append("<h2>Verdicts against the plan</h2>")
    verdicts = t.verdict_rows(r)
    if verdicts:
        cells = [(*v.cells()[:6], _badge(v.verdict), v.margin) for v in verdicts]
        parts.append(_table(t.VerdictRow.HEADERS, cells, raw=frozenset({6})))
        notes = "".join(f"<li>{e(v.component)}: {e(v.detail)}</li>" for v in verdicts if v.detail)
        if notes:
            parts.append(f'<ul class="note">{notes}</ul>')
    else:
        parts.append(f"<p>No verdict: {_badge(str(VerdictKind.NOT_MEASURED))}.</p>")

    probes = t.probe_rows(r)
    if probes:
        parts.append("<h2>Probes</h2>")
        parts.append(_table(t.ProbeRow.HEADERS, [p.cells() for p in probes]))

    parts.append("<h2>Pre-test checklist</h2>")
    if r.checklist is None:
        parts.append("<p>No checklist was recorded.</p>")
    else:
        items = [("done" if i.done else "NOT DONE", i.item, i.by or "-") for i in r.checklist.items]
        parts.append(_table(("", "Item", "By"), items))
        parts.append(f"<p><strong>Go/No-Go: {e(t.go_no_go(r))}</strong></p>")

    parts.append("<h2>Steps</h2>")
    steps = t.step_rows(r)
    if not steps:
        parts.append("<p>No step was recorded.</p>")
    elif r.tabletop:
        headers = ("Step", "Phase", "Expected", "Took", "Status", "What it would do", "Notes")
        parts.append(
            _table(
                headers,
                [
                    (s.name, s.phase, s.expected, s.duration, s.status, s.output, s.notes)
                    for s in steps
                ],
            )
        )
    else:
        headers = ("Step", "Phase", "Start", "End", "Duration", "Status", "Output")
        parts.append(
            _table(
                headers,
                [(s.name, s.phase, s.start, s.end, s.duration, s.status, s.output) for s in steps],
            )
        )

    parts.append("<h2>Open improvement actions</h2>")
    open_actions = t.action_rows(actions)
    if open_actions:
        parts.append(_table(t.ActionRow.HEADERS, [a.cells() for a in open_actions]))
    else:
        parts.append("<p>None.</p>")
    parts.append(f'<p class="note">Generated {e(t.utc(generated_at))} by payapi.</p>')

    title = f"Drill {r.drill} {r.drill_id}"
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{e(title)}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n"
        + "\n".join(parts)
        + "\n</body>\n</html>\n"
    )
