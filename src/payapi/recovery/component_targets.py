"""What ``payapi recover component`` acts on: one component of one region, found in the
settings, and the seed's checks of whether it is healthy.

One job: from ``(settings, component, region)`` to the URLs and controls of that
component, and its health as the seed's verification commands judge it:

- eapi: ``curl …/api/health`` answers 200;
- sapi: ``curl …/api/internal-health`` answers 200;
- vault: ``conjur health check`` (``/health`` says ok on some member) and ``conjur list``
  (the admin lists resources: authentication, policy and the database all work);
- redis: ``redis-cli PING`` on the primary (through the Sentinels when configured);
- db: ``psql -c "SELECT 1"`` on a member that accepts writes (in a primary region).

Everything here reads; nothing changes. The actions (:mod:`payapi.recovery.actions_component`)
restart, fail over and restore.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import httpx

from payapi.core.settings import Settings, read_secret_file
from payapi.core.topology import Region, Service, topology_from_settings

COMPONENTS = ("eapi", "sapi", "vault", "redis", "db")
CHECK_TIMEOUT = 5.0
_SERVICE = {"vault": Service.VAULT, "redis": Service.REDIS, "db": Service.POSTGRES}


@dataclass(frozen=True)
class Health:
    ok: bool
    detail: str  # one line, no secret


def region_of(settings: Settings, name: str) -> Region:
    """The region ``name`` (``""``: the primary one; one-region settings: ``primary``)."""
    topology = topology_from_settings(settings)
    return topology.region(name) if name else topology.primary


def stateful_service(component: str) -> Service | None:
    return _SERVICE.get(component)


def has_standby(region: Region, component: str) -> bool:
    """True when the region has another member of the component than the one that leads
    (a standby vault, a replica Redis, a standby PostgreSQL): a failover has a target."""
    service = _SERVICE.get(component)
    if service is None:
        return False
    leader = region.leader_of(service)
    return any(m is not leader for m in region.members_of(service))


def _http(url: str, timeout: float) -> tuple[int | None, str]:
    try:
        with httpx.Client(timeout=timeout, trust_env=False) as client:
            resp = client.get(url)
        return resp.status_code, ""
    except httpx.HTTPError as exc:
        return None, type(exc).__name__


def _http_health(name: str, base: str | None, path: str, timeout: float) -> Health:
    if not base:
        return Health(False, f"{name}: no URL is configured for it")
    url = base.rstrip("/") + path
    status, err = _http(url, timeout)
    if status == 200:
        return Health(True, f"GET {url}: 200")
    return Health(False, f"GET {url}: {status if status is not None else err}")


def _vault(settings: Settings, region: Region, timeout: float) -> Health:
    urls = [m.url for m in region.members_of(Service.VAULT)] or settings.vault.endpoints()
    answered = []
    for url in urls:
        status, err = _http(url.rstrip("/") + "/health", timeout)
        answered.append(f"{url}: {status if status is not None else err}")
        if status == 200:
            break
    else:
        return Health(False, "conjur health check: " + "; ".join(answered))
    try:
        count = asyncio.run(_vault_list(settings, urls, timeout))
    except Exception as exc:  # the client's errors, a missing key file: one line
        return Health(False, f"conjur health check ok, conjur list failed: {_one_line(exc)}")
    return Health(True, f"conjur health check: ok ({answered[-1]}); conjur list: {count} resources")


def vault_standby_answers(region: Region, timeout: float = CHECK_TIMEOUT) -> bool:
    """True when some vault member other than the leader answers ``/health`` at all. A
    vault failover moves the database under the standby vault: with every vault process
    dead there is nothing to take over, and failing the database over would not help."""
    leader = region.leader_of(Service.VAULT)
    others = [m for m in region.members_of(Service.VAULT) if m is not leader]
    return any(_http(m.url.rstrip("/") + "/health", timeout)[0] is not None for m in others)


async def _vault_list(settings: Settings, urls: list[str], timeout: float) -> int:
    from payapi.vault.client import VaultClient

    key = read_secret_file(settings.vault.admin_api_key_file, "vault admin API key")
    async with VaultClient(
        urls, settings.vault.account, settings.vault.admin_login, key, timeout=timeout
    ) as client:
        return len(await client.list_resources())


def redis_url(settings: Settings, region: Region, timeout: float = 0.5) -> str:
    """The current primary's URL: the Sentinels' answer when the region has them, else
    the configured leader (one-region settings: ``[redis]``, Sentinel-aware)."""
    from payapi.systems.redis import primary_url, sentinel_master, url_at

    if not settings.regions:
        return primary_url(settings.redis, timeout)
    leader = region.leader_of(Service.REDIS)
    if leader is None:
        raise ValueError(f"region {region.name} has no redis member")
    if region.sentinels and region.sentinel_master:
        addr = sentinel_master(region.sentinels, region.sentinel_master, timeout)
        if addr is not None:
            return url_at(leader.url, addr)
    return leader.url


def _redis(settings: Settings, region: Region, timeout: float) -> Health:
    from payapi.systems.redis import client, where

    try:
        url = redis_url(settings, region)
        conn = client(url, timeout)
        try:
            pong = conn.ping()
        finally:
            conn.close()
    except Exception as exc:  # redis-py's errors, a Sentinel that sees no primary
        return Health(False, f"redis-cli PING: {_one_line(exc)}")
    return Health(bool(pong), f"redis-cli PING ({where(url)}): {'PONG' if pong else 'no answer'}")


def _db(settings: Settings, region: Region, timeout: float) -> Health:
    members = region.members_of(Service.POSTGRES)
    if not members:
        return Health(False, "db: no PostgreSQL is configured ([postgres] payment_dsn)")
    seen = []
    for m in members:
        try:
            in_recovery = asyncio.run(_select_1(m.url, timeout))
        except Exception as exc:  # asyncpg's errors, OSError: one line, never the DSN
            seen.append(f"{m.name}: {_one_line(exc)}")
            continue
        if in_recovery and region.is_primary:
            seen.append(f"{m.name}: read-only (in recovery)")
            continue
        return Health(True, f'psql -c "SELECT 1" on {m.name}: 1')
    return Health(False, 'psql -c "SELECT 1": ' + "; ".join(seen))


async def _select_1(dsn: str, timeout: float) -> bool:
    import asyncpg

    conn = await asyncpg.connect(dsn, timeout=timeout)
    try:
        await conn.fetchval("SELECT 1", timeout=timeout)
        return bool(await conn.fetchval("SELECT pg_is_in_recovery()", timeout=timeout))
    finally:
        await conn.close()


def _one_line(exc: BaseException) -> str:
    from payapi.core.redaction import redact_url

    text = " ".join(str(exc).split()) or type(exc).__name__
    return redact_url(f"{type(exc).__name__}: {text}"[:300])


def health(
    settings: Settings, component: str, region: str = "", *, timeout: float = CHECK_TIMEOUT
) -> Health:
    """The seed's check of ``component`` in ``region`` (reads only)."""
    where = region_of(settings, region)
    if component == "eapi":
        return _http_health("eapi", where.eapi.url, "/api/health", timeout)
    if component == "sapi":
        return _http_health("sapi", where.sapi.url, "/api/internal-health", timeout)
    if component == "vault":
        return _vault(settings, where, timeout)
    if component == "redis":
        return _redis(settings, where, timeout)
    if component == "db":
        return _db(settings, where, timeout)
    raise ValueError(f"unknown component {component!r}; one of {', '.join(COMPONENTS)}")


def invalidate_eapi_verifications(settings: Settings, *, timeout: float = 2.0) -> int:
    """Drop EAPI's cached verifications in the Redis it reads (after a vault restore);
    the number of clients whose entries went. Redis's errors propagate."""
    from payapi.eapi.cachekeys import invalidate_verifications
    from payapi.systems.redis import client, primary_url

    conn = client(primary_url(settings.redis, timeout), timeout)
    try:
        return invalidate_verifications(conn)
    finally:
        conn.close()
