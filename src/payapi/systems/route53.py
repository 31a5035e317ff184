"""The DNS record of the global endpoint, in a Route53 hosted zone, through boto3.

One code path for the lab and production: ``endpoint_url`` points boto3 at moto's
server in the lab and tests, and is None for AWS's own Route53. Credentials come from
boto3's usual chain (environment, profile, instance role); they never appear in an
argument that is logged, in a message or in a repr.

The record is a **CNAME** from the endpoint's name to ``<region>.<zone>``: the lab's
regions all live on 127.0.0.1 (an A record could not tell them apart), and in production
the same name is the region's load balancer. :func:`target_for` and :func:`region_of`
are the two directions of that naming rule; whoever reads the record maps the region to
that region's EAPI from configuration.

Names are compared as DNS compares them: case-insensitive, with the trailing dot
(``api.payments.lab`` and ``API.payments.lab.`` are one name). Every failure is a
:class:`DnsError`, one line, naming the zone or record and never a credential.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn

import botocore.exceptions as bexc

from payapi.core.errors import PayapiError
from payapi.core.redaction import redact_url

if TYPE_CHECKING:
    from mypy_boto3_route53.client import Route53Client

__all__ = [
    "DnsAnswer",
    "DnsError",
    "DnsRecordMissing",
    "DnsZoneMissing",
    "Route53Dns",
    "normalize",
    "region_of",
    "target_for",
]

# Route53 is a global service; boto3 still wants a region to sign with.
DEFAULT_REGION = "us-east-1"
# AWS's message text is quoted only for these codes: it describes the change batch or the
# input (useful to an operator) and never the request's signature or credentials.
_QUOTED_CODES = {"InvalidChangeBatch", "InvalidInput", "InvalidDomainName"}
_DENIED_CODES = {
    "AccessDenied",
    "AccessDeniedException",
    "InvalidClientTokenId",
    "SignatureDoesNotMatch",
    "UnrecognizedClientException",
    "ExpiredToken",
}
_CONNECTION = (
    bexc.EndpointConnectionError,
    bexc.ConnectionError,
    bexc.ConnectTimeoutError,
    bexc.ReadTimeoutError,
    bexc.ConnectionClosedError,
)


class DnsError(PayapiError):
    """The DNS API failed or the record is not what it should be (one line, no secret)."""


class DnsZoneMissing(DnsError):
    """No hosted zone has the configured name."""


class DnsRecordMissing(DnsError):
    """The zone has no CNAME record with the asked-for name."""


@dataclass(frozen=True, slots=True)
class DnsAnswer:
    """What the record says: the name it points at and for how long a reader may cache it."""

    target: str
    ttl: int


def normalize(name: str) -> str:
    """A DNS name as Route53 returns it: lower case, one trailing dot, ``*`` escaped."""
    cleaned = name.strip().lower().rstrip(".")
    if not cleaned or ".." in cleaned or any(c.isspace() for c in cleaned):
        raise DnsError(f"not a DNS name: {name.strip()[:80]!r}")
    # Route53 returns a wildcard label as the octal escape \052.
    return cleaned.replace("\\052", "*") + "."


def target_for(region: str, zone: str) -> str:
    """The name the record points at when ``region`` serves: ``<region>.<zone>``."""
    return normalize(f"{region}.{normalize(zone)}")


def region_of(target: str, zone: str) -> str:
    """The region a target names (the inverse of :func:`target_for`); :class:`DnsError`
    when the target is not one label directly under the zone."""
    name, suffix = normalize(target), "." + normalize(zone)
    label = name[: -len(suffix)] if name.endswith(suffix) else ""
    if not label or "." in label:
        raise DnsError(f"the record points at {name}, which is not <region>{suffix}")
    return label


def _in_zone(record: str, zone: str) -> bool:
    return record == zone or record.endswith("." + zone)


class Route53Dns:
    """One hosted zone, by name; its id is looked up once (or created by :meth:`ensure_zone`).

    ``client`` is for callers that already hold a boto3 Route53 client; otherwise one is
    made with short timeouts and few retries, because the global endpoint asks often and
    must notice an unreachable API within seconds, not minutes.
    """

    def __init__(
        self,
        zone_name: str,
        *,
        endpoint_url: str | None = None,
        region_name: str = DEFAULT_REGION,
        connect_timeout: float = 2.0,
        read_timeout: float = 5.0,
        max_attempts: int = 3,
        client: Route53Client | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.zone_name = normalize(zone_name)
        self.endpoint_url = endpoint_url
        self._sleep = sleep
        self._zone_id: str | None = None
        if client is None:
            import boto3
            from botocore.config import Config

            config = Config(
                connect_timeout=connect_timeout,
                read_timeout=read_timeout,
                retries={"mode": "standard", "max_attempts": max_attempts},
            )
            key_id = secret = None
            if endpoint_url is not None and boto3.Session().get_credentials() is None:
                # A stand-in API (the lab's moto) with no credentials anywhere: moto takes
                # any, and boto3 refuses to sign without some. AWS itself never gets these.
                key_id = secret = "lab"  # noqa: S105 - not a secret: moto's placeholder
            client = boto3.client(
                "route53",
                endpoint_url=endpoint_url,
                region_name=region_name,
                config=config,
                aws_access_key_id=key_id,
                aws_secret_access_key=secret,
            )
        self._client = client

    def __repr__(self) -> str:
        return f"Route53Dns(zone={self.zone_name!r}, api={self.api!r})"

    @property
    def api(self) -> str:
        """Where the API is, for messages: the redacted endpoint URL or ``Route53``."""
        return "Route53" if self.endpoint_url is None else redact_url(self.endpoint_url)

    def close(self) -> None:
        self._client.close()

    # ------------------------------------------------------------------ the zone

    def _find_zone(self) -> str | None:
        try:
            # The listing starts at the name in DNS order: only an exact match is ours.
            found = self._client.list_hosted_zones_by_name(DNSName=self.zone_name, MaxItems="1")
        except Exception as exc:
            self._raise(exc, f"find hosted zone {self.zone_name}")
        for zone in found.get("HostedZones", []):
            if normalize(zone["Name"]) == self.zone_name:
                return zone["Id"].rsplit("/", 1)[-1]
        return None

    @property
    def zone_id(self) -> str:
        """The hosted zone's id; :class:`DnsZoneMissing` when no zone has that name."""
        if self._zone_id is None:
            found = self._find_zone()
            if found is None:
                raise DnsZoneMissing(f"no hosted zone named {self.zone_name} in {self.api}")
            self._zone_id = found
        return self._zone_id

    def ensure_zone(self) -> str:
        """The zone's id, creating the hosted zone first if it does not exist (the lab)."""
        if self._zone_id is not None:
            return self._zone_id
        found = self._find_zone()
        if found is None:
            try:
                made = self._client.create_hosted_zone(
                    Name=self.zone_name, CallerReference=f"payapi-{uuid.uuid4().hex}"
                )
            except Exception as exc:
                self._raise(exc, f"create hosted zone {self.zone_name}")
            found = made["HostedZone"]["Id"].rsplit("/", 1)[-1]
        self._zone_id = found
        return found

    # ------------------------------------------------------------------ the record

    def _record(self, record: str) -> str:
        name = normalize(record)
        if not _in_zone(name, self.zone_name):
            raise DnsError(f"record {name} is not in zone {self.zone_name}")
        return name

    def upsert_cname(
        self, record: str, target: str, ttl: int, *, sync_timeout: float = 120.0
    ) -> str:
        """Point ``record`` at ``target`` (ChangeResourceRecordSets, UPSERT) and wait until
        Route53 reports the change INSYNC (at most ``sync_timeout`` seconds); the change id."""
        name, value = self._record(record), normalize(target)
        if ttl < 0:
            raise DnsError(f"TTL must be 0 or more, not {ttl}")
        batch: Any = {
            "Comment": f"payapi: {name} -> {value}",
            "Changes": [
                {
                    "Action": "UPSERT",
                    "ResourceRecordSet": {
                        "Name": name,
                        "Type": "CNAME",
                        "TTL": ttl,
                        "ResourceRecords": [{"Value": value}],
                    },
                }
            ],
        }
        try:
            info = self._client.change_resource_record_sets(
                HostedZoneId=self.zone_id, ChangeBatch=batch
            )["ChangeInfo"]
        except DnsError:
            raise
        except Exception as exc:
            self._raise(exc, f"change {name}")
        change_id = info["Id"].rsplit("/", 1)[-1]
        self._wait_insync(change_id, info["Status"], name, sync_timeout)
        return change_id

    def _wait_insync(self, change_id: str, status: str, name: str, timeout: float) -> None:
        # Route53 propagates to its name servers within about a minute; until the change
        # is INSYNC a resolver may still hand out the old target.
        deadline = time.monotonic() + timeout
        delay = 0.5
        while status != "INSYNC":
            if time.monotonic() >= deadline:
                raise DnsError(f"change {change_id} of {name} is still {status} after {timeout:g}s")
            self._sleep(delay)
            delay = min(delay * 2, 5.0)
            try:
                status = self._client.get_change(Id=change_id)["ChangeInfo"]["Status"]
            except Exception as exc:
                self._raise(exc, f"follow change {change_id} of {name}")

    def lookup(self, record: str) -> DnsAnswer:
        """What ``record`` points at and its TTL (ListResourceRecordSets from the record's
        name and type, exact match); :class:`DnsRecordMissing` when there is no such CNAME."""
        name = self._record(record)
        try:
            found = self._client.list_resource_record_sets(
                HostedZoneId=self.zone_id,
                StartRecordName=name,
                StartRecordType="CNAME",
                MaxItems="1",
            )
        except DnsError:
            raise
        except Exception as exc:
            self._raise(exc, f"read {name}")
        # The listing starts *at* the name: the first set is another name's when ours is
        # missing, so only an exact match counts.
        for rrset in found.get("ResourceRecordSets", []):
            if normalize(rrset["Name"]) != name or rrset["Type"] != "CNAME":
                break
            values = rrset.get("ResourceRecords", [])
            if "TTL" not in rrset or len(values) != 1:
                raise DnsError(
                    f"record {name} is not a plain CNAME with one value (an alias or a "
                    "routing policy is not supported)"
                )
            return DnsAnswer(normalize(values[0]["Value"]), int(rrset["TTL"]))
        raise DnsRecordMissing(f"no CNAME record {name} in zone {self.zone_name}")

    # ------------------------------------------------------------------ errors

    def _raise(self, exc: Exception, what: str) -> NoReturn:
        """One :class:`DnsError` for a botocore failure, never quoting a credential."""
        if isinstance(exc, bexc.ClientError):
            err = exc.response.get("Error", {})
            code = str(err.get("Code", "")) or "error"
            if code == "NoSuchHostedZone":
                self._zone_id = None  # deleted meanwhile: look it up again next time
                raise DnsZoneMissing(
                    f"cannot {what}: hosted zone {self.zone_name} no longer exists"
                ) from None
            if code in _DENIED_CODES:
                raise DnsError(
                    f"cannot {what}: {self.api} refused the credentials ({code})"
                ) from None
            detail = ""
            if code in _QUOTED_CODES:
                detail = ": " + " ".join(str(err.get("Message", "")).split())[:200]
            raise DnsError(f"cannot {what}: {self.api} answered {code}{detail}") from None
        if isinstance(exc, bexc.NoCredentialsError | bexc.PartialCredentialsError):
            raise DnsError(
                f"cannot {what}: no AWS credentials for {self.api} (boto3 reads them from "
                "the environment, a profile or the instance role)"
            ) from None
        if isinstance(exc, _CONNECTION):
            raise DnsError(f"cannot {what}: {self.api} is unreachable") from None
        if isinstance(exc, bexc.BotoCoreError):
            raise DnsError(f"cannot {what}: {type(exc).__name__}") from None
        raise exc
