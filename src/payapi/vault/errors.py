"""Conjur-shaped errors: ``{"error": {"code", "message", "target"?, "details"?, …}}``.

Every body is also payapi's error envelope: ``type``, ``code``, ``message``, ``param``
and ``request_id`` as EAPI and SAPI answer them (:mod:`payapi.web`). Status codes follow
Conjur: 401 for bad credentials or tokens, 403 when a visible
resource lacks the privilege, 404 for missing *or invisible* resources (so that a role
cannot probe for what it may not see), 409 for concurrent policy loads, 422 for invalid
input and policies. Messages name identifiers only: never a secret value, API key or
token. A ``request_id`` is added inside the error object (clients ignore unknown fields)
so that an operator can find the log line.
"""

from __future__ import annotations

from typing import Any

from payapi.web import STATUS_TYPES


class ConjurError(Exception):
    """Raised by service and route code; the app renders it as Conjur's error JSON."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        target: str | None = None,
        details: Any = None,
        innererror: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.target = target
        self.details = details
        self.innererror = innererror
        self.headers = headers or {}
        self.param = param

    def body(self, request_id: str = "") -> dict[str, Any]:
        # Conjur's fields, plus payapi's envelope (``type``, ``param``, ``request_id``):
        # Conjur's clients read the status and ignore fields they do not know.
        type_ = STATUS_TYPES.get(self.status, ("api_error", ""))[0]
        err: dict[str, Any] = {
            "type": type_,
            "code": self.code,
            "message": self.message,
            "param": self.param,
        }
        if self.target is not None:
            err["target"] = self.target
        if self.details is not None:
            err["details"] = self.details
        if self.innererror is not None:
            err["innererror"] = self.innererror
        err["request_id"] = request_id
        return {"error": err}


def unauthorized(message: str = "Unauthorized") -> ConjurError:
    return ConjurError(401, "unauthorized", message)


def forbidden(message: str = "Forbidden") -> ConjurError:
    return ConjurError(403, "forbidden", message)


def not_found(resource_id: str, message: str | None = None) -> ConjurError:
    """Conjur's RecordNotFound: target is the kind, details name the id."""
    kind = resource_id.split(":", 2)[1] if resource_id.count(":") >= 2 else None
    return ConjurError(
        404,
        "not_found",
        message or f"{kind.capitalize() if kind else 'Record'} '{resource_id}' not found",
        target=kind,
        details={"code": "not_found", "target": "id", "message": resource_id},
    )


def missing_secret(resource_id: str) -> ConjurError:
    return not_found(resource_id, f"CONJ00076E Variable {resource_id} is empty or not found.")


def unprocessable(message: str, code: str = "argument_error") -> ConjurError:
    return ConjurError(422, code, message)


def policy_invalid(message: str, line: int | None, column: int | None) -> ConjurError:
    return ConjurError(
        422,
        "policy_invalid",
        message,
        innererror={"code": "policy_invalid", "line": line, "column": column},
    )
