"""Durations as operators write them: ``90s``, ``15m``, ``4h``, ``30d``, ``2w``, ``1y``."""

from __future__ import annotations

import re
from datetime import timedelta

_UNITS = {
    "s": 1,
    "m": 60,
    "h": 3600,
    "d": 86400,
    "w": 7 * 86400,
    "y": 365 * 86400,
}
_RE = re.compile(r"^\s*(\d+)\s*([smhdwy])\s*$")


class DurationError(ValueError):
    pass


def parse_duration(text: str) -> timedelta:
    m = _RE.match(text)
    if not m:
        raise DurationError(f"unparseable duration {text!r} (use e.g. 90s, 15m, 4h, 30d, 1y)")
    return timedelta(seconds=int(m.group(1)) * _UNITS[m.group(2)])
