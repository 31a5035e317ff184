"""Runbooks as YAML: strict validation with one-line errors naming the file and the field,
typed parameters, and the one templating form ``{{ name }}``."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from payapi.recovery import catalogue, templating
from payapi.recovery.catalogue import RunbookError
from payapi.recovery.runbook import ParameterError, Runbook


def rb(body: str) -> str:
    return "name: demo\ntitle: Demo\n" + textwrap.dedent(body)


OK = rb(
    """
    parameters:
      component: {type: choice, choices: [eapi, sapi], default: eapi}
      count: {type: int, default: 2}
      dry: {type: bool, default: false}
      wait: {type: duration, default: 2m}
      target: {type: str}
    steps:
      - id: check
        action: noop
        params: {message: "{{ component }} x{{ count }}"}
      - id: restart
        action: sleep
        params: {seconds: "{{ wait }}"}
        timeout: 5m
        retries: 3
        backoff: {initial: 1s, multiplier: 3, max: 10s}
        on_failure: rollback
        rollback: undo
        approval: infrastructure-lead
        verify: {action: noop, params: {message: "{{ target }}"}}
    rollback_steps:
      - id: undo
        action: noop
    """
)


def test_a_full_runbook_validates() -> None:
    r = catalogue.parse(OK, "demo.yaml")
    step = r.step("restart")
    assert step.timeout == 300.0
    assert step.approval is not None and step.approval.role == "infrastructure-lead"
    assert [step.backoff.delay(n) for n in (1, 2, 3, 4)] == [1.0, 3.0, 9.0, 10.0]
    assert r.actions() == {"noop", "sleep"}


def test_parameters_are_typed_and_defaulted() -> None:
    r = catalogue.parse(OK, "demo.yaml")
    values = r.resolve({"target": "db", "count": "5", "dry": "yes"})
    assert values == {"component": "eapi", "count": 5, "dry": True, "wait": 120.0, "target": "db"}


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({}, "parameter target is required"),
        ({"target": "x", "count": "many"}, "parameter count: expected an integer"),
        ({"target": "x", "component": "redis"}, "expected one of eapi, sapi"),
        ({"target": "x", "dry": "maybe"}, "expected true or false"),
        ({"target": "x", "wait": "soon"}, "unparseable duration"),
        ({"target": "x", "colour": "red"}, "no parameter 'colour'"),
    ],
)
def test_bad_parameters_are_usage_errors(given: dict[str, str], message: str) -> None:
    r = catalogue.parse(OK, "demo.yaml")
    with pytest.raises(ParameterError, match=message) as exc:
        r.resolve(given)
    assert exc.value.exit_code == 2


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            "steps:\n  - id: a\n    action: noop\n    timout: 3\n",
            "steps[0] (a).timout: unknown field",
        ),
        ("stepz: []\n", "stepz: unknown field"),
        (
            "steps:\n  - id: a\n    action: noop\n    timeout: soon\n",
            "steps[0] (a).timeout: unparseable",
        ),
        ("steps:\n  - id: a\n    action: nope\n", "steps[0] (a).action: no action 'nope'"),
        (
            "steps:\n  - id: a\n    action: noop\n    verify: {action: nah}\n",
            "steps[0] (a).verify.action: no action 'nah'",
        ),
        (
            "steps:\n  - id: a\n    action: noop\n    on_failure: explode\n",
            "steps[0] (a).on_failure",
        ),
        (
            "steps:\n  - id: a\n    action: noop\n    on_failure: rollback\n",
            "needs rollback: STEP_ID",
        ),
        (
            "steps:\n  - id: a\n    action: noop\n    on_failure: rollback\n    rollback: b\n",
            "steps[0] (a).rollback: no step 'b'",
        ),
        ("steps:\n  - id: a\n    action: noop\n  - id: a\n    action: noop\n", "unique: a"),
        ("steps:\n  - id: a\n    action: noop\n    params: {m: '{{ who }}'}\n", "{{ who }} is not"),
        (
            "steps:\n  - id: a\n    action: noop\n    params: {m: '{{ a | upper }}'}\n",
            "only {{ name }}",
        ),
        ("steps: []\n", "steps: List should have at least 1 item"),
        ("steps:\n  - action: noop\n", "steps[0].id: required field missing"),
        (
            "parameters: {api_token: {type: str}}\nsteps:\n  - id: a\n    action: noop\n",
            "parameters.api_token: looks like a secret",
        ),
        (
            "parameters: {n: {type: int, default: x}}\nsteps: [{id: a, action: noop}]\n",
            "expected an integer",
        ),
        ("parameters: {n: {type: choice}}\nsteps: [{id: a, action: noop}]\n", "needs its choices"),
        ("steps:\n  - id: a\n    action: noop\n   bad: [\n", "not valid YAML at line"),
    ],
)
def test_an_invalid_runbook_is_one_line_naming_the_file_and_the_field(
    body: str, message: str
) -> None:
    with pytest.raises(RunbookError) as exc:
        catalogue.parse(rb(body), "ops/demo.yaml")
    text = str(exc.value)
    assert "\n" not in text
    assert text.startswith("runbook ops/demo.yaml: ")
    assert message in text


def test_a_runbook_that_is_not_a_mapping() -> None:
    with pytest.raises(RunbookError, match="expected a mapping"):
        catalogue.parse("- just\n- a list\n", "x.yaml")


def test_templating_keeps_a_whole_reference_typed_and_interpolates_the_rest() -> None:
    values = {"n": 3, "on": True, "w": 90.0, "c": "sapi"}
    assert templating.render("{{ n }}", values) == 3
    assert templating.render("{{on}}", values) is True
    assert templating.render("x={{ n }} w={{ w }} {{ on }}", values) == "x=3 w=90 true"
    assert templating.render({"argv": ["restart", "{{ c }}"], "k": 1}, values) == {
        "argv": ["restart", "sapi"],
        "k": 1,
    }
    with pytest.raises(templating.TemplateError, match="no such parameter"):
        templating.render("{{ nope }}", values)


def test_shipped_runbooks_are_valid() -> None:
    names = {e.runbook.name for e in catalogue.discover([])}
    assert {"engine-selftest", "platform-check"} <= names


def test_operator_runbooks_are_found_and_cannot_shadow_shipped_ones(tmp_path: Path) -> None:
    (tmp_path / "mine.yaml").write_text("name: mine\ntitle: Mine\nsteps: [{id: a, action: noop}]\n")
    entry = catalogue.find([tmp_path], "mine")
    assert entry.source == str(tmp_path)
    (tmp_path / "dup.yaml").write_text(
        "name: platform-check\ntitle: Again\nsteps: [{id: a, action: noop}]\n"
    )
    with pytest.raises(RunbookError, match="platform-check is defined twice"):
        catalogue.discover([tmp_path])


def test_an_unknown_runbook_is_a_usage_error() -> None:
    with pytest.raises(Exception, match="no runbook 'nope'") as exc:
        catalogue.find([], "nope")
    assert getattr(exc.value, "exit_code", None) == 2


def test_the_model_round_trips_through_json() -> None:
    # A run's journal keeps the runbook as validated; resume re-validates that dump.
    r = catalogue.parse(OK, "demo.yaml")
    assert Runbook.model_validate(r.model_dump(mode="json")) == r
