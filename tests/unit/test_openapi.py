"""The OpenAPI documents (issue 8): valid OpenAPI 3.1, checked in as the code builds
them, listing exactly the operations the apps route, with patterns that mean what the
services' regular expressions mean."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from openapi_spec_validator import validate
from typer.testing import CliRunner

from payapi import apidoc, schemas
from payapi.cli.main import app as cli
from payapi.cli.openapi_cmd import DOCUMENTS, render
from payapi.core.errors import UsageError
from payapi.core.money import MoneyError, parse_amount
from payapi.core.settings import Settings
from payapi.eapi import openapi as eapi_openapi
from payapi.eapi.app import create_app as create_eapi
from payapi.sapi.routes import build_router
from payapi.vault.routes import router as vault_router

ROOT = Path(__file__).resolve().parents[2]
METHODS = {"get", "put", "post", "delete", "patch", "head", "options"}


@pytest.mark.parametrize("service", sorted(DOCUMENTS))
def test_the_document_is_valid_openapi_3_1(service: str) -> None:
    doc = DOCUMENTS[service]()
    assert doc["openapi"].startswith("3.1")
    validate(doc)


@pytest.mark.parametrize("service", sorted(DOCUMENTS))
def test_the_checked_in_document_is_what_the_code_builds(service: str) -> None:
    checked_in = (ROOT / "docs" / "openapi" / f"{service}.json").read_text()
    assert checked_in == render(service), f"run `make openapi`, commit docs/openapi/{service}.json"


def test_the_cli_prints_and_writes_the_document(tmp_path: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(cli, ["openapi", "sapi"])
    assert res.exit_code == 0 and res.stdout == render("sapi")
    out = tmp_path / "vault.json"
    res = runner.invoke(cli, ["openapi", "vault", "--out", str(out)])
    assert res.exit_code == 0 and out.read_text() == render("vault")
    res = runner.invoke(cli, ["openapi", "billing"])
    assert isinstance(res.exception, UsageError)  # main() prints it as one line, exit 2


def _documented(doc: dict[str, Any]) -> set[tuple[str, str]]:
    return {
        (path, method.upper())
        for path, item in doc["paths"].items()
        for method in item
        if method in METHODS
    }


def _routed(routes: list[Any]) -> set[tuple[str, str]]:
    out = set()
    for route in routes:
        if not hasattr(route, "methods") or route.path in ("/openapi.json",):
            continue
        path = re.sub(r"\{(\w+):path\}", r"{\1}", route.path)
        out |= {(path, m) for m in route.methods}
    return out


def test_eapi_documents_exactly_its_routes() -> None:
    app = create_eapi(Settings())
    assert _documented(eapi_openapi.document()) == _routed(app.routes)


def test_sapi_documents_exactly_its_routes() -> None:
    state: Any = SimpleNamespace(
        auth=None, db=None, in_flight=set(), settings=None, idempotency_retention=timedelta(1)
    )
    assert _documented(DOCUMENTS["sapi"]()) == _routed(build_router(state).routes)


def test_vault_documents_exactly_its_routes() -> None:
    assert _documented(DOCUMENTS["vault"]()) == _routed(vault_router.routes)


async def test_eapi_serves_its_document() -> None:
    app = create_eapi(Settings())
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://eapi") as http:
        resp = await http.get("/openapi.json")
    assert resp.status_code == 200
    assert resp.json() == eapi_openapi.document()


def test_the_reference_pattern_is_the_one_the_schemas_use() -> None:
    assert apidoc.REFERENCE_PATTERN.replace("$", r"\Z") == schemas.REFERENCE_PATTERN.pattern


def _accepted(value: str) -> bool:
    try:
        parse_amount(value)
    except MoneyError:
        return False
    return True


_AMOUNT = re.compile(apidoc.AMOUNT_STRING_PATTERN.replace("$", r"\Z"))


def _documented_amount(value: str) -> bool:
    return len(value) <= apidoc.AMOUNT_STRING_MAX_LENGTH and bool(_AMOUNT.match(value))


@pytest.mark.parametrize(
    "value",
    ["1", "0.01", "0.1", "000.10", "1.500", "999999.99", "1000000", "1000000.000", "100.10",
     "0", "0.00", "0.001", "1000000.01", "1e3", "-1", "+1", ".5", "1.", " 1", "1\n", "1.234",
     "0" * 39 + "1", "0" * 40 + "1", "9" * 7],
)  # fmt: skip
def test_the_amount_pattern_is_what_parse_amount_accepts(value: str) -> None:
    assert _documented_amount(value) == _accepted(value)


@settings(max_examples=300, deadline=None)
@given(st.from_regex(r"\A-?[0-9]{1,9}(\.[0-9]{0,4})?\Z"))
def test_the_amount_pattern_agrees_on_generated_strings(value: str) -> None:
    assert _documented_amount(value) == _accepted(value)


@settings(max_examples=200, deadline=None)
@given(
    st.one_of(
        st.text(max_size=12),
        st.sampled_from(["Token", "API_KEY", "apikey", "x-Data_Key", "cookies", "passwd"]),
    )
)
def test_the_secret_key_pattern_is_the_audit_logs(key: str) -> None:
    from payapi.core.logs import _SENSITIVE
    from payapi.sapi.openapi import SECRET_KEY_PATTERN

    assert bool(re.search(SECRET_KEY_PATTERN, key)) == bool(_SENSITIVE.search(key))


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(" \t\x1c\x1f\x85\u3000\ufeff\u200bab\x00"), max_size=4))
def test_the_audit_text_pattern_is_what_the_audit_log_accepts(value: str) -> None:
    from payapi.sapi.openapi import _NOT_BLANK

    documented = bool(re.match(_NOT_BLANK.replace("$", r"\Z"), value))
    accepted = "\x00" not in value and bool(value.strip())
    assert documented == accepted
