"""What every command gets from the global options: the config path, loaded lazily."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import typer

from payapi.core.settings import Settings, load_settings


@dataclass
class CliContext:
    config_path: Path | None = None
    _settings: Settings | None = field(default=None, repr=False)

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = load_settings(self.config_path)
        return self._settings


def get_ctx(ctx: typer.Context) -> CliContext:
    root = ctx.find_root()
    obj = root.obj
    if not isinstance(obj, CliContext):
        obj = CliContext()
        root.obj = obj
    return obj
