"""`payapi recover component X` on the shared lab (seed "Component Failure Recovery"):
each component killed with SIGKILL and brought back by its runbook, a payment through
EAPI afterwards; a healthy component's recovery does nothing; a dry run changes nothing.
The one-region lab has no standby, so the failover rung is skipped with a reason."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from payapi.servers.procs import pid_alive, read_pid
from tests.scenarios.conftest import Client, LabHandle, run_cli

pytestmark = pytest.mark.slow


def _pid(lab: LabHandle, component: str) -> int:
    if component == "db":
        pid = int((lab.lab.pg.datadir / "postmaster.pid").read_text().split()[0])
    elif component == "redis":
        pid = read_pid(lab.lab.redis.pidfile) or 0
    else:
        pid = read_pid(lab.lab.pidfile(component)) or 0
    assert pid > 0, f"no pid recorded for {component}"
    return pid


def _kill(lab: LabHandle, component: str) -> int:
    pid = _pid(lab, component)
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not pid_alive(pid)
    return pid


def _pay(lab: LabHandle, client: Client, reference: str, within: float = 20.0) -> None:
    """A payment through EAPI succeeds (within a bounded wait: pools reconnect)."""
    deadline = time.monotonic() + within
    last = ""
    with lab.http() as http:
        while True:
            try:
                r = http.post(
                    "/api/v1/payments",
                    headers=client.headers,
                    json={"amount": "5.00", "currency": "USD", "reference": reference},
                )
                if r.status_code == 201:
                    return
                last = f"{r.status_code} {r.text[:200]}"
            except Exception as exc:  # the connection, while EAPI's dependencies return
                last = type(exc).__name__
            if time.monotonic() > deadline:
                raise AssertionError(f"no payment within {within:.0f}s: {last}")
            time.sleep(0.5)


def _recover(lab: LabHandle, *args: str, check: bool = True) -> dict[str, object]:
    res = run_cli("recover", "component", *args, "--json", config=lab.config, check=check)
    data: dict[str, object] = json.loads(res.stdout)
    data["_rc"] = res.returncode
    return data


def _steps(data: dict[str, object]) -> dict[str, dict[str, object]]:
    return {s["step"]: s for s in data["steps"]}  # type: ignore[attr-defined,index]


@pytest.fixture(scope="module")
def client(lab: LabHandle) -> Client:
    return lab.create_client("component-recovery")


def test_a_healthy_component_is_left_alone_and_a_dry_run_changes_nothing(
    lab: LabHandle, client: Client
) -> None:
    pids = {c: _pid(lab, c) for c in ("eapi", "sapi", "vault", "redis", "db")}
    for c in ("eapi", "db"):
        data = _recover(lab, c, "--yes")
        assert data["status"] == "succeeded"
        assert data["outcome"] == f"{c} is healthy: nothing to do"
        steps = _steps(data)
        assert steps["check"]["status"] == "ok"
        assert {s["status"] for n, s in steps.items() if n != "check"} == {"skipped"}
    for c in ("eapi", "sapi", "vault", "redis", "db"):
        res = run_cli("recover", "component", c, "--dry-run", "--json", config=lab.config)
        plan = json.loads(res.stdout)
        assert plan["dry_run"] is True and plan["ok"] is True, plan
        would = {s["step"]: s["would"] for s in plan["steps"]}
        assert "now: healthy" in would["check"]
        if c in ("vault", "redis", "db"):
            assert would["failover"].startswith("skip: region primary has no standby")
    # Nothing was restarted: the same processes run, and no run was journaled by a dry run.
    assert {c: _pid(lab, c) for c in pids} == pids
    runs = json.loads(run_cli("runbook", "runs", "--json", config=lab.config).stdout)
    assert len([r for r in runs if r["runbook"].startswith("component-")]) == 2
    _pay(lab, client, "HEALTHY-1", within=5)


@pytest.mark.parametrize("component", ["eapi", "sapi", "vault", "redis", "db"])
def test_a_killed_component_is_recovered_by_its_runbook(
    lab: LabHandle, client: Client, component: str
) -> None:
    before = _kill(lab, component)
    try:
        data = _recover(lab, component, "--yes")
        assert data["_rc"] == 0, data
        steps = _steps(data)
        assert steps["check"]["status"] == "failed"
        assert steps["restart"]["status"] == "ok", steps["restart"]
        assert steps["verify"]["status"] == "ok"
        if component in ("vault", "redis", "db"):
            assert steps["failover"]["status"] == "skipped"
            assert "no standby" in str(steps["failover"]["output"])
            assert steps["restore"]["status"] == "skipped"  # the restart was enough
        assert data["outcome"] == f"{component} recovered by restart and verified"
        assert _pid(lab, component) != before
        _pay(lab, client, f"AFTER-{component.upper()}")
        # The run is journaled: runbook show knows it.
        shown = json.loads(
            run_cli("runbook", "show", str(data["run_id"]), "--json", config=lab.config).stdout
        )
        assert shown["status"] == "succeeded"
    finally:
        lab.ensure_running()


def test_unknown_component_is_bad_usage(lab: LabHandle, tmp_path: Path) -> None:
    res = run_cli("recover", "component", "kafka", config=lab.config, check=False)
    assert res.returncode == 2
    assert len(res.stderr.strip().splitlines()) == 1


def test_dropping_eapi_verifications_empties_the_cache_and_bumps_the_generation(
    lab: LabHandle, client: Client
) -> None:
    import redis

    from payapi.core.settings import load_settings
    from payapi.eapi.cachekeys import GEN_KEY, VERIFICATION_PATTERN
    from payapi.recovery.component_targets import invalidate_eapi_verifications

    _pay(lab, client, "CACHED-1", within=10)  # header auth caches a verification
    conn = redis.Redis.from_url(lab.status["redis"])
    try:
        assert list(conn.scan_iter(match=VERIFICATION_PATTERN))
        gen = int(conn.get(GEN_KEY) or 0)
        assert invalidate_eapi_verifications(load_settings(lab.config)) >= 1
        assert not list(conn.scan_iter(match=VERIFICATION_PATTERN))
        assert int(conn.get(GEN_KEY) or 0) == gen + 2
    finally:
        conn.close()
    _pay(lab, client, "CACHED-2", within=5)  # verified against the vault again
