"""The Conjur REST endpoints, thin: parse the request, authenticate, call ``service``.

Identifiers arrive percent-encoded with slashes encoded too
(``payment-system%2Fclients%2Fxyz-vendor%2Fclient-id``); Starlette decodes the path before
routing, so ``{identifier:path}`` receives the plain id whether or not slashes were encoded.

Authentication (``Caller``): most endpoints take a Conjur access token
(``Authorization: Token token="<base64>"``); login and personal key rotation take HTTP
Basic with the login and the API key.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from fastapi import APIRouter, Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response

from payapi import pgfailure
from payapi.core.logs import get_logger
from payapi.vault import availability, errors, ids, service
from payapi.vault.db import Connection
from payapi.vault.policy import PolicyInvalid, resolve
from payapi.vault.service import PolicyMode
from payapi.vault.state import VaultState, get_state
from payapi.vault.tokens import InvalidToken
from payapi.web import JSONResponse, read_body, request_id

log = get_logger("payapi.vault.routes")

router = APIRouter()

# The Conjur OSS version whose API this server speaks; the official client reads it from
# "/" (it needs >= 1.21.1 to allow policy dry runs).
CONJUR_API_VERSION = "1.21.1"
MAX_SECRET_BYTES = 1024 * 1024
MAX_POLICY_BYTES = 5 * 1024 * 1024
MAX_INT_PARAM = 2**31 - 1


@dataclass(frozen=True)
class Caller:
    account: str
    role_id: str
    login: str
    issued_at: int
    via: Literal["token", "basic"]


# -- helpers -------------------------------------------------------------------------


async def _body(request: Request, limit: int, what: str) -> bytes:
    return await read_body(
        request,
        limit,
        error=lambda: errors.ConjurError(
            413, "payload_too_large", f"{what} is larger than {limit} bytes"
        ),
    )


async def _token_caller(conn: Connection, state: VaultState, request: Request) -> Caller:
    try:
        claims = state.tokens.verify_header(request.headers.get("authorization"))
    except InvalidToken as exc:
        log.info("vault_token_rejected", reason=str(exc))
        raise errors.unauthorized("Authorization missing or invalid") from None
    role_id = ids.role_id_from_login(claims.account, claims.login)
    if not await service.role_exists(conn, role_id=role_id):
        raise errors.unauthorized("Authorization missing or invalid")
    return Caller(claims.account, role_id, claims.login, claims.issued_at, "token")


def _basic_credentials(request: Request) -> tuple[str, str] | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic" or not value:
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return None
    login, sep, password = decoded.partition(":")
    if not sep or not login or not password:
        return None
    return login, password


async def _basic_caller(conn: Connection, request: Request, account: str) -> Caller:
    creds = _basic_credentials(request)
    if creds is None:
        raise errors.unauthorized("Client not authenticated")
    login, api_key = creds
    if not (ids.valid_account(account) and ids.storable(login) and ids.storable(api_key)):
        raise errors.unauthorized("Client not authenticated")
    if not await service.account_exists(conn, account=account):
        raise errors.unauthorized("Client not authenticated")
    role_id = ids.role_id_from_login(account, login)
    if not await service.verify_api_key(conn, role_id=role_id, api_key=api_key):
        log.info("vault_basic_auth_failed", role=role_id)
        raise errors.unauthorized("Client not authenticated")
    return Caller(account, role_id, login, 0, "basic")


def _resource_id(account: str, kind: str, identifier: str) -> str:
    """The full id of a path's resource; ids we would never accept cannot exist: 404."""
    rid = ids.full_id(account, kind, identifier)
    if (
        kind not in ids.KINDS
        or not ids.valid_account(account)
        or not (ids.valid_identifier(identifier) or identifier == ids.ROOT_POLICY)
    ):
        raise errors.not_found(rid)
    return rid


def _int_param(request: Request, name: str, *, minimum: int = 0) -> int | None:
    """An integer query parameter: absent is None; empty, repeated (which one did the
    caller mean?) or not an integer is 422."""
    values = request.query_params.getlist(name)
    if not values:
        return None
    if len(values) > 1:
        raise errors.unprocessable(f"{name} is given more than once")
    raw = values[0]
    try:
        value = int(raw)
    except ValueError:
        raise errors.unprocessable(f"{name} must be an integer") from None
    if value < minimum:
        raise errors.unprocessable(f"{name} must be >= {minimum}")
    if value > MAX_INT_PARAM:  # PostgreSQL's integer: a bigger one would fail the query
        raise errors.unprocessable(f"{name} must be <= {MAX_INT_PARAM}")
    return value


def _wants_base64(request: Request) -> bool:
    """Conjur answers base64 when any Accept-Encoding entry is exactly ``base64``."""
    header = request.headers.get("accept-encoding", "")
    return any(part.strip().lower() == "base64" for part in header.split(","))


# -- status --------------------------------------------------------------------------


@router.get("/", include_in_schema=False)
async def root() -> HTMLResponse:
    """Conjur OSS answers an HTML status page; the official client parses its version."""
    return HTMLResponse(
        "<!DOCTYPE html><html><head><title>payapi vault</title></head><body>"
        "<h1>payapi vault</h1><p>Status: running. Speaks the CyberArk Conjur REST API.</p>"
        f"<dl><dt>API</dt><dd>Version {CONJUR_API_VERSION}</dd></dl></body></html>"
    )


@router.get("/health")
async def health(request: Request) -> Response:
    """200 while the vault can serve: ``"role": "active"`` on a writable database,
    ``"standby"`` on a standby (reads only, until promotion). 503 when no database answers,
    or when a vault that wants a writer finds only a read-only one (a failover under way)."""
    state = get_state(request)
    try:
        pool = state.require_pool()
        async with pool.acquire(timeout=2.0) as conn:
            role = await asyncio.wait_for(availability.database_role(conn), 2.0)
    except Exception as exc:  # any failure means "not healthy"; say which kind only
        log.warning("vault_health_failed", error_type=type(exc).__name__)
        await availability.after_failure(state.pool, exc)
        return _unhealthy(request, "vault database unreachable", "unreachable")
    if role == "standby" and not state.accepts_standby:
        await pgfailure.discard_connections(state.pool)  # the next check connects again
        return _unhealthy(request, "vault database is read-only", "read-only")
    if role == "standby" and state.seeks_writer:
        # A writer may be among the hosts now (the region's leader moved to a member
        # this connection is not on): the next check connects again, writer first.
        await pgfailure.discard_connections(state.pool)
    return JSONResponse({"status": "ok", "database": "ok", "role": role})


def _unhealthy(request: Request, message: str, database: str) -> Response:
    body = errors.ConjurError(503, "unhealthy", message).body(request_id(request))
    body.update({"status": "unavailable", "database": database})
    return JSONResponse(body, 503)


# -- authn ---------------------------------------------------------------------------


@router.get("/authn/{account}/login")
async def login(account: str, request: Request) -> Response:
    """Basic login → the API key. We keep only a hash, so the password *is* the API key."""
    state = get_state(request)
    async with state.require_pool().acquire() as conn:
        await _basic_caller(conn, request, account)
    creds = _basic_credentials(request)
    assert creds is not None
    return PlainTextResponse(creds[1])


@router.post("/authn/{account}/{login:path}/authenticate")
async def authenticate(account: str, login: str, request: Request) -> Response:
    state = get_state(request)
    api_key = (await _body(request, 4096, "API key")).decode("utf-8", "replace").strip()
    role_id = ids.role_id_from_login(account, login)
    if not (ids.valid_account(account) and ids.storable(login) and ids.storable(api_key)):
        log.info("vault_authenticate_failed", role="(invalid)")
        raise errors.unauthorized()
    async with state.require_pool().acquire() as conn:
        ok = bool(api_key) and await service.account_exists(conn, account=account)
        ok = ok and await service.verify_api_key(conn, role_id=role_id, api_key=api_key)
    if not ok:
        log.info("vault_authenticate_failed", role=role_id)
        raise errors.unauthorized()
    token = state.tokens.issue(account, login)
    if _wants_base64(request):
        return PlainTextResponse(
            base64.b64encode(token).decode("ascii"), headers={"Content-Encoding": "base64"}
        )
    return Response(token, media_type="application/json")


@router.put("/authn/{account}/api_key")
async def rotate_api_key(account: str, request: Request) -> Response:
    """Conjur's rules: your own key with Basic auth only; another role's key with a token
    and ``update`` on that role (owners have it)."""
    state = get_state(request)
    role_param = request.query_params.get("role") or None
    async with state.require_pool().acquire() as conn, conn.transaction():
        await availability.require_writable(conn, state)
        if request.headers.get("authorization", "").lower().startswith("basic "):
            caller = await _basic_caller(conn, request, account)
        else:
            caller = await _token_caller(conn, state, request)
            if caller.account != account:
                raise errors.unauthorized("Operation attempted against foreign account")
        target = caller.role_id
        if role_param:
            try:
                target = ids.make_full_id(role_param, account)
            except ids.InvalidId:
                raise errors.unprocessable("role must be kind:identifier") from None
            if not await service.role_exists(conn, role_id=target):
                raise errors.not_found(target)
        if target == caller.role_id:
            if caller.via == "token":
                raise errors.unauthorized("Credential strength is insufficient")
        else:
            if caller.via == "basic":
                raise errors.unauthorized("Operation attempted against foreign user")
            acc = await service.access(
                conn, role_id=caller.role_id, resource_id=target, privilege="update"
            )
            if not acc.visible:
                raise errors.not_found(target)
            if not acc.allowed:
                raise errors.forbidden()
        if not await service.has_credentials(conn, role_id=target):
            raise errors.unprocessable(f"{target} has no API key to rotate")
        key = await service.rotate_api_key(conn, role_id=target)
    log.info("vault_api_key_rotation", role=target, by=caller.role_id)
    return PlainTextResponse(key)


@router.get("/whoami")
async def whoami(request: Request) -> Response:
    state = get_state(request)
    async with state.require_pool().acquire() as conn:
        caller = await _token_caller(conn, state, request)
    return JSONResponse(
        {
            "client_ip": request.client.host if request.client else None,
            "user_agent": request.headers.get("user-agent"),
            "account": caller.account,
            "username": caller.login,
            "token_issued_at": service.timestamp(datetime.fromtimestamp(caller.issued_at, UTC)),
        }
    )


# -- secrets -------------------------------------------------------------------------


@router.get("/secrets")
async def batch_secrets(request: Request) -> Response:
    """All or nothing: one missing variable or value → 404, one forbidden → 403."""
    state = get_state(request)
    raw = request.query_params.get("variable_ids", "")
    wanted = raw.split(",") if raw else []
    if not wanted or any(not v for v in wanted):
        raise errors.unprocessable("variable_ids must be a comma-separated list of ids")
    duplicates = sorted({v for v in wanted if wanted.count(v) > 1})
    if duplicates:
        raise errors.unprocessable(
            f"variable_ids contains duplicates: {','.join(duplicates)}", "duplicate_variable"
        )
    async with state.require_pool().acquire() as conn:
        caller = await _token_caller(conn, state, request)
        for rid in wanted:
            if not ids.valid_full_id(rid):  # an id we would never store cannot exist
                raise errors.missing_secret(rid)
        allowed = await service.allowed_many(
            conn, role_id=caller.role_id, resource_ids=wanted, privilege="execute"
        )
        for rid in wanted:
            if rid not in allowed:
                raise errors.missing_secret(rid)
        for rid in wanted:
            if not allowed[rid]:
                log.info("vault_forbidden", role=caller.role_id, resource=rid, privilege="execute")
                raise errors.forbidden()
        values = await service.fetch_latest_many(conn, state.cipher, resource_ids=wanted)
    for rid in wanted:
        if rid not in values:
            raise errors.missing_secret(rid)
    log.info("vault_secrets_fetched", role=caller.role_id, count=len(wanted))
    if _wants_base64(request):
        body = {rid: base64.b64encode(values[rid]).decode("ascii") for rid in wanted}
        return JSONResponse(body, headers={"Content-Encoding": "base64"})
    try:
        return JSONResponse({rid: values[rid].decode("utf-8") for rid in wanted})
    except UnicodeDecodeError:
        raise errors.ConjurError(
            406,
            "not_acceptable",
            "Issue encoding secret into JSON format, try including "
            "'Accept-Encoding: base64' header in request.",
        ) from None


@router.get("/secrets/{account}/{kind}/{identifier:path}")
async def fetch_secret(account: str, kind: str, identifier: str, request: Request) -> Response:
    state = get_state(request)
    version = _int_param(request, "version", minimum=1)
    async with state.require_pool().acquire() as conn:
        caller = await _token_caller(conn, state, request)
        rid = _resource_id(account, kind, identifier)
        await service.authorize(conn, role_id=caller.role_id, resource_id=rid, privilege="execute")
        value = await service.fetch_secret(conn, state.cipher, resource_id=rid, version=version)
        if value is None:
            if version is not None:
                raise errors.not_found(rid, "Requested version does not exist")
            raise errors.missing_secret(rid)
        mime = await service.annotation(conn, resource_id=rid, name="conjur/mime_type")
    log.info("vault_secret_fetched", role=caller.role_id, resource=rid, version=version)
    return Response(value, media_type=mime or "application/octet-stream")


@router.post("/secrets/{account}/{kind}/{identifier:path}")
async def store_secret(account: str, kind: str, identifier: str, request: Request) -> Response:
    state = get_state(request)
    if request.query_params.get("expirations") is not None:
        raise errors.ConjurError(501, "not_implemented", "secret expirations are not supported")
    value = await _body(request, MAX_SECRET_BYTES, "secret value")
    async with state.require_pool().acquire() as conn, conn.transaction():
        await availability.require_writable(conn, state)
        caller = await _token_caller(conn, state, request)
        rid = _resource_id(account, kind, identifier)
        await service.authorize(conn, role_id=caller.role_id, resource_id=rid, privilege="update")
        if not value:
            raise errors.unprocessable("'value' may not be empty")
        await service.store_secret(
            conn, state.cipher, resource_id=rid, value=value, keep=state.settings.versions_kept
        )
    return Response(status_code=201)


# -- resources -----------------------------------------------------------------------


async def _list(account: str, kind: str | None, request: Request) -> Response:
    state = get_state(request)
    async with state.require_pool().acquire() as conn:
        # The caller first: not even "no such kind" is answered to a stranger.
        caller = await _token_caller(conn, state, request)
        search = request.query_params.get("search") or None
        limit = _int_param(request, "limit", minimum=0)
        offset = _int_param(request, "offset", minimum=0) or 0
        count = request.query_params.get("count") == "true"
        if search is not None and not ids.storable(search):
            raise errors.unprocessable("search cannot contain NUL")
        if (kind is not None and kind not in ids.KINDS) or not ids.valid_account(account):
            return JSONResponse({"count": 0} if count else [])  # nothing can be there
        if count:
            n = await service.count_visible_resources(
                conn, role_id=caller.role_id, account=account, kind=kind, search=search
            )
            return JSONResponse({"count": n})
        found = await service.visible_resource_ids(
            conn,
            role_id=caller.role_id,
            account=account,
            kind=kind,
            search=search,
            limit=limit,
            offset=offset,
        )
        docs = await service.describe_resources(conn, resource_ids=found)
    return JSONResponse(docs)


@router.get("/resources/{account}")
async def list_resources(account: str, request: Request) -> Response:
    return await _list(account, request.query_params.get("kind") or None, request)


@router.get("/resources/{account}/{kind}")
async def list_resources_of_kind(account: str, kind: str, request: Request) -> Response:
    return await _list(account, kind, request)


@router.api_route("/resources/{account}/{kind}/{identifier:path}", methods=["GET", "HEAD"])
async def show_resource(account: str, kind: str, identifier: str, request: Request) -> Response:
    """Show, or ``?check=true`` (204/404), or ``?permitted_roles=true``."""
    state = get_state(request)
    q = request.query_params
    async with state.require_pool().acquire() as conn:
        caller = await _token_caller(conn, state, request)
        rid = _resource_id(account, kind, identifier)
        acc = await service.access(conn, role_id=caller.role_id, resource_id=rid, privilege="read")
        if not acc.visible:
            raise errors.not_found(rid)
        if q.get("check") == "true":
            privilege = q.get("privilege")
            if not privilege:
                raise errors.unprocessable("privilege is required")
            if not ids.valid_privilege(privilege):
                raise errors.unprocessable("privilege must be a word such as execute")
            role_id = caller.role_id
            if q.get("role"):
                try:
                    role_id = ids.make_full_id(q["role"], account)
                except ids.InvalidId:
                    raise errors.unprocessable("role must be kind:identifier") from None
                if role_id != caller.role_id:
                    seen = await service.access(
                        conn, role_id=caller.role_id, resource_id=role_id, privilege="read"
                    )
                    if not seen.visible:
                        raise errors.not_found(role_id)
            checked = await service.access(
                conn, role_id=role_id, resource_id=rid, privilege=privilege
            )
            if not checked.allowed:
                # Conjur answers a bare 404; its clients read only the status.
                raise errors.ConjurError(404, "not_found", f"{role_id} does not hold {privilege}")
            return Response(status_code=204)
        if q.get("permitted_roles") == "true":
            privilege = q.get("privilege") or q.get("permission")
            if not privilege:
                raise errors.unprocessable("privilege is required")
            if not ids.valid_privilege(privilege):
                raise errors.unprocessable("privilege must be a word such as execute")
            roles = await service.permitted_roles(conn, resource_id=rid, privilege=privilege)
            return JSONResponse(roles)
        docs = await service.describe_resources(conn, resource_ids=[rid])
    if request.method == "HEAD":
        return Response(status_code=200)
    return JSONResponse(docs[0])


# -- roles ---------------------------------------------------------------------------


@router.get("/roles/{account}/{kind}/{identifier:path}")
async def show_role(account: str, kind: str, identifier: str, request: Request) -> Response:
    """``?all``: the roles this role is, recursively (itself included), as Conjur lists
    them. A caller sees its own memberships, or those of a role it can see."""
    state = get_state(request)
    if "all" not in request.query_params:
        # Bad input, not an outage: a client that omits ?all gets a 4xx (never a 5xx).
        raise errors.ConjurError(400, "bad_request", "only ?all is supported on roles")
    async with state.require_pool().acquire() as conn:
        caller = await _token_caller(conn, state, request)
        rid = _resource_id(account, kind, identifier)
        if kind not in ids.ROLE_KINDS or not await service.role_exists(conn, role_id=rid):
            raise errors.not_found(rid)
        if rid != caller.role_id:
            seen = await service.access(
                conn, role_id=caller.role_id, resource_id=rid, privilege="read"
            )
            if not seen.visible:
                raise errors.not_found(rid)
        roles = await service.memberships(conn, role_id=rid)
    return JSONResponse(roles)


# -- policies ------------------------------------------------------------------------


class _DryRunRollback(Exception):
    """Raised inside the transaction of a dry run so that nothing is kept."""


async def _load_policy(
    account: str, identifier: str, request: Request, mode: PolicyMode
) -> Response:
    state = get_state(request)
    dry_run = request.query_params.get("dryRun", "").lower() == "true"
    raw = await _body(request, MAX_POLICY_BYTES, "policy")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise errors.policy_invalid("policy is not UTF-8 text", None, None) from None
    privilege = "create" if mode == "POST" else "update"
    result: service.PolicyResult | None = None
    pool = state.require_pool()
    async with pool.acquire() as conn:
        await availability.require_writable(conn, state)
        try:
            async with conn.transaction():
                caller = await _token_caller(conn, state, request)
                policy_id = _resource_id(account, "policy", identifier)
                await service.authorize(
                    conn, role_id=caller.role_id, resource_id=policy_id, privilege=privilege
                )
                try:
                    doc = resolve(text, account, identifier)
                except PolicyInvalid as exc:
                    if dry_run:
                        # Conjur's dry-run keys, inside the error envelope.
                        err = errors.policy_invalid(exc.message, exc.line, exc.column)
                        body = err.body(request_id(request))
                        body["status"] = "Invalid YAML"
                        body["errors"] = [
                            {"line": exc.line, "column": exc.column, "message": exc.message}
                        ]
                        return JSONResponse(body, 422)
                    raise errors.policy_invalid(exc.message, exc.line, exc.column) from None
                result = await service.apply_policy(
                    conn, doc=doc, mode=mode, loader=caller.role_id, policy_text=text
                )
                if dry_run:
                    raise _DryRunRollback
        except _DryRunRollback:
            assert result is not None

            def items(rids: list[str]) -> dict[str, list[dict[str, str]]]:
                out = []
                for rid in rids:
                    _, kind, ident = ids.split_full_id(rid)
                    out.append({"identifier": rid, "id": ident, "type": kind})
                return {"items": out}

            return JSONResponse(
                {
                    "status": "Valid YAML",
                    "created": items(result.created),
                    "updated": items(result.updated),
                    "deleted": items(result.deleted),
                }
            )
    assert result is not None
    return JSONResponse(
        {"created_roles": result.created_roles, "version": result.version}, status_code=201
    )


@router.post("/policies/{account}/policy/{identifier:path}")
async def load_policy(account: str, identifier: str, request: Request) -> Response:
    return await _load_policy(account, identifier, request, "POST")


@router.put("/policies/{account}/policy/{identifier:path}")
async def replace_policy(account: str, identifier: str, request: Request) -> Response:
    return await _load_policy(account, identifier, request, "PUT")


@router.patch("/policies/{account}/policy/{identifier:path}")
async def update_policy(account: str, identifier: str, request: Request) -> Response:
    return await _load_policy(account, identifier, request, "PATCH")
