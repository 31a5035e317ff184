"""The DNS record that names the serving region, in a Route53 hosted zone.

The same boto3 code talks to AWS Route53 in production and to moto's server in the lab
(``endpoint_url``). The record is a CNAME from the global name (``api.payments.example``)
to a region's name (``dr.payments.example``): the region is what the record *names*, and
whoever reads it maps the region to its endpoint (the lab's forwarder: the region's EAPI
URL; production: the region's load balancer, which the CNAME's target resolves to).

Errors are one line (:class:`DnsError`) naming the request, never credentials.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

from payapi.core.errors import PayapiError

# moto accepts any credentials; without some, boto3 refuses to sign a request at all.
LAB_CREDENTIALS = {"aws_access_key_id": "lab", "aws_secret_access_key": "lab"}


class DnsError(PayapiError):
    """The DNS API failed or the record is not there; one line for the operator."""


@dataclass(frozen=True)
class DnsAnswer:
    record: str
    target: str
    ttl: int


def _fqdn(name: str) -> str:
    return name if name.endswith(".") else name + "."


def target_for(region: str, zone: str) -> str:
    """The name a region answers on: ``dr`` in ``payments.lab`` → ``dr.payments.lab.``."""
    return _fqdn(f"{region}.{zone.rstrip('.')}")


def region_of(target: str, zone: str) -> str | None:
    """The region a CNAME target names (None when it is not a region of ``zone``)."""
    suffix = "." + _fqdn(zone)
    name = _fqdn(target)
    if not name.endswith(suffix):
        return None
    head = name[: -len(suffix)]
    return head if head and "." not in head else None


class Route53Dns:
    def __init__(
        self, zone: str, *, endpoint_url: str | None = None, region_name: str = "us-east-1"
    ) -> None:
        import boto3

        self.zone = _fqdn(zone)
        kwargs: dict[str, Any] = {"region_name": region_name}
        if endpoint_url:
            kwargs["endpoint_url"] = endpoint_url
            if not os.environ.get("AWS_ACCESS_KEY_ID"):
                kwargs.update(LAB_CREDENTIALS)
        self._client: Any = boto3.client("route53", **kwargs)
        self._zone_id: str | None = None

    def _call(self, what: str, fn: Any, **kwargs: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return fn(**kwargs)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "error")
            raise DnsError(f"Route53 {what}: {code}") from None
        except BotoCoreError as exc:
            raise DnsError(f"Route53 {what}: {type(exc).__name__}") from None

    def _find_zone(self) -> str | None:
        page = self._call(
            "ListHostedZonesByName", self._client.list_hosted_zones_by_name, DNSName=self.zone
        )
        for z in page.get("HostedZones", []):
            if z["Name"] == self.zone:
                return str(z["Id"]).split("/")[-1]
        return None

    @property
    def zone_id(self) -> str:
        if self._zone_id is None:
            found = self._find_zone()
            if found is None:
                raise DnsError(f"no hosted zone {self.zone}")
            self._zone_id = found
        return self._zone_id

    def ensure_zone(self) -> str:
        """The hosted zone's id, created when missing (the lab's moto starts empty)."""
        found = self._find_zone()
        if found is None:
            made = self._call(
                "CreateHostedZone",
                self._client.create_hosted_zone,
                Name=self.zone,
                CallerReference=f"payapi-{time.time_ns()}",
            )
            found = str(made["HostedZone"]["Id"]).split("/")[-1]
        self._zone_id = found
        return found

    def upsert_cname(self, record: str, target: str, ttl: int) -> str:
        """UPSERT ``record`` → ``target`` and wait until Route53 says INSYNC."""
        change = self._call(
            "ChangeResourceRecordSets",
            self._client.change_resource_record_sets,
            HostedZoneId=self.zone_id,
            ChangeBatch={
                "Comment": "payapi region failover",
                "Changes": [
                    {
                        "Action": "UPSERT",
                        "ResourceRecordSet": {
                            "Name": _fqdn(record),
                            "Type": "CNAME",
                            "TTL": ttl,
                            "ResourceRecords": [{"Value": _fqdn(target)}],
                        },
                    }
                ],
            },
        )
        info = change["ChangeInfo"]
        deadline = time.monotonic() + 120
        while info.get("Status") == "PENDING" and time.monotonic() < deadline:
            time.sleep(1.0)
            info = self._call("GetChange", self._client.get_change, Id=info["Id"])["ChangeInfo"]
        if info.get("Status") not in ("INSYNC", None):
            raise DnsError(f"Route53 change {info.get('Id')} still {info.get('Status')}")
        return str(info.get("Id", ""))

    def lookup(self, record: str) -> DnsAnswer:
        """The record as the API has it (``ListResourceRecordSets``), exact name only."""
        name = _fqdn(record)
        page = self._call(
            "ListResourceRecordSets",
            self._client.list_resource_record_sets,
            HostedZoneId=self.zone_id,
            StartRecordName=name,
            StartRecordType="CNAME",
            MaxItems="1",
        )
        for rr in page.get("ResourceRecordSets", []):
            if rr["Name"] == name and rr["Type"] == "CNAME" and rr.get("ResourceRecords"):
                return DnsAnswer(name, rr["ResourceRecords"][0]["Value"], int(rr.get("TTL", 0)))
        raise DnsError(f"no CNAME record {name} in {self.zone}")
