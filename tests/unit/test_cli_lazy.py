"""The CLI imports only the command module it runs: `payapi --help` none, `payapi wal …`
the WAL one (every subprocess call of the CLI pays for what it imports)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

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


WAL_PROBE = """
import os, sys
sys.argv = ["payapi", *{args!r}]
def _exit(code):  # the entry points end with os._exit (payapi.backup.wal.exit_now)
    raise SystemExit(code)
os._exit = _exit
code = None
try:
    import payapi.cli.main  # a plain `wal push`/`wal fetch` is served while it imports
except SystemExit as exc:
    code = exc.code
heavy = ("typer", "click", "rich", "pydantic", "pydantic_settings", "boto3", "botocore",
         "structlog", "httpx", "dataclasses", "payapi.backup.repository",
         "payapi.backup.manifest")
loaded = sorted(m for m in sys.modules if m in heavy or m.startswith("payapi.cli."))
print("EXIT", code)
print("LOADED", ",".join(loaded))
"""


def _file_repository(tmp_path: Path) -> Path:
    """A new file repository and a payapi.toml naming it; returns the config's path."""
    from payapi.backup.crypto import write_key_file
    from payapi.backup.repository import Repository

    key = tmp_path / "repo.key"
    write_key_file(key)
    repo_dir = tmp_path / "repo"
    with Repository.open_configured(
        f"file://{repo_dir}", key_file=key, key_env="UNUSED", create=True
    ):
        pass
    config = tmp_path / "payapi.toml"
    config.write_text(f'[backup]\nrepository = "file://{repo_dir}"\nkey_file = "{key}"\n')
    return config


def test_wal_push_and_fetch_import_no_cli_framework_and_no_pydantic(tmp_path) -> None:
    """archive_command runs once per WAL segment: the fast path imports the repository's
    base only (no typer/click, no pydantic, no boto3 for a file repository, no command
    module), and still does the work (exit codes as the full CLI's)."""
    config = _file_repository(tmp_path)
    segment = tmp_path / "000000010000000000000001"
    segment.write_bytes(b"wal" * 1000)

    def run(*args: str) -> tuple[str, list[str]]:
        res = subprocess.run(
            [sys.executable, "-c", WAL_PROBE.format(args=["--config", str(config), *args])],
            capture_output=True,
            text=True,
            timeout=60,
        )
        lines = dict(x.split(" ", 1) for x in res.stdout.splitlines() if " " in x)
        return lines["EXIT"], [m for m in lines.get("LOADED", "").split(",") if m]

    assert run("wal", "push", str(segment)) == ("0", [])
    dest = tmp_path / "restored"
    assert run("wal", "fetch", segment.name, str(dest)) == ("0", [])
    assert dest.read_bytes() == segment.read_bytes()
    assert run("wal", "fetch", "000000010000000000000002", str(dest)) == ("1", [])


def test_python_m_payapi_wal_push_exits_at_once_with_the_right_code(tmp_path) -> None:
    """`python -m payapi wal push` (archive_command's form) ends with os._exit: the exit
    code and the error line PostgreSQL logs still come through, and the pushed segment
    is complete and fetchable."""
    config = _file_repository(tmp_path)
    segment = tmp_path / "000000010000000000000001"
    segment.write_bytes(b"wal" * 400_000)  # more than one chunk

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "payapi", "--config", str(config), *args],
            capture_output=True,
            text=True,
            timeout=60,
        )

    res = cli("wal", "push", str(segment))
    assert (res.returncode, res.stderr) == (0, "")
    assert cli("wal", "push", str(segment)).returncode == 0  # same content: accepted
    other = tmp_path / "other" / segment.name
    other.parent.mkdir()
    other.write_bytes(b"xyz" * 400_000)
    res = cli("wal", "push", str(other))
    assert res.returncode == 1
    assert "different content" in res.stderr
    missing = cli("wal", "push", str(tmp_path / "000000010000000000000009"))
    assert missing.returncode == 1 and "does not exist" in missing.stderr
    dest = tmp_path / "restored"
    assert cli("wal", "fetch", segment.name, str(dest)).returncode == 0
    assert dest.read_bytes() == segment.read_bytes()
    assert cli("wal", "fetch", "000000010000000000000002", str(dest)).returncode == 1
