"""`payapi lab`: the whole platform on loopback, from pip-installed binaries."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from payapi.cli.output import console, emit, info
from payapi.core.journal import note_sink
from payapi.lab.platform import COMPONENTS, Lab

app = typer.Typer(help="The local platform on loopback.", no_args_is_help=True)

DirOpt = typer.Option(..., "--dir", help="The lab's folder (created if missing).")
JsonOpt = typer.Option(False, "--json", help="Machine-readable output.")


def _show(status: dict[str, Any]) -> None:
    table = Table(title=f"payapi lab in {status['dir']}", show_header=True)
    table.add_column("component")
    table.add_column("state")
    table.add_column("where")
    where = {
        "postgres": status["postgres"]["payment_dsn"],
        "redis": status["redis"],
        "vault": status["vault"]["url"],
        "sapi": status["sapi"],
        "eapi": status["eapi"],
    }
    for c in COMPONENTS:
        state = status["components"][c]
        colour = "green" if state == "running" else "red"
        table.add_row(c, f"[{colour}]{state}[/{colour}]", where[c])
    console.print(table)
    console.print(f"config: {status['config']}   (use --config or PAYAPI_CONFIG)")


def _existing(dir: Path) -> Lab:
    lab = Lab(dir)
    lab.require_existing()
    return lab


@app.command("up")
def up(dir: Path = DirOpt, as_json: bool = JsonOpt) -> None:
    """Start every component, wait for their health checks, write DIR/payapi.toml."""
    lab = Lab(dir)
    if as_json:
        lab.journal.add_sink(note_sink(info, started=lambda _name: None))
        status = lab.up()
    else:
        with console.status("starting the lab") as spinner:
            lab.journal.add_sink(note_sink(info, started=lambda c: spinner.update(f"starting {c}")))
            status = lab.up()
    emit(status, as_json=as_json, human=_show)


@app.command("status")
def status(dir: Path = DirOpt, as_json: bool = JsonOpt) -> None:
    """Where everything is, and what is running."""
    emit(_existing(dir).status(), as_json=as_json, human=_show)


@app.command("stop")
def stop(component: str, dir: Path = DirOpt, as_json: bool = JsonOpt) -> None:
    """Stop one component (postgres, redis, vault, sapi, eapi)."""
    lab = _existing(dir)
    lab.journal.add_sink(note_sink(info))
    lab.stop(component)
    emit(
        {"component": component, "state": "stopped"},
        as_json=as_json,
        human=lambda d: console.print(f"{component} stopped"),
    )


@app.command("start")
def start(component: str, dir: Path = DirOpt, as_json: bool = JsonOpt) -> None:
    """Start one component and wait until it is healthy."""
    lab = _existing(dir)
    lab.journal.add_sink(note_sink(info))
    lab.start(component)
    emit(
        {"component": component, "state": "running"},
        as_json=as_json,
        human=lambda d: console.print(f"{component} running"),
    )


@app.command("down")
def down(dir: Path = DirOpt, as_json: bool = JsonOpt) -> None:
    """Stop every component; no process is left behind. Data stays in DIR."""
    lab = _existing(dir)
    lab.journal.add_sink(note_sink(info))
    lab.down()
    emit(
        {"dir": str(lab.dir), "state": "down"},
        as_json=as_json,
        human=lambda d: console.print(f"lab in {lab.dir} is down (data kept)"),
    )
