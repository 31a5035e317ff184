"""`payapi credentials` commands."""

from __future__ import annotations

import typer

app = typer.Typer(help="credentials", no_args_is_help=True)
