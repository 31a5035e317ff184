"""The payment API's request and response shapes: one contract for Payment-EAPI (which
validates what a client sends) and Payment-SAPI (which validates it again and stores it).

``PaymentCreate`` validates what a client sends; ``Payment`` is what both services answer.
Parse a request body with :meth:`PaymentCreate.from_json` (or :func:`payapi.core.money.loads_json`
and ``model_validate``): pydantic's own JSON parser turns ``100.10`` into a binary float
first, which :mod:`payapi.core.money` refuses on purpose.

``Payment.model_dump(mode="json")`` is byte-for-byte the body SAPI sends (amount with two
decimals, ``created_at`` as ``YYYY-MM-DDTHH:MM:SS.ffffffZ``), so EAPI can pass a payment
through unchanged.
"""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any, Final
from uuid import UUID

import orjson
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
)
from pydantic_core import PydanticCustomError

from payapi.core.errors import PayapiError
from payapi.core.money import (
    MoneyError,
    format_amount,
    loads_json,
    parse_amount,
    parse_currency,
    to_amount,
)

REFERENCE_PATTERN: Final = re.compile(r"^[A-Za-z0-9._-]{1,64}\Z")
PAYMENT_STATUSES: Final = frozenset({"pending", "succeeded", "failed"})


def _amount(value: Any) -> Decimal:
    try:
        return parse_amount(value)
    except MoneyError as exc:
        raise PydanticCustomError("invalid_amount", str(exc)) from None


def _stored_amount(value: Any) -> Decimal:
    try:
        return to_amount(value)
    except MoneyError as exc:
        raise PydanticCustomError("invalid_amount", str(exc)) from None


def _currency(value: Any) -> str:
    try:
        return parse_currency(value)
    except MoneyError as exc:
        raise PydanticCustomError("invalid_currency", str(exc)) from None


def _reference(value: Any) -> str:
    if not isinstance(value, str) or not REFERENCE_PATTERN.match(value):
        raise PydanticCustomError(
            "invalid_reference",
            "reference must be 1-64 characters of A-Z, a-z, 0-9, '.', '_' or '-'",
        )
    return value


def format_timestamp(value: datetime) -> str:
    """ISO 8601 in UTC with microseconds and a ``Z``: one fixed shape, so replays match."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


AmountIn = Annotated[
    Decimal,
    PlainValidator(_amount, json_schema_input_type=str | int),
    PlainSerializer(format_amount, return_type=str, when_used="json"),
]
"""A new payment's amount: positive, <= MAX_AMOUNT, at most 2 decimals; never a float."""

AmountOut = Annotated[
    Decimal,
    PlainValidator(_stored_amount, json_schema_input_type=str),
    PlainSerializer(format_amount, return_type=str, when_used="json"),
]
Currency = Annotated[str, PlainValidator(_currency, json_schema_input_type=str)]
Reference = Annotated[str, PlainValidator(_reference, json_schema_input_type=str)]
Timestamp = Annotated[
    datetime, PlainSerializer(format_timestamp, return_type=str, when_used="json")
]


class MalformedJSON(PayapiError, ValueError):
    """The body is not JSON at all (HTTP 400, unlike a JSON body that fails validation)."""


class PaymentCreate(BaseModel):
    """The body of ``POST /api/internal/payments`` (and of EAPI's ``POST /api/v1/payments``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    amount: AmountIn
    currency: Currency
    reference: Reference

    @classmethod
    def from_json(cls, raw: bytes | str) -> PaymentCreate:
        """Parse and validate a raw body without a binary float anywhere.

        Raises :class:`MalformedJSON` if ``raw`` is not JSON, ``pydantic.ValidationError``
        if it is JSON but not a valid payment.
        """
        try:
            data = loads_json(raw)
        except ValueError:  # JSONDecodeError, NaN/Infinity, an integer of 5000 digits
            raise MalformedJSON("body is not valid JSON") from None
        return cls.model_validate(data)

    def canonical(self) -> bytes:
        """The request in one canonical byte form: equal payments, equal bytes."""
        return orjson.dumps(
            {
                "amount": format_amount(self.amount),
                "currency": self.currency,
                "reference": self.reference,
            },
            option=orjson.OPT_SORT_KEYS,
        )

    def fingerprint(self) -> str:
        """SHA-256 (hex) of :meth:`canonical`; what an idempotency key is bound to."""
        return hashlib.sha256(self.canonical()).hexdigest()


class Payment(BaseModel):
    """A payment as SAPI stores and returns it."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    id: UUID
    amount: AmountOut
    currency: str
    reference: str
    status: str
    created_at: Timestamp


def payment_body(
    id: UUID, amount: Decimal, currency: str, reference: str, status: str, created_at: datetime
) -> dict[str, str]:
    """The JSON body of a payment, built without pydantic (SAPI's hot path).

    Equal to ``Payment(...).model_dump(mode="json")``; a unit test holds them together.
    """
    return {
        "id": str(id),
        "amount": format_amount(amount),
        "currency": currency,
        "reference": reference,
        "status": status,
        "created_at": format_timestamp(created_at),
    }


def _unstorable(value: Any) -> bool:
    """Whether ``value`` holds a string PostgreSQL cannot store: one with a NUL (``text``
    and ``jsonb`` refuse it) or a lone surrogate (not UTF-8). Keys are checked too."""
    if isinstance(value, str):
        if "\x00" in value:
            return True
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return True
        return False
    if isinstance(value, dict):
        return any(_unstorable(k) or _unstorable(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_unstorable(v) for v in value)
    return False


WHITESPACE_CLASS: Final = (
    r"\t-\r\u001c-\u0020\u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
)
"""Python's whitespace (``str.isspace``, what ``str.strip`` removes) as a character class
in syntax both Python's ``re`` and ECMA-262 read alike (docs/openapi/sapi.json uses it)."""
_HAS_TEXT: Final = re.compile(f"[^\\u0000{WHITESPACE_CLASS}]")


def _has_text(value: str) -> str:
    if not _HAS_TEXT.search(value):
        raise PydanticCustomError("blank_text", "must contain a character other than whitespace")
    return value


def _storable(value: Any) -> Any:
    if _unstorable(value):
        raise PydanticCustomError(
            "unstorable_text", "text must not contain NUL characters or lone surrogates"
        )
    return value


class AuditEventCreate(BaseModel):
    """The body of ``POST /api/internal/audit``. Refused before the database: text it
    could not store (NUL, lone surrogates), anywhere in the event; ``details`` is one
    flat object of strings, numbers, booleans and nulls."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Annotated[str, AfterValidator(_storable), AfterValidator(_has_text)] = Field(
        min_length=1, max_length=128
    )
    actor: Annotated[str, AfterValidator(_storable), AfterValidator(_has_text)] = Field(
        min_length=1, max_length=255
    )
    subject: Annotated[str | None, AfterValidator(_storable)] = Field(
        default=None, min_length=1, max_length=255
    )
    # Flat: what EAPI records (reason, ip, request id) needs no nesting, and a flat
    # object is one that the contract (docs/openapi/sapi.json) can describe exactly.
    details: Annotated[
        dict[str, StrictStr | StrictInt | StrictFloat | StrictBool | None],
        AfterValidator(_storable),
    ] = Field(default_factory=dict)


class AuditEventCreated(BaseModel):
    seq: int
    hash: str


class HealthChecks(BaseModel):
    database: str
    vault: str


class Health(BaseModel):
    status: str
    checks: HealthChecks
