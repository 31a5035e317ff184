"""The component-failure actions' parameter models, and the shipped ladders' shape."""

from __future__ import annotations

from typing import Any

import pytest

from payapi.recovery import actions
from payapi.recovery.actions import ActionContext
from payapi.recovery.catalogue import find


@pytest.mark.parametrize(
    ("action", "params", "field"),
    [
        ("component_health", {"component": "kafka"}, "component"),
        ("component_health", {"component": "eapi", "region": "Bad Region"}, "region"),
        ("component_health", {"component": "eapi", "extra": 1}, "extra"),
        ("component_scale", {"component": "redis"}, "component"),
        ("component_scale", {"component": "eapi", "replicas": 0}, "replicas"),
        ("component_failover", {"component": "eapi"}, "component"),
        ("component_restore", {"component": "sapi"}, "component"),
        ("component_restore", {"component": "db", "region": "dr"}, "region"),
        ("invalidate_verifications", {"all": True}, "all"),
    ],
)
def test_component_action_params_are_validated(
    action: str, params: dict[str, Any], field: str
) -> None:
    with pytest.raises(actions.ActionParamsError, match=f"action {action}: {field}"):
        actions.validate(actions.get(action), params)


def test_component_actions_need_the_configuration() -> None:
    ctx = ActionContext("r", "s", 1, 5.0)
    action = actions.get("component_health")
    with pytest.raises(actions.ActionFailed, match="needs the platform's configuration"):
        action.run(actions.validate(action, {"component": "eapi"}), ctx)


@pytest.mark.parametrize("component", ["eapi", "sapi", "vault", "redis", "db"])
def test_every_component_has_a_shipped_ladder(component: str) -> None:
    rb = find([], f"component-{component}").runbook
    ids = [s.id for s in rb.steps]
    assert ids[0] == "check" and ids[-1] == "verify"
    assert rb.steps[0].skip_to == "end"
    assert ("failover" in ids) == ("restore" in ids) == (component in ("vault", "redis", "db"))
    assert ids.index("restart") < ids.index("config")
    if component == "vault":
        assert ids.index("restore") < ids.index("invalidate-cache") < ids.index("verify")


def test_the_vault_failover_rung_is_skipped_when_no_standby_vault_answers(tmp_path: Any) -> None:
    """Every vault process dead: failing the database over under them would not help
    (found by the vault-failure drill: the rung waited its whole timeout)."""
    from payapi.core.settings import load_settings
    from payapi.servers.procs import free_port

    dead = [free_port(), free_port()]  # nothing listens there
    config = tmp_path / "payapi.toml"
    config.write_text(
        '[regions.primary]\nrole = "primary"\n'
        + "".join(
            f'\n[[regions.primary.vault]]\nname = "v{i}"\nrole = "{role}"\n'
            f'url = "http://127.0.0.1:{port}"\n'
            for i, (role, port) in enumerate(zip(("leader", "standby"), dead, strict=True))
        )
    )
    settings = load_settings(config)
    ctx = ActionContext("r", "s", 1, 5.0, settings=settings)
    action = actions.get("component_failover")
    params = actions.validate(action, {"component": "vault", "region": "primary"})
    with pytest.raises(actions.ActionSkipped, match="no standby vault of region primary answers"):
        action.run(params, ctx)
