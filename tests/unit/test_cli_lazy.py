"""The CLI imports only the command module it runs: `payapi --help` none, `payapi wal …`
the WAL one (every subprocess call of the CLI pays for what it imports)."""

from __future__ import annotations

import subprocess
import sys

import pytest

PROBE = """
import sys
sys.argv = ["payapi", *{args!r}]
from payapi.cli.main import main
try:
    main()
except SystemExit:
    pass
loaded = sorted(m for m in sys.modules if m.startswith("payapi.cli.") and m.endswith("_cmd"))
print("LOADED", ",".join(loaded))
"""


def loaded_modules(*args: str) -> list[str]:
    res = subprocess.run(
        [sys.executable, "-c", PROBE.format(args=list(args))],
        capture_output=True,
        text=True,
        timeout=60,
    )
    line = next(x for x in res.stdout.splitlines() if x.startswith("LOADED"))
    return [m for m in line.removeprefix("LOADED").strip().split(",") if m]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("--help",), []),
        (("wal", "fetch", "--help"), ["payapi.cli.wal_cmd"]),
        (("recover", "--help"), ["payapi.cli.breach_cmd", "payapi.cli.recover_cmd"]),
    ],
)
def test_only_the_command_that_runs_is_imported(args: tuple[str, ...], expected: list[str]) -> None:
    assert loaded_modules(*args) == expected


def test_every_listed_command_loads_and_has_help() -> None:
    from typer.testing import CliRunner

    from payapi.cli.main import COMMANDS, GROUPS, app

    runner = CliRunner()
    for name in [*GROUPS, *COMMANDS]:
        res = runner.invoke(app, [name, "--help"])
        assert res.exit_code == 0, (name, res.output)
        assert "Usage" in res.output
