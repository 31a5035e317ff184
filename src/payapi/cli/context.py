"""What every command gets from the global options: the config path, loaded lazily, and
the operator (``--as LOGIN``, the API key from ``--api-key-file`` or ``$PAYAPI_API_KEY``,
never from the command line)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from payapi.core.errors import UsageError
from payapi.core.settings import Settings, load_settings, read_secret_file

if TYPE_CHECKING:
    from payapi.recovery.access import Operator

API_KEY_ENV = "PAYAPI_API_KEY"


@dataclass
class CliContext:
    config_path: Path | None = None
    operator_login: str | None = None
    api_key_file: Path | None = None
    _settings: Settings | None = field(default=None, repr=False)

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = load_settings(self.config_path)
        return self._settings

    def operator(self) -> Operator | None:
        """The operator ``--as`` names, with their API key; None without ``--as``."""
        from pydantic import SecretStr

        from payapi.recovery.access import Operator

        if self.operator_login is None:
            if self.api_key_file is not None:
                raise UsageError("--api-key-file needs --as LOGIN (whose key it is)")
            return None
        login = self.operator_login.strip()
        if not login:
            raise UsageError("--as: empty login")
        if self.api_key_file is not None:
            key = read_secret_file(self.api_key_file, f"API key of {login}")
        else:
            raw = os.environ.get(API_KEY_ENV, "").strip()
            if not raw:
                raise UsageError(
                    f"--as {login}: give the API key in --api-key-file F or ${API_KEY_ENV}"
                )
            key = SecretStr(raw)
        return Operator(login, key)


def get_ctx(ctx: typer.Context) -> CliContext:
    root = ctx.find_root()
    obj = root.obj
    if not isinstance(obj, CliContext):
        obj = CliContext()
        root.obj = obj
    return obj
