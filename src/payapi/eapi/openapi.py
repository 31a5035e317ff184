"""Payment-EAPI's OpenAPI 3.1 document: what ``GET /openapi.json`` serves and what
``payapi openapi eapi`` prints (checked in as docs/openapi/eapi.json).

The routes read their bodies raw (``payapi.web.read_body``), so FastAPI cannot infer
this: it is written here, next to the routes, and held to them by
tests/unit/test_openapi.py (same operations) and tests/scenarios/test_openapi_fuzz.py
(same answers).
"""

from __future__ import annotations

from typing import Any, Final

from payapi import apidoc
from payapi.apidoc import JSON, ref, responses, schema_ref

CHALLENGE: Final = 'Bearer realm="payment-eapi"'
VERSION: Final = "1"

_CLIENT: list[dict[str, list[str]]] = [{"clientId": [], "clientSecret": []}]
_CALLER: list[dict[str, list[str]]] = [{"bearerAuth": []}, {"clientId": [], "clientSecret": []}]
_RID = [ref("parameters", "X-Request-ID")]


def _security_schemes() -> dict[str, Any]:
    return {
        "clientId": {
            "type": "apiKey",
            "in": "header",
            "name": "X-Client-ID",
            "description": "Your client id (`payapi clients create`).",
        },
        "clientSecret": {
            "type": "apiKey",
            "in": "header",
            "name": "X-Client-Secret",
            "description": "Your client secret; sent with `X-Client-ID`.",
        },
        "bearerAuth": {
            "type": "http",
            "scheme": "bearer",
            "description": "An access token from `POST /api/v1/authenticate`.",
        },
    }


def _schemas() -> dict[str, Any]:
    return {
        **apidoc.payment_schemas(),
        "AccessToken": {
            "type": "object",
            "required": ["access_token", "token_type", "expires_in"],
            "properties": {
                "access_token": {"type": "string", "minLength": 1},
                "token_type": {"type": "string", "const": "Bearer"},
                "expires_in": {"type": "integer", "description": "Seconds."},
            },
        },
        "Revoked": {
            "type": "object",
            "required": ["revoked"],
            "properties": {
                "revoked": {
                    "type": "boolean",
                    "description": "False if the token had already expired or been revoked.",
                }
            },
        },
        "Health": {
            "type": "object",
            "required": ["status", "checks"],
            "properties": {
                "status": {"type": "string", "enum": ["ok", "degraded", "down"]},
                "checks": {
                    "type": "object",
                    "required": ["redis", "vault", "sapi"],
                    "properties": {
                        name: {"type": "string", "enum": ["ok", "down"]}
                        for name in ("redis", "vault", "sapi")
                    },
                },
            },
        },
        "HealthDown": {
            "description": "The error envelope, plus the keys of a healthy answer.",
            "allOf": [schema_ref("Error"), schema_ref("Health")],
        },
    }


def _paths() -> dict[str, Any]:
    payment = schema_ref("Payment")
    return {
        "/api/v1/authenticate": {
            "post": {
                "operationId": "authenticate",
                "summary": "Exchange the client id and secret for an access token",
                "security": _CLIENT,
                "parameters": _RID,
                "responses": {
                    "200": apidoc.json_response("An access token.", schema_ref("AccessToken")),
                    **responses("Unauthorized", "TooManyRequests", "ServiceUnavailable"),
                },
            }
        },
        "/api/v1/revoke": {
            "post": {
                "operationId": "revoke",
                "summary": "Revoke the presented bearer token (logout)",
                "security": _CALLER,
                "parameters": _RID,
                "responses": {
                    "200": apidoc.json_response("The token is revoked.", schema_ref("Revoked")),
                    "400": apidoc.error_response(
                        "Authenticated with client headers: there is no token to revoke."
                    ),
                    **responses("Unauthorized", "TooManyRequests", "ServiceUnavailable"),
                },
            }
        },
        "/api/v1/payments": {
            "post": {
                "operationId": "createPayment",
                "summary": "Create a payment",
                "security": _CALLER,
                "parameters": [*_RID, apidoc.idempotency_key_parameter()],
                "requestBody": {
                    "required": True,
                    "description": "At most 16 KiB.",
                    "content": {JSON: {"schema": schema_ref("PaymentCreate")}},
                },
                "responses": {
                    "201": apidoc.json_response("The payment was created.", payment),
                    "200": apidoc.json_response(
                        "A replay: this Idempotency-Key already created this payment.",
                        payment,
                        {
                            "Idempotent-Replayed": {
                                "required": True,
                                "schema": {"type": "string", "const": "true"},
                            }
                        },
                    ),
                    "409": apidoc.error_response(
                        "The Idempotency-Key was used with another body, or that request "
                        "is still being processed (then `Retry-After`).",
                    ),
                    **responses(
                        "BadRequest",
                        "Unauthorized",
                        "PayloadTooLarge",
                        "UnprocessableEntity",
                        "TooManyRequests",
                        "ServiceUnavailable",
                    ),
                },
            }
        },
        "/api/v1/payments/{payment_id}": {
            "get": {
                "operationId": "getPayment",
                "summary": "Read one of your payments",
                "security": _CALLER,
                "parameters": [
                    {
                        "name": "payment_id",
                        "in": "path",
                        "required": True,
                        "description": "The payment's id (another client's, or not an id: 404).",
                        "schema": {"type": "string"},
                    },
                    *_RID,
                ],
                "responses": {
                    "200": apidoc.json_response("The payment.", payment),
                    **responses(
                        "Unauthorized", "NotFound", "TooManyRequests", "ServiceUnavailable"
                    ),
                },
            }
        },
        "/api/health": {
            "get": {
                "operationId": "health",
                "summary": "Liveness and dependencies (no authentication)",
                "security": [],
                "parameters": _RID,
                "responses": {
                    "200": apidoc.json_response(
                        "Serving (`degraded` when Redis or the vault is down).",
                        schema_ref("Health"),
                    ),
                    "503": apidoc.json_response(
                        "Not serving: SAPI, or both Redis and the vault, are down.",
                        schema_ref("HealthDown"),
                    ),
                },
            }
        },
        "/metrics": {
            "get": {
                "operationId": "metrics",
                "summary": "Prometheus metrics (no authentication)",
                "security": [],
                "parameters": _RID,
                "responses": {
                    "200": {
                        "description": "The Prometheus text format.",
                        "headers": {"X-Request-ID": ref("headers", "X-Request-ID")},
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
    }


def _with_links(paths: dict[str, Any]) -> dict[str, Any]:
    """Create a payment, then read it (the fuzzer follows these too)."""
    read = {
        "operationId": "getPayment",
        "parameters": {"payment_id": "$response.body#/id"},
    }
    create = paths["/api/v1/payments"]["post"]
    for status in ("201", "200"):
        create["responses"][status]["links"] = {"GetPayment": read}
    return paths


def document() -> dict[str, Any]:
    return apidoc.document(
        title="Payment-EAPI",
        version=VERSION,
        description=(
            "The external payment API. Authenticate with your client id and secret (as "
            "headers on every call, or once at `/api/v1/authenticate` for a bearer token), "
            "then create and read payments. " + apidoc.METHOD_NOTE
        ),
        paths=_with_links(_paths()),
        schemas=_schemas(),
        security_schemes=_security_schemes(),
        challenge=CHALLENGE,
    )
