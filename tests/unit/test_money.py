"""Amounts are exact decimals with two places; currencies are ISO 4217 codes."""

from decimal import Decimal

import pytest

from payapi.core.money import (
    CURRENCIES,
    MAX_AMOUNT,
    MoneyError,
    format_amount,
    loads_json,
    parse_amount,
    parse_currency,
    to_amount,
)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("100.00", "100.00"),
        ("100.1", "100.10"),
        ("0.01", "0.01"),
        ("1", "1.00"),
        ("1.000", "1.00"),  # trailing zeros are not extra precision
        ("1000000.00", "1000000.00"),
        (Decimal("100.10"), "100.10"),
        (Decimal("1E+3"), "1000.00"),  # the JSON number 1e3
        (7, "7.00"),
    ],
)
def test_valid_amounts(raw: object, expected: str) -> None:
    assert format_amount(parse_amount(raw)) == expected


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (0, "greater than 0"),
        ("0.00", "greater than 0"),
        (-1, "greater than 0"),
        ("-0.01", "greater than 0"),
        (Decimal("-0"), "greater than 0"),
        ("1.001", "2 decimal places"),
        (Decimal("1.001"), "2 decimal places"),
        (Decimal("1E-9999"), "2 decimal places"),
        ("1000000.01", "at most 1000000.00"),
        (10**30, "at most"),
        (Decimal("1E+999999"), "at most"),
        ("1e3", "decimal string"),
        (" 1.00", "decimal string"),
        ("+1.00", "decimal string"),
        ("1,00", "decimal string"),
        ("NaN", "decimal string"),
        ("Infinity", "decimal string"),
        ("", "decimal string"),
        ("1" * 100, "decimal string"),
        (Decimal("NaN"), "finite"),
        (Decimal("Infinity"), "finite"),
        (100.1, "binary float"),
        (True, "number or a decimal string"),
        (None, "number or a decimal string"),
        ([1], "number or a decimal string"),
    ],
)
def test_invalid_amounts(raw: object, message: str) -> None:
    with pytest.raises(MoneyError, match=message):
        parse_amount(raw)


def test_max_amount_is_a_named_decimal() -> None:
    assert Decimal("1000000.00") == MAX_AMOUNT
    assert parse_amount(MAX_AMOUNT) == MAX_AMOUNT


def test_loads_json_keeps_decimals_exact() -> None:
    data = loads_json(b'{"a": 100.10, "b": 1.0000000000000001, "c": 1e3, "d": 5}')
    assert data["a"] == Decimal("100.10") and str(data["a"]) == "100.10"
    assert data["b"] == Decimal("1.0000000000000001")
    assert data["c"] == Decimal("1E+3")
    assert data["d"] == 5
    with pytest.raises(MoneyError, match="2 decimal places"):
        parse_amount(data["b"])  # a float would have said 1.0 and accepted it


@pytest.mark.parametrize("raw", [b'{"a": NaN}', b'{"a": Infinity}', b'{"a": -Infinity}', b"{"])
def test_loads_json_rejects_non_json(raw: bytes) -> None:
    with pytest.raises(ValueError):
        loads_json(raw)


def test_to_amount_reads_back_without_limits() -> None:
    assert to_amount("2000000.00") == Decimal("2000000.00")
    assert format_amount(to_amount(5)) == "5.00"
    with pytest.raises(MoneyError):
        to_amount(1.5)


def test_format_amount_never_uses_an_exponent() -> None:
    assert format_amount(Decimal("1E+3")) == "1000.00"
    assert format_amount(Decimal("0.1")) == "0.10"


@pytest.mark.parametrize("code", ["USD", "EUR", "GBP", "JPY", "CHF", "XOF", "XCG", "ZWG"])
def test_active_currencies(code: str) -> None:
    assert parse_currency(code) == code


@pytest.mark.parametrize(
    "code", ["usd", "US", "USDD", "ABC", "XXX", "XTS", "XAU", "HRK", "ANG", "", None, 840]
)
def test_invalid_currencies(code: object) -> None:
    with pytest.raises(MoneyError, match="ISO 4217"):
        parse_currency(code)


def test_currency_list_is_sane() -> None:
    assert isinstance(CURRENCIES, frozenset)
    assert len(CURRENCIES) > 140
    assert all(len(c) == 3 and c.isalpha() and c.isupper() for c in CURRENCIES)


def test_json_is_parsed_strictly() -> None:
    import pytest as _pytest

    from payapi.core.money import MAX_JSON_DEPTH, loads_json

    assert loads_json(b'{"a": [1.5]}') == {"a": [Decimal("1.5")]}
    assert loads_json("[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH) is not None
    for bad in ("[" * (MAX_JSON_DEPTH + 1) + "]" * (MAX_JSON_DEPTH + 1), "[" * 100_000,
                '{"a": 1, "a": 2}', "NaN"):  # fmt: skip
        with _pytest.raises(ValueError):
            loads_json(bad)
    # Brackets inside strings are not nesting.
    assert loads_json('{"a": "' + "[" * 500 + '"}') == {"a": "[" * 500}
    assert loads_json('["\\"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["]')[0].startswith('"')
