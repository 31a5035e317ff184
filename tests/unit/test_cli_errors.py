"""Operator-visible failures of the CLI are one line, printed literally, with no traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


def _payapi(*args: str, env_config: Path | None = None) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "payapi"]
    if env_config is not None:
        argv += ["--config", str(env_config)]
    return subprocess.run([*argv, *args], capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.parametrize("command", ["status", "down"])
def test_a_lab_command_on_a_folder_without_a_lab_is_one_line(tmp_path: Path, command: str) -> None:
    res = _payapi("lab", command, "--dir", str(tmp_path / "nope"))
    assert res.returncode == 1
    assert "Traceback" not in res.stderr
    assert res.stderr.strip().splitlines() == [
        f"error: no lab in {tmp_path / 'nope'} (start one with: payapi lab up --dir "
        f"{tmp_path / 'nope'})"
    ]
    assert not (tmp_path / "nope").exists()  # nothing created by looking


def test_config_text_in_an_error_is_printed_literally(tmp_path: Path) -> None:
    config = tmp_path / "payapi.toml"
    config.write_text("[backup]\n")
    res = _payapi("backup", "list", env_config=config)
    assert res.returncode == 1
    assert "set [backup] repository in the config" in res.stderr
