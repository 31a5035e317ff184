"""The vault's OpenAPI 3.1 document: the subset of CyberArk Conjur's REST API that
:mod:`payapi.vault.routes` serves (docs/openapi/vault.json, ``payapi openapi vault``).

Not served: the vault holds the platform's secrets, and its API is Conjur's, whose
clients need no document. tests/unit/test_openapi.py holds it to the routes and
tests/scenarios/test_openapi_fuzz.py to the answers.

Identifiers (``{login}``, ``{identifier}``) may contain ``/``: send it percent-encoded
(``%2F``), as Conjur's clients do.
"""

from __future__ import annotations

from typing import Any, Final

from payapi import apidoc
from payapi.apidoc import JSON, ref, responses, schema_ref

CHALLENGE: Final = 'Token realm="payapi-vault"'
# The Conjur OSS API version this server speaks (payapi.vault.routes.CONJUR_API_VERSION).
VERSION: Final = "1.21.1"

_TOKEN: list[dict[str, list[str]]] = [{"conjurToken": []}]
_BASIC: list[dict[str, list[str]]] = [{"basicAuth": []}]
_RID = ref("parameters", "X-Request-ID")
_TEXT = "text/plain"
MAX_INT_PARAM: Final = 2**31 - 1  # payapi.vault.routes.MAX_INT_PARAM
# ``kind:identifier`` or ``account:kind:identifier`` (payapi.vault.ids.make_full_id).
_ROLE = {"type": "string", "pattern": "^[^:\\u0000]+:[^:\\u0000]+(?::[^\\u0000]+)?$"}


def _path(name: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": {"type": "string", "minLength": 1},
    }


_ACCOUNT = _path("account", "The Conjur account, e.g. `payapi`.")
_KIND = _path("kind", "`user`, `host`, `group`, `layer`, `policy`, `variable`, `webservice`, …")
_IDENTIFIER = _path("identifier", "The resource's id in the account; `/` as `%2F`.")


def _query(name: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema,
    }


def _base64_parameter() -> dict[str, Any]:
    return {
        "name": "Accept-Encoding",
        "in": "header",
        "required": False,
        "description": "`base64`: answer the value base64-encoded (`Content-Encoding: base64`).",
        "schema": {"type": "string"},
    }


def _text(description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "description": description,
        "headers": {"X-Request-ID": ref("headers", "X-Request-ID"), **(headers or {})},
        "content": {_TEXT: {"schema": {"type": "string"}}},
    }


def _empty(description: str) -> dict[str, Any]:
    return {"description": description, "headers": {"X-Request-ID": ref("headers", "X-Request-ID")}}


def _schemas() -> dict[str, Any]:
    def listing(item: dict[str, Any]) -> dict[str, Any]:
        return {"type": "array", "items": item}

    by_policy = {"policy": {"type": ["string", "null"]}}
    return {
        "AccessToken": {
            "type": "object",
            "description": 'Send it base64-encoded: `Authorization: Token token="…"`.',
            "required": ["protected", "payload", "signature"],
            "properties": {k: {"type": "string"} for k in ("protected", "payload", "signature")},
        },
        "Resource": {
            "type": "object",
            "required": ["created_at", "id", "owner", "policy", "permissions", "annotations"],
            "properties": {
                "created_at": {"type": "string"},
                "id": {"type": "string"},
                "owner": {"type": ["string", "null"]},
                "policy": {"type": ["string", "null"]},
                "permissions": listing(
                    {
                        "type": "object",
                        "properties": {
                            "privilege": {"type": "string"},
                            "role": {"type": "string"},
                            **by_policy,
                        },
                    }
                ),
                "annotations": listing(
                    {
                        "type": "object",
                        "properties": {
                            "name": {"type": "string"},
                            "value": {"type": "string"},
                            **by_policy,
                        },
                    }
                ),
                "restricted_to": listing({"type": "string"}),
                "secrets": listing(
                    {
                        "type": "object",
                        "properties": {
                            "version": {"type": "integer"},
                            "expires_at": {"type": ["string", "null"]},
                        },
                    }
                ),
            },
        },
        "Count": {
            "type": "object",
            "required": ["count"],
            "properties": {"count": {"type": "integer", "minimum": 0}},
        },
        "WhoAmI": {
            "type": "object",
            "required": ["account", "username", "token_issued_at"],
            "properties": {
                "client_ip": {"type": ["string", "null"]},
                "user_agent": {"type": ["string", "null"]},
                "account": {"type": "string"},
                "username": {"type": "string"},
                "token_issued_at": {"type": "string"},
            },
        },
        "PolicyLoaded": {
            "type": "object",
            "required": ["created_roles", "version"],
            "properties": {
                "created_roles": {
                    "type": "object",
                    "description": "The API key of each role the policy created, by role id.",
                    "additionalProperties": {
                        "type": "object",
                        "properties": {"id": {"type": "string"}, "api_key": {"type": "string"}},
                    },
                },
                "version": {"type": "integer"},
            },
        },
        "PolicyDryRun": {
            "type": "object",
            "required": ["status", "created", "updated", "deleted"],
            "properties": {
                "status": {"const": "Valid YAML"},
                **{
                    name: {
                        "type": "object",
                        "required": ["items"],
                        "properties": {"items": listing({"type": "object"})},
                    }
                    for name in ("created", "updated", "deleted")
                },
            },
        },
        "PolicyDryRunInvalid": {
            "description": "The error envelope, plus Conjur's dry-run keys.",
            "allOf": [
                schema_ref("Error"),
                {
                    "type": "object",
                    "required": ["status", "errors"],
                    "properties": {
                        "status": {"const": "Invalid YAML"},
                        "errors": listing({"type": "object"}),
                    },
                },
            ],
        },
        "Health": {
            "type": "object",
            "required": ["status", "database"],
            "properties": {
                "status": {"type": "string"},
                "database": {"type": "string"},
                "role": {
                    "type": "string",
                    "enum": ["active", "standby"],
                    "description": "`standby`: the database is a standby; reads only.",
                },
            },
        },
        "HealthDown": {
            "description": "The error envelope, plus the keys of a healthy answer.",
            "allOf": [schema_ref("Error"), schema_ref("Health")],
        },
    }


def _policy_operation(method: str, summary: str) -> dict[str, Any]:
    return {
        "operationId": f"{method}Policy",
        "summary": summary,
        "security": _TOKEN,
        "parameters": [
            _ACCOUNT,
            _IDENTIFIER,
            _query("dryRun", "`true`: validate and report, change nothing.", {"type": "string"}),
            _RID,
        ],
        "requestBody": {
            "required": True,
            "description": "Conjur policy YAML, at most 5 MiB.",
            "content": {_TEXT: {"schema": {"type": "string"}}},
        },
        "responses": {
            "201": apidoc.json_response("Loaded.", schema_ref("PolicyLoaded")),
            "200": apidoc.json_response("The dry run's report.", schema_ref("PolicyDryRun")),
            "409": apidoc.error_response("Another load of this policy is in progress."),
            "422": apidoc.json_response(
                "The policy is invalid (a dry run adds Conjur's `status` and `errors`).",
                {"anyOf": [schema_ref("PolicyDryRunInvalid"), schema_ref("Error")]},
            ),
            **responses(
                "Unauthorized", "Forbidden", "NotFound", "PayloadTooLarge", "ServiceUnavailable"
            ),
        },
    }


def _paths() -> dict[str, Any]:
    secret_ops = responses(
        "Unauthorized", "Forbidden", "NotFound", "UnprocessableEntity", "ServiceUnavailable"
    )
    listing_params = [
        _query(
            "search",
            "Text to look for in ids and annotations.",
            {"type": "string", "pattern": "^[^\\u0000]*$"},
        ),
        _query(
            "limit",
            "At most this many.",
            {"type": "integer", "minimum": 0, "maximum": MAX_INT_PARAM},
        ),
        _query(
            "offset", "Skip this many.", {"type": "integer", "minimum": 0, "maximum": MAX_INT_PARAM}
        ),
        _query("count", "`true`: answer only how many.", {"type": "string"}),
        _RID,
    ]
    listing_responses = {
        "200": apidoc.json_response(
            "The resources the caller may see (or their count).",
            {"anyOf": [{"type": "array", "items": schema_ref("Resource")}, schema_ref("Count")]},
        ),
        **responses("Unauthorized", "UnprocessableEntity", "ServiceUnavailable"),
    }
    return {
        "/": {
            "get": {
                "operationId": "status",
                "summary": "Conjur's status page (the official client reads the version)",
                "security": [],
                "parameters": [_RID],
                "responses": {
                    "200": {
                        "description": "An HTML page naming the API version.",
                        "headers": {"X-Request-ID": ref("headers", "X-Request-ID")},
                        "content": {"text/html": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
        "/health": {
            "get": {
                "operationId": "health",
                "summary": "Can the vault reach its database? (no authentication)",
                "security": [],
                "parameters": [_RID],
                "responses": {
                    "200": apidoc.json_response("Healthy.", schema_ref("Health")),
                    "503": apidoc.json_response("Not healthy.", schema_ref("HealthDown")),
                },
            }
        },
        "/authn/{account}/login": {
            "get": {
                "operationId": "login",
                "summary": "Log in with HTTP Basic; answers the API key",
                "security": _BASIC,
                "parameters": [_ACCOUNT, _RID],
                "responses": {
                    "200": _text("The API key."),
                    **responses("Unauthorized", "ServiceUnavailable"),
                },
            }
        },
        "/authn/{account}/{login}/authenticate": {
            "post": {
                "operationId": "authenticate",
                "summary": "Exchange an API key (the body) for a short-lived access token",
                "security": [],
                "parameters": [
                    _ACCOUNT,
                    _path("login", "`admin`, or `host/<id>` with `/` as `%2F`."),
                    _base64_parameter(),
                    _RID,
                ],
                "requestBody": {
                    "required": True,
                    "description": "The API key, at most 4096 bytes.",
                    "content": {_TEXT: {"schema": {"type": "string"}}},
                },
                "responses": {
                    "200": {
                        "description": "The access token (base64 text if asked for).",
                        "headers": {"X-Request-ID": ref("headers", "X-Request-ID")},
                        "content": {
                            JSON: {"schema": schema_ref("AccessToken")},
                            _TEXT: {"schema": {"type": "string"}},
                        },
                    },
                    **responses(
                        "Unauthorized", "NotFound", "PayloadTooLarge", "ServiceUnavailable"
                    ),
                },
            }
        },
        "/authn/{account}/api_key": {
            "put": {
                "operationId": "rotateApiKey",
                "summary": "Rotate your API key (Basic) or a role's you may update (token)",
                "security": [*_BASIC, *_TOKEN],
                "parameters": [
                    _ACCOUNT,
                    _query("role", "`kind:identifier` of the role to rotate.", _ROLE),
                    _RID,
                ],
                "responses": {"200": _text("The new API key."), **secret_ops},
            }
        },
        "/whoami": {
            "get": {
                "operationId": "whoami",
                "summary": "Who the access token belongs to",
                "security": _TOKEN,
                "parameters": [_RID],
                "responses": {
                    "200": apidoc.json_response("The caller.", schema_ref("WhoAmI")),
                    **responses("Unauthorized", "ServiceUnavailable"),
                },
            }
        },
        "/secrets": {
            "get": {
                "operationId": "batchSecrets",
                "summary": "Several secrets at once, all or nothing",
                "security": _TOKEN,
                "parameters": [
                    {
                        "name": "variable_ids",
                        "in": "query",
                        "required": True,
                        "description": "Full ids (`account:variable:id`), comma-separated, "
                        "each once.",
                        "style": "form",
                        "explode": False,
                        "schema": {
                            "type": "array",
                            "minItems": 1,
                            "uniqueItems": True,
                            "items": {"type": "string", "pattern": "^[^,]+$"},
                        },
                    },
                    _base64_parameter(),
                    _RID,
                ],
                "responses": {
                    "200": apidoc.json_response(
                        "The values by id.",
                        {"type": "object", "additionalProperties": {"type": "string"}},
                    ),
                    "406": apidoc.error_response(
                        "A value is not UTF-8: ask for `Accept-Encoding: base64`."
                    ),
                    **secret_ops,
                },
            }
        },
        "/secrets/{account}/{kind}/{identifier}": {
            "get": {
                "operationId": "getSecret",
                "summary": "A secret's value (the latest, or `version`)",
                "security": _TOKEN,
                "parameters": [
                    _ACCOUNT,
                    _KIND,
                    _IDENTIFIER,
                    _query(
                        "version",
                        "A version to read.",
                        {"type": "integer", "minimum": 1, "maximum": MAX_INT_PARAM},
                    ),
                    _RID,
                ],
                "responses": {
                    "200": {
                        "description": "The value, as its `conjur/mime_type` annotation says "
                        "(default `application/octet-stream`).",
                        "headers": {"X-Request-ID": ref("headers", "X-Request-ID")},
                        "content": {"*/*": {"schema": {"type": "string"}}},
                    },
                    **secret_ops,
                },
            },
            "post": {
                "operationId": "setSecret",
                "summary": "Store a new version of a secret",
                "description": "Secret expirations (`?expirations`) are not supported: 501.",
                "security": _TOKEN,
                "parameters": [_ACCOUNT, _KIND, _IDENTIFIER, _RID],
                "requestBody": {
                    "required": True,
                    "description": "The value (any bytes, not empty), at most 1 MiB.",
                    "content": {
                        "application/octet-stream": {"schema": {"type": "string"}},
                        _TEXT: {"schema": {"type": "string"}},
                    },
                },
                "responses": {
                    "201": _empty("Stored."),
                    "501": apidoc.error_response("`?expirations`: not supported."),
                    **responses("PayloadTooLarge"),
                    **secret_ops,
                },
            },
        },
        "/resources/{account}": {
            "get": {
                "operationId": "listResources",
                "summary": "The resources the caller may see",
                "security": _TOKEN,
                "parameters": [
                    _ACCOUNT,
                    _query("kind", "Only this kind.", {"type": "string"}),
                    *listing_params,
                ],
                "responses": listing_responses,
            }
        },
        "/resources/{account}/{kind}": {
            "get": {
                "operationId": "listResourcesOfKind",
                "summary": "The resources of one kind the caller may see",
                "security": _TOKEN,
                "parameters": [_ACCOUNT, _KIND, *listing_params],
                "responses": listing_responses,
            }
        },
        "/resources/{account}/{kind}/{identifier}": {
            "get": {
                "operationId": "showResource",
                "summary": "Show a resource, check a privilege, or list who holds one",
                "security": _TOKEN,
                "parameters": [
                    _ACCOUNT,
                    _KIND,
                    _IDENTIFIER,
                    _query(
                        "check",
                        "`true`: 204 if the role holds `privilege`, else 404.",
                        {"type": "string"},
                    ),
                    _query(
                        "privilege",
                        "With `check` or `permitted_roles`: `read`, `execute`, `update`, …",
                        {"type": "string", "pattern": "^[a-z][a-z_]{0,31}$"},
                    ),
                    _query("role", "With `check`: this role instead of the caller.", _ROLE),
                    _query(
                        "permitted_roles",
                        "`true`: the roles holding `privilege`.",
                        {"type": "string"},
                    ),
                    _RID,
                ],
                "responses": {
                    "200": apidoc.json_response(
                        "The resource (or, with `permitted_roles`, the role ids).",
                        {
                            "anyOf": [
                                schema_ref("Resource"),
                                {"type": "array", "items": {"type": "string"}},
                            ]
                        },
                    ),
                    "204": _empty("`check=true`: the role holds the privilege."),
                    **responses(
                        "Unauthorized", "NotFound", "UnprocessableEntity", "ServiceUnavailable"
                    ),
                },
            },
            "head": {
                "operationId": "resourceExists",
                "summary": "Whether the caller may see the resource",
                "security": _TOKEN,
                "parameters": [_ACCOUNT, _KIND, _IDENTIFIER, _RID],
                "responses": {
                    "200": _empty("It exists and the caller may see it."),
                    "401": _empty("Missing or invalid access token."),
                    "404": _empty("No such resource, or not visible to the caller."),
                    "503": _empty("The vault's database is unavailable."),
                },
            },
        },
        "/roles/{account}/{kind}/{identifier}": {
            "get": {
                "operationId": "showRoleMemberships",
                "summary": "`?all`: the roles a role is, recursively (itself included)",
                "security": _TOKEN,
                "parameters": [
                    _ACCOUNT,
                    _KIND,
                    _IDENTIFIER,
                    {
                        **_query("all", "Required: list every membership.", {"type": "string"}),
                        "required": True,
                        "allowEmptyValue": True,
                    },
                    _RID,
                ],
                "responses": {
                    "200": apidoc.json_response(
                        "Full role ids.", {"type": "array", "items": {"type": "string"}}
                    ),
                    "400": apidoc.error_response("Without `?all`: not supported."),
                    **responses(
                        "Unauthorized", "NotFound", "UnprocessableEntity", "ServiceUnavailable"
                    ),
                },
            }
        },
        "/policies/{account}/policy/{identifier}": {
            "post": _policy_operation("load", "Add to a policy (create privilege)"),
            "put": _policy_operation("replace", "Replace a policy (update privilege)"),
            "patch": _policy_operation("update", "Update a policy, deletions too (update)"),
        },
    }


def document() -> dict[str, Any]:
    return apidoc.document(
        title="payapi vault (Conjur subset)",
        version=VERSION,
        description=(
            "The CyberArk Conjur REST API, as far as payapi's vault serves it. Errors are "
            "Conjur's JSON (`code`, `message`, `target`, `details`) inside payapi's error "
            "envelope. " + apidoc.METHOD_NOTE
        ),
        paths=_paths(),
        schemas=_schemas(),
        security_schemes={
            "conjurToken": {
                "type": "apiKey",
                "in": "header",
                "name": "Authorization",
                "description": 'A Conjur access token: `Token token="<base64 of the token '
                'JSON from authenticate>"`.',
            },
            "basicAuth": {
                "type": "http",
                "scheme": "basic",
                "description": "The login and its API key (login, rotating your own key).",
            },
        },
        challenge=CHALLENGE,
    )
