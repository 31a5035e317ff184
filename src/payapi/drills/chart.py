"""The drill's timeline chart, as inline SVG for the HTML report.

Two panels over one time axis (seconds since the injection): every probe attempt as a
success or a failure, one row per probe, and each attempt's latency; vertical lines at
the drill's markers (injected, detected, recovery started, restored, normal) and at the
RTO objective of each judged component (``injected_at + objective``).

:func:`chart_data` decides what is drawn (pure, tested without matplotlib);
:func:`timeline_svg` draws it. matplotlib takes a good part of a second to import, so it
is imported here, inside :func:`timeline_svg`, and nowhere else: the CLI and the runner
import this module for nothing until a report is written. The Agg backend is selected
(no display is needed or used); the figure is an object of its own (no pyplot state), so
two reports drawn at once do not share a figure.

The SVG is made self-contained and deterministic: text stays text (no font files), ids
are salted with a fixed string, there is no date or creator metadata, and the XML
prolog, DOCTYPE and namespace declarations are dropped because an ``<svg>`` inside an
HTML5 page needs none of them (the DOCTYPE is the only URL matplotlib writes).
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from payapi.drills.model import MARKERS, DrillRecord

if TYPE_CHECKING:  # matplotlib itself is imported only when a chart is drawn
    from matplotlib.figure import Figure

__all__ = ["ChartData", "Line", "Series", "chart_data", "timeline_svg"]

# Beyond this share of the observed span past its end, an objective line would squash
# the data into a sliver: it is named in a note instead of drawn.
OBJECTIVE_SLACK = 0.25

MARKER_LABELS = {
    "injected_at": "injected",
    "detected_at": "detected",
    "recovery_started_at": "recovery started",
    "service_restored_at": "restored",
    "normal_at": "normal",
}
_MARKER_COLOURS = {
    "injected_at": "#111111",
    "detected_at": "#d97706",
    "recovery_started_at": "#2563eb",
    "service_restored_at": "#16a34a",
    "normal_at": "#6b7280",
}
_OK, _FAIL, _OBJECTIVE = "#16a34a", "#dc2626", "#b91c1c"
# The probes' latency lines: none is a marker's colour.
_PROBE_COLOURS = ("#0891b2", "#7c3aed", "#db2777", "#0f766e", "#a16207", "#4338ca")


@dataclass(frozen=True)
class Series:
    """One probe's attempts: send time (seconds since ``t0``), outcome, latency."""

    probe: str
    x: tuple[float, ...]
    ok: tuple[bool, ...]
    latency_ms: tuple[float, ...]


@dataclass(frozen=True)
class Line:
    label: str
    x: float  # seconds since t0
    visible: bool = True  # False: beyond the chart, said in a note


@dataclass(frozen=True)
class ChartData:
    title: str
    t0: datetime
    since: str  # what t0 is ("injection", "drill start")
    series: tuple[Series, ...]
    markers: tuple[Line, ...]  # keyed by MARKERS' order; label is MARKER_LABELS'
    marker_names: tuple[str, ...]
    objectives: tuple[Line, ...]
    x_min: float
    x_max: float

    @property
    def empty(self) -> bool:
        return not self.series

    @property
    def notes(self) -> tuple[str, ...]:
        return tuple(
            f"{o.label} at +{o.x:,.0f} s: beyond the chart"
            for o in self.objectives
            if not o.visible
        )


def _seconds(when: datetime, t0: datetime) -> float:
    return (when - t0).total_seconds()


def chart_data(record: DrillRecord, *, headline: str = "payments") -> ChartData:
    """What the chart of ``record`` shows. Probes are in name order, the headline
    (end-to-end payments) first; objectives are one line per distinct RTO objective."""
    m = record.measurements
    t0 = m.injected_at or min((s.at for s in record.samples), default=record.started_at)
    since = "injection" if m.injected_at is not None else "first sample"
    names = sorted({s.probe for s in record.samples}, key=lambda p: (p != headline, p))
    series = []
    for name in names:
        mine = sorted((s for s in record.samples if s.probe == name), key=lambda s: s.at)
        series.append(
            Series(
                probe=name,
                x=tuple(_seconds(s.at, t0) for s in mine),
                ok=tuple(s.ok for s in mine),
                latency_ms=tuple(s.latency_ms for s in mine),
            )
        )
    marks = [(n, getattr(m, n)) for n in MARKERS if getattr(m, n) is not None]
    markers = tuple(Line(MARKER_LABELS[n], _seconds(at, t0)) for n, at in marks)
    xs = [x for s in series for x in s.x] + [line.x for line in markers]
    x_min, x_max = (min(xs), max(xs)) if xs else (0.0, 1.0)
    span = max(x_max - x_min, 1.0)
    by_objective: dict[float, list[str]] = {}
    if m.injected_at is not None:
        for v in record.verdicts:
            if v.rto_objective_seconds is not None:
                by_objective.setdefault(float(v.rto_objective_seconds), []).append(v.component)
    objectives = []
    for seconds, components in sorted(by_objective.items()):
        x = _seconds(m.injected_at, t0) + seconds if m.injected_at else seconds
        visible = x <= x_max + OBJECTIVE_SLACK * span
        label = f"RTO objective ({', '.join(components)})"
        objectives.append(Line(label, x, visible))
        if visible:
            x_max = max(x_max, x)
    return ChartData(
        title=f"{record.drill} ({record.drill_id})",
        t0=t0,
        since=since,
        series=tuple(series),
        markers=markers,
        marker_names=tuple(n for n, _ in marks),
        objectives=tuple(objectives),
        x_min=x_min,
        x_max=x_max,
    )


def _plain(text: str) -> str:
    """Text as matplotlib should print it: a ``$`` would start mathtext."""
    return text.replace("$", r"\$")


_PROLOG = re.compile(r"\A\s*<\?xml[^>]*\?>\s*(<!DOCTYPE[^>]*>\s*)?", re.DOTALL)
_XMLNS = re.compile(r'\s+xmlns(:\w+)?="[^"]*"')


def inline(svg: str) -> str:
    """matplotlib's SVG document as an element for an HTML5 page (see the module doc)."""
    svg = _PROLOG.sub("", svg)
    head, sep, rest = svg.partition(">")
    return _XMLNS.sub("", head) + sep + rest


def timeline_svg(record: DrillRecord) -> str:
    """The chart of ``record`` as an ``<svg>`` element (a note in it when there are no
    samples: a tabletop drill, or one refused before its probes started)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    data = chart_data(record)
    with matplotlib.rc_context(
        {"svg.fonttype": "none", "svg.hashsalt": "payapi-drill", "font.size": 9}
    ):
        if data.empty:
            fig = Figure(figsize=(10, 1.6))
            why = "a tabletop drill: no probe ran" if record.tabletop else "no probe samples"
            fig.text(0.5, 0.6, _plain(data.title), ha="center", fontsize=11)
            fig.text(0.5, 0.3, f"Nothing to chart ({why}).", ha="center", color="#6b7280")
        else:
            fig = _draw(Figure(figsize=(10, 2.6 + 0.35 * len(data.series))), data)
        buf = io.StringIO()
        fig.savefig(
            buf,
            format="svg",
            bbox_inches="tight",
            metadata={"Date": None, "Creator": None, "Format": None, "Type": None},
        )
    return inline(buf.getvalue())


def _draw(fig: Figure, data: ChartData) -> Figure:
    rows = len(data.series)
    outcome, latency = fig.subplots(
        2, 1, sharex=True, gridspec_kw={"height_ratios": [max(rows, 1) * 0.6 + 0.6, 2.0]}
    )
    fig.suptitle(_plain(data.title), fontsize=11)
    handles = []
    for i, s in enumerate(data.series):
        ok_x = [x for x, ok in zip(s.x, s.ok, strict=True) if ok]
        bad_x = [x for x, ok in zip(s.x, s.ok, strict=True) if not ok]
        outcome.plot(ok_x, [i] * len(ok_x), "|", color=_OK, markersize=10, linestyle="none")
        outcome.plot(bad_x, [i] * len(bad_x), "x", color=_FAIL, markersize=6, linestyle="none")
        # The line joins successful answers only; a failure's time-to-error is an x.
        ok_ms = [ms if ok else float("nan") for ms, ok in zip(s.latency_ms, s.ok, strict=True)]
        colour = _PROBE_COLOURS[i % len(_PROBE_COLOURS)]
        (line,) = latency.plot(s.x, ok_ms, "-", color=colour, linewidth=0.9, label=_plain(s.probe))
        handles.append(line)
        bad_ms = [ms for ms, ok in zip(s.latency_ms, s.ok, strict=True) if not ok]
        latency.plot(bad_x, bad_ms, "x", color=_FAIL, markersize=4, linestyle="none")
    outcome.set_yticks(range(rows), [_plain(s.probe) for s in data.series])
    outcome.set_ylim(-0.7, rows - 0.3)
    outcome.invert_yaxis()
    outcome.set_title("probe attempts (| success, x failure)", fontsize=9, loc="left")
    latencies = [ms for s in data.series for ms in s.latency_ms]
    if latencies and min(latencies) > 0 and max(latencies) / min(latencies) > 50:
        latency.set_yscale("log")  # timeouts next to millisecond answers
    latency.set_ylabel("latency (ms)")
    latency.set_xlabel(f"seconds since {data.since} ({data.t0.strftime('%Y-%m-%d %H:%M:%S UTC')})")
    for name, mark in zip(data.marker_names, data.markers, strict=True):
        colour = _MARKER_COLOURS[name]
        for ax in (outcome, latency):
            drawn = ax.axvline(mark.x, color=colour, linewidth=1.2, linestyle="-")
        drawn.set_label(mark.label)
        handles.append(drawn)
    for obj in data.objectives:
        if not obj.visible:
            continue
        for ax in (outcome, latency):
            drawn = ax.axvline(obj.x, color=_OBJECTIVE, linewidth=1.2, linestyle="--")
        drawn.set_label(_plain(obj.label))
        handles.append(drawn)
    pad = max((data.x_max - data.x_min) * 0.02, 0.5)
    latency.set_xlim(data.x_min - pad, data.x_max + pad)
    latency.legend(
        handles=handles,
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
        fontsize=8,
        frameon=False,
    )
    for i, note in enumerate(data.notes):
        fig.text(0.01, -0.02 - 0.04 * i, _plain(note), fontsize=8, color=_OBJECTIVE)
    return fig
