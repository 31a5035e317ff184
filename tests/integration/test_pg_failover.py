"""SAPI and the vault follow a PostgreSQL failover by themselves, without Patroni.

Each test gets a real primary and a streaming standby made with ``pg_basebackup``,
synchronous (``remote_apply``: an acknowledged write is on the standby and visible there),
and the services in-process on a multi-host DSN. The failover is the one Patroni does: the
primary crashes (``kill -9``), the standby is promoted (``pg_ctl promote``). What must
hold: a request during the switch answers 2xx or 503, never 500; afterwards requests
succeed on the new primary without a restart; every payment the client saw acknowledged
is there; an idempotency key retried after the switch returns the original payment.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from pydantic import SecretStr

from payapi.servers.pg_standby import clone_standby, kill_postmaster, wait_streaming
from payapi.servers.postgres import PgCluster
from payapi.servers.procs import free_port
from payapi.vault.availability import STANDBY_MESSAGE
from payapi.vault.client import VaultClient, VaultStandby, VaultUnavailable
from payapi.vault.testing import RunningVault, running_vault, serving_vault
from tests.integration.test_sapi_api import Sapi, TokenBox, running

STANDBY = "standby1"
DATABASES = ("payment_db", "vault_db")


@dataclass
class Pair:
    primary: PgCluster
    standby: PgCluster

    def dsn(self, database: str, target: str = "read-write") -> str:
        hosts = f"127.0.0.1:{self.primary.port},127.0.0.1:{self.standby.port}"
        return f"postgresql://postgres@{hosts}/{database}?target_session_attrs={target}"


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[Pair]:
    primary = PgCluster(
        datadir=tmp_path / "primary",
        port=free_port(),
        logfile=tmp_path / "primary.log",
        # Not what is measured here; crashes are of processes, not of the machine.
        settings={"fsync": "off", "full_page_writes": "off"},
    )
    standby = PgCluster(tmp_path / "standby", free_port(), tmp_path / "standby.log")
    try:
        primary.init()
        primary.start()
        for name in DATABASES:
            primary.create_database(name)
        standby = clone_standby(
            primary, standby.datadir, port=standby.port, logfile=standby.logfile, name=STANDBY
        )
        standby.start()
        wait_streaming(primary, STANDBY)
        # Synchronous only now that the standby streams (a commit would wait for it), and
        # remote_apply: what the client saw acknowledged is visible on the standby.
        primary.psql(f"ALTER SYSTEM SET synchronous_standby_names = '{STANDBY}'")
        primary.psql("ALTER SYSTEM SET synchronous_commit = 'remote_apply'")
        primary.psql("SELECT pg_reload_conf()")
        yield Pair(primary, standby)
    finally:
        for cluster in (standby, primary):
            if cluster.is_running():
                cluster.stop(mode="immediate")


async def _fetch(dsn: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        return list(await conn.fetch(sql, *args))
    finally:
        await conn.close()


def _assert_envelope(resp: httpx.Response) -> dict[str, Any]:
    err: dict[str, Any] = resp.json()["error"]
    assert err["request_id"] == resp.headers["x-request-id"]
    assert err["message"] and "postgres" not in err["message"].lower()
    return err


# -- SAPI ------------------------------------------------------------------------------


@dataclass
class Ledger:
    """What the client saw: every acknowledged payment and every status."""

    acked: dict[str, str]  # idempotency key -> payment id
    in_doubt: list[str]  # keys answered 503: maybe written, maybe not
    statuses: list[int]
    acked_at: dict[str, float]


async def _pay_until(sapi: Sapi, ledger: Ledger, worker: int, stop: asyncio.Event) -> None:
    n = 0
    while not stop.is_set():
        key = f"w{worker}-{n}"
        n += 1
        resp = await sapi.pay(key=key)
        ledger.statuses.append(resp.status_code)
        if resp.status_code in (200, 201):
            ledger.acked[key] = resp.json()["id"]
            ledger.acked_at[key] = time.monotonic()
        elif resp.status_code == 503:
            assert _assert_envelope(resp)["code"] == "database_unavailable"
            ledger.in_doubt.append(key)
            await asyncio.sleep(0.05)
        else:
            raise AssertionError(f"payment {key}: {resp.status_code} {resp.text}")


async def _until(what: str, check: Callable[[], Awaitable[bool]], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:.0f}s: {what}")
        await asyncio.sleep(0.05)


async def test_sapi_follows_the_writer_and_loses_no_acknowledged_payment(pair: Pair) -> None:
    async with running(pair.dsn("payment_db"), TokenBox("service-token-1")) as sapi:
        ledger = Ledger({}, [], [], {})
        stop = asyncio.Event()
        workers = [asyncio.create_task(_pay_until(sapi, ledger, i, stop)) for i in range(4)]
        try:
            await _until("30 payments before the failover", _count(ledger, 30))
            await asyncio.to_thread(kill_postmaster, pair.primary)
            # No writer anywhere: unhealthy, one clear 503, until the promotion.
            health = await sapi.http.get("/api/internal-health")
            assert health.status_code == 503, health.text
            assert health.json()["checks"]["database"] == "down"
            _assert_envelope(health)
            await asyncio.to_thread(pair.standby.promote, 30)
            promoted = time.monotonic()
            before = len(ledger.acked)
            await _until("30 payments after the promotion", _count(ledger, before + 30))
        finally:
            stop.set()
            await asyncio.gather(*workers)
        first_after = min(t for t in ledger.acked_at.values() if t >= promoted)
        assert first_after - promoted < 5.0  # the pool reconnected by itself, promptly

        assert set(ledger.statuses) <= {200, 201, 503}
        assert 503 in ledger.statuses  # the switch was seen, and answered cleanly
        health = await sapi.http.get("/api/internal-health")
        assert health.status_code == 200, health.text

        # Every acknowledged payment is on the new primary.
        new_primary = pair.standby.dsn("payment_db")
        ids = list(ledger.acked.values())
        found = await _fetch(
            new_primary, "SELECT id::text FROM payments WHERE id::text = ANY($1)", ids
        )
        assert {r["id"] for r in found} == set(ids)

        # A retry with the same key returns the original payment, never a second one.
        for key in list(ledger.acked)[:10]:
            replay = await sapi.pay(key=key)
            assert replay.status_code == 200, replay.text
            assert replay.headers["idempotent-replayed"] == "true"
            assert replay.json()["id"] == ledger.acked[key]
        # A request answered 503 is retried safely: paid once, whatever had happened.
        for key in ledger.in_doubt:
            retry = await sapi.pay(key=key)
            assert retry.status_code in (200, 201), retry.text
        keys = list(ledger.acked) + ledger.in_doubt
        rows = await _fetch(
            new_primary,
            "SELECT idempotency_key, count(*) AS n FROM payments"
            " WHERE idempotency_key = ANY($1) GROUP BY 1",
            keys,
        )
        assert len(rows) == len(set(keys))
        assert all(r["n"] == 1 for r in rows)


def _count(ledger: Ledger, n: int) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return len(ledger.acked) >= n

    return check


async def test_sapi_drops_pooled_connections_to_a_server_that_became_read_only(
    pair: Pair,
) -> None:
    async with running(pair.dsn("payment_db"), TokenBox("service-token-1")) as sapi:
        warm = await asyncio.gather(*(sapi.pay(key=f"warm-{i}") for i in range(6)))
        assert {r.status_code for r in warm} == {201}
        # The old leader stays up, read-only, with SAPI's connections still open to it
        # (what a pooled connection sees when its server comes back as a replica); the
        # standby is promoted. asyncpg checked target_session_attrs only at connect.
        pair.primary.psql("ALTER SYSTEM SET default_transaction_read_only = on")
        pair.primary.psql("SELECT pg_reload_conf()")
        await asyncio.to_thread(pair.standby.promote, 30)
        await asyncio.sleep(0.3)  # the backends take the reload before their next command

        refused = await sapi.pay(key="after-1")
        assert refused.status_code == 503, refused.text
        assert _assert_envelope(refused)["code"] == "database_unavailable"
        accepted = await sapi.pay(key="after-1")  # new connections: the new writer
        assert accepted.status_code == 201, accepted.text
        more = await asyncio.gather(*(sapi.pay(key=f"after-{i}") for i in range(2, 8)))
        assert {r.status_code for r in more} == {201}
        health = await sapi.http.get("/api/internal-health")
        assert health.status_code == 200, health.text

    pid = accepted.json()["id"]
    on_new = await _fetch(
        pair.standby.dsn("payment_db"), "SELECT 1 FROM payments WHERE id = $1::uuid", pid
    )
    on_old = await _fetch(
        pair.primary.dsn("payment_db"), "SELECT 1 FROM payments WHERE id = $1::uuid", pid
    )
    assert (len(on_new), len(on_old)) == (1, 0)


# -- the vault -------------------------------------------------------------------------

POLICY = """
- !host payment-system/payment-sapi
- !variable payment-system/sapi/service-token
- !permit
  role: !host payment-system/payment-sapi
  privileges: [read, execute]
  resource: !variable payment-system/sapi/service-token
"""
TOKEN_VAR = "payment-system/sapi/service-token"
SAPI_LOGIN = "host/payment-system/payment-sapi"


@dataclass
class Vaults:
    active: RunningVault
    standby: RunningVault
    admin_key: SecretStr
    sapi_key: SecretStr

    def client(self, *urls: str, admin: bool = True) -> VaultClient:
        login, key = ("admin", self.admin_key) if admin else (SAPI_LOGIN, self.sapi_key)
        return VaultClient(list(urls), self.active.account, login, key)


@pytest.fixture
async def vaults(pair: Pair) -> AsyncIterator[Vaults]:
    async with running_vault(pair.dsn("vault_db")) as active:
        admin_key = SecretStr(active.admin_api_key)
        async with VaultClient(active.url, active.account, "admin", admin_key) as admin:
            loaded = await admin.load_policy("root", POLICY)
            await admin.set_secret(TOKEN_VAR, "token-1")
        sapi_key = loaded["created_roles"][f"{active.account}:host:payment-system/payment-sapi"]
        # The standby vault: its own database is the streaming standby.
        standby_dsn = (
            f"postgresql://postgres@127.0.0.1:{pair.standby.port}/vault_db?target_session_attrs=any"
        )
        async with serving_vault(standby_dsn, data_key=active.data_key) as standby:
            yield Vaults(active, standby, admin_key, SecretStr(sapi_key["api_key"]))


async def test_a_standby_vault_serves_reads_refuses_writes_and_writes_once_promoted(
    pair: Pair, vaults: Vaults
) -> None:
    async with httpx.AsyncClient(trust_env=False) as http:
        health = (await http.get(vaults.standby.url + "/health")).json()
        assert health == {"status": "ok", "database": "ok", "role": "standby"}
        active = (await http.get(vaults.active.url + "/health")).json()
        assert active["role"] == "active"

        # Reads: authentication, a secret, a batch, whoami.
        async with vaults.client(vaults.standby.url, admin=False) as sapi:
            assert (await sapi.get_secret(TOKEN_VAR)).get_secret_value() == "token-1"
            assert (await sapi.get_secrets([TOKEN_VAR]))[TOKEN_VAR].get_secret_value() == "token-1"
            assert (await sapi.whoami())["username"] == SAPI_LOGIN
            token = await sapi.authenticate()

        # Writes: one clear 503 each, and nothing written.
        auth = {"Authorization": f'Token token="{base64.b64encode(token).decode()}"'}
        basic = base64.b64encode(f"{SAPI_LOGIN}:{vaults.sapi_key.get_secret_value()}".encode())
        acc = vaults.active.account
        writes = [
            ("POST", f"/secrets/{acc}/variable/payment-system%2Fsapi%2Fservice-token", auth, "x"),
            ("POST", f"/policies/{acc}/policy/root", auth, POLICY),
            ("PATCH", f"/policies/{acc}/policy/root?dryRun=true", auth, POLICY),
            ("PUT", f"/authn/{acc}/api_key", {"Authorization": f"Basic {basic.decode()}"}, ""),
        ]
        for method, path, headers, body in writes:
            resp = await http.request(
                method, vaults.standby.url + path, headers=headers, content=body
            )
            assert resp.status_code == 503, (method, path, resp.text)
            err = _assert_envelope(resp)
            assert (err["code"], err["message"]) == ("standby_read_only", STANDBY_MESSAGE)
            assert resp.headers["retry-after"] == "1"

        async with vaults.client(vaults.standby.url) as only_standby:
            with pytest.raises(VaultStandby, match="standby"):
                await only_standby.set_secret(TOKEN_VAR, "token-2")
        # A client given both: the write falls through to the active vault; a read is
        # served by the standby, which has it (synchronous, remote_apply).
        async with vaults.client(vaults.standby.url, vaults.active.url) as both:
            await both.set_secret(TOKEN_VAR, "token-2")
            assert both.current_url == vaults.active.url
        async with vaults.client(vaults.standby.url, admin=False) as sapi:
            assert (await sapi.get_secret(TOKEN_VAR)).get_secret_value() == "token-2"

        # The leader is demoted in place (read-only, connections kept): the vault that
        # wants a writer says unhealthy and refuses writes, as unavailable, not standby.
        pair.primary.psql("ALTER SYSTEM SET default_transaction_read_only = on")
        pair.primary.psql("SELECT pg_reload_conf()")
        await asyncio.sleep(0.3)
        down = await http.get(vaults.active.url + "/health")
        assert down.status_code == 503, down.text
        assert (_assert_envelope(down)["code"], down.json()["database"]) == (
            "unhealthy",
            "read-only",
        )
        async with vaults.client(vaults.active.url) as strict:
            with pytest.raises(VaultUnavailable) as refused:
                await strict.set_secret(TOKEN_VAR, "never")
            assert refused.value.status == 503 and not isinstance(refused.value, VaultStandby)

        # The leader crashes: the active vault has no database; the standby still serves.
        await asyncio.to_thread(kill_postmaster, pair.primary)
        down = await http.get(vaults.active.url + "/health")
        assert (down.status_code, down.json()["database"]) == (503, "unreachable")
        assert (await http.get(vaults.standby.url + "/health")).json()["role"] == "standby"
        async with vaults.client(vaults.standby.url, admin=False) as sapi:
            assert (await sapi.get_secret(TOKEN_VAR)).get_secret_value() == "token-2"

        # The promotion: the standby vault becomes the active one, without a restart.
        await asyncio.to_thread(pair.standby.promote, 30)
        health = (await http.get(vaults.standby.url + "/health")).json()
        assert health["role"] == "active"
        async with vaults.client(vaults.standby.url) as promoted:
            await promoted.set_secret(TOKEN_VAR, "token-3")
            await promoted.load_policy("root", POLICY, "PATCH")
            assert (await promoted.get_secret(TOKEN_VAR)).get_secret_value() == "token-3"
        async with vaults.client(vaults.standby.url, admin=False) as sapi:
            new_key = await sapi.rotate_api_key()
            assert new_key.get_secret_value() != vaults.sapi_key.get_secret_value()

        # The vault on the multi-host read-write DSN follows too: 503s at most, then it
        # writes on the new primary.
        async def active_writes() -> bool:
            async with vaults.client(vaults.active.url) as client:
                try:
                    await client.set_secret(TOKEN_VAR, "token-4")
                except VaultUnavailable as exc:
                    assert exc.status in (None, 503), exc
                    return False
            return True

        await _until("the active vault writes after the failover", active_writes)
        assert (await http.get(vaults.active.url + "/health")).json()["role"] == "active"


async def test_a_vault_that_accepts_any_server_moves_to_the_writer_beside_it(pair: Pair) -> None:
    """The failback case: a standby vault (``any`` over its region's two members) sat on
    the member that stays a replica while the other became the writer. It must notice the
    writer beside it and become active, not stay a standby vault (a failback waited for
    that in vain). Here the first host it names is the streaming standby."""
    hosts = f"127.0.0.1:{pair.standby.port},127.0.0.1:{pair.primary.port}"
    any_dsn = f"postgresql://postgres@{hosts}/vault_db?target_session_attrs=any"
    async with running_vault(pair.dsn("vault_db")) as active:
        # The writer is down: the vault starts on the standby, the one server answering.
        await asyncio.to_thread(pair.primary.stop, mode="fast")
        async with (
            serving_vault(any_dsn, data_key=active.data_key) as vault,
            httpx.AsyncClient(trust_env=False) as http,
        ):
            health = (await http.get(vault.url + "/health")).json()
            assert health["role"] == "standby", health
            # The writer comes back as a different host than the one the vault is on.
            await asyncio.to_thread(pair.primary.start)

            async def active_now() -> bool:
                resp = await http.get(vault.url + "/health")
                return resp.status_code == 200 and resp.json()["role"] == "active"

            await _until("the vault takes writes on the writer", active_now)
