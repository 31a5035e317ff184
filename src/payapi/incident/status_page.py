"""A static public status page: ``index.html`` (self-contained: inline CSS, no script,
no CDN) and ``status.json`` (the shape of Statuspage's ``/api/v2/summary.json``).

Component states are Statuspage's, from two facts each (pure, :func:`component_state`):

=========  ==================================  =========================
healthy    an open incident names it           state
=========  ==================================  =========================
yes        no                                  ``operational``
yes        yes                                 ``degraded_performance``
no         no                                  ``partial_outage``
no         yes                                 ``major_outage``
=========  ==================================  =========================

(An incident is *open* while it is ``declared`` or ``recovering``; a healthy component
that an open incident names is up but under recovery; an unhealthy one with no incident
is failing a check nobody has declared a disaster for yet.)

The page is public, so it is built from public facts only: a component's label and
state, an incident's id, title, state and public updates. A health check's ``detail``
(hosts, ports, DSNs) is never read. Update texts are scrubbed anyway (emails, URLs, IP
addresses, ``host:port``, and every string in ``internal`` such as the plan's contact
names and phones) because a person typed them. Drill incidents are left out unless asked.
"""

from __future__ import annotations

import html
import json
import os
import re
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal, Protocol

__all__ = [
    "OPEN_STATES",
    "STATES",
    "HealthLike",
    "PublicIncident",
    "PublicUpdate",
    "StatusServer",
    "build",
    "component_state",
    "page_data",
    "scrub",
    "serve",
]

ComponentState = Literal["operational", "degraded_performance", "partial_outage", "major_outage"]
STATES: tuple[ComponentState, ...] = (
    "operational",
    "degraded_performance",
    "partial_outage",
    "major_outage",
)
OPEN_STATES = frozenset({"declared", "recovering"})
# The incident's state as Statuspage names an incident's status.
_INCIDENT_STATUS = {
    "declared": "investigating",
    "recovering": "identified",
    "recovered": "monitoring",
    "closed": "resolved",
}
_INDICATOR = {
    "operational": "none",
    "degraded_performance": "minor",
    "partial_outage": "major",
    "major_outage": "critical",
}
_DESCRIPTION = {
    "none": "All Systems Operational",
    "minor": "Minor Service Disruption",
    "major": "Partial System Outage",
    "critical": "Major System Outage",
}
_LABEL = {
    "operational": "Operational",
    "degraded_performance": "Degraded Performance",
    "partial_outage": "Partial Outage",
    "major_outage": "Major Outage",
}
_COLOR = {
    "operational": "#2e7d32",
    "degraded_performance": "#f9a825",
    "partial_outage": "#ef6c00",
    "major_outage": "#c62828",
}


class HealthLike(Protocol):
    """What the page reads of a component's health (ops.health.ComponentHealth fits)."""

    @property
    def healthy(self) -> bool: ...


@dataclass(frozen=True)
class PublicUpdate:
    at: datetime
    status: str  # the recovery phase, as said in the update
    body: str


@dataclass(frozen=True)
class PublicIncident:
    incident_id: str
    title: str
    state: str  # declared | recovering | recovered | closed
    started_at: datetime
    components: tuple[str, ...] = ()
    updates: tuple[PublicUpdate, ...] = ()
    drill: bool = False

    @property
    def open(self) -> bool:
        return self.state in OPEN_STATES


@dataclass(frozen=True)
class _Component:
    name: str
    label: str
    state: ComponentState


def component_state(healthy: bool, named_by_open_incident: bool) -> ComponentState:
    """The rule of the module docstring's table (pure)."""
    if healthy:
        return "degraded_performance" if named_by_open_incident else "operational"
    return "major_outage" if named_by_open_incident else "partial_outage"


_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_URL = re.compile(r"\b[a-z][a-z0-9+.-]*://\S+", re.IGNORECASE)
_IPV4 = re.compile(r"\b\d{1,3}(?:\.\d{1,3}){3}(?::\d+)?\b")
_HOSTPORT = re.compile(r"\b(?=[a-z0-9.-]*[a-z])[a-z0-9][a-z0-9.-]*:\d{2,5}\b", re.IGNORECASE)
_HIDDEN = "[internal]"


def scrub(text: str, internal: Iterable[str] = ()) -> str:
    """``text`` without internal details: URLs, emails, IP addresses, ``host:port``, then
    every ``internal`` string (longest first)."""
    for pattern in (_URL, _EMAIL, _IPV4, _HOSTPORT):
        text = pattern.sub(_HIDDEN, text)
    for secret in sorted({s for s in internal if s and s.strip()}, key=len, reverse=True):
        text = text.replace(secret, _HIDDEN)
    return text


def _iso(when: datetime) -> str:
    return when.astimezone(UTC).isoformat().replace("+00:00", "Z")


def page_data(
    components: Mapping[str, HealthLike],
    incidents: Sequence[PublicIncident],
    *,
    now: datetime,
    labels: Mapping[str, str] | None = None,
    internal: Iterable[str] = (),
    include_drills: bool = False,
    title: str = "Payment platform status",
) -> dict[str, Any]:
    """status.json's content (pure): components with their state, the incidents' public
    updates (drills only with ``include_drills``), the overall indicator."""
    internal = list(internal)
    shown = [i for i in incidents if include_drills or not i.drill]
    named = {c for i in shown if i.open for c in i.components}
    comps = [
        _Component(name, (labels or {}).get(name, name), component_state(h.healthy, name in named))
        for name, h in components.items()
    ]
    worst = max((STATES.index(c.state) for c in comps), default=0)
    indicator = _INDICATOR[STATES[worst]]

    def incident(i: PublicIncident) -> dict[str, Any]:
        updates = sorted(i.updates, key=lambda u: u.at, reverse=True)
        return {
            "id": i.incident_id,
            "name": scrub(i.title, internal),
            "status": _INCIDENT_STATUS.get(i.state, "investigating"),
            "drill": i.drill,
            "created_at": _iso(i.started_at),
            "updated_at": _iso(updates[0].at if updates else i.started_at),
            "components": [c for c in i.components if c in components],
            "incident_updates": [
                {
                    "status": scrub(u.status, internal),
                    "body": scrub(u.body, internal),
                    "created_at": _iso(u.at),
                }
                for u in updates
            ],
        }

    return {
        "page": {"name": title, "updated_at": _iso(now)},
        "status": {"indicator": indicator, "description": _DESCRIPTION[indicator]},
        "components": [{"id": c.name, "name": c.label, "status": c.state} for c in comps],
        "incidents": [incident(i) for i in sorted(shown, key=lambda i: i.started_at, reverse=True)],
    }


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;
 background:#f6f7f9;color:#1d2330}
main{max-width:760px;margin:0 auto;padding:24px}
h1{font-size:1.6rem;margin:0 0 16px}
.banner{padding:14px 18px;border-radius:6px;color:#fff;font-weight:600;margin-bottom:24px}
.card{background:#fff;border:1px solid #dde1e7;border-radius:6px;margin-bottom:24px}
.row{display:flex;justify-content:space-between;padding:12px 18px;border-top:1px solid #eef0f3}
.row:first-child{border-top:0}
.state{font-weight:600}
.inc{padding:14px 18px;border-top:1px solid #eef0f3}
.inc:first-child{border-top:0}
.upd{margin:8px 0 0 0;white-space:pre-wrap}
small{color:#5b6475}
"""


def _html(data: Mapping[str, Any]) -> str:
    e = html.escape
    worst = next(
        (s for s in reversed(STATES) if any(c["status"] == s for c in data["components"])),
        "operational",
    )
    rows = "".join(
        f'<div class="row"><span>{e(c["name"])}</span>'
        f'<span class="state" style="color:{_COLOR[c["status"]]}">{e(_LABEL[c["status"]])}'
        "</span></div>"
        for c in data["components"]
    )
    incidents = (
        "".join(
            f'<div class="inc"><strong>{e(i["name"])}</strong> <small>{e(i["id"])} · '
            f"{e(i['status'])}{' · drill' if i['drill'] else ''}</small>"
            + "".join(
                f'<p class="upd"><small>{e(u["created_at"])}</small> '
                f"<strong>{e(u['status'])}</strong> — {e(u['body'])}</p>"
                for u in i["incident_updates"]
            )
            + "</div>"
            for i in data["incidents"]
        )
        or '<div class="inc">No incidents reported.</div>'
    )
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{e(data['page']['name'])}</title><style>{_CSS}</style></head><body><main>"
        f"<h1>{e(data['page']['name'])}</h1>"
        f'<div class="banner" style="background:{_COLOR[worst]}">'
        f"{e(data['status']['description'])}</div>"
        f'<div class="card">{rows}</div>'
        f'<h2>Incidents</h2><div class="card">{incidents}</div>'
        f"<small>Updated {e(data['page']['updated_at'])}</small>"
        "</main></body></html>\n"
    )


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def build(
    out_dir: Path,
    components: Mapping[str, HealthLike],
    incidents: Sequence[PublicIncident] = (),
    *,
    now: datetime | None = None,
    labels: Mapping[str, str] | None = None,
    internal: Iterable[str] = (),
    include_drills: bool = False,
) -> dict[str, Any]:
    """Write ``out_dir/status.json`` and ``out_dir/index.html``; return the JSON data.
    Each file is replaced atomically, so a server never serves half a page."""
    data = page_data(
        components,
        incidents,
        now=now or datetime.now(UTC),
        labels=labels,
        internal=internal,
        include_drills=include_drills,
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_atomic(out_dir / "status.json", json.dumps(data, indent=2) + "\n")
    _write_atomic(out_dir / "index.html", _html(data))
    return data


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        return


@dataclass
class StatusServer:
    """The page served on loopback from a thread; :meth:`close` stops it."""

    server: ThreadingHTTPServer
    thread: threading.Thread = field(repr=False)

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def serve(directory: Path, port: int = 0) -> StatusServer:
    """Serve ``directory`` on 127.0.0.1:``port`` (0: any free port) in a daemon thread."""
    handler = partial(_Quiet, directory=str(directory))
    server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    thread = threading.Thread(target=server.serve_forever, name="status-page", daemon=True)
    thread.start()
    return StatusServer(server, thread)
