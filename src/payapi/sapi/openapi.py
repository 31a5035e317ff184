"""Payment-SAPI's OpenAPI 3.1 document (docs/openapi/sapi.json, ``payapi openapi sapi``).

Not served: SAPI is internal, and its callers are services holding the service token.
Written here beside the routes, as EAPI's is; tests/unit/test_openapi.py holds it to the
routes and tests/scenarios/test_openapi_fuzz.py to the answers.
"""

from __future__ import annotations

import sys
from typing import Any, Final

from payapi import apidoc
from payapi.apidoc import JSON, ref, responses, schema_ref
from payapi.schemas import WHITESPACE_CLASS

CHALLENGE: Final = "Bearer"
VERSION: Final = "1"

_SERVICE: list[dict[str, list[str]]] = [{"serviceToken": []}]
_RID = ref("parameters", "X-Request-ID")
_NO_NUL = "^[^\\u0000]*$"
# Not only whitespace (payapi.audit strips it, and an event must name its type and actor).
_NOT_BLANK = f"^[^\\u0000]*[^\\u0000{WHITESPACE_CLASS}][^\\u0000]*$"


def _client_id() -> dict[str, Any]:
    return {
        "name": "X-Client-ID",
        "in": "header",
        "required": True,
        "description": "The EAPI client on whose behalf the call is made (its payments only).",
        "schema": {"type": "string", "pattern": apidoc.CLIENT_ID_PATTERN},
    }


def _schemas() -> dict[str, Any]:
    def text(max_length: int, *, blank: bool = True) -> dict[str, Any]:
        pattern = _NO_NUL if blank else _NOT_BLANK
        return {"type": "string", "minLength": 1, "maxLength": max_length, "pattern": pattern}

    return {
        **apidoc.payment_schemas(),
        "AuditEventCreate": {
            "type": "object",
            "required": ["type", "actor"],
            "additionalProperties": False,
            "properties": {
                "type": text(128, blank=False),
                "actor": text(255, blank=False),
                "subject": {"anyOf": [text(255), {"type": "null"}]},
                "details": _audit_details(),
            },
        },
        "AuditEventCreated": {
            "type": "object",
            "required": ["seq", "hash"],
            "properties": {
                "seq": {"type": "integer", "minimum": 1},
                "hash": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
            },
        },
        "Health": {
            "type": "object",
            "required": ["status", "checks"],
            "properties": {
                "status": {"type": "string", "enum": ["ok", "degraded", "down"]},
                "checks": {
                    "type": "object",
                    "required": ["database", "vault"],
                    "properties": {
                        name: {"type": "string", "enum": ["ok", "down"]}
                        for name in ("database", "vault")
                    },
                },
            },
        },
        "HealthDown": {
            "description": "The error envelope, plus the keys of a healthy answer.",
            "allOf": [schema_ref("Error"), schema_ref("Health")],
        },
    }


def _insensitive(word: str) -> str:
    """``token`` -> ``[tT][oO][kK][eE][nN]`` (ECMA patterns have no inline flags)."""
    return "".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else c for c in word)


# payapi.core.logs._SENSITIVE, the keys whose string values an audit event refuses.
SECRET_KEY_PATTERN: Final = "|".join(
    _insensitive(w)
    for w in (
        "secret", "password", "passwd", "api_?key", "token", "authorization", "credential",
        "cookie", "data_?key",
    )
)  # fmt: skip


def _audit_details() -> dict[str, Any]:
    """``details`` (``payapi.schemas.AuditEventCreate``, then ``payapi.audit._jsonable``)."""
    # orjson reads numbers as 64-bit integers or doubles: past the largest double, 400.
    number = {"type": "number", "minimum": -sys.float_info.max, "maximum": sys.float_info.max}
    not_text = [number, {"type": "boolean"}, {"type": "null"}]
    return {
        "type": "object",
        "description": (
            "One flat object: strings, numbers, booleans, nulls. Never a secret: a string "
            "under a key that looks like one (`secret`, `password`, `token`, `api_key`, …, "
            "in any case) is refused with 422, as is a NUL in any key or string. Numbers "
            "are kept as JSON doubles (a longer integer loses precision; past the largest "
            "double: 400)."
        ),
        "propertyNames": {"pattern": _NO_NUL},
        "patternProperties": {SECRET_KEY_PATTERN: {"anyOf": not_text}},
        "additionalProperties": {"anyOf": [{"type": "string", "pattern": _NO_NUL}, *not_text]},
    }


def _paths() -> dict[str, Any]:
    payment = schema_ref("Payment")
    replayed = {
        "Idempotent-Replayed": {"required": True, "schema": {"type": "string", "const": "true"}}
    }
    read_link = {
        "GetPayment": {
            "operationId": "getPayment",
            "parameters": {"payment_id": "$response.body#/id"},
        }
    }
    created = apidoc.json_response("The payment was created.", payment)
    replay = apidoc.json_response(
        "A replay: this Idempotency-Key already created this payment.", payment, replayed
    )
    created["links"] = replay["links"] = read_link
    return {
        "/api/internal-health": {
            "get": {
                "operationId": "health",
                "summary": "Readiness (no authentication)",
                "security": [],
                "parameters": [_RID],
                "responses": {
                    "200": apidoc.json_response(
                        "Serving (`degraded`: the vault is down, the token is cached).",
                        schema_ref("Health"),
                    ),
                    "503": apidoc.json_response("Not serving.", schema_ref("HealthDown")),
                },
            }
        },
        "/api/internal/payments": {
            "post": {
                "operationId": "createPayment",
                "summary": "Store a payment for a client",
                "security": _SERVICE,
                "parameters": [_client_id(), apidoc.idempotency_key_parameter(), _RID],
                "requestBody": {
                    "required": True,
                    "description": "At most 16 KiB.",
                    "content": {JSON: {"schema": schema_ref("PaymentCreate")}},
                },
                "responses": {
                    "201": created,
                    "200": replay,
                    "409": apidoc.error_response(
                        "The Idempotency-Key was used with another body, or that request "
                        "is still being processed (then `Retry-After`)."
                    ),
                    **responses(
                        "BadRequest",
                        "Unauthorized",
                        "PayloadTooLarge",
                        "UnprocessableEntity",
                        "ServiceUnavailable",
                    ),
                },
            }
        },
        "/api/internal/payments/{payment_id}": {
            "get": {
                "operationId": "getPayment",
                "summary": "Read a client's payment",
                "security": _SERVICE,
                "parameters": [
                    {
                        "name": "payment_id",
                        "in": "path",
                        "required": True,
                        "description": "The payment's id (another client's, or not an id: 404).",
                        "schema": {"type": "string"},
                    },
                    _client_id(),
                    _RID,
                ],
                "responses": {
                    "200": apidoc.json_response("The payment.", payment),
                    **responses(
                        "Unauthorized", "NotFound", "UnprocessableEntity", "ServiceUnavailable"
                    ),
                },
            }
        },
        "/api/internal/audit": {
            "post": {
                "operationId": "appendAuditEvent",
                "summary": "Append an event to the hash-chained audit log",
                "security": _SERVICE,
                "parameters": [_RID],
                "requestBody": {
                    "required": True,
                    "description": "At most 16 KiB.",
                    "content": {JSON: {"schema": schema_ref("AuditEventCreate")}},
                },
                "responses": {
                    "201": apidoc.json_response(
                        "Appended: its place and hash in the chain.",
                        schema_ref("AuditEventCreated"),
                    ),
                    **responses(
                        "BadRequest",
                        "Unauthorized",
                        "PayloadTooLarge",
                        "UnprocessableEntity",
                        "ServiceUnavailable",
                    ),
                },
            }
        },
    }


def document() -> dict[str, Any]:
    return apidoc.document(
        title="Payment-SAPI",
        version=VERSION,
        description=(
            "The internal payment system API: only services holding the service token "
            "(Payment-EAPI) call it. " + apidoc.METHOD_NOTE
        ),
        paths=_paths(),
        schemas=_schemas(),
        security_schemes={
            "serviceToken": {
                "type": "http",
                "scheme": "bearer",
                "description": "The service token, read from the vault "
                "(`payment-system/sapi/service-token`).",
            }
        },
        challenge=CHALLENGE,
    )
