"""Durations as operators write them: ``90s``, ``15m``, ``4h``, ``30d``, ``2w``, ``1y``.

The one home of the unit table: the plan (``payapi.core.plan``) adds its words (``hourly``,
``continuous``, ``indefinite``) on top of it; CLI flags such as ``--grace`` take only
amounts. A year is the Julian year (365.25 days), so that "7y" of retention spans seven
calendar years to within a day.
"""

from __future__ import annotations

import re
from datetime import timedelta

from payapi.core.errors import PayapiError

YEAR = timedelta(days=365.25)
UNITS: dict[str, timedelta] = {
    "s": timedelta(seconds=1),
    "m": timedelta(minutes=1),
    "h": timedelta(hours=1),
    "d": timedelta(days=1),
    "w": timedelta(weeks=1),
    "y": YEAR,
}
AMOUNT_RE = re.compile(r"^(\d+)([smhdwy])\Z")


class DurationError(PayapiError, ValueError):
    pass


def parse_amount(text: str) -> timedelta | None:
    """``'4h'`` → 4 hours; None when ``text`` is not an amount with a unit."""
    m = AMOUNT_RE.match(" ".join(text.split()).lower())
    return int(m.group(1)) * UNITS[m.group(2)] if m else None


def parse_duration(text: str) -> timedelta:
    delta = parse_amount(text)
    if delta is None:
        raise DurationError(f"unparseable duration {text!r} (use e.g. 90s, 15m, 4h, 30d, 1y)")
    return delta
