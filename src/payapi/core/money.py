"""Money: amounts as ``Decimal`` (never a binary float) and ISO 4217 currency codes.

Both services validate a payment the same way, so the rules live here once:

- An amount is a JSON number or a decimal string, positive, with at most two decimal
  places and at most :data:`MAX_AMOUNT`. It is always stored and printed with exactly two
  decimals (``"100.10"``).
- A JSON number must reach us as a ``Decimal``: parse bodies with :func:`loads_json`
  (``parse_float=Decimal``). A Python ``float`` is refused, because once ``100.10`` has
  become a binary float nobody can tell whether the client sent ``1.0000000000000001``
  or ``1.00``.
- A currency is an active ISO 4217 alphabetic code from :data:`CURRENCIES`.
"""

from __future__ import annotations

import json
import re
from decimal import Decimal, InvalidOperation
from typing import Any, Final

from payapi.core.errors import PayapiError

CENT: Final = Decimal("0.01")
MAX_AMOUNT: Final = Decimal("1000000.00")
"""The largest amount one payment may carry."""

# A decimal string: optional sign (so "-1" gets "must be positive", not "not a number"),
# digits, optionally a point and digits. No exponent, no spaces, no "NaN"/"Infinity".
_DECIMAL_STRING = re.compile(r"^-?[0-9]+(?:\.[0-9]+)?\Z")
_MAX_STRING_LEN: Final = 40

# ISO 4217 List One, active currencies (checked against the 2025-2026 amendments: XCG
# replaced ANG, ZWG replaced ZWL, SLE replaced SLL, HRK and BGN joined EUR). Deliberately
# left out because nobody pays with them: fund codes (BOV, CHE, CHW, CLF, COU, MXV, USN,
# UYI, UYW), precious metals (XAG, XAU, XPD, XPT), bond-market units (XBA-XBD), XDR,
# XSU, XUA, the testing code XTS and "no currency" XXX.
_ISO_4217_ACTIVE = """
    AED AFN ALL AMD AOA ARS AUD AWG AZN BAM BBD BDT BHD BIF BMD BND BOB BRL BSD BTN
    BWP BYN BZD CAD CDF CHF CLP CNY COP CRC CUP CVE CZK DJF DKK DOP DZD EGP ERN ETB
    EUR FJD FKP GBP GEL GHS GIP GMD GNF GTQ GYD HKD HNL HTG HUF IDR ILS INR IQD IRR
    ISK JMD JOD JPY KES KGS KHR KMF KPW KRW KWD KYD KZT LAK LBP LKR LRD LSL LYD MAD
    MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MYR MZN NAD NGN NIO NOK NPR NZD OMR
    PAB PEN PGK PHP PKR PLN PYG QAR RON RSD RUB RWF SAR SBD SCR SDG SEK SGD SHP SLE
    SOS SRD SSP STN SVC SYP SZL THB TJS TMT TND TOP TRY TTD TWD TZS UAH UGX USD UYU
    UZS VED VES VND VUV WST XAF XCD XCG XOF XPF YER ZAR ZMW ZWG
"""
CURRENCIES: Final[frozenset[str]] = frozenset(_ISO_4217_ACTIVE.split())


class MoneyError(PayapiError, ValueError):
    """An amount or currency is invalid; the message is safe to show to the client."""


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


MAX_JSON_DEPTH: Final = 32
"""How deeply arrays and objects may nest in a request body (a payment needs one level)."""


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        # {"amount": "1", "amount": "1000"}: which one did the client mean? Refuse.
        raise ValueError("duplicate key in a JSON object")
    return out


def _depth_exceeds(raw: bytes | str, limit: int) -> bool:
    """Whether brackets nest deeper than ``limit`` (those inside strings not counted)."""
    data = raw.encode() if isinstance(raw, str) else raw
    if data.count(b"[") + data.count(b"{") <= limit:  # the common case: no scan at all
        return False
    depth = 0
    in_string = escaped = False
    for byte in data:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):  # [ {
            depth += 1
            if depth > limit:
                return True
        elif byte in (0x5D, 0x7D):  # ] }
            depth -= 1
    return False


def loads_json(raw: bytes | str, *, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """Parse JSON strictly, with every non-integer number as an exact ``Decimal``.

    Refused with ``ValueError`` (``json.JSONDecodeError`` is one): anything that is not
    JSON, ``NaN``/``Infinity`` (accepted by Python's json, not by the JSON standard), an
    object with a key twice (ambiguous), and nesting deeper than ``max_depth`` (Python's
    parser recurses: a thousand ``[`` would otherwise end in ``RecursionError``).
    """
    if _depth_exceeds(raw, max_depth):
        raise ValueError(f"JSON nested deeper than {max_depth} levels")
    try:
        return json.loads(
            raw,
            parse_float=Decimal,
            parse_constant=_reject_constant,
            object_pairs_hook=_no_duplicates,
        )
    except RecursionError:  # pragma: no cover - the depth check comes first
        raise ValueError("JSON nested too deeply") from None


def _to_decimal(value: object) -> Decimal:
    """Turn a JSON-ish value into a Decimal without ever passing through a float."""
    if isinstance(value, bool):  # bool is an int subclass; True is not an amount
        raise MoneyError("amount must be a number or a decimal string")
    if isinstance(value, Decimal):
        return value
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, str):
        if len(value) > _MAX_STRING_LEN or not _DECIMAL_STRING.match(value):
            raise MoneyError('amount must be a decimal string such as "100.00"')
        return Decimal(value)
    if isinstance(value, float):
        raise MoneyError("amount must be an exact decimal, not a binary float")
    raise MoneyError("amount must be a number or a decimal string")


def parse_amount(value: object) -> Decimal:
    """Validate a payment amount; return it quantized to exactly two decimals."""
    amount = _to_decimal(value)
    if not amount.is_finite():
        raise MoneyError("amount must be a finite number")
    if amount <= 0:
        raise MoneyError("amount must be greater than 0")
    if amount > MAX_AMOUNT:
        raise MoneyError(f"amount must be at most {MAX_AMOUNT}")
    try:
        cents = amount.quantize(CENT)
    except InvalidOperation:  # pragma: no cover - bounded above, so quantize fits
        raise MoneyError("amount is not a valid decimal") from None
    if cents != amount:
        raise MoneyError("amount must have at most 2 decimal places")
    return cents


def to_amount(value: object) -> Decimal:
    """Read an amount that was already validated once (a stored or returned payment).

    Same float-free parsing as :func:`parse_amount`, without the business limits, so a
    payment made under an older limit still reads back.
    """
    amount = _to_decimal(value)
    if not amount.is_finite():
        raise MoneyError("amount must be a finite number")
    return amount.quantize(CENT)


def format_amount(amount: Decimal) -> str:
    """``Decimal('100.1')`` -> ``"100.10"``: always two decimals, never an exponent."""
    return f"{amount.quantize(CENT):f}"


def parse_currency(value: object) -> str:
    if not isinstance(value, str) or value not in CURRENCIES:
        raise MoneyError("currency must be an active ISO 4217 code such as USD")
    return value
