"""All user-facing CLI output goes through here (one place decides JSON vs. rich text).

Errors are one line on stderr; the exit code says what kind (1 failed, 2 bad usage).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any, NoReturn

from rich.console import Console

console = Console()
err_console = Console(stderr=True)

EXIT_FAILED = 1
EXIT_USAGE = 2


def _default(obj: Any) -> Any:
    if isinstance(obj, Decimal):
        return str(obj)
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "isoformat"):
        return obj.isoformat()
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")


def to_json(data: Any) -> str:
    return json.dumps(data, indent=2, sort_keys=False, default=_default)


def emit(data: Any, *, as_json: bool, human: Callable[[Any], None] | None = None) -> None:
    """Print ``data`` as JSON (for automation) or through ``human`` (for people)."""
    if as_json or human is None:
        sys.stdout.write(to_json(data) + "\n")
        sys.stdout.flush()
    else:
        human(data)


def info(message: str) -> None:
    err_console.print(message, highlight=False)


def fail(message: str, code: int = EXIT_FAILED) -> NoReturn:
    """One line on stderr and a non-zero exit."""
    line = " ".join(str(message).split())
    err_console.print(f"[red]error:[/red] {line}", highlight=False, soft_wrap=True)
    raise SystemExit(code)
