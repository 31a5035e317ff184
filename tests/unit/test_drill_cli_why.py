"""A drill's reason names what a failed command said, not only its exit code."""

from __future__ import annotations

from payapi.drills.cli_system import _why


def test_the_last_stderr_line_is_the_reason() -> None:
    assert _why(2, "warning\nerror: unknown region 'x'\n", None) == "error: unknown region 'x'"


def test_a_json_command_reports_its_error_from_its_json() -> None:
    data = {"ok": False, "error": "the vault taking writes: not done after 60s"}
    assert _why(1, "", data) == "exit 1: the vault taking writes: not done after 60s"


def test_without_either_the_exit_code() -> None:
    assert _why(1, "  \n", {"ok": False}) == "exit 1"
    assert _why(1, "", ["not", "a", "dict"]) == "exit 1"
