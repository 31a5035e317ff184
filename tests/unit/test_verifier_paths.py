"""Constant-time failure is structural: an unknown client id takes the comparison path of a
wrong secret, against a dummy record. Tested by inspecting the path, not by timing."""

from __future__ import annotations

from typing import Any

import pytest

from payapi.core.naming import new_client_id
from payapi.eapi import verifier as vmod
from payapi.eapi.verifier import DUMMY_RECORD, ClientRecord, ClientVerifier, compare_credentials
from payapi.vault.client import VaultNotFound

RECORD = ClientRecord("shop-0123456789abcdef", "s3cret-current", "s3cret-previous", 2000.0)


def test_current_secret_matches() -> None:
    m = compare_credentials(RECORD, "shop-0123456789abcdef", "s3cret-current", now=1000.0)
    assert m.ok and not m.via_previous


def test_previous_secret_only_within_grace() -> None:
    assert compare_credentials(RECORD, RECORD.client_id, "s3cret-previous", now=1999.0).ok
    assert not compare_credentials(RECORD, RECORD.client_id, "s3cret-previous", now=2000.0).ok


def test_wrong_id_or_secret_fails() -> None:
    assert not compare_credentials(RECORD, "other-0123456789abcdef", "s3cret-current", 0).ok
    assert not compare_credentials(RECORD, RECORD.client_id, "nope", 0).ok


def test_dummy_record_never_matches_anything_guessable() -> None:
    for secret in ("", "x", DUMMY_RECORD.client_id):
        assert not compare_credentials(DUMMY_RECORD, DUMMY_RECORD.client_id, secret, 0).ok
    assert "***" in repr(RECORD) and "s3cret" not in repr(RECORD)


class _Vault:
    """Stands in for the vault's answer only; the comparison path is what is under test."""

    def __init__(self, exc: Exception | None = None) -> None:
        self.exc = exc
        self.calls = 0

    async def get_secrets(self, ids: Any) -> Any:
        self.calls += 1
        if self.exc:
            raise self.exc
        raise AssertionError("not reached")

    async def get_secret(self, _id: str) -> Any:
        raise VaultNotFound("no cache key", 404)


class _Cache:
    async def verification_state(self, *_: Any) -> tuple[float, str, bool]:
        return 0.0, "0", False  # nothing cached, not blocked


@pytest.mark.parametrize(
    "client_id",
    [new_client_id("nobody"), "not-a-client-id", "", "x" * 300],
    # Fixed ids: the first value is random, and pytest-xdist's workers must collect the
    # same test names.
    ids=["unknown", "malformed", "empty", "too-long"],
)
async def test_unknown_client_runs_the_same_comparison_against_the_dummy(
    client_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[ClientRecord] = []
    real = vmod.compare_credentials

    def spy(record: ClientRecord, cid: str, secret: str, now: float) -> Any:
        seen.append(record)
        return real(record, cid, secret, now)

    monkeypatch.setattr(vmod, "compare_credentials", spy)
    v = ClientVerifier(_Vault(VaultNotFound("x", 404)), _Cache(), cache_seconds=60)  # type: ignore[arg-type]
    assert await v.verify(client_id, "some-secret") is False
    assert seen == [DUMMY_RECORD]
