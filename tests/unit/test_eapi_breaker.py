"""EAPI's Redis breaker: open after a failure, one probe after a short cooldown, closed
by a success (so EAPI is healthy again within a second of Redis coming back)."""

from __future__ import annotations

from payapi.eapi.cache import Breaker


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_cooldown_is_short_by_default() -> None:
    assert Breaker().cooldown <= 1.0


def test_closed_until_a_failure() -> None:
    b = Breaker(cooldown=0.5, clock=Clock())
    assert not b.open
    assert b.allow() and b.allow()  # closed: every request tries Redis


def test_one_probe_after_the_cooldown_then_a_success_closes() -> None:
    clock = Clock()
    b = Breaker(cooldown=0.5, clock=clock)
    b.trip()
    assert b.open and not b.allow()
    clock.now += 0.5
    assert not b.open
    assert b.allow()  # the probe
    assert b.open and not b.allow()  # others wait for its answer instead of piling on
    b.reset()  # the probe succeeded
    assert not b.open and b.allow() and b.allow()


def test_a_failed_probe_starts_the_cooldown_again() -> None:
    clock = Clock()
    b = Breaker(cooldown=0.5, clock=clock)
    b.trip()
    clock.now += 0.6
    assert b.allow()
    b.trip()
    clock.now += 0.4
    assert not b.allow()
    clock.now += 0.1
    assert b.allow()


def test_an_abandoned_probe_lets_the_next_request_probe() -> None:
    clock = Clock()
    b = Breaker(cooldown=0.5, clock=clock)
    b.trip()
    clock.now += 1
    assert b.allow()
    b.abandon()  # cancelled: neither a success nor a failure
    assert b.allow()
