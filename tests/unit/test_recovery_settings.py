"""``[recovery]``: operator runbook folders and the journal folder, relative to the config."""

from __future__ import annotations

from pathlib import Path

import pytest

from payapi.core.settings import ConfigError, load_settings


def test_the_journal_folder_defaults_to_runbooks_beside_the_config(tmp_path: Path) -> None:
    config = tmp_path / "payapi.toml"
    config.write_text("")
    assert load_settings(config).runbook_journal_dir() == tmp_path / "runbooks"


def test_without_a_config_the_journal_folder_is_in_the_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PAYAPI_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    assert load_settings().runbook_journal_dir() == tmp_path / "runbooks"


def test_relative_folders_are_resolved_against_the_config(tmp_path: Path) -> None:
    config = tmp_path / "payapi.toml"
    config.write_text('[recovery]\nrunbook_dirs = ["ops"]\njournal_dir = "runs"\n')
    s = load_settings(config)
    assert s.recovery.runbook_dirs == [tmp_path / "ops"]
    assert s.runbook_journal_dir() == tmp_path / "runs"


def test_an_unknown_recovery_key_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "payapi.toml"
    config.write_text('[recovery]\njournal = "x"\n')
    with pytest.raises(ConfigError, match="journal"):
        load_settings(config)
