"""The ``system-recovery`` runbook on the engine, with a provider standing in for the
lab's rebuild (the real one runs in tests/scenarios/test_system_recovery.py and
test_region_rebuild.py): the steps in order, resume at the failed step without repeating
the completed ones, and one line without a provider."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from payapi.core.journal import Journal
from payapi.core.settings import Settings
from payapi.recovery import actions, actions_system, service
from payapi.recovery.actions import ActionContext, ActionFailed
from payapi.recovery.actions_system import STEPS, SystemParams
from payapi.recovery.run_state import RunStatus
from payapi.recovery.runbook import Runbook


class Fake:
    def __init__(self, fail_at: str | None = None) -> None:
        self.fail_at = fail_at
        self.ran: list[str] = []

    def run(self, params: SystemParams, settings: Settings | None) -> str:
        self.ran.append(params.step)
        if params.step == self.fail_at:
            raise ActionFailed(f"{params.step}: broken")
        return f"{params.step} done in {params.into or params.region}"

    def describe(self, params: SystemParams, settings: Settings | None) -> str:
        return f"would {params.step}"


@pytest.fixture
def settings(tmp_path: Path) -> Iterator[Settings]:
    yield Settings(config_path=tmp_path / "payapi.toml")
    actions_system.install(None)


def test_the_shipped_runbook_has_the_steps_in_order() -> None:
    from payapi.recovery.catalogue import find

    rb: Runbook = find([], "system-recovery").runbook
    assert [s.id for s in rb.steps] == list(STEPS)
    assert all(s.action == "system_recovery" for s in rb.steps)
    assert [s.params["step"] for s in rb.steps] == list(STEPS)


def test_a_failed_step_resumes_there_without_repeating_the_done_ones(
    settings: Settings, tmp_path: Path
) -> None:
    fake = Fake(fail_at="redis")
    actions_system.install(fake)
    given = {"into": str(tmp_path / "site")}
    first = service.start_run(
        settings, name="system-recovery", given=given, journal=Journal(), requested_by="op"
    )
    assert first.state.status is RunStatus.FAILED and "redis: broken" in first.reason
    assert fake.ran == ["configuration", "database", "vault", "redis"]
    fake.fail_at = None
    again = service.resume_run(settings, run_id=first.run_id, journal=Journal(), requested_by="op")
    assert again.ok, again.reason
    assert fake.ran == [
        "configuration",
        "database",
        "vault",
        "redis",
        "redis",
        "services",
        "verify",
    ]


def test_the_dry_run_only_describes(settings: Settings, tmp_path: Path) -> None:
    fake = Fake()
    actions_system.install(fake)
    plan = service.plan_dry_run(settings, name="system-recovery", given={"region": "dr"})
    assert plan.ok and [p.action.would for p in plan.steps] == [f"would {s}" for s in STEPS]
    assert fake.ran == [] and not settings.runbook_journal_dir().exists()


def test_without_a_provider_or_a_target_one_line(settings: Settings) -> None:
    action = actions.get("system_recovery")
    ctx = ActionContext("r", "configuration", 1, 60.0, settings)
    with pytest.raises(ActionFailed, match="no system-recovery provider"):
        action.run(SystemParams(step="configuration", into="/x"), ctx)
    actions_system.install(Fake())
    with pytest.raises(ActionFailed, match=r"into .* or region"):
        action.run(SystemParams(step="configuration"), ctx)
    with pytest.raises(ActionFailed, match=r"into .* or region"):
        action.describe(SystemParams(step="vault", into="/x", region="dr"), ctx)
