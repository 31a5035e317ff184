"""``[drills]`` in payapi.toml: the drills folder and the reports folder, relative paths
resolved against the config file, defaults beside it."""

from __future__ import annotations

from pathlib import Path

import pytest

from payapi.core.settings import ConfigError, load_settings


def test_defaults_are_beside_the_config_file(tmp_path: Path) -> None:
    cfg = tmp_path / "payapi.toml"
    cfg.write_text("")
    s = load_settings(cfg)
    assert s.drill_journal_dir() == tmp_path / "drills"
    assert s.drill_report_dir("D1") == tmp_path / "drills" / "D1"


def test_relative_folders_are_resolved_against_the_config_file(tmp_path: Path) -> None:
    cfg = tmp_path / "etc" / "payapi.toml"
    cfg.parent.mkdir()
    cfg.write_text('[drills]\njournal_dir = "var/drills"\nreport_dir = "/srv/reports"\n')
    s = load_settings(cfg)
    assert s.drill_journal_dir() == tmp_path / "etc" / "var" / "drills"
    assert s.drill_report_dir("D1") == Path("/srv/reports/D1")


def test_an_unknown_key_is_a_clear_error(tmp_path: Path) -> None:
    cfg = tmp_path / "payapi.toml"
    cfg.write_text('[drills]\njournal = "x"\n')
    with pytest.raises(ConfigError, match="journal"):
        load_settings(cfg)
