"""Client credentials: provisioning, graceful and emergency rotation, verification.

Keyword-only functions over a ``Platform`` handle (Dispatch style). The vault is the one
home of every secret; Redis holds only token hashes and verification hashes, which a
rotation clears so that an old secret or token fails the moment the command returns.

Rotation order is chosen so that no valid credential ever fails in between:
- graceful: write ``previous-secret`` + its deadline first, then the new secret;
- emergency: disable ``previous-secret`` first, write the new secret, then clear Redis
  (and clear it once before too, so nothing re-caches an old secret meanwhile).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from pydantic import SecretStr

from payapi.core.errors import PayapiError, UsageError
from payapi.core.logs import get_logger
from payapi.core.naming import (
    CLIENTS_PREFIX,
    EAPI_HOST,
    ClientPaths,
    client_name_from_variable,
    new_client_id,
    new_client_secret,
    validate_name,
)
from payapi.core.settings import Settings, read_secret_file
from payapi.credentials.platform import rotate_service_token
from payapi.eapi.cache import Cache, CacheDown
from payapi.vault.client import VaultClient, VaultError, VaultNotFound

log = get_logger("payapi.credentials")

EPOCH = "1970-01-01T00:00:00+00:00"


class CredentialError(PayapiError):
    """A credential operation failed; one line for the operator."""


class UnknownClientError(CredentialError, UsageError):
    """A client name the vault does not know (exit 2)."""


@dataclass
class Platform:
    """What credential operations act on: the vault (as admin), Redis, the audit log."""

    settings: Settings
    vault: VaultClient
    cache: Cache

    @classmethod
    def from_settings(cls, settings: Settings) -> Platform:
        key = read_secret_file(settings.vault.admin_api_key_file, "vault admin API key")
        vault = VaultClient(
            settings.vault.endpoints(), settings.vault.account, settings.vault.admin_login, key
        )
        cache = Cache.from_settings(settings.redis, timeout=2.0)
        return cls(settings=settings, vault=vault, cache=cache)

    async def aclose(self) -> None:
        await self.vault.aclose()
        await self.cache.aclose()

    async def audit(
        self, type_: str, *, subject: str | None, details: dict[str, Any], actor: str = "payapi-cli"
    ) -> bool:
        """Append a security event; False (and a log line) if the audit log is unreachable."""
        dsn = self.settings.postgres.payment_dsn
        if not dsn:
            return False
        import asyncpg

        from payapi.audit import AuditError, append

        try:
            conn = await asyncpg.connect(dsn, timeout=5)
        except (OSError, asyncpg.PostgresError) as exc:
            log.error("audit_unreachable", error_type=type(exc).__name__)
            return False
        try:
            await append(
                conn,
                type=type_,
                actor=actor,
                subject=subject,
                details=details,
                head_file=self.settings.audit.head_file,
            )
            return True
        except (AuditError, asyncpg.PostgresError, OSError) as exc:
            # A rotation in an emergency is never blocked by the audit log; the caller
            # reports "audited": false and the operator sees it.
            log.error("audit_append_failed", error_type=type(exc).__name__)
            return False
        finally:
            await conn.close()


def _client_policy(name: str) -> str:
    paths = ClientPaths(name)
    variables = "".join(f"- !variable {v}\n" for v in paths.all())
    resources = "".join(f"  - !variable {v}\n" for v in paths.all())
    return (
        f"{variables}- !permit\n  role: !host {EAPI_HOST}\n  privileges: [read, execute]\n"
        f"  resources:\n{resources}"
    )


@dataclass
class NewClient:
    name: str
    client_id: str
    client_secret: SecretStr


async def create_client(p: Platform, *, name: str) -> NewClient:
    validate_name(name)
    paths = ClientPaths(name)
    try:
        await p.vault.get_secret(paths.client_id)
    except VaultNotFound:
        pass
    else:
        raise CredentialError(f"client {name!r} already exists")
    await p.vault.load_policy("root", _client_policy(name), "POST")
    client_id = new_client_id(name)
    secret = SecretStr(new_client_secret())
    # The previous-secret slot always holds a value (batch reads are all-or-nothing);
    # a random one that nobody knows, with a deadline in the past.
    await p.vault.set_secret(paths.previous_secret, SecretStr(new_client_secret()))
    await p.vault.set_secret(paths.previous_valid_until, EPOCH)
    await p.vault.set_secret(paths.client_secret, secret)
    await p.vault.set_secret(paths.client_id, client_id)
    await p.audit("client.created", subject=name, details={"client_id": client_id})
    return NewClient(name=name, client_id=client_id, client_secret=secret)


async def list_clients(p: Platform) -> list[str]:
    resources = await p.vault.list_resources(kind="variable", search=CLIENTS_PREFIX)
    names = set()
    for r in resources:
        rid = str(r.get("id", "")).split(":", 2)[-1]
        name = client_name_from_variable(rid)
        if name:
            names.add(name)
    return sorted(names)


async def _client_id(p: Platform, name: str) -> str:
    try:
        return (await p.vault.get_secret(ClientPaths(name).client_id)).get_secret_value()
    except VaultNotFound:
        raise CredentialError(f"no such client: {name!r}") from None


@dataclass
class Rotation:
    name: str
    client_id: str
    client_secret: SecretStr
    previous_valid_until: str


async def rotate_client(p: Platform, *, name: str, grace: timedelta) -> Rotation:
    """Graceful rotation: the old secret keeps working until ``grace`` has passed."""
    validate_name(name)
    paths = ClientPaths(name)
    client_id = await _client_id(p, name)
    old = await p.vault.get_secret(paths.client_secret)
    new = SecretStr(new_client_secret())
    until = (datetime.now(UTC) + grace).isoformat(timespec="seconds")
    await p.vault.set_secret(paths.previous_secret, old)
    await p.vault.set_secret(paths.previous_valid_until, until)
    await p.vault.set_secret(paths.client_secret, new)
    try:
        await p.cache.forget_verifications(client_id)
    except CacheDown:  # cached entries still expire by their TTL
        log.warning("verification_cache_not_cleared", client=name)
    await p.audit(
        "credentials.rotated",
        subject=name,
        details={"client_id": client_id, "grace_seconds": int(grace.total_seconds())},
    )
    return Rotation(name, client_id, new, until)


@dataclass
class EmergencyResult:
    clients: list[str]
    tokens_revoked: int
    redis_cleared: bool
    services_rotated: bool
    audited: bool
    seconds: float
    errors: list[str] = field(default_factory=list)


async def _emergency_one(p: Platform, name: str) -> None:
    paths = ClientPaths(name)
    await p.vault.set_secret(paths.previous_valid_until, EPOCH)
    await p.vault.set_secret(paths.previous_secret, SecretStr(new_client_secret()))
    await p.vault.set_secret(paths.client_secret, SecretStr(new_client_secret()))


async def client_ids(p: Platform, names: Sequence[str]) -> dict[str, str]:
    """The client id (X-Client-ID) of each named client, from the vault."""
    paths = {n: ClientPaths(n).client_id for n in names}
    try:
        found = await p.vault.get_secrets(paths.values())
    except VaultNotFound:
        raise UnknownClientError(f"unknown client among {', '.join(names)}") from None
    return {n: found[v].get_secret_value() for n, v in paths.items()}


async def emergency_rotate(
    p: Platform,
    *,
    reason: str,
    names: Sequence[str] | None = None,
    include_services: bool = False,
    concurrency: int = 16,
) -> EmergencyResult:
    """Replace every (or the named) client's secret and revoke every token at once.

    New secrets are not printed: clients receive them through the vault (or
    ``payapi clients show-secret`` by an operator with vault access).
    """
    start = time.monotonic()
    targets = list(names) if names is not None else await list_clients(p)
    errors: list[str] = []
    redis_cleared = True

    # Named clients: only their tokens go (their ids are read before their secrets change).
    ids = None if names is None else list((await client_ids(p, targets)).values())

    async def clear_redis() -> int:
        nonlocal redis_cleared
        try:
            if ids is None:
                return await p.cache.revoke_all()
            return sum([await p.cache.revoke_client(i) for i in ids])
        except CacheDown:
            redis_cleared = False
            return 0

    revoked = await clear_redis()
    sem = asyncio.Semaphore(concurrency)

    async def one(name: str) -> None:
        async with sem:
            try:
                await _emergency_one(p, name)
            except VaultError as exc:
                errors.append(f"{name}: {exc}")

    await asyncio.gather(*(one(n) for n in targets))
    if include_services:
        await rotate_service_token(p.vault)
    revoked += await clear_redis()
    seconds = time.monotonic() - start
    audited = await p.audit(
        "credentials.emergency_rotation",
        subject="all-clients" if names is None else ",".join(targets),
        details={
            "reason": reason,
            "clients": len(targets),
            "failed": len(errors),
            "tokens_revoked": revoked,
            "redis_cleared": redis_cleared,
            "services_rotated": include_services,
        },
    )
    return EmergencyResult(
        clients=targets,
        tokens_revoked=revoked,
        redis_cleared=redis_cleared,
        services_rotated=include_services,
        audited=audited,
        seconds=round(seconds, 3),
        errors=errors,
    )


@dataclass
class ClientCheck:
    name: str
    present: bool = False
    readable: bool = False
    accepted: bool = False
    problem: str | None = None

    @property
    def ok(self) -> bool:
        return self.present and self.readable and self.accepted


async def verify_client(p: Platform, http: httpx.AsyncClient, name: str) -> ClientCheck:
    check = ClientCheck(name=name)
    paths = ClientPaths(name)
    try:
        values = await p.vault.get_secrets(paths.all())
    except VaultNotFound:
        check.problem = "credential missing in the vault"
        return check
    except VaultError as exc:
        check.problem = str(exc)
        return check
    check.present = True
    client_id = values[paths.client_id].get_secret_value()
    secret = values[paths.client_secret].get_secret_value()
    check.readable = bool(client_id) and bool(secret)
    if not check.readable:
        check.problem = "credential is empty"
        return check
    try:
        resp = await http.post(
            "/api/v1/authenticate",
            headers={"X-Client-ID": client_id, "X-Client-Secret": secret},
        )
    except httpx.HTTPError as exc:
        check.problem = f"EAPI unreachable: {type(exc).__name__}"
        return check
    if resp.status_code == 200:
        check.accepted = True
        token = resp.json().get("access_token", "")
        with contextlib.suppress(CacheDown):  # the probe's token is not left behind
            await p.cache.revoke_token(token)
    else:
        check.problem = f"EAPI answered {resp.status_code}"
    return check


async def verify_clients(p: Platform, *, names: Sequence[str] | None = None) -> list[ClientCheck]:
    targets = list(names) if names is not None else await list_clients(p)
    async with httpx.AsyncClient(base_url=p.settings.eapi.url, timeout=10, trust_env=False) as http:
        return list(await asyncio.gather(*(verify_client(p, http, n) for n in targets)))
