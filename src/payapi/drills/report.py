"""Write a drill's four reports into a folder, and the drill's result as JSON.

- ``<drill_id>.json``: the journal as Chaos Toolkit writes one: the record (every step
  with start, end, duration, status and output; the markers, measurements and verdicts;
  the probes' samples) plus the improvement actions open when it was written;
- ``<drill_id>.md``: the Markdown summary (:mod:`.report_markdown`);
- ``<drill_id>.html``: the self-contained HTML report with the timeline chart
  (:mod:`.report_html`, :mod:`.chart`);
- ``<drill_id>.junit.xml``: JUnit XML, one testcase per verdict (:mod:`.report_junit`).

Invariants: each file is written whole or not at all (:func:`payapi.core.atomic.
write_atomic`), so a killed process never leaves half a report that looks valid; the JSON
journal is written last, so when it is there the three others are complete too. The
file names carry the drill id, so many drills can share one folder (a CI job collecting
``*.junit.xml``). No field named like a credential is written (none should exist: refs
are payment ids, token digests and version numbers; this is the last line of defence).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from payapi import __version__
from payapi.core.atomic import write_atomic
from payapi.core.redaction import REDACTED, is_sensitive_name
from payapi.drills import journal
from payapi.drills.actions import Action
from payapi.drills.model import DrillRecord
from payapi.drills.report_html import render_html
from payapi.drills.report_junit import render_junit
from payapi.drills.report_markdown import render_markdown
from payapi.drills.report_text import overall_verdict

__all__ = ["ReportPaths", "journal_json", "result_json", "scrub", "write_reports"]

# Keys whose values are maps keyed by a probe's name (a probe may well be called
# "tokens"): those keys are names, not fields.
_NAME_MAPS = frozenset({"probes", "rpo_by_probe"})


@dataclass(frozen=True, slots=True)
class ReportPaths:
    json: Path
    markdown: Path
    html: Path
    junit: Path

    @classmethod
    def in_folder(cls, folder: Path, drill_id: str) -> ReportPaths:
        journal.journal_path(folder, drill_id)  # a drill id, never a path
        return cls(
            folder / f"{drill_id}.json",
            folder / f"{drill_id}.md",
            folder / f"{drill_id}.html",
            folder / f"{drill_id}.junit.xml",
        )

    def to_json(self) -> dict[str, str]:
        return {
            "json": str(self.json),
            "markdown": str(self.markdown),
            "html": str(self.html),
            "junit": str(self.junit),
        }


def scrub(value: Any, *, names: bool = False) -> Any:
    """``value`` with the value of every field named like a credential replaced.
    ``names``: ``value``'s keys are names (of probes), not fields."""
    if isinstance(value, Mapping):
        return {
            k: (
                REDACTED
                if not names and is_sensitive_name(str(k))
                else scrub(v, names=not names and k in _NAME_MAPS)
            )
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [scrub(v) for v in value]
    return value


def journal_json(
    record: DrillRecord,
    *,
    actions: Sequence[Action] = (),
    generated_at: datetime,
    with_samples: bool = True,
) -> dict[str, Any]:
    data = {
        "report": {"generated_at": generated_at.isoformat(), "generator": f"payapi {__version__}"},
        **record.to_json(with_samples=with_samples),
        "overall_verdict": overall_verdict(record),
        "incident_id": record.incident_id,
        "open_actions": [a.to_json() for a in actions if a.open],
    }
    return dict(scrub(data))


def result_json(
    record: DrillRecord, *, paths: ReportPaths | None = None, actions: Sequence[Action] = ()
) -> dict[str, Any]:
    """The drill's result (``drill report --output``, ``drill run --json``): the figures
    and verdicts of issue 12's contract, and the reports' paths. ``measurements.rpo`` is
    always an object (its figures null when not measured), so a consumer reads
    ``.measurements.rpo.missing`` without a null check first."""
    measurements = record.measurements.to_json()
    if measurements["rpo"] is None:
        measurements["rpo"] = {"acknowledged": None, "missing": None, "window_seconds": None}
    data = {
        "drill_id": record.drill_id,
        "drill": record.drill,
        "scenario": record.scenario,
        "component": record.component,
        "environment": record.environment,
        "tabletop": record.tabletop,
        "status": str(record.status),
        "reason": record.reason,
        "started_at": record.started_at.isoformat(),
        "ended_at": record.ended_at.isoformat() if record.ended_at else None,
        "overall_verdict": overall_verdict(record),
        "incident_id": record.incident_id,
        "measurements": measurements,
        "verdicts": [v.to_json() for v in record.verdicts],
        "open_actions": [a.id for a in actions if a.open],
        "reports": paths.to_json() if paths else {},
    }
    return dict(scrub(data))


def write_reports(
    record: DrillRecord,
    folder: Path,
    *,
    actions: Sequence[Action] = (),
    generated_at: datetime | None = None,
    with_samples: bool = True,
) -> ReportPaths:
    """Write the four reports of ``record`` (loaded with its samples, for the chart)
    into ``folder``; ``actions``: the improvement actions (the open ones are shown).
    Raises OSError as the file system does."""
    from payapi.drills.chart import timeline_svg  # matplotlib: only when drawing

    now = generated_at or datetime.now(UTC)
    open_actions = [a for a in actions if a.open]
    paths = ReportPaths.in_folder(Path(folder), record.drill_id)
    md = render_markdown(record, actions=open_actions, generated_at=now)
    write_atomic(paths.markdown, md.encode("utf-8"))
    page = render_html(
        record, chart_svg=timeline_svg(record), actions=open_actions, generated_at=now
    )
    write_atomic(paths.html, page.encode("utf-8"))
    write_atomic(paths.junit, render_junit(record))
    data = journal_json(record, actions=open_actions, generated_at=now, with_samples=with_samples)
    text = json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    write_atomic(paths.json, text.encode("utf-8"))  # last: the others are complete
    return paths
