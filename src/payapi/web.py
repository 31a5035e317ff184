"""HTTP plumbing shared by the services: request ids and the JSON error envelope.

Every 4xx/5xx answer is ``{"error": {"type", "code", "message", "param", "request_id"}}``
and carries an ``X-Request-ID`` header, so an operator can find the log line of any
failed call. Error messages never contain request headers or bodies (secrets live there).
"""

from __future__ import annotations

import re
import uuid
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from payapi.logs import get_logger

REQUEST_ID_HEADER = "x-request-id"
_VALID_RID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")

log = get_logger("payapi.web")


class JSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


class ApiError(Exception):
    """Raised by route code; becomes the error envelope with ``status``."""

    def __init__(
        self,
        status: int,
        type_: str,
        code: str,
        message: str,
        *,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.type = type_
        self.code = code
        self.message = message
        self.param = param
        self.headers = headers or {}


class RequestIdMiddleware:
    """Pure ASGI (cheap on the hot path): take a sane incoming id or make one."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = ""
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                candidate = value.decode("latin-1")
                if _VALID_RID.match(candidate):
                    rid = candidate
                break
        if not rid:
            rid = uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = rid
        raw = rid.encode()

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", raw))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_id)


def request_id(request: Request) -> str:
    rid = getattr(request.state, "request_id", None)
    return rid if isinstance(rid, str) else ""


def error_response(
    request: Request,
    status: int,
    type_: str,
    code: str,
    message: str,
    param: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body = {
        "error": {
            "type": type_,
            "code": code,
            "message": message,
            "param": param,
            "request_id": request_id(request),
        }
    }
    return JSONResponse(body, status_code=status, headers=headers)


_STATUS_TYPES = {
    400: ("invalid_request_error", "bad_request"),
    401: ("authentication_error", "unauthorized"),
    403: ("authorization_error", "forbidden"),
    404: ("invalid_request_error", "not_found"),
    405: ("invalid_request_error", "method_not_allowed"),
    409: ("conflict_error", "conflict"),
    413: ("invalid_request_error", "payload_too_large"),
    415: ("invalid_request_error", "unsupported_media_type"),
    422: ("validation_error", "invalid"),
    429: ("rate_limit_error", "rate_limited"),
    503: ("service_unavailable", "unavailable"),
}


def _param_of(loc: tuple[Any, ...] | list[Any]) -> str | None:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or None


def install_error_handlers(app: FastAPI) -> None:
    app.add_middleware(RequestIdMiddleware)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> Response:
        return error_response(
            request, exc.status, exc.type, exc.code, exc.message, exc.param, exc.headers
        )

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> Response:
        errors = exc.errors()
        first = errors[0] if errors else {}
        if first.get("type") == "json_invalid":
            return error_response(
                request, 400, "invalid_request_error", "malformed_json", "body is not valid JSON"
            )
        param = _param_of(first.get("loc", ()))
        # pydantic's message only; never the input value, which may be a secret.
        msg = str(first.get("msg", "invalid request"))
        return error_response(request, 422, "validation_error", "invalid", msg, param)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        type_, code = _STATUS_TYPES.get(exc.status_code, ("api_error", "error"))
        message = exc.detail if isinstance(exc.detail, str) else code
        return error_response(request, exc.status_code, type_, code, message)

    @app.exception_handler(ClientDisconnect)
    async def _gone(request: Request, exc: ClientDisconnect) -> Response:
        # The client went away mid-request (a load generator stopping, a timeout): not
        # our error, and nobody is there to read an answer.
        return Response(status_code=499)

    @app.exception_handler(Exception)
    async def _unhandled(request: Request, exc: Exception) -> Response:
        log.error("unhandled_error", error_type=type(exc).__name__, request_id=request_id(request))
        return error_response(request, 500, "api_error", "internal_error", "internal error")
