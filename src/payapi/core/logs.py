"""Structured logs (JSON lines) with a last line of defence against leaking secrets.

Code never logs a secret on purpose; the redaction processor below additionally drops the
value of any field whose name looks like a credential, so a careless ``log.info(...,
client_secret=...)`` still cannot leak. Tests capture the logs and assert no secret.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

from payapi.core.redaction import REDACTED, SENSITIVE_NAME

_SENSITIVE = SENSITIVE_NAME  # the name other modules know it by (audit, recovery)


def redact(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in list(event_dict):
        if key != "event" and _SENSITIVE.search(key):
            event_dict[key] = REDACTED
    return event_dict


_configured = False


def configure(level: str = "INFO", *, json: bool = True) -> None:
    global _configured
    logging.basicConfig(stream=sys.stderr, level=level.upper(), format="%(message)s")
    renderer: Any = structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer()
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            redact,
            renderer,
        ],
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
        ),
        cache_logger_on_first_use=False,
    )
    _configured = True


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)
