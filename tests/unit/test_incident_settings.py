"""``[incident]`` and ``[[incident.channels]]`` in payapi.toml: kinds, tiers, order,
a vault variable for each credential, relative folders resolved against the file."""

from __future__ import annotations

from pathlib import Path

import pytest

from payapi.core.settings import ConfigError, Settings, load_settings
from payapi.incident.notify import channels, outbox_dir

TOML = """
[incident]
escalation_minutes = 10

[[incident.channels]]
name = "email"
kind = "smtp"
order = 2
host = "smtp.example.com"
port = 587
from = "payapi@example.com"
username = "payapi"
credential = "payment-system/incident/smtp-password"

[[incident.channels]]
name = "slack"
kind = "slack"
order = 1
credential = "payment-system/incident/slack-webhook"

[[incident.channels]]
name = "outbox"
kind = "file"
tier = "backup"
dir = "messages"
"""


def test_channels_are_parsed_and_ordered_per_tier(tmp_path: Path) -> None:
    cfg = tmp_path / "payapi.toml"
    cfg.write_text(TOML)
    s = load_settings(cfg)
    assert s.incident.escalation_minutes == 10
    primary, backup = channels(s)
    assert [c.name for c in primary] == ["slack", "email"]
    assert primary[1].from_address == "payapi@example.com" and primary[1].port == 587
    assert [c.name for c in backup] == ["outbox"]
    assert backup[0].dir == tmp_path / "messages"


def test_without_channels_the_default_is_one_file_outbox(tmp_path: Path) -> None:
    s = Settings(config_path=tmp_path / "payapi.toml")
    assert s.incident.escalation_minutes == 15
    primary, backup = channels(s)
    assert [(c.name, c.kind) for c in primary] == [("outbox", "file")] and backup == []
    assert outbox_dir(s) == tmp_path / "outbox"


@pytest.mark.parametrize(
    "extra, needle",
    [
        ('name = "s"\nkind = "slack"\n', "needs credential"),
        ('name = "m"\nkind = "smtp"\nhost = "h"\n', "needs host and from"),
        ('name = "x"\nkind = "pager"\n', "kind"),
        ('name = "w"\nkind = "webhook"\nurl = "https://hooks.example.com/T/B/x"\n', "url"),
    ],
)
def test_bad_channels_are_clear_errors(tmp_path: Path, extra: str, needle: str) -> None:
    cfg = tmp_path / "payapi.toml"
    cfg.write_text("[[incident.channels]]\n" + extra)
    with pytest.raises(ConfigError) as err:
        load_settings(cfg)
    assert needle in str(err.value)
    assert "hooks.example.com" not in str(err.value)  # a URL put in the file is not echoed
