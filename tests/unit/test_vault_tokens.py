"""Access tokens: Conjur's shape, a verifiable signature, expiry with an injected clock."""

from __future__ import annotations

import base64
import json
import secrets

import pytest

from payapi.vault.tokens import InvalidToken, TokenService


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_shape_is_what_the_official_client_reads() -> None:
    svc = TokenService(secrets.token_bytes(32), ttl_seconds=480, clock=Clock(1_700_000_000))
    token = svc.issue("acme", "host/payment-system/payment-eapi")
    doc = json.loads(token)
    assert set(doc) == {"protected", "payload", "signature"}
    claims = json.loads(base64.urlsafe_b64decode(doc["payload"]))
    assert claims == {
        "sub": "host/payment-system/payment-eapi",
        "iat": 1_700_000_000,
        "exp": 1_700_000_480,
    }


def test_verify_and_expire() -> None:
    clock = Clock(1_700_000_000)
    svc = TokenService(secrets.token_bytes(32), ttl_seconds=480, clock=clock)
    token = svc.issue("acme", "admin")
    claims = svc.verify(token)
    assert (claims.account, claims.login) == ("acme", "admin")
    header = f'Token token="{base64.b64encode(token).decode()}"'
    assert svc.verify_header(header) == claims
    clock.now += 479
    svc.verify(token)
    clock.now += 1
    with pytest.raises(InvalidToken, match="expired"):
        svc.verify(token)


def test_rejections() -> None:
    key = secrets.token_bytes(32)
    svc = TokenService(key)
    token = svc.issue("acme", "admin")
    doc = json.loads(token)
    with pytest.raises(InvalidToken):
        TokenService(secrets.token_bytes(32)).verify(token)  # another data key
    claims = json.loads(base64.urlsafe_b64decode(doc["payload"]))
    for changed in ({**claims, "sub": "other"}, {**claims, "exp": claims["exp"] + 10}):
        forged = {**doc, "payload": base64.urlsafe_b64encode(json.dumps(changed).encode()).decode()}
        with pytest.raises(InvalidToken, match="signature"):
            svc.verify(json.dumps(forged).encode())
    header = json.loads(base64.urlsafe_b64decode(doc["protected"]))
    other_account = {**header, "account": "other"}
    moved = {
        **doc,
        "protected": base64.urlsafe_b64encode(json.dumps(other_account).encode()).decode(),
    }
    with pytest.raises(InvalidToken):
        svc.verify(json.dumps(moved).encode())
    for garbage in (b"", b"[]", b"{}", b"not json", b'{"protected": 1}'):
        with pytest.raises(InvalidToken):
            svc.verify(garbage)
    for header_value in (None, "", "Bearer x", 'Token token="%%%"', "Token token=abc"):
        with pytest.raises(InvalidToken):
            svc.verify_header(header_value)


def test_future_tokens_are_refused() -> None:
    clock = Clock(1_700_000_000)
    svc = TokenService(secrets.token_bytes(32), clock=clock)
    token = svc.issue("acme", "admin")
    clock.now -= 3600
    with pytest.raises(InvalidToken, match="not valid yet"):
        svc.verify(token)
