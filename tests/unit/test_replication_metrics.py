"""The replication figures as Prometheus metrics (ops.metrics.replication_families)."""

from __future__ import annotations

import math

from prometheus_client.parser import text_string_to_metric_families

from payapi.ops.metrics import render
from payapi.ops.rpo import report
from tests.unit.test_rpo import NOW, PLAN, healthy
from tests.unit.test_rpo_replication import regions


def samples(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text.decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_no_replication_figures_without_regions() -> None:
    got = samples(render(report(PLAN, healthy(), NOW)))
    assert not any(name.startswith("payapi_replication_") for name, _ in got)


def test_member_lag_dr_lag_sync_standby_and_the_objective() -> None:
    got = samples(render(report(PLAN, healthy(replication=regions()), NOW)))
    member = (("member", "pg2"), ("region", "primary"), ("role", "sync_standby"))
    assert got[("payapi_replication_member_up", member)] == 1.0
    assert got[("payapi_replication_lag_bytes", member)] == 0.0
    dr = (("member", "dr1"), ("region", "dr"))
    assert got[("payapi_replication_dr_lag_seconds", dr)] == 0.0
    assert got[("payapi_replication_dr_lag_bytes", dr)] == 0.0
    assert got[("payapi_replication_sync_standby", (("region", "primary"),))] == 1.0
    assert got[("payapi_replication_rpo_objective_seconds", ())] == 300.0  # the vault's 5m


def test_a_lost_sync_standby_is_0_and_an_unknown_dr_lag_is_infinite() -> None:
    obs = healthy(replication=regions(sync=False, dr_reachable=False))
    got = samples(render(report(PLAN, obs, NOW)))
    assert got[("payapi_replication_sync_standby", (("region", "primary"),))] == 0.0
    assert math.isinf(
        got[("payapi_replication_dr_lag_seconds", (("member", "dr1"), ("region", "dr")))]
    )
