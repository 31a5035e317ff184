"""The global endpoint's routing decision (pure): cache for max(refresh, ttl), keep the
last answer when the record cannot be read, refuse without one, retire on a switch."""

from __future__ import annotations

import pytest

from payapi.servers.endpoint_route import (
    MIN_INTERVAL_SECONDS,
    LookupFailed,
    Resolved,
    RouteState,
    Upstream,
    after_lookup,
    cache_seconds,
    staleness_seconds,
)
from payapi.systems.route53 import DnsError, normalize, region_of, target_for

PRIMARY = Upstream("primary", "127.0.0.1", 8001)
DR = Upstream("dr", "127.0.0.1", 8002)


def test_first_good_read_forwards_and_caches_for_the_longer_of_ttl_and_refresh() -> None:
    step = after_lookup(RouteState(), Resolved(PRIMARY, 30), now=100.0, refresh=5)
    assert step.state.upstream == PRIMARY
    assert step.state.next_read_at == 130.0  # the TTL is longer than the refresh
    assert step.retired is None
    assert step.note == "forwarding to primary (127.0.0.1:8001)"
    step = after_lookup(RouteState(), Resolved(PRIMARY, 1), now=100.0, refresh=5)
    assert step.state.next_read_at == 105.0  # the refresh is longer than the TTL


def test_a_new_target_switches_and_retires_the_old_upstream() -> None:
    state = RouteState(PRIMARY, 10.0)
    step = after_lookup(state, Resolved(DR, 5), now=10.0, refresh=5)
    assert step.state.upstream == DR
    assert step.retired == PRIMARY
    assert step.note is not None and "switching from primary" in step.note


def test_the_same_answer_is_quiet() -> None:
    step = after_lookup(RouteState(PRIMARY, 10.0), Resolved(PRIMARY, 5), now=10.0, refresh=5)
    assert step.retired is None and step.note is None
    assert step.state == RouteState(PRIMARY, 15.0)


def test_a_failed_read_keeps_the_last_answer_and_retries_after_refresh() -> None:
    state = RouteState(PRIMARY, 10.0)
    step = after_lookup(state, LookupFailed("DNS API unreachable"), now=10.0, refresh=2)
    assert step.state.upstream == PRIMARY
    assert step.state.next_read_at == 12.0
    assert step.retired is None
    assert step.note == "keeping primary (127.0.0.1:8001): DNS API unreachable"
    # The same failure again is not logged again; recovery is.
    again = after_lookup(step.state, LookupFailed("DNS API unreachable"), now=12.0, refresh=2)
    assert again.note is None and again.state.upstream == PRIMARY
    back = after_lookup(again.state, Resolved(PRIMARY, 1), now=14.0, refresh=2)
    assert back.note is not None and "readable again" in back.note
    assert back.state.last_error is None


def test_without_any_answer_connections_are_refused() -> None:
    step = after_lookup(RouteState(), LookupFailed("no CNAME record"), now=0.0, refresh=1)
    assert step.state.upstream is None
    assert step.note is not None and step.note.startswith("no answer yet, refusing")


def test_zero_ttl_and_refresh_still_leave_a_floor() -> None:
    assert cache_seconds(0, 0) == MIN_INTERVAL_SECONDS
    step = after_lookup(RouteState(), LookupFailed("x"), now=0.0, refresh=0)
    assert step.state.next_read_at == MIN_INTERVAL_SECONDS


def test_due() -> None:
    state = RouteState(PRIMARY, 10.0)
    assert not state.due(9.99)
    assert state.due(10.0)
    assert RouteState().due(0.0)


@pytest.mark.parametrize(("ttl", "refresh", "bound"), [(60, 5, 60), (1, 5, 5), (0, 0, 0)])
def test_staleness_is_one_cache_period(ttl: float, refresh: float, bound: float) -> None:
    assert staleness_seconds(ttl, refresh) == bound


def test_dns_names() -> None:
    assert normalize("API.Payments.Lab") == "api.payments.lab."
    assert normalize("api.payments.lab.") == "api.payments.lab."
    assert target_for("dr", "payments.lab") == "dr.payments.lab."
    assert region_of("DR.payments.lab.", "payments.lab.") == "dr"
    assert region_of(target_for("primary", "payments.lab."), "payments.lab") == "primary"


@pytest.mark.parametrize(
    "target", ["payments.lab.", "a.b.payments.lab.", "dr.other.lab.", "xpayments.lab."]
)
def test_region_of_refuses_what_is_not_one_label_under_the_zone(target: str) -> None:
    with pytest.raises(DnsError, match=r"not <region>\.payments\.lab\."):
        region_of(target, "payments.lab")


@pytest.mark.parametrize("name", ["", ".", "a..b", "a b.c"])
def test_normalize_refuses_non_names(name: str) -> None:
    with pytest.raises(DnsError, match="not a DNS name"):
        normalize(name)
