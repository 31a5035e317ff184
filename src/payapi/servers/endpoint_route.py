"""Which upstream the global endpoint forwards to now: the deciding half, pure.

The endpoint behaves like a caching resolver in front of the record that names the
serving region. A successful read is kept for ``max(refresh, ttl)`` seconds: the record's
TTL is how long the DNS API allows an answer to be reused, and ``refresh`` is how often
the endpoint is configured to ask at most. So a change of the record is followed at the
latest :func:`staleness_seconds` after it is made, which is what
:mod:`payapi.ops.feasibility` counts for a regional failover.

A read that fails keeps the last answer (a DNS API outage must not take the platform
down with it) and is retried after ``refresh``; without any answer yet the endpoint
refuses connections rather than guess a region. No clock is read here: ``now`` is given.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "MIN_INTERVAL_SECONDS",
    "LookupFailed",
    "Resolved",
    "RouteState",
    "Step",
    "Upstream",
    "after_lookup",
    "cache_seconds",
    "staleness_seconds",
]

# However small refresh and TTL are configured, the endpoint asks at most this often.
MIN_INTERVAL_SECONDS = 0.1


@dataclass(frozen=True, slots=True)
class Upstream:
    """Where connections go: a name for logs (the region) and a TCP address."""

    name: str
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.name} ({self.host}:{self.port})"


@dataclass(frozen=True, slots=True)
class Resolved:
    """A successful read: the upstream the record names and the record's TTL."""

    upstream: Upstream
    ttl: float


@dataclass(frozen=True, slots=True)
class LookupFailed:
    """A read that gave no usable answer; ``reason`` is one line, without secrets."""

    reason: str


@dataclass(frozen=True, slots=True)
class RouteState:
    """The cached answer (None before the first good read) and when to read again."""

    upstream: Upstream | None = None
    next_read_at: float = 0.0  # the first read is due at once
    last_error: str | None = None

    def due(self, now: float) -> bool:
        return now >= self.next_read_at


@dataclass(frozen=True, slots=True)
class Step:
    """The outcome of one read: the new state, and what the forwarder must do about it.

    ``retired`` is the upstream connections must leave (the record names another one
    now); ``note`` is a line worth logging, or None when nothing changed.
    """

    state: RouteState
    retired: Upstream | None = None
    note: str | None = None


def cache_seconds(ttl: float, refresh: float) -> float:
    """How long one good answer is used before the record is read again."""
    return max(ttl, refresh, MIN_INTERVAL_SECONDS)


def staleness_seconds(ttl: float, refresh: float) -> float:
    """The longest the endpoint may keep forwarding to a region after the record has
    been changed to name another: one cache period, ``max(ttl, refresh)``."""
    return max(ttl, refresh)


def after_lookup(
    state: RouteState, result: Resolved | LookupFailed, *, now: float, refresh: float
) -> Step:
    """The state after a read at ``now``: switch, keep, or stay without an answer."""
    if isinstance(result, LookupFailed):
        retry_at = now + max(refresh, MIN_INTERVAL_SECONDS)
        kept = state.upstream
        new = RouteState(kept, retry_at, result.reason)
        if state.last_error == result.reason:
            return Step(new)  # the same failure again: said once already
        if kept is None:
            return Step(new, note=f"no answer yet, refusing connections: {result.reason}")
        return Step(new, note=f"keeping {kept}: {result.reason}")
    upstream = result.upstream
    new = RouteState(upstream, now + cache_seconds(result.ttl, refresh))
    previous = state.upstream
    if previous is None:
        return Step(new, note=f"forwarding to {upstream}")
    if previous != upstream:
        return Step(new, retired=previous, note=f"switching from {previous} to {upstream}")
    if state.last_error is not None:
        return Step(new, note=f"the record is readable again: still {upstream}")
    return Step(new)
