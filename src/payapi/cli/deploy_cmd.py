"""`payapi release record --wheel W [--image REPO@sha256:D]` and
`payapi deploy --clean-deployment --version V [--wheel W] [--kubernetes-out DIR]`:
deployment from verified artifacts only (:mod:`payapi.ops.deploy`).

On the lab, a clean deployment checks the installed payapi against the release and its
own RECORD, then restarts the vault, SAPI and EAPI as new processes; with
``--kubernetes-out`` it writes the Deployments with the image pinned by digest (apply them
with ``kubectl apply -f DIR``). Exit 0 done, 1 an artifact does not match, 2 bad usage.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from payapi.cli.context import get_ctx
from payapi.cli.output import EXIT_USAGE, console, emit, fail, journal
from payapi.core.errors import PayapiError

release_app = typer.Typer(help="Record trusted releases.", no_args_is_help=True)

ReleasesOpt = typer.Option(
    None, "--releases", help="The release record (default: releases.json beside the config)."
)


def _releases_file(ctx: typer.Context, given: Path | None) -> Path:
    if given is not None:
        return given
    config = get_ctx(ctx).settings.config_path
    return (config.parent if config is not None else Path.cwd()) / "releases.json"


@release_app.command("record")
def record(
    ctx: typer.Context,
    wheel: Path = typer.Option(..., "--wheel", help="The built, trusted wheel."),
    image: str | None = typer.Option(None, "--image", help="Its image, REPO@sha256:DIGEST."),
    releases: Path | None = ReleasesOpt,
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Record a release: its version, its wheel's SHA-256, its image digest."""
    from payapi.ops.deploy import record_release

    release = record_release(_releases_file(ctx, releases), wheel, image)
    emit(
        release.to_json(),
        as_json=as_json,
        human=lambda d: console.print(f"recorded release {d['version']} ({d['sha256'][:12]}…)"),
    )


def _lab_dir(config: Path | None) -> Path | None:
    if config is None:
        return None
    state = config.parent / "lab.json"
    try:
        data = json.loads(state.read_text())
    except (OSError, ValueError):
        return None
    return None if "regions" in data else config.parent


def deploy(
    ctx: typer.Context,
    clean: bool = typer.Option(False, "--clean-deployment", help="Required: a clean deployment."),
    version: str = typer.Option(..., "--version", help="The recorded release to deploy."),
    wheel: Path | None = typer.Option(None, "--wheel", help="Check this wheel too."),
    kubernetes_out: Path | None = typer.Option(
        None, "--kubernetes-out", help="Write the Deployments here instead of restarting."
    ),
    namespace: str = typer.Option("payment-system", "--namespace"),
    replicas: int = typer.Option(3, "--replicas", min=0),
    releases: Path | None = ReleasesOpt,
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Deploy a recorded release, refusing any artifact that does not match its record."""
    from payapi.ops import deploy as d

    if not clean:
        fail("only --clean-deployment is supported", EXIT_USAGE)
    settings = get_ctx(ctx).settings
    release = d.release_of(d.load_releases(_releases_file(ctx, releases)), version)
    out: dict[str, Any] = {"version": version, "steps": [], "ok": False}
    with journal(quiet=as_json) as j:
        try:
            if wheel is not None:
                with j.step("wheel"):
                    j.note(d.verify_wheel(release, wheel))
            if kubernetes_out is not None:
                with j.step("manifests"):
                    kubernetes_out.mkdir(parents=True, exist_ok=True)
                    for name, text in d.render_deployments(
                        release, namespace=namespace, replicas=replicas
                    ).items():
                        (kubernetes_out / name).write_text(text)
                    j.note(f"Deployments pinned to {release.image} in {kubernetes_out}")
            else:
                with j.step("installed files"):
                    j.note(d.installed_check(version))
                with j.step("restart"):
                    j.note(_restart(settings.config_path))
            out["ok"] = True
        except PayapiError as exc:
            out["error"] = str(exc)
        out["steps"] = [
            {"name": s.name, "status": str(s.status), "detail": s.output} for s in j.steps
        ]
    emit(out, as_json=as_json, human=lambda o: console.print(
        f"deployed {version}" if o["ok"] else f"[red]not deployed[/red]: {o['error']}"
    ))  # fmt: skip
    if not out["ok"]:
        raise typer.Exit(1)


def _restart(config: Path | None) -> str:
    """New processes of the services from the verified install (the lab's)."""
    from payapi.lab.platform import Lab

    lab_dir = _lab_dir(config)
    if lab_dir is None:
        return "no local services to restart here (on Kubernetes: --kubernetes-out)"
    lab = Lab(lab_dir)
    for component in ("eapi", "sapi", "vault"):
        lab.stop(component)
    for component in ("vault", "sapi", "eapi"):
        lab.start(component)
    return "vault, SAPI and EAPI restarted from the verified install"
