"""The action registry and the generic actions."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel

from payapi.recovery import actions
from payapi.recovery.actions import Action, ActionContext, ActionFailed, ActionParamsError

CTX = ActionContext("run", "step", 1, 5.0)


def run(name: str, params: dict[str, object], ctx: ActionContext = CTX) -> str:
    action = actions.get(name)
    return action.run(actions.validate(action, params), ctx)


def test_the_generic_actions_are_registered() -> None:
    assert {"noop", "sleep", "shell", "http_check", "fail"} <= set(actions.names())


def test_an_unknown_action_names_the_known_ones() -> None:
    with pytest.raises(actions.UnknownAction, match=r"no action 'nope' .*noop"):
        actions.get("nope")


def test_params_are_validated_by_the_actions_model() -> None:
    with pytest.raises(ActionParamsError, match="action shell: argv"):
        actions.validate(actions.get("shell"), {"argv": []})
    with pytest.raises(ActionParamsError, match="action noop: colour: Extra inputs"):
        actions.validate(actions.get("noop"), {"colour": "red"})
    with pytest.raises(ActionParamsError, match="API_TOKEN looks like a secret"):
        actions.validate(actions.get("shell"), {"argv": ["x"], "env": {"API_TOKEN": "t"}})


def test_shell_runs_an_argv_and_fails_on_a_bad_exit(tmp_path: Path) -> None:
    marker = tmp_path / "m"
    assert run("shell", {"argv": ["sh", "-c", f"echo hi >> {marker}; echo done"]}) == "done"
    assert marker.read_text() == "hi\n"
    with pytest.raises(ActionFailed, match="exited 3"):
        run("shell", {"argv": ["sh", "-c", "exit 3"]})
    with pytest.raises(ActionFailed, match="timed out"):
        run("shell", {"argv": ["sleep", "5"]}, ActionContext("r", "s", 1, 0.2))
    with pytest.raises(ActionFailed, match="no-such-program"):
        run("shell", {"argv": ["no-such-program-here"]})
    text = actions.get("shell").describe(
        actions.validate(actions.get("shell"), {"argv": ["no-such-program-here"]}), CTX
    )
    assert "NOT FOUND" in text


def test_fail_fails_its_first_attempts_then_succeeds() -> None:
    with pytest.raises(ActionFailed, match="failed on purpose"):
        run("fail", {})
    with pytest.raises(ActionFailed):
        run("fail", {"attempts": 2}, ActionContext("r", "s", 2, 5))
    assert run("fail", {"attempts": 2}, ActionContext("r", "s", 3, 5)) == "succeeded at attempt 3"


def test_sleep_honours_the_timeout() -> None:
    assert run("sleep", {"seconds": "0s"}) == "slept 0s"
    with pytest.raises(ActionFailed, match="timed out"):
        run("sleep", {"seconds": 1}, ActionContext("r", "s", 1, 0.05))


def test_http_check_says_what_it_got() -> None:
    # Nothing listens on port 9 of loopback: a connection error is a failed check.
    with pytest.raises(ActionFailed, match=r"GET http://127\.0\.0\.1:9/x: ConnectError"):
        run("http_check", {"url": "http://127.0.0.1:9/x"})
    described = actions.get("http_check").describe(
        actions.validate(actions.get("http_check"), {"url": "http://u:pw@127.0.0.1:9/"}), CTX
    )
    assert "pw" not in described and "expect 200 (now: ConnectError)" in described


def test_a_new_action_registers_by_name() -> None:
    class EchoParams(BaseModel):
        text: str

    @actions.register
    class Echo(Action[EchoParams]):
        name = "test-echo"
        Params = EchoParams

        def run(self, params: EchoParams, ctx: ActionContext) -> str:
            return params.text

    assert run("test-echo", {"text": "hi"}) == "hi"
    with pytest.raises(ValueError, match="registered twice"):

        @actions.register
        class Other(Echo):
            pass
