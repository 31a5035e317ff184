"""`payapi openapi SERVICE [--out FILE]`: a service's OpenAPI 3.1 document, built from
the code (no server, no config). docs/openapi/ holds the three, written by `make openapi`.

EAPI also serves its document at ``GET /openapi.json``; SAPI's and the vault's are not
served (they describe internal APIs to nobody unauthenticated), so this is where an
integrator gets them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

from payapi.core.errors import UsageError
from payapi.eapi import openapi as eapi_openapi
from payapi.sapi import openapi as sapi_openapi
from payapi.vault import openapi as vault_openapi

DOCUMENTS: dict[str, Callable[[], dict[str, Any]]] = {
    "eapi": eapi_openapi.document,
    "sapi": sapi_openapi.document,
    "vault": vault_openapi.document,
}


def render(service: str) -> str:
    """The document of ``service`` as the text checked into docs/openapi/."""
    try:
        build = DOCUMENTS[service]
    except KeyError:
        raise UsageError(f"unknown service {service!r}; one of {', '.join(DOCUMENTS)}") from None
    return json.dumps(build(), indent=2, ensure_ascii=False) + "\n"


def openapi(
    service: str = typer.Argument(..., help="eapi, sapi or vault."),
    out: Path | None = typer.Option(None, "--out", help="Write to FILE instead of stdout."),
) -> None:
    """Print a service's OpenAPI document (built from the code; no server needed)."""
    text = render(service)
    if out is None:
        typer.echo(text, nl=False)
        return
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(out)
