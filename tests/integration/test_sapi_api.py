"""Payment-SAPI over HTTP (ASGI, with lifespan) on a real PostgreSQL database."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import asyncpg
import httpx
import pytest
from fastapi import FastAPI
from pydantic import SecretStr

from payapi.core.settings import SapiSettings, Settings
from payapi.sapi.app import create_app
from payapi.sapi.auth import ServiceAuth
from payapi.schemas import Payment
from payapi.servers.postgres import PgCluster
from payapi.vault.client import VaultUnavailable

PAYMENTS = "/api/internal/payments"
CLIENT = "client-a-0123456789abcdef"
OTHER = "client-b-0123456789abcdef"
GOOD = {"amount": "100.00", "currency": "USD", "reference": "TEST-12345"}
ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


class TokenBox:
    """Stands in for the vault: holds the current service token; can go down."""

    def __init__(self, value: str) -> None:
        self.value = value
        self.down = False

    async def __call__(self) -> SecretStr:
        await asyncio.sleep(0)
        if self.down:
            raise VaultUnavailable("vault unreachable (variable token): ConnectError")
        return SecretStr(self.value)


@dataclass
class Sapi:
    app: FastAPI
    http: httpx.AsyncClient
    tokens: TokenBox
    dsn: str

    def headers(self, client: str = CLIENT, **extra: str) -> dict[str, str]:
        h = {"Authorization": f"Bearer {self.tokens.value}", "X-Client-ID": client}
        h.update(extra)
        return h

    async def pay(
        self, body: Any = None, *, client: str = CLIENT, key: str | None = None, **kw: Any
    ) -> httpx.Response:
        headers = self.headers(client)
        if key is not None:
            headers["Idempotency-Key"] = key
        if "content" in kw:
            return await self.http.post(PAYMENTS, headers=headers, content=kw["content"])
        return await self.http.post(PAYMENTS, headers=headers, json=GOOD if body is None else body)

    async def rows(self, sql: str = "SELECT count(*) FROM payments") -> Any:
        conn = await asyncpg.connect(self.dsn)
        try:
            return await conn.fetchval(sql)
        finally:
            await conn.close()


def settings_for(dsn: str) -> Settings:
    return Settings(sapi=SapiSettings(dsn=dsn, pool_min=1, pool_max=8))


@asynccontextmanager
async def running(
    dsn: str, tokens: TokenBox, *, refresh_interval: float = 0.05
) -> AsyncIterator[Sapi]:
    auth = ServiceAuth(tokens, refresh_interval=refresh_interval)
    app = create_app(settings_for(dsn), service_auth=auth)
    try:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://sapi") as http:
                yield Sapi(app, http, tokens, dsn)
    finally:
        await auth.aclose()


@pytest.fixture
async def sapi(fresh_db: str) -> AsyncIterator[Sapi]:
    async with running(fresh_db, TokenBox("service-token-1")) as s:
        yield s


def error_of(resp: httpx.Response) -> dict[str, Any]:
    err: dict[str, Any] = resp.json()["error"]
    assert set(err) == {"type", "code", "message", "param", "request_id"}
    assert err["request_id"] == resp.headers["x-request-id"]
    return err


# -- creating and reading -----------------------------------------------------------------


async def test_create_and_read_a_payment(sapi: Sapi) -> None:
    resp = await sapi.pay()
    assert resp.status_code == 201, resp.text
    body = resp.json()
    assert set(body) == {"id", "amount", "currency", "reference", "status", "created_at"}
    uuid.UUID(body["id"])
    assert body["amount"] == "100.00"
    assert body["currency"] == "USD"
    assert body["reference"] == "TEST-12345"
    assert body["status"] == "succeeded"
    assert ISO_UTC.match(body["created_at"])
    Payment.model_validate(body)

    got = await sapi.http.get(f"{PAYMENTS}/{body['id']}", headers=sapi.headers())
    assert got.status_code == 200
    assert got.json() == body
    stored = await sapi.rows(f"SELECT amount FROM payments WHERE id = '{body['id']}'")
    assert stored == Decimal("100.00")


async def test_float_looking_amount_is_exact(sapi: Sapi) -> None:
    resp = await sapi.pay(content=b'{"amount": 100.1, "currency": "EUR", "reference": "R-1"}')
    assert resp.status_code == 201, resp.text
    assert resp.json()["amount"] == "100.10"
    resp = await sapi.pay(
        content=b'{"amount": 1.0000000000000001, "currency": "EUR", "reference": "R-2"}'
    )
    assert resp.status_code == 422  # a binary float would have said 1.0 and accepted it
    assert error_of(resp)["param"] == "amount"


VALIDATION_TABLE: list[tuple[bytes, int, str | None]] = [
    (b'{"amount": 0, "currency": "USD", "reference": "R"}', 422, "amount"),
    (b'{"amount": -1, "currency": "USD", "reference": "R"}', 422, "amount"),
    (b'{"amount": 1.001, "currency": "USD", "reference": "R"}', 422, "amount"),
    (b'{"amount": "1e3", "currency": "USD", "reference": "R"}', 422, "amount"),
    (b'{"amount": 1e3, "currency": "USD", "reference": "R"}', 201, None),
    (b'{"amount": 1000000.01, "currency": "USD", "reference": "R"}', 422, "amount"),
    (b'{"amount": 1e400, "currency": "USD", "reference": "R"}', 422, "amount"),
    (b'{"amount": "99999999999999999999", "currency": "USD", "reference": "R"}', 422, "amount"),
    (b'{"amount": 1000000, "currency": "USD", "reference": "R"}', 201, None),
    (b'{"amount": "0.01", "currency": "USD", "reference": "R"}', 201, None),
    (b'{"amount": true, "currency": "USD", "reference": "R"}', 422, "amount"),
    (b'{"currency": "USD", "reference": "R"}', 422, "amount"),
    (b'{"amount": "1.00", "currency": "usd", "reference": "R"}', 422, "currency"),
    (b'{"amount": "1.00", "currency": "ABC", "reference": "R"}', 422, "currency"),
    (b'{"amount": "1.00", "currency": "XXX", "reference": "R"}', 422, "currency"),
    (b'{"amount": "1.00", "currency": "JPY", "reference": "R"}', 201, None),
    (b'{"amount": "1.00", "currency": "USD", "reference": ""}', 422, "reference"),
    (b'{"amount": "1.00", "currency": "USD", "reference": "a b"}', 422, "reference"),
    (b'{"amount": "1.00", "currency": "USD", "reference": "' + b"x" * 65 + b'"}', 422, "reference"),
    (b'{"amount": "1.00", "currency": "USD", "reference": "' + b"x" * 64 + b'"}', 201, None),
    (b'{"amount": "1.00", "currency": "USD", "reference": "R", "fee": 1}', 422, "fee"),
    (b"[1, 2, 3]", 422, None),
    (b'{"amount": NaN, "currency": "USD", "reference": "R"}', 400, None),
    (b'{"amount": 1', 400, None),
    (b"", 400, None),
    (b"\xff\xfe", 400, None),
]


async def test_validation_table(sapi: Sapi) -> None:
    for raw, status, param in VALIDATION_TABLE:
        resp = await sapi.pay(content=raw)
        assert resp.status_code == status, (raw, resp.text)
        if status >= 400:
            err = error_of(resp)
            assert err["param"] == param, (raw, err)
            if status == 400:
                assert err["code"] == "malformed_json"
            else:
                assert err["type"] == "validation_error"
    created = sum(1 for _, status, _ in VALIDATION_TABLE if status == 201)
    assert await sapi.rows() == created  # nothing half-written by the refusals


async def test_errors_never_echo_the_input(sapi: Sapi) -> None:
    resp = await sapi.pay(content=b'{"amount": "1.00", "currency": "S3CR3T", "reference": "R"}')
    assert resp.status_code == 422
    assert "S3CR3T" not in resp.text


async def test_body_too_large(sapi: Sapi) -> None:
    resp = await sapi.pay(content=b" " * (64 * 1024))
    assert resp.status_code == 413
    assert error_of(resp)["code"] == "payload_too_large"


async def test_client_id_is_required_and_checked(sapi: Sapi) -> None:
    headers = sapi.headers()
    del headers["X-Client-ID"]
    resp = await sapi.http.post(PAYMENTS, headers=headers, json=GOOD)
    assert resp.status_code == 422
    assert error_of(resp)["param"] == "X-Client-ID"
    resp = await sapi.http.post(PAYMENTS, headers=sapi.headers(client="a b"), json=GOOD)
    assert resp.status_code == 422
    resp = await sapi.http.get(f"{PAYMENTS}/{uuid.uuid4()}", headers=headers)
    assert resp.status_code == 422


@pytest.mark.parametrize("key", ["", "x" * 256, "tab\there", "caf\u00e9"])
async def test_bad_idempotency_keys(sapi: Sapi, key: str) -> None:
    headers = sapi.headers()
    raw = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    raw.append((b"idempotency-key", key.encode("utf-8")))
    resp = await sapi.http.post(PAYMENTS, headers=raw, json=GOOD)
    assert resp.status_code == 422, resp.text
    assert error_of(resp)["param"] == "Idempotency-Key"
    assert await sapi.rows() == 0


async def test_idempotency_key_limits_are_accepted(sapi: Sapi) -> None:
    assert (await sapi.pay(key="k")).status_code == 201
    assert (await sapi.pay(key="~" * 255)).status_code == 201
    assert (await sapi.pay(key="with space and !@#$%")).status_code == 201


# -- reading: only your own ---------------------------------------------------------------


async def test_cross_client_read_is_404(sapi: Sapi) -> None:
    pid = (await sapi.pay()).json()["id"]
    resp = await sapi.http.get(f"{PAYMENTS}/{pid}", headers=sapi.headers(client=OTHER))
    assert resp.status_code == 404
    missing = await sapi.http.get(f"{PAYMENTS}/{uuid.uuid4()}", headers=sapi.headers())
    assert missing.status_code == 404
    # Not existing and not yours look exactly alike.
    assert error_of(resp)["code"] == error_of(missing)["code"] == "not_found"
    assert error_of(resp)["message"] == error_of(missing)["message"]


@pytest.mark.parametrize("bad", ["not-a-uuid", "123", "%00", "' OR 1=1 --"])
async def test_invalid_uuid_is_404(sapi: Sapi, bad: str) -> None:
    resp = await sapi.http.get(f"{PAYMENTS}/{bad}", headers=sapi.headers())
    assert resp.status_code == 404
    assert error_of(resp)["code"] == "not_found"


# -- idempotency ---------------------------------------------------------------------------


async def test_replay_returns_the_identical_first_answer(sapi: Sapi) -> None:
    first = await sapi.pay(key="order-1")
    assert first.status_code == 201
    again = await sapi.pay(key="order-1")
    assert again.status_code == 200
    assert again.content == first.content
    assert again.headers["idempotent-replayed"] == "true"
    # The same payment written differently is the same request.
    same = await sapi.pay(
        {"reference": "TEST-12345", "currency": "USD", "amount": 100}, key="order-1"
    )
    assert same.status_code == 200
    assert same.content == first.content
    assert await sapi.rows() == 1


async def test_same_key_different_body_is_409(sapi: Sapi) -> None:
    assert (await sapi.pay(key="order-2")).status_code == 201
    resp = await sapi.pay({**GOOD, "amount": "100.01"}, key="order-2")
    assert resp.status_code == 409
    err = error_of(resp)
    assert err["code"] == "idempotency_key_reused"
    assert err["param"] == "Idempotency-Key"
    assert await sapi.rows() == 1


async def test_keys_are_per_client(sapi: Sapi) -> None:
    a = await sapi.pay(key="shared", client=CLIENT)
    b = await sapi.pay(key="shared", client=OTHER)
    assert a.status_code == b.status_code == 201
    assert a.json()["id"] != b.json()["id"]


async def test_no_key_means_a_new_payment_each_time(sapi: Sapi) -> None:
    ids = {(await sapi.pay()).json()["id"] for _ in range(3)}
    assert len(ids) == 3


async def test_twenty_concurrent_requests_one_key_one_payment(sapi: Sapi) -> None:
    results = await asyncio.gather(*(sapi.pay(key="storm") for _ in range(20)))
    statuses = [r.status_code for r in results]
    assert statuses.count(201) == 1, statuses
    created = next(r for r in results if r.status_code == 201)
    for r in results:
        if r.status_code == 200:
            assert r.content == created.content
        elif r.status_code == 409:
            assert error_of(r)["code"] == "idempotency_key_in_flight"
        else:
            assert r.status_code == 201
    assert await sapi.rows() == 1


async def test_concurrent_requests_across_two_replicas(fresh_db: str) -> None:
    tokens = TokenBox("service-token-1")
    async with running(fresh_db, tokens) as one, running(fresh_db, tokens) as two:
        calls = [(one if i % 2 else two).pay(key="two-replicas") for i in range(20)]
        results = await asyncio.gather(*calls)
        statuses = [r.status_code for r in results]
        assert statuses.count(201) == 1, statuses
        assert set(statuses) <= {200, 201, 409}
        created = next(r for r in results if r.status_code == 201)
        replays = [r for r in results if r.status_code == 200]
        assert replays  # the other replica waited on the row lock, then replayed
        assert all(r.content == created.content for r in replays)
        assert await one.rows() == 1


async def test_in_flight_key_gets_409_until_the_first_commits(sapi: Sapi) -> None:
    blocker = await asyncpg.connect(sapi.dsn)
    try:
        tx = blocker.transaction()
        await tx.start()
        await blocker.execute("LOCK TABLE payments IN EXCLUSIVE MODE")
        first = asyncio.create_task(sapi.pay(key="slow"))
        await asyncio.sleep(0.3)  # the first request is now waiting on the lock
        assert not first.done()
        second = await sapi.pay(key="slow")
        assert second.status_code == 409
        assert error_of(second)["code"] == "idempotency_key_in_flight"
        assert second.headers["retry-after"] == "1"
        await tx.rollback()
        assert (await first).status_code == 201
    finally:
        await blocker.close()
    third = await sapi.pay(key="slow")
    assert third.status_code == 200


# -- service authentication ---------------------------------------------------------------


async def test_missing_or_wrong_token_is_401(sapi: Sapi) -> None:
    no_auth = await sapi.http.post(PAYMENTS, headers={"X-Client-ID": CLIENT}, json=GOOD)
    assert no_auth.status_code == 401
    assert error_of(no_auth)["type"] == "authentication_error"
    assert no_auth.headers["www-authenticate"] == "Bearer"
    for value in ("Bearer nope", "Basic c2VydmljZS10b2tlbi0x", "Bearer", "service-token-1"):
        resp = await sapi.http.post(
            PAYMENTS, headers={"Authorization": value, "X-Client-ID": CLIENT}, json=GOOD
        )
        assert resp.status_code == 401, value
    got = await sapi.http.get(f"{PAYMENTS}/{uuid.uuid4()}", headers={"X-Client-ID": CLIENT})
    assert got.status_code == 401
    audit = await sapi.http.post("/api/internal/audit", json={})
    assert audit.status_code == 401
    assert await sapi.rows() == 0


async def test_token_rotation_needs_no_restart(sapi: Sapi) -> None:
    old = sapi.tokens.value
    assert (await sapi.pay()).status_code == 201
    sapi.tokens.value = "service-token-2"  # rotated in the vault
    resp = await sapi.pay()  # the caller already holds the new one
    assert resp.status_code == 201, resp.text
    await asyncio.sleep(0.1)
    stale = await sapi.http.post(
        PAYMENTS, headers={"Authorization": f"Bearer {old}", "X-Client-ID": CLIENT}, json=GOOD
    )
    assert stale.status_code == 401


async def test_vault_down_cached_token_keeps_working(sapi: Sapi) -> None:
    sapi.tokens.down = True
    assert (await sapi.pay()).status_code == 201
    await asyncio.sleep(0.1)
    resp = await sapi.http.post(
        PAYMENTS, headers={"Authorization": "Bearer other", "X-Client-ID": CLIENT}, json=GOOD
    )
    assert resp.status_code == 503  # cannot tell "rotated" from "wrong": no wrong answer
    assert error_of(resp)["code"] == "auth_unavailable"


# -- health ------------------------------------------------------------------------------


async def test_health_ok_without_credentials(sapi: Sapi) -> None:
    resp = await sapi.http.get("/api/internal-health")
    assert resp.status_code == 200
    assert resp.json() == {"status": "ok", "checks": {"database": "ok", "vault": "ok"}}


async def test_health_degraded_when_the_vault_is_down(sapi: Sapi) -> None:
    sapi.tokens.down = True
    resp = await sapi.http.get("/api/internal-health")
    # The cached token still authenticates EAPI: SAPI serves, so it stays in rotation.
    assert resp.status_code == 200
    assert resp.json() == {"status": "degraded", "checks": {"database": "ok", "vault": "down"}}
    assert (await sapi.pay()).status_code == 201


async def test_health_503_when_the_vault_was_never_reached(pg: PgCluster, fresh_db: str) -> None:
    tokens = TokenBox("t")
    tokens.down = True
    async with running(fresh_db, tokens) as s:
        resp = await s.http.get("/api/internal-health")
        assert resp.status_code == 503
        body = resp.json()
        assert body["status"] == "down"
        assert body["checks"] == {"database": "ok", "vault": "down"}
        assert error_of(resp)["type"] == "service_unavailable"
        assert (await s.pay()).status_code == 503  # cannot check the caller: not a 401


async def test_database_missing_then_503(pg: PgCluster) -> None:
    dsn = pg.dsn("no_such_db_" + uuid.uuid4().hex[:8])
    async with running(dsn, TokenBox("t")) as s:
        health = await s.http.get("/api/internal-health")
        assert health.status_code == 503
        assert health.json()["checks"] == {"database": "down", "vault": "ok"}
        assert set(health.json()) == {"status", "checks", "error"}
        pay = await s.pay()
        assert pay.status_code == 503
        assert error_of(pay)["code"] == "database_unavailable"


async def test_closed_port_then_503(pg: PgCluster) -> None:
    from payapi.servers.procs import free_port

    dsn = f"postgresql://postgres@127.0.0.1:{free_port()}/payment_db"
    async with running(dsn, TokenBox("t")) as s:
        assert (await s.http.get("/api/internal-health")).status_code == 503
        assert (await s.pay()).status_code == 503


async def test_recovers_when_the_database_appears(pg: PgCluster) -> None:
    name = "late_" + uuid.uuid4().hex[:8]
    async with running(pg.dsn(name), TokenBox("t")) as s:
        assert (await s.pay()).status_code == 503
        pg.create_database(name)
        try:
            for _ in range(100):
                if (await s.http.get("/api/internal-health")).status_code == 200:
                    break
                await asyncio.sleep(0.1)
            else:
                pytest.fail("SAPI did not connect within 10 s of the database appearing")
            assert (await s.pay()).status_code == 201
        finally:
            await s.app.state.sapi.db.close()
            pg.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def test_startup_migrates_and_restart_is_idempotent(fresh_db: str) -> None:
    tokens = TokenBox("t")
    async with running(fresh_db, tokens) as s:
        assert s.app.state.sapi.db.migrations_applied[0] == "0001_payments.sql"
        assert (await s.pay()).status_code == 201
    async with running(fresh_db, tokens) as s:
        assert s.app.state.sapi.db.migrations_applied == []
        assert await s.rows() == 1


@pytest.mark.parametrize(
    "event",
    [
        {"type": "t", "actor": "a", "subject": "x\u0000y"},
        {"type": "t\u0000", "actor": "a"},
        {"type": "t", "actor": "a", "details": {"k": ["v\u0000"]}},
        {"type": "t", "actor": "a", "details": {"k\u0000": 1}},
    ],
)
async def test_audit_text_the_database_cannot_store_is_422(
    sapi: Sapi, event: dict[str, Any]
) -> None:
    # Found by schemathesis: a NUL reached PostgreSQL, which refused it: 500.
    resp = await sapi.http.post("/api/internal/audit", headers=sapi.headers(), json=event)
    assert resp.status_code == 422, resp.text
    assert error_of(resp)["type"] == "validation_error"


@pytest.mark.parametrize(("field", "value"), [("type", "\x1c"), ("actor", " \u3000\t")])
async def test_a_blank_audit_type_or_actor_names_its_field(
    sapi: Sapi, field: str, value: str
) -> None:
    # Found by schemathesis: "\x1c" is whitespace to str.strip; the 422 named "details".
    event = {"type": "t", "actor": "a", field: value}
    resp = await sapi.http.post("/api/internal/audit", headers=sapi.headers(), json=event)
    assert resp.status_code == 422, resp.text
    assert error_of(resp)["param"] == field
