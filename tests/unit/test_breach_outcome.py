"""``recover breach --json`` from a security-breach run: the runbook's steps folded back
into the six steps the command has always printed, the counts read from their outputs."""

from __future__ import annotations

from pathlib import Path

import pytest

from payapi.core.errors import UsageError
from payapi.recovery import breach, service
from payapi.recovery.executor import Executor
from payapi.recovery.runbook import Runbook


def _book() -> Runbook:
    steps = [
        ("contain", "every client blocked at EAPI"),
        ("revoke", "7 tokens revoked"),
        ("rotate", "3 clients rotated, 2 tokens revoked"),
        ("deploy", "deployed"),
        ("security", "security check: 9 checks pass"),
        ("monitoring", "rules written"),
        ("unblock", "new secrets in force"),
    ]
    return Runbook.model_validate(
        {
            "name": breach.RUNBOOK,
            "title": "t",
            "parameters": {
                "reason": {"type": "str"},
                "clients": {"type": "str", "default": ""},
                "all_clients": {"type": "bool", "default": False},
                "rules_dir": {"type": "str", "default": ""},
            },
            "steps": [
                {"id": sid, "action": "noop", "params": {"message": out}} for sid, out in steps
            ],
        }
    )


def test_the_run_folds_into_the_six_steps_with_their_counts(tmp_path: Path) -> None:
    rb = _book()
    values = rb.resolve({"reason": "leak", "all_clients": "true", "rules_dir": "/r"})
    result = Executor(journal_dir=tmp_path).start(rb, values)
    out = breach.outcome(service.view(result.path))
    assert [s["name"] for s in out["steps"]] == [
        "containment",
        "rotation",
        "clean deployment",
        "security verification",
        "enhanced monitoring",
        "lift the block",
    ]
    assert out["steps"][0]["detail"] == "every client blocked at EAPI, 7 tokens revoked"
    assert (out["ok"], out["error"], out["clients"]) == (True, None, "all")
    assert (out["rotated"], out["tokens_revoked"]) == (3, 9)
    assert out["rules_file"] == "/r/alerts-security.yml"
    assert out["run_id"] == result.run_id


def test_exactly_one_of_clients_and_all_clients() -> None:
    assert breach.client_names("a, b", False) == ["a", "b"]
    assert breach.client_names("", True) is None
    for clients, every in (("", False), ("a", True)):
        with pytest.raises(UsageError):
            breach.client_names(clients, every)
