"""Parsers for option values that several commands share."""

from __future__ import annotations

from datetime import UTC, datetime

from payapi.cli.output import EXIT_USAGE, fail


def parse_now(text: str | None) -> datetime:
    """``--now``: an injected clock (ISO 8601, UTC when no zone is given); None → now."""
    if text is None:
        return datetime.now(UTC)
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        fail(f"--now: not an ISO 8601 time: {text!r} (e.g. 2026-06-15T12:00:00Z)", EXIT_USAGE)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value
