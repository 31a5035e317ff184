"""`payapi lab`: the whole platform on loopback, from pip-installed binaries."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.table import Table

from payapi.cli.output import console, emit, info
from payapi.core.errors import UsageError
from payapi.core.journal import note_sink
from payapi.lab.platform import COMPONENTS, Lab

if TYPE_CHECKING:
    from payapi.lab.regions import TwoRegionLab

app = typer.Typer(help="The local platform on loopback.", no_args_is_help=True)

DirOpt = typer.Option(..., "--dir", help="The lab's folder (created if missing).")
JsonOpt = typer.Option(False, "--json", help="Machine-readable output.")


def _show(status: dict[str, Any]) -> None:
    if "regions" in status:
        _show_regions(status)
        return
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


def _show_regions(status: dict[str, Any]) -> None:
    from payapi.lab.regions_table import regions_table

    console.print(regions_table(status))
    console.print(f"endpoint: {status['endpoint']}   DNS: {status['dns']['record']}")
    console.print(f"config: {status['config']}   (use --config or PAYAPI_CONFIG)")


def _lab(dir: Path) -> Lab:
    from payapi.lab.regions import TwoRegionLab, is_two_region

    return TwoRegionLab(dir) if is_two_region(dir) else Lab(dir)


def _existing(dir: Path) -> Lab:
    lab = _lab(dir)
    lab.require_existing()
    return lab


def _two_region(dir: Path) -> TwoRegionLab:
    from payapi.lab.regions import TwoRegionLab

    lab = _existing(dir)
    if not isinstance(lab, TwoRegionLab):
        raise UsageError(
            f"the lab in {lab.dir} has one region (--region needs --regions primary,dr)"
        )
    return lab


def _parse_regions(value: str | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    names = tuple(v.strip() for v in value.split(",") if v.strip())
    if names not in (("primary",), ("primary", "dr")):
        raise UsageError(f"--regions must be 'primary' or 'primary,dr', not {value!r}")
    return names


RegionsOpt = typer.Option(
    None,
    "--regions",
    help="'primary' (the default: one region) or 'primary,dr' (two regions, DNS failover).",
)
RegionOpt = typer.Option(None, "--region", help="A whole region of the two-region lab.")


@app.command("up")
def up(dir: Path = DirOpt, regions: str | None = RegionsOpt, as_json: bool = JsonOpt) -> None:
    """Start every component, wait for their health checks, write DIR/payapi.toml."""
    from payapi.lab.regions import TwoRegionLab

    names = _parse_regions(regions)
    lab = _lab(dir)
    if names == ("primary", "dr") and not isinstance(lab, TwoRegionLab):
        if lab.state_path.exists():
            raise UsageError(f"the lab in {lab.dir} has one region; use a new --dir for two")
        lab = TwoRegionLab(dir)
    elif names == ("primary",) and isinstance(lab, TwoRegionLab):
        raise UsageError(f"the lab in {lab.dir} has two regions; use a new --dir for one")
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
def stop(
    component: str | None = typer.Argument(None),
    dir: Path = DirOpt,
    region: str | None = RegionOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Stop one component (postgres, redis, vault, sapi, eapi), or with --region kill
    every process of a region of the two-region lab (kill -9: a region outage)."""
    if region is not None:
        lab2 = _two_region(dir)
        killed = lab2.stop_region(region)
        emit(
            {"region": region, "state": "stopped", "killed": len(killed)},
            as_json=as_json,
            human=lambda d: console.print(f"region {region}: {len(killed)} processes killed"),
        )
        return
    if component is None:
        raise UsageError("name a component, or --region NAME")
    lab = _existing(dir)
    lab.journal.add_sink(note_sink(info))
    lab.stop(component)
    emit(
        {"component": component, "state": "stopped"},
        as_json=as_json,
        human=lambda d: console.print(f"{component} stopped"),
    )


@app.command("start")
def start(
    component: str | None = typer.Argument(None),
    dir: Path = DirOpt,
    region: str | None = RegionOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Start one component and wait until it is healthy; with --region, a whole region
    (a region that does not serve comes back fenced: a standby of the serving one)."""
    if region is not None:
        lab2 = _two_region(dir)
        lab2.journal.add_sink(note_sink(info))
        lab2.start_region(region)
        emit(
            {"region": region, "state": "running"},
            as_json=as_json,
            human=lambda d: console.print(f"region {region} running"),
        )
        return
    if component is None:
        raise UsageError("name a component, or --region NAME")
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
