"""The payment schemas EAPI shares with SAPI."""

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from uuid import uuid4

import orjson
import pytest
from pydantic import ValidationError

from payapi.schemas import (
    MalformedJSON,
    Payment,
    PaymentCreate,
    format_timestamp,
    payment_body,
)


def body(**fields: object) -> bytes:
    base: dict[str, object] = {"amount": "100.00", "currency": "USD", "reference": "TEST-12345"}
    base.update(fields)
    return orjson.dumps({k: v for k, v in base.items() if v is not ...})


def first_error(raw: bytes | str) -> tuple[str, str]:
    with pytest.raises(ValidationError) as info:
        PaymentCreate.from_json(raw)
    err = info.value.errors()[0]
    return ".".join(str(p) for p in err["loc"]), err["msg"]


@pytest.mark.parametrize(
    ("raw", "amount"),
    [
        (b'{"amount": 100.10, "currency": "USD", "reference": "R"}', "100.10"),
        (b'{"amount": 100.1, "currency": "USD", "reference": "R"}', "100.10"),
        (b'{"amount": 100, "currency": "USD", "reference": "R"}', "100.00"),
        (b'{"amount": 1e3, "currency": "USD", "reference": "R"}', "1000.00"),
        (b'{"amount": "0.01", "currency": "USD", "reference": "R"}', "0.01"),
        (b'{"amount": 1000000.00, "currency": "USD", "reference": "R"}', "1000000.00"),
    ],
)
def test_valid_payment_bodies(raw: bytes, amount: str) -> None:
    p = PaymentCreate.from_json(raw)
    assert isinstance(p.amount, Decimal)
    assert p.model_dump(mode="json")["amount"] == amount


@pytest.mark.parametrize(
    ("raw", "param", "fragment"),
    [
        (body(amount=0), "amount", "greater than 0"),
        (body(amount=-1), "amount", "greater than 0"),
        (b'{"amount": 1.001, "currency": "USD", "reference": "R"}', "amount", "2 decimal"),
        (body(amount="1e3"), "amount", "decimal string"),
        (b'{"amount": 1e30, "currency": "USD", "reference": "R"}', "amount", "at most"),
        (body(amount="1000000.01"), "amount", "at most"),
        (body(amount=True), "amount", "number"),
        (body(amount=None), "amount", "number"),
        (body(amount=...), "amount", "Field required"),
        (body(currency="usd"), "currency", "ISO 4217"),
        (body(currency="ABC"), "currency", "ISO 4217"),
        (body(currency="US"), "currency", "ISO 4217"),
        (body(currency=...), "currency", "Field required"),
        (body(reference=""), "reference", "1-64"),
        (body(reference="x" * 65), "reference", "1-64"),
        (body(reference="has space"), "reference", "1-64"),
        (body(reference="ünïcode"), "reference", "1-64"),
        (body(reference=12345), "reference", "1-64"),
        (body(extra="x"), "extra", "Extra inputs"),
    ],
)
def test_invalid_payment_bodies(raw: bytes, param: str, fragment: str) -> None:
    loc, msg = first_error(raw)
    assert loc == param
    assert fragment in msg


def test_reference_boundaries() -> None:
    assert PaymentCreate.from_json(body(reference="a" * 64)).reference == "a" * 64
    assert PaymentCreate.from_json(body(reference="A.b_c-9")).reference == "A.b_c-9"


@pytest.mark.parametrize("raw", [b"", b"{", b"not json", b'{"amount": NaN}', b"\xff"])
def test_malformed_json(raw: bytes) -> None:
    with pytest.raises(MalformedJSON):
        PaymentCreate.from_json(raw)


def test_non_object_body_is_a_validation_error() -> None:
    with pytest.raises(ValidationError):
        PaymentCreate.from_json(b"[1, 2]")


def test_fingerprint_is_canonical() -> None:
    a = PaymentCreate.from_json(b'{"amount": 100.1, "currency": "USD", "reference": "R"}')
    b = PaymentCreate.from_json(b'{"reference": "R", "currency": "USD", "amount": "100.10"}')
    c = PaymentCreate.from_json(b'{"amount": 100.11, "currency": "USD", "reference": "R"}')
    assert a.fingerprint() == b.fingerprint()
    assert a.fingerprint() != c.fingerprint()
    assert len(a.fingerprint()) == 64


def test_payment_body_equals_payment_model_dump() -> None:
    pid = uuid4()
    created = datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC)
    fast = payment_body(pid, Decimal("100.1"), "USD", "R", "succeeded", created)
    model = Payment(
        id=pid,
        amount=Decimal("100.1"),
        currency="USD",
        reference="R",
        status="succeeded",
        created_at=created,
    )
    assert model.model_dump(mode="json") == fast
    assert fast["amount"] == "100.10"
    assert fast["created_at"] == "2026-01-02T03:04:05.000006Z"
    # EAPI reads SAPI's answer and re-emits it unchanged.
    assert Payment.model_validate_json(orjson.dumps(fast)).model_dump(mode="json") == fast


def test_payment_refuses_a_float_amount() -> None:
    with pytest.raises(ValidationError):
        Payment.model_validate(
            {
                "id": str(uuid4()),
                "amount": 1.5,
                "currency": "USD",
                "reference": "R",
                "status": "succeeded",
                "created_at": "2026-01-01T00:00:00Z",
            }
        )


def test_timestamps_are_utc_with_z() -> None:
    plus2 = timezone(timedelta(hours=2))
    assert format_timestamp(datetime(2026, 1, 1, 2, 0, tzinfo=plus2)) == (
        "2026-01-01T00:00:00.000000Z"
    )
