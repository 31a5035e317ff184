"""HTTP plumbing shared by the services: request ids and the JSON error envelope.

Every 4xx/5xx answer is ``{"error": {"type", "code", "message", "param", "request_id"}}``
and carries an ``X-Request-ID`` header, so an operator can find the log line of any
failed call. Error messages never contain request headers or bodies (secrets live there).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Awaitable, Callable, Collection, Mapping
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response
from starlette.routing import Match, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from payapi.core.logs import get_logger

REQUEST_ID_HEADER = "x-request-id"
_VALID_RID = re.compile(r"^[A-Za-z0-9._-]{1,64}\Z")

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


class PlainRoute(Route):
    """A plain Starlette route for the hot paths: ``endpoint(request)`` is called as is,
    with no FastAPI dependency solver or response model in between (docs/benchmarks.md).

    It behaves as FastAPI's ``APIRoute`` where callers can tell: it sets
    ``scope["route"]`` (the metrics label is the route template, such as
    ``/api/v1/payments/{payment_id}``, never the raw path), and it answers only the
    ``methods`` given (Starlette adds HEAD to every GET route; FastAPI does not, and a
    HEAD stays a 405 with the same ``Allow``). Errors raised by the endpoint reach the
    same exception handlers, so the envelope and the request id are unchanged.
    """

    def __init__(
        self,
        path: str,
        endpoint: Callable[[Request], Awaitable[Response]],
        *,
        methods: Collection[str],
    ) -> None:
        super().__init__(path, endpoint, methods=list(methods))
        assert self.methods is not None
        self.methods.intersection_update(m.upper() for m in methods)

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        match, child_scope = super().matches(scope)
        if match is not Match.NONE:
            child_scope["route"] = self
        return match, child_scope


def too_large(limit: int, what: str = "request body") -> ApiError:
    return ApiError(
        413, "invalid_request_error", "payload_too_large", f"{what} is larger than {limit} bytes"
    )


async def read_body(
    request: Request, limit: int, *, error: Callable[[], Exception] | None = None
) -> bytes:
    """The request body, refused as soon as it passes ``limit`` bytes: a declared
    ``Content-Length`` over the limit is refused before reading anything, a chunked body
    while it streams in, so no more than ``limit`` bytes (plus one chunk) are ever held.
    ``error`` makes the exception (default: the 413 envelope)."""
    make = error or (lambda: too_large(limit))
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise make()
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise make()
        chunks.append(chunk)
    return b"".join(chunks)


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


STATUS_TYPES = {
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


def with_request_id_header(request: Request, response: Response) -> Response:
    """``response`` with the request's ``X-Request-ID``. Starlette answers an unhandled
    exception outside every middleware, so ``RequestIdMiddleware`` never sees a 500; its
    handler adds the header itself."""
    response.headers[REQUEST_ID_HEADER] = request_id(request)
    return response


def _param_of(loc: tuple[Any, ...] | list[Any]) -> str | None:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or None


def with_challenge(
    status: int, headers: Mapping[str, str] | None, challenge: str
) -> dict[str, str] | None:
    """``headers`` plus ``WWW-Authenticate: challenge`` on a 401 that lacks one (RFC 9110
    says a 401 must say how to authenticate)."""
    if status != 401 or any(k.lower() == "www-authenticate" for k in headers or {}):
        return dict(headers) if headers else None
    return {**(headers or {}), "WWW-Authenticate": challenge}


def allowed_methods(request: Request) -> str | None:
    """The ``Allow`` value of a 405: the methods of *every* route whose path matches.
    Starlette's own lists only the first such route's, and FastAPI makes one route per
    method (GET and POST on one path are two routes)."""
    methods: set[str] = set()
    stack = list(request.app.router.routes)
    while stack:
        route = stack.pop()
        included = getattr(route, "original_router", None)  # include_router, no prefix
        if included is not None:
            stack.extend(included.routes)
        elif route.matches(request.scope)[0] is Match.PARTIAL:
            methods |= set(getattr(route, "methods", None) or ())
    return ", ".join(sorted(methods)) if methods else None


def method_not_allowed_headers(
    request: Request, headers: Mapping[str, str] | None
) -> dict[str, str]:
    out = {k: v for k, v in (headers or {}).items() if k.lower() != "allow"}
    allow = allowed_methods(request)
    if allow is None:
        return dict(headers or {})
    out["Allow"] = allow
    return out


def install_error_handlers(app: FastAPI, *, challenge: str = 'Bearer realm="payapi"') -> None:
    """The error envelope for every failure; ``challenge`` is the ``WWW-Authenticate``
    value of this service's 401 answers."""
    app.add_middleware(RequestIdMiddleware)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> Response:
        headers = with_challenge(exc.status, exc.headers, challenge)
        return error_response(
            request, exc.status, exc.type, exc.code, exc.message, exc.param, headers
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
        type_, code = STATUS_TYPES.get(exc.status_code, ("api_error", "error"))
        message = exc.detail if isinstance(exc.detail, str) else code
        # RFC 9110: a 405 must list the methods of the path in Allow.
        raw = exc.headers
        if exc.status_code == 405:
            raw = method_not_allowed_headers(request, raw)
        headers = with_challenge(exc.status_code, raw, challenge)
        return error_response(request, exc.status_code, type_, code, message, headers=headers)

    @app.exception_handler(ClientDisconnect)
    async def _gone(request: Request, exc: ClientDisconnect) -> Response:
        # The client went away mid-request (a load generator stopping, a timeout): not
        # our error, and nobody is there to read an answer.
        return Response(status_code=499)

    @app.exception_handler(Exception)
    async def _unhandled(request: Request, exc: Exception) -> Response:
        log.error("unhandled_error", error_type=type(exc).__name__, request_id=request_id(request))
        response = error_response(request, 500, "api_error", "internal_error", "internal error")
        return with_request_id_header(request, response)


def validation_error(exc: ValidationError) -> ApiError:
    """The first problem of ``exc`` as a 422 naming the field (never echoing the input)."""
    errors = exc.errors(include_url=False, include_input=False)
    first: Mapping[str, Any] = errors[0] if errors else {}
    if first.get("type") in ("model_type", "model_attributes_type", "dict_type"):
        return ApiError(422, "validation_error", "invalid", "body must be a JSON object")
    loc = [str(p) for p in first.get("loc", ())]
    message = str(first.get("msg", "invalid request"))
    if first.get("type") == "extra_forbidden":
        message = "unknown field"
    return ApiError(422, "validation_error", "invalid", message, param=".".join(loc) or None)
