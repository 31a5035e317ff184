"""backup.service: one way to open a repository (by name or URL), and the control of the
server a restore in place replaces, from configuration."""

from __future__ import annotations

from pathlib import Path

import pytest

from payapi.backup.crypto import write_key_file
from payapi.backup.errors import RepositoryError, WrongKey
from payapi.backup.service import (
    UnknownRepository,
    archive_settings,
    open_repository,
    postgres_control,
    repository_location,
    restore_command_for,
)
from payapi.core.settings import BackupSettings, PostgresSettings, SecondaryRepository, Settings
from payapi.systems.postgres import ControlUnavailable, LocalPostgresControl


def _settings(tmp_path: Path) -> Settings:
    primary_key, dr_key = tmp_path / "primary.key", tmp_path / "dr.key"
    write_key_file(primary_key)
    write_key_file(dr_key)
    return Settings(
        backup=BackupSettings(
            repository=f"file://{tmp_path / 'primary'}",
            key_file=primary_key,
            secondaries={
                "dr": SecondaryRepository(url=f"file://{tmp_path / 'dr'}", key_file=dr_key)
            },
        )
    )


def test_a_name_a_secondary_or_a_url(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    with open_repository(settings, create=True) as primary:
        assert primary.url.endswith("/primary")
    with open_repository(settings, "dr", create=True) as dr:
        assert dr.url.endswith("/dr")
    # A URL opens with the primary's key: the primary by its URL works ...
    with open_repository(settings, f"file://{tmp_path / 'primary'}") as again:
        assert again.require_config().repository_id == primary.require_config().repository_id
    # ... the secondary by its URL does not (it has its own key), and says which one.
    with pytest.raises(WrongKey):
        open_repository(settings, f"file://{tmp_path / 'dr'}")
    assert repository_location(settings, "primary").primary


def test_a_bare_word_that_names_no_repository_is_a_usage_error(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    with pytest.raises(UnknownRepository, match="no backup repository named 'nope'") as err:
        open_repository(settings, "nope")
    assert err.value.exit_code == 2
    assert not (Path.cwd() / "nope").exists()


def test_no_repository_configured_and_a_missing_one(tmp_path: Path) -> None:
    with pytest.raises(RepositoryError, match="no backup repository"):
        open_repository(Settings())
    settings = _settings(tmp_path)
    with pytest.raises(RepositoryError, match="repository dr:"):
        open_repository(settings, "dr")  # not initialized: the message names the secondary


def test_restore_and_archive_commands_point_at_the_same_repository(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    settings.config_path = tmp_path / "payapi.toml"
    assert "--repository dr" in restore_command_for(settings, "dr")
    assert "wal fetch --abort-on-damage" in restore_command_for(settings)
    archive = archive_settings(settings.config_path)
    assert archive["archive_mode"] == "on"
    assert (
        "wal push" in archive["archive_command"]
        and str(settings.config_path) in archive["archive_command"]
    )


def test_the_postgres_control_comes_from_configuration(tmp_path: Path) -> None:
    settings = Settings()
    with pytest.raises(ControlUnavailable, match="control"):
        postgres_control(settings)
    settings = Settings(
        postgres=PostgresSettings(
            payment_dsn="postgresql://postgres@127.0.0.1:54999/payment_db",
            control="local",
            data_dir=tmp_path / "data",
        )
    )
    settings.config_path = tmp_path / "payapi.toml"
    control = postgres_control(settings)
    assert isinstance(control, LocalPostgresControl)
    assert control.port == 54999 and control.datadir == tmp_path / "data"
    assert control.dsn("payment_db").endswith(":54999/payment_db")
    # Restarted after a restore with the archive settings of this configuration.
    assert control.server_settings["archive_mode"] == "on"
    settings.postgres.data_dir = None
    with pytest.raises(ControlUnavailable, match="data_dir"):
        postgres_control(settings)
