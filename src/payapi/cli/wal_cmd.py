"""`payapi wal push|fetch`: PostgreSQL's archive_command and restore_command.

A plain ``payapi [--config C] wal push %p`` never reaches this module: the entry points
hand it to :func:`payapi.backup.wal.fast_path` before typer is imported (it runs once per
WAL segment). This typer app gives the same commands their help text and handles any
command line the fast path leaves alone; both call :func:`payapi.backup.wal.run`.
"""

from __future__ import annotations

from pathlib import Path

import typer

from payapi.backup import wal
from payapi.cli.context import get_ctx

app = typer.Typer(
    help="WAL archiving: archive_command and restore_command for PostgreSQL.",
    no_args_is_help=True,
)

REPOSITORY_OPTION = typer.Option(
    None,
    "--repository",
    help="A configured repository (primary, or a secondary's name) or a URL "
    "(default: [backup] repository of the config).",
)
KEY_FILE_OPTION = typer.Option(
    None, "--key-file", help="Repository key file (default: [backup] key_file / key_env)."
)


def _config(ctx: typer.Context) -> str | None:
    path = get_ctx(ctx).config_path
    return str(path) if path is not None else None


@app.command("push")
def push_cmd(
    ctx: typer.Context,
    path: Path = typer.Argument(..., help="The WAL file (%p)."),
    repository: str | None = REPOSITORY_OPTION,
    key_file: Path | None = KEY_FILE_OPTION,
) -> None:
    """Archive one WAL file: compressed, encrypted, checksummed.

    archive_command = '/abs/path/payapi --config /abs/payapi.toml wal push %p'.
    Pushing the same file twice is harmless; a different file under an archived name is
    refused (exit 1).
    """
    inv = wal.Invocation(
        "push",
        (str(path),),
        config=_config(ctx),
        repository=repository,
        key_file=str(key_file) if key_file else None,
    )
    raise typer.Exit(wal.run(inv))


@app.command("fetch")
def fetch_cmd(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="The WAL file name (%f)."),
    dest: Path = typer.Argument(..., help="Where to write it (%p)."),
    repository: str | None = REPOSITORY_OPTION,
    key_file: Path | None = KEY_FILE_OPTION,
    abort_on_damage: bool = typer.Option(
        False,
        "--abort-on-damage",
        help="Exit 126 (PostgreSQL aborts recovery) unless the file is simply absent.",
    ),
) -> None:
    """Restore one archived WAL file: restore_command = '… wal fetch %f %p'.

    Exit 1 if the file is not in the archive (the normal end of recovery).
    """
    inv = wal.Invocation(
        "fetch",
        (name, str(dest)),
        config=_config(ctx),
        repository=repository,
        key_file=str(key_file) if key_file else None,
        abort_on_damage=abort_on_damage,
    )
    raise typer.Exit(wal.run(inv))
