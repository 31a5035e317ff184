"""What a regional failover decides, as pure functions over what was observed.

:func:`refuse_failover` is the assessment of the seed's "Regional Failure Recovery": a
region that still answers is not failed away from unless the operator forces it (and then
it is fenced first). :func:`choose_source` says which region is being left.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from payapi.core.errors import UsageError

if TYPE_CHECKING:
    from payapi.core.settings import Settings


class RefusedError(UsageError):
    """The procedure was refused before it changed anything (exit 2)."""


@dataclass(frozen=True)
class RegionProbe:
    """One region as seen from here, right now."""

    name: str
    patroni_answers: bool  # some member's REST API answered
    leader: str | None  # Patroni's leader (or standby leader) of the region's cluster
    standby_cluster: bool  # the cluster streams from another region
    writable: bool  # a member is out of recovery

    @property
    def reachable(self) -> bool:
        return self.patroni_answers or self.writable

    def describe(self) -> str:
        if not self.reachable:
            return f"region {self.name} is unreachable (no Patroni member, no database answers)"
        role = "writable" if self.writable else "read-only"
        lead = f", leader {self.leader}" if self.leader else ", no leader"
        return f"region {self.name} answers ({role}{lead})"


def refuse_failover(source: RegionProbe, *, force: bool) -> str | None:
    """Why a failover away from ``source`` is refused (None: go ahead)."""
    if source.reachable and not force:
        return (
            f"{source.describe()}: refusing a regional failover while it is reachable "
            "(use --force to fence it and fail over anyway)"
        )
    return None


def choose_source(
    settings: Settings, to: str, serving: str | None, target_writable: bool | None = None
) -> str:
    """The region being left: the one the DNS record names, else the configured primary.

    A record that names ``to`` already means it serves, unless its database does not take
    writes (``target_writable`` False): then an earlier run stopped after moving the record,
    and running again completes it (every step is idempotent)."""
    if serving is not None and serving != to:
        return serving
    if serving == to and target_writable is not False:
        raise RefusedError(f"region {to} already serves (the DNS record names it)")
    others = [n for n, r in settings.regions.items() if n != to and r.role == "primary"]
    if not others:
        others = [n for n in settings.regions if n != to]
    if not others:
        raise RefusedError(f"no region to fail over from (only {to} is configured)")
    return others[0]
