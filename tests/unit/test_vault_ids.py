"""Identifier rules: Conjur's login → role mapping and what ids we accept."""

from __future__ import annotations

import pytest

from payapi.vault import ids


def test_logins_and_roles() -> None:
    assert ids.role_id_from_login("acme", "admin") == "acme:user:admin"
    assert ids.role_id_from_login("acme", "host/payment-system/eapi") == (
        "acme:host:payment-system/eapi"
    )
    assert ids.login_from_role_id("acme:host:payment-system/eapi") == "host/payment-system/eapi"
    assert ids.login_from_role_id("acme:user:alice@ops") == "alice@ops"


def test_make_full_id() -> None:
    assert ids.make_full_id("host:a/b", "acme") == "acme:host:a/b"
    assert ids.make_full_id("other:host:a", "acme") == "other:host:a"
    with pytest.raises(ids.InvalidId):
        ids.make_full_id("no-kind", "acme")
    assert ids.split_full_id("acme:variable:a:b") == ("acme", "variable", "a:b")


@pytest.mark.parametrize(
    "good", ["a", "payment-system/clients/xyz-vendor/client-id", "alice@ops-dev", "a.b+c=d_e", "_x"]
)
def test_valid_identifiers(good: str) -> None:
    assert ids.valid_identifier(good)


@pytest.mark.parametrize(
    "bad",
    ["", "/a", "a/", "a//b", "../a", "a/../b", ".hidden", "a b", "a\nb", "a:b", "é", "x" * 600],
)
def test_invalid_identifiers(bad: str) -> None:
    assert not ids.valid_identifier(bad)
