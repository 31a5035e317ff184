"""The platform's topology: regions, their members per service, and the global endpoint.

Frozen value objects parsed from configuration by :func:`topology_from_settings`. A config
without ``[regions.NAME]`` tables is the one-region case: today's ``[postgres]``,
``[redis]``, ``[vault]``, ``[eapi]`` and ``[sapi]`` settings become one region named
``primary`` with the primary role, so callers written for one region keep working and the
next ones can ask for the DR region by name.

A member's role is the role it is *configured* for. Which member leads right now is
observed at run time (Patroni, Sentinel, the vault's health): after a failover the two
differ, and the observation wins.

DSNs and URLs may carry a password: :func:`redact_url` drops it, a member's ``repr`` never
shows it, :meth:`Topology.describe` (what the CLI prints) holds only redacted URLs, and no
error message here quotes a configured value other than a name.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from payapi.core.errors import UsageError
from payapi.core.redaction import redact_url
from payapi.core.settings import ConfigError

if TYPE_CHECKING:
    from payapi.core.settings import RegionSettings, ServiceListen, Settings

PRIMARY_REGION = "primary"  # the one region of a config without [regions.NAME] tables
NAME_PATTERN = re.compile(r"^[a-z][a-z0-9-]{0,31}$")


class TopologyError(ConfigError):
    """The topology in the configuration is inconsistent (one line, names only)."""


class UnknownRegionError(TopologyError, UsageError):
    """A region was asked for by a name the configuration does not have (exit 2)."""


class RegionRole(StrEnum):
    """What a region is for: the one that serves, or one that stands by to take over."""

    PRIMARY = "primary"
    STANDBY = "standby"


class MemberRole(StrEnum):
    """What a member is configured as within its region and service.

    ``leader``: the writable one (PostgreSQL's Patroni leader, Redis's master, the active
    vault). ``sync_standby``: PostgreSQL's synchronous standby. ``replica``: an asynchronous
    copy (a Redis replica, a read-only vault). ``standby``: a hot standby that takes over
    (the standby vault). ``standby_leader``: the leader of a Patroni standby cluster.
    """

    LEADER = "leader"
    SYNC_STANDBY = "sync_standby"
    REPLICA = "replica"
    STANDBY = "standby"
    STANDBY_LEADER = "standby_leader"


class Service(StrEnum):
    """A stateful service whose servers are members of a region."""

    POSTGRES = "postgres"
    REDIS = "redis"
    VAULT = "vault"


# Roles that lead their service in a region: at most one member per service holds one.
LEADING_ROLES = frozenset({MemberRole.LEADER, MemberRole.STANDBY_LEADER})
# Roles only PostgreSQL members have.
_POSTGRES_ONLY = frozenset({MemberRole.SYNC_STANDBY, MemberRole.STANDBY_LEADER})


@dataclass(frozen=True)
class Member:
    """One server of a stateful service in a region."""

    name: str
    service: Service
    role: MemberRole
    url: str = field(repr=False)  # may hold a password: see ``redacted_url``
    patroni_url: str | None = None  # PostgreSQL under Patroni: its REST API

    @property
    def redacted_url(self) -> str:
        return redact_url(self.url)

    def __repr__(self) -> str:
        return (
            f"Member(name={self.name!r}, service={self.service.value!r}, "
            f"role={self.role.value!r}, url={self.redacted_url!r}, "
            f"patroni_url={self.patroni_url!r})"
        )

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "service": self.service.value,
            "role": self.role.value,
            "url": self.redacted_url,
            "patroni_url": None if self.patroni_url is None else redact_url(self.patroni_url),
        }


@dataclass(frozen=True)
class Deployment:
    """A stateless service of a region (EAPI, SAPI): where it answers, how many run.

    A standby region may run zero replicas until it takes over.
    """

    url: str | None = None
    replicas: int = 1

    def describe(self) -> dict[str, Any]:
        return {
            "url": None if self.url is None else redact_url(self.url),
            "replicas": self.replicas,
        }


@dataclass(frozen=True)
class Region:
    """One region: its role and, per service, its members and endpoints."""

    name: str
    role: RegionRole
    members: tuple[Member, ...] = ()
    etcd_urls: tuple[str, ...] = ()
    sentinels: tuple[str, ...] = ()  # host:port of each Redis Sentinel
    sentinel_master: str | None = None
    eapi: Deployment = field(default_factory=Deployment)
    sapi: Deployment = field(default_factory=Deployment)

    def __post_init__(self) -> None:
        _check_name(self.name, "region")
        where = f"region {self.name!r}"
        for member in self.members:
            _check_name(member.name, f"{where}: member")
            if member.role in _POSTGRES_ONLY and member.service is not Service.POSTGRES:
                raise TopologyError(
                    f"{where}: {member.service.value} member {member.name!r} cannot be "
                    f"{member.role.value} (a PostgreSQL role)"
                )
            if member.role is MemberRole.STANDBY_LEADER and self.role is RegionRole.PRIMARY:
                raise TopologyError(
                    f"{where}: member {member.name!r} is standby_leader, which only a "
                    "standby region's PostgreSQL has (the primary region's is leader)"
                )
        for service in Service:
            leading = [m.name for m in self.members_of(service) if m.role in LEADING_ROLES]
            if len(leading) > 1:
                raise TopologyError(
                    f"{where}: {service.value} has {len(leading)} leading members "
                    f"({', '.join(leading)}); at most one"
                )

    @property
    def is_primary(self) -> bool:
        return self.role is RegionRole.PRIMARY

    def members_of(self, service: Service) -> tuple[Member, ...]:
        """The members of one service, in configuration order."""
        return tuple(m for m in self.members if m.service is service)

    def leader_of(self, service: Service) -> Member | None:
        """The member configured to lead ``service`` here (leader or standby_leader)."""
        return next((m for m in self.members_of(service) if m.role in LEADING_ROLES), None)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "role": self.role.value,
            "members": [m.describe() for m in self.members],
            "etcd_urls": [redact_url(u) for u in self.etcd_urls],
            "sentinels": list(self.sentinels),
            "sentinel_master": self.sentinel_master,
            "eapi": self.eapi.describe(),
            "sapi": self.sapi.describe(),
        }


@dataclass(frozen=True)
class Endpoint:
    """The global endpoint clients use and the DNS record that points it at a region."""

    url: str | None = None
    dns_record: str | None = None
    dns_zone: str | None = None
    dns_ttl_seconds: int = 60

    def describe(self) -> dict[str, Any]:
        return {
            "url": None if self.url is None else redact_url(self.url),
            "dns_record": self.dns_record,
            "dns_zone": self.dns_zone,
            "dns_ttl_seconds": self.dns_ttl_seconds,
        }


@dataclass(frozen=True)
class Topology:
    """The regions in configuration order (exactly one primary) and the global endpoint."""

    regions: tuple[Region, ...]
    endpoint: Endpoint | None = None

    def __post_init__(self) -> None:
        if not self.regions:
            raise TopologyError("the topology has no region")
        names = [r.name for r in self.regions]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise TopologyError(f"region names are not unique: {', '.join(dupes)}")
        primaries = [r.name for r in self.regions if r.is_primary]
        if len(primaries) != 1:
            listed = f" ({', '.join(primaries)})" if primaries else ""
            raise TopologyError(
                f"exactly one region must have role primary; {len(primaries)} do{listed}"
            )
        members = [m.name for r in self.regions for m in r.members]
        dupes = sorted({n for n in members if members.count(n) > 1})
        if dupes:
            raise TopologyError(f"member names are not unique: {', '.join(dupes)}")

    def __iter__(self) -> Iterator[Region]:
        return iter(self.regions)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(r.name for r in self.regions)

    @property
    def primary(self) -> Region:
        return next(r for r in self.regions if r.is_primary)

    @property
    def standbys(self) -> tuple[Region, ...]:
        return tuple(r for r in self.regions if not r.is_primary)

    def region(self, name: str) -> Region:
        """The region called ``name``; :class:`UnknownRegionError` when there is none."""
        for region in self.regions:
            if region.name == name:
                return region
        raise UnknownRegionError(f"no region named {name!r} (configured: {', '.join(self.names)})")

    def describe(self) -> dict[str, Any]:
        """A JSON-able description with every URL redacted (what ``topology show`` prints)."""
        return {
            "regions": [r.describe() for r in self.regions],
            "primary": self.primary.name,
            "endpoint": None if self.endpoint is None else self.endpoint.describe(),
        }


def _check_name(name: str, what: str) -> None:
    if not NAME_PATTERN.match(name):
        shown = name if len(name) <= 40 else name[:40] + "…"
        raise TopologyError(
            f"{what} name {shown!r}: a lowercase letter, then up to 31 lowercase letters, "
            "digits or -"
        )


def _listen_url(listen: ServiceListen) -> str | None:
    if listen.url:
        return listen.url
    if listen.port:
        return f"http://{listen.host}:{listen.port}"
    return None


def _single_region(settings: Settings) -> Region:
    """Today's settings as the one region ``primary``: each configured server leads."""
    members: list[Member] = []
    dsn = settings.postgres.payment_dsn or settings.sapi.dsn
    if dsn:
        members.append(Member("postgres", Service.POSTGRES, MemberRole.LEADER, dsn))
    if settings.redis.url:
        members.append(Member("redis", Service.REDIS, MemberRole.LEADER, settings.redis.url))
    vault = _listen_url(settings.vault)
    if vault:
        members.append(Member("vault", Service.VAULT, MemberRole.LEADER, vault))
    return Region(
        PRIMARY_REGION,
        RegionRole.PRIMARY,
        tuple(members),
        eapi=Deployment(_listen_url(settings.eapi)),
        sapi=Deployment(_listen_url(settings.sapi)),
    )


def _configured_region(name: str, conf: RegionSettings) -> Region:
    members: list[Member] = []
    for service in Service:
        for m in getattr(conf, service.value):
            if m.patroni_url is not None and service is not Service.POSTGRES:
                raise TopologyError(
                    f"region {name!r}: {service.value} member {m.name!r} has a patroni_url "
                    "(only postgres members run under Patroni)"
                )
            members.append(Member(m.name, service, MemberRole(m.role), m.url, m.patroni_url))
    return Region(
        name,
        RegionRole(conf.role),
        tuple(members),
        etcd_urls=tuple(conf.etcd),
        sentinels=tuple(conf.sentinels),
        sentinel_master=conf.sentinel_master,
        eapi=Deployment(conf.eapi.url, conf.eapi.replicas),
        sapi=Deployment(conf.sapi.url, conf.sapi.replicas),
    )


def topology_from_settings(settings: Settings) -> Topology:
    """The topology the configuration describes.

    Without ``[regions.NAME]`` tables: one region named ``primary`` (role primary) built
    from today's single-region settings. With them: those regions, in file order, checked
    (exactly one primary, unique names, at most one leading member per service and
    region); :class:`TopologyError` otherwise, naming keys and names, never values.
    """
    if settings.regions:
        regions = tuple(_configured_region(n, c) for n, c in settings.regions.items())
    else:
        regions = (_single_region(settings),)
    t = settings.topology
    endpoint = None
    if t.endpoint is not None or t.dns_record is not None or t.dns_zone is not None:
        endpoint = Endpoint(t.endpoint, t.dns_record, t.dns_zone, t.dns_ttl_seconds)
    return Topology(regions, endpoint)
