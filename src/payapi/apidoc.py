"""Building blocks of the services' OpenAPI 3.1 documents (docs/openapi/).

Each service writes its own document (``payapi.eapi.openapi``, ``payapi.sapi.openapi``,
``payapi.vault.openapi``) from these pieces, so the error envelope, the standard headers
and the payment shapes are described once, from the constants the code validates with.
A unit test holds the patterns here to the regular expressions the services use, and
the fuzzing scenario (tests/scenarios/test_openapi_fuzz.py) holds each document to what
its service answers.

Patterns are written for ECMA-262 (what JSON Schema means by ``pattern``): ``$`` there
matches only at the very end, as ``\\Z`` does in the Python the services run.
"""

from __future__ import annotations

from typing import Any, Final

from payapi.core.money import CURRENCIES, MAX_AMOUNT, MAX_JSON_DEPTH

OPENAPI_VERSION: Final = "3.1.0"

REFERENCE_PATTERN: Final = "^[A-Za-z0-9._-]{1,64}$"
"""``payapi.schemas.REFERENCE_PATTERN`` in ECMA syntax."""

REQUEST_ID_PATTERN: Final = "^[A-Za-z0-9._-]{1,64}$"
"""``payapi.web._VALID_RID``: a request id we echo; any other is replaced."""

# A decimal string ``parse_amount`` accepts: digits, optionally a point and digits (no
# sign, exponent or space), more than 0, at most MAX_AMOUNT (1000000), at most two
# decimal places (further zeros are allowed: "1.500" is 1.50), at most 40 characters.
AMOUNT_STRING_PATTERN: Final = (
    r"^(?:0*(?:[1-9][0-9]{0,5}(?:\.[0-9]{1,2}0*)?|10{6}(?:\.0+)?)"
    r"|0+\.(?:0[1-9]|[1-9][0-9]?)0*)$"
)
AMOUNT_STRING_MAX_LENGTH: Final = 40

TIMESTAMP_PATTERN: Final = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}Z$"

CLIENT_ID_PATTERN: Final = "^[!-~]{1,255}$"
"""SAPI's ``X-Client-ID``: 1-255 printable ASCII characters, no space."""

# Idempotency-Key: printable ASCII, 1-255 characters. HTTP strips spaces around a header
# value, so a key that starts or ends with one does not arrive as sent: the document
# promises only keys that survive the trip.
IDEMPOTENCY_KEY_PATTERN: Final = "^[!-~](?:[ -~]{0,253}[!-~])?$"

JSON: Final = "application/json"


def ref(kind: str, name: str) -> dict[str, str]:
    return {"$ref": f"#/components/{kind}/{name}"}


def schema_ref(name: str) -> dict[str, str]:
    return ref("schemas", name)


# -- schemas -------------------------------------------------------------------------


def error_schema() -> dict[str, Any]:
    """The envelope of every 4xx/5xx answer (:func:`payapi.web.error_response`)."""
    return {
        "type": "object",
        "description": "The error envelope: every 4xx and 5xx answer has this body.",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["type", "code", "message", "param", "request_id"],
                "properties": {
                    "type": {
                        "type": "string",
                        "description": "The class of error, e.g. `invalid_request_error`.",
                    },
                    "code": {"type": "string", "description": "What went wrong, e.g. `invalid`."},
                    "message": {"type": "string", "description": "One line for a human."},
                    "param": {
                        "type": ["string", "null"],
                        "description": "The field or header at fault, if one is.",
                    },
                    "request_id": {
                        "type": "string",
                        "description": "Also in the `X-Request-ID` header; quote it to support.",
                    },
                },
            }
        },
    }


def amount_in_schema() -> dict[str, Any]:
    return {
        "description": (
            "A JSON number or a decimal string, more than 0, at most "
            f"{MAX_AMOUNT}, with at most two decimal places; never a binary float. "
            'Send a string ("100.10") to be safe from clients that round.'
        ),
        "anyOf": [
            {
                "type": "number",
                "exclusiveMinimum": 0,
                "maximum": int(MAX_AMOUNT),
                "multipleOf": 0.01,
            },
            {
                "type": "string",
                "pattern": AMOUNT_STRING_PATTERN,
                "maxLength": AMOUNT_STRING_MAX_LENGTH,
            },
        ],
        "examples": ["100.10"],
    }


def currency_schema() -> dict[str, Any]:
    return {
        "type": "string",
        "description": "An active ISO 4217 alphabetic code.",
        "enum": sorted(CURRENCIES),
        "examples": ["USD"],
    }


def payment_schemas() -> dict[str, Any]:
    """``PaymentCreate`` and ``Payment`` (:mod:`payapi.schemas`)."""
    return {
        "PaymentCreate": {
            "type": "object",
            "description": (
                "A new payment. Unknown fields, duplicate keys and JSON nested deeper "
                f"than {MAX_JSON_DEPTH} levels are refused."
            ),
            "required": ["amount", "currency", "reference"],
            "additionalProperties": False,
            "properties": {
                "amount": amount_in_schema(),
                "currency": currency_schema(),
                "reference": {
                    "type": "string",
                    "description": "Your reference: 1-64 of A-Z, a-z, 0-9, `.`, `_`, `-`.",
                    "pattern": REFERENCE_PATTERN,
                    "examples": ["INV-2026-0001"],
                },
            },
        },
        "Payment": {
            "type": "object",
            "required": ["id", "amount", "currency", "reference", "status", "created_at"],
            "properties": {
                "id": {"type": "string", "format": "uuid"},
                "amount": {
                    "type": "string",
                    "description": "Always with two decimals.",
                    "pattern": r"^[0-9]+\.[0-9]{2}$",
                    "examples": ["100.10"],
                },
                "currency": {"type": "string", "pattern": "^[A-Z]{3}$"},
                "reference": {"type": "string"},
                "status": {"type": "string", "enum": ["pending", "succeeded", "failed"]},
                "created_at": {
                    "type": "string",
                    "description": "UTC, microseconds, `Z`: `YYYY-MM-DDTHH:MM:SS.ffffffZ`.",
                    "pattern": TIMESTAMP_PATTERN,
                },
            },
        },
    }


# -- headers and parameters ----------------------------------------------------------


def standard_headers() -> dict[str, Any]:
    return {
        "X-Request-ID": {
            "description": "The request's id: the caller's if it sent a valid one, else a new one.",
            "required": True,
            "schema": {"type": "string", "pattern": REQUEST_ID_PATTERN},
        },
        "Retry-After": {
            "description": "Seconds to wait before trying again.",
            "required": True,
            "schema": {"type": "integer", "minimum": 0},
        },
        "Allow": {
            "description": "The methods this path answers.",
            "required": True,
            "schema": {"type": "string"},
        },
        "WWW-Authenticate": {
            "description": "How to authenticate (RFC 9110).",
            "required": True,
            "schema": {"type": "string"},
        },
    }


def request_id_parameter() -> dict[str, Any]:
    return {
        "name": "X-Request-ID",
        "in": "header",
        "required": False,
        "description": (
            f"Your id for this request, echoed in the answer if it matches "
            f"`{REQUEST_ID_PATTERN}` (any other value is replaced by a new id, not refused)."
        ),
        "schema": {"type": "string"},
    }


def idempotency_key_parameter() -> dict[str, Any]:
    return {
        "name": "Idempotency-Key",
        "in": "header",
        "required": False,
        "description": (
            "Makes a retry safe: the same key with the same body answers the first "
            "payment again (200, `Idempotent-Replayed: true`); with another body, 409. "
            "1-255 printable ASCII characters."
        ),
        "schema": {"type": "string", "pattern": IDEMPOTENCY_KEY_PATTERN},
    }


# -- responses -----------------------------------------------------------------------


def _with_request_id(headers: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"X-Request-ID": ref("headers", "X-Request-ID"), **(headers or {})}


def json_response(
    description: str, schema: dict[str, Any], headers: dict[str, Any] | None = None
) -> dict[str, Any]:
    return {
        "description": description,
        "headers": _with_request_id(headers),
        "content": {JSON: {"schema": schema}},
    }


def error_response(description: str, *header_names: str) -> dict[str, Any]:
    headers = {name: ref("headers", name) for name in header_names}
    return json_response(description, schema_ref("Error"), headers)


def error_responses(challenge: str) -> dict[str, Any]:
    """``components.responses``: one entry per error status the services send."""
    return {
        "BadRequest": error_response("The body is not valid JSON, or the request is refused."),
        "Unauthorized": error_response(
            f"Missing or invalid credentials (`WWW-Authenticate: {challenge}`).",
            "WWW-Authenticate",
        ),
        "Forbidden": error_response("Authenticated, but not allowed."),
        "NotFound": error_response("No such resource (or not one the caller may see)."),
        "MethodNotAllowed": error_response(
            "Any method a documented path does not list; `Allow` lists those it does.", "Allow"
        ),
        "Conflict": error_response("The request conflicts with another one."),
        "PayloadTooLarge": error_response("The body is over the limit (refused while it streams)."),
        "UnprocessableEntity": error_response("Valid JSON, but not a valid request."),
        "TooManyRequests": error_response(
            "Rate limited; wait `Retry-After` seconds.", "Retry-After"
        ),
        "ServiceUnavailable": error_response(
            "A dependency is unavailable; retry after `Retry-After` seconds.", "Retry-After"
        ),
    }


def responses(*names: str) -> dict[str, Any]:
    """``{"401": {"$ref": …Unauthorized}, …}`` for the named components."""
    codes = {
        "BadRequest": "400",
        "Unauthorized": "401",
        "Forbidden": "403",
        "NotFound": "404",
        "Conflict": "409",
        "PayloadTooLarge": "413",
        "UnprocessableEntity": "422",
        "TooManyRequests": "429",
        "ServiceUnavailable": "503",
    }
    return {codes[name]: ref("responses", name) for name in names}


def document(
    *,
    title: str,
    version: str,
    description: str,
    paths: dict[str, Any],
    schemas: dict[str, Any],
    security_schemes: dict[str, Any],
    challenge: str,
    extra_responses: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "openapi": OPENAPI_VERSION,
        "info": {"title": title, "version": version, "description": description},
        "paths": paths,
        "components": {
            "schemas": {"Error": error_schema(), **schemas},
            "headers": standard_headers(),
            "parameters": {"X-Request-ID": request_id_parameter()},
            "responses": {**error_responses(challenge), **(extra_responses or {})},
            "securitySchemes": security_schemes,
        },
    }


METHOD_NOTE: Final = (
    "Every answer carries `X-Request-ID`. A method that a documented path does not list "
    "answers 405 with `Allow` (`#/components/responses/MethodNotAllowed`); an unknown path "
    "answers 404. Every 4xx and 5xx answer has the error envelope "
    "(`#/components/schemas/Error`)."
)
