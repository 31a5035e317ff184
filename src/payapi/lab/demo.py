"""`make demo`: start the lab, create a client, authenticate, pay, and say what happened.

Runs the same steps an operator would, through the same code paths (the lab, the
credentials service, plain HTTP to EAPI), and prints each request and its answer.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import sys
from pathlib import Path

import httpx
from rich.console import Console
from rich.panel import Panel

from payapi.core.journal import note_sink
from payapi.core.settings import load_settings
from payapi.credentials.service import Platform, create_client
from payapi.lab.platform import Lab
from payapi.lab.regions import TwoRegionLab

console = Console()


def _show(title: str, resp: httpx.Response) -> None:
    body = json.dumps(resp.json(), indent=2)
    console.print(Panel(body, title=f"{title} → {resp.status_code}", expand=False))


# The seed's Pre-Test Checklist, ticked for the demo's own short drill.
DEMO_CHECKLIST = """items:
  - {item: "Test plan reviewed and approved", done: true, by: make demo}
  - {item: "All participants briefed on their roles", done: true, by: make demo}
  - {item: "Test environment prepared", done: true, by: make demo}
  - {item: "Monitoring systems in place", done: true, by: make demo}
  - {item: "Rollback procedures ready", done: true, by: make demo}
  - {item: "Stakeholders notified", done: true, by: make demo}
  - {item: "Go/No-Go decision made", done: true, by: make demo}
go: true
"""


def _drill(config: Path) -> None:
    """One short drill, as an operator runs it: kill -9 of the Redis primary while the
    probes write; its verdict table against the plan."""
    import subprocess

    checklist = config.parent / "demo-checklist.yaml"
    checklist.write_text(DEMO_CHECKLIST)
    console.print(
        "\n[bold]A drill:[/bold] kill -9 of the Redis primary while payments and tokens flow; "
        "Sentinel promotes the replica; RTO and RPO measured against the plan."
    )
    argv = [sys.executable, "-m", "payapi", "--config", str(config), "drill", "run",
            "--component", "redis", "--scenario", "failure", "--yes", "--checklist",
            str(checklist)]  # fmt: skip
    code = subprocess.run(argv, check=False).returncode
    console.print(
        f"Reports: {config.parent / 'drills'} (JSON, Markdown, HTML with the timeline chart, "
        f"JUnit); history: .venv/bin/payapi --config {config} drill history"
        + ("" if code == 0 else f"  [red](the drill exited {code})[/red]")
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="payapi demo")
    parser.add_argument("--dir", default=".lab", type=Path)
    parser.add_argument(
        "--regions",
        default="primary,dr",
        choices=["primary", "primary,dr"],
        help="two regions (the default) or one",
    )
    args = parser.parse_args(argv)

    two = args.regions == "primary,dr"
    lab: Lab = TwoRegionLab(args.dir) if two else Lab(args.dir)
    what = (
        "two regions: Patroni on etcd, Redis with Sentinel, vaults, SAPI, EAPI, DNS, endpoint"
        if two
        else "PostgreSQL, Redis, vault, SAPI, EAPI"
    )
    with console.status(f"starting the lab ({what})") as spinner:
        lab.journal.add_sink(
            note_sink(
                lambda m: console.print(f"[dim]{m}[/dim]"),
                started=lambda c: spinner.update(f"starting {c}"),
            )
        )
        status = lab.up()
    console.print(f"[green]lab up[/green] in {status['dir']}")
    if two:
        from payapi.lab.regions_table import regions_table

        console.print(regions_table(status))
        console.print(
            f"  the global endpoint {status['endpoint']} forwards to the region that the DNS "
            f"record {status['dns']['record']} names (Route53 API: moto's server)"
        )
    for name in ("eapi", "sapi"):
        console.print(f"  {name}: {status[name]}")
    console.print(f"  vault: {status['vault']['url']}")
    console.print(f"  postgres: {status['postgres']['payment_dsn']}")
    console.print(f"  redis: {status['redis']}")

    settings = load_settings(lab.config_path)
    name = f"demo-{secrets.token_hex(3)}"

    async def provision() -> tuple[str, str]:
        p = Platform.from_settings(settings)
        try:
            c = await create_client(p, name=name)
        finally:
            await p.aclose()
        return c.client_id, c.client_secret.get_secret_value()

    client_id, client_secret = asyncio.run(provision())
    console.print(
        f"\ncreated client [bold]{name}[/bold] (client_id {client_id}); "
        "its secret lives in the vault"
    )

    creds = {"X-Client-ID": client_id, "X-Client-Secret": client_secret}
    base = status.get("endpoint", status["eapi"])
    with httpx.Client(base_url=base, timeout=10, trust_env=False) as http:
        resp = http.post("/api/v1/authenticate", headers=creds)
        token = resp.json()["access_token"]
        shown = {**resp.json(), "access_token": token[:6] + "… (hidden)"}
        console.print(
            Panel(
                json.dumps(shown, indent=2),
                title=f"POST /api/v1/authenticate → {resp.status_code}",
                expand=False,
            )
        )
        payment = {"amount": 100.00, "currency": "USD", "reference": "TEST-12345"}
        resp = http.post("/api/v1/payments", headers=creds, json=payment)
        _show("POST /api/v1/payments (client headers, as the seed's curl)", resp)
        resp = http.post(
            "/api/v1/payments",
            headers={"Authorization": f"Bearer {token}", "Idempotency-Key": "demo-order-1"},
            json={"amount": "25.50", "currency": "EUR", "reference": "ORDER-1"},
        )
        _show("POST /api/v1/payments (bearer token, Idempotency-Key)", resp)
        pid = resp.json()["id"]
        _show(
            f"GET /api/v1/payments/{pid}",
            http.get(f"/api/v1/payments/{pid}", headers={"Authorization": f"Bearer {token}"}),
        )
        _show("GET /api/health", http.get("/api/health"))

    cfg = status["config"]
    if two:
        _drill(Path(cfg))
        console.print(
            "\n[bold]Two regions:[/bold] every payment above went through the global endpoint "
            "to the primary region; its database is replicated synchronously in-region and "
            "asynchronously to DR.\n"
            f"Try:  .venv/bin/payapi --config {cfg} health check --environment primary\n"
            f"      .venv/bin/payapi lab stop --region primary --dir {lab.dir}   (an outage)\n"
            f"      .venv/bin/payapi --config {cfg} region failover --to dr --yes"
        )
    console.print(
        "\n[bold]What happened:[/bold] EAPI verified the client against the vault "
        "(and cached a keyed hash in Redis), SAPI stored the payments in PostgreSQL.\n"
        f"Try:  .venv/bin/payapi --config {cfg} credentials verify --all-clients\n"
        f"Stop: .venv/bin/payapi lab down --dir {lab.dir}   (or: make demo-down)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
