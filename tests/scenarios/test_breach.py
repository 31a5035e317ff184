"""`payapi recover breach` on the shared lab (the seed's Security Breach Recovery): after
it, every old token and secret of the clients it names fails, their new secrets work,
other clients are untouched, and its security verification passed."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx

from payapi.core.naming import ClientPaths
from payapi.core.settings import load_settings
from tests.scenarios.conftest import Client, LabHandle, run_cli

UNKNOWN = "00000000-0000-4000-8000-000000000000"


def token(http: httpx.Client, client: Client) -> str:
    r = http.post("/api/v1/authenticate", headers=client.headers)
    assert r.status_code == 200, r.text
    return str(r.json()["access_token"])


def works(http: httpx.Client, *, token: str | None = None, client: Client | None = None) -> bool:
    headers = {"Authorization": f"Bearer {token}"} if token else (client.headers if client else {})
    # An unknown payment: 404 to an authenticated caller, 401 to anyone else.
    r = http.get(f"/api/v1/payments/{UNKNOWN}", headers=headers)
    assert r.status_code in (401, 404), r.text
    return r.status_code == 404


def new_secret(lab: LabHandle, client: Client) -> Client:
    """The client's secret after the rotation, as the client would fetch it (the vault)."""
    from payapi.credentials.service import Platform

    async def read() -> str:
        p = Platform.from_settings(load_settings(lab.config))
        try:
            return (
                await p.vault.get_secret(ClientPaths(client.name).client_secret)
            ).get_secret_value()
        finally:
            await p.aclose()

    return Client(client.name, client.client_id, asyncio.run(read()))


def test_breach_of_named_clients(lab: LabHandle, tmp_path: Path) -> None:
    victim, bystander = lab.create_client("breach-victim"), lab.create_client("breach-bystander")
    with lab.http() as http:
        old_token, other_token = token(http, victim), token(http, bystander)
        res = run_cli(
            "recover", "breach", "--clients", "breach-victim", "--reason", "leaked key",
            "--rules-dir", str(tmp_path / "rules"), "--yes", "--json", config=lab.config,
        )  # fmt: skip
        out = json.loads(res.stdout)
        assert out["ok"] is True and out["clients"] == ["breach-victim"]
        assert [s["name"] for s in out["steps"]] == [
            "containment",
            "rotation",
            "clean deployment",
            "security verification",
            "enhanced monitoring",
            "lift the block",
        ]
        assert (
            next(s for s in out["steps"] if s["name"] == "security verification")["status"] == "ok"
        )
        assert (tmp_path / "rules" / "alerts-security.yml").exists()
        assert not works(http, token=old_token) and not works(http, client=victim)
        assert works(http, token=other_token) and works(http, client=bystander)
        fresh = new_secret(lab, victim)
        assert works(http, client=fresh) and works(http, token=token(http, fresh))
        assert victim.client_secret not in res.stdout + res.stderr


def test_breach_of_every_client(lab: LabHandle) -> None:
    a, b = lab.create_client("breach-all-a"), lab.create_client("breach-all-b")
    with lab.http() as http:
        tokens = [token(http, a), token(http, b)]
        res = run_cli(
            "recover", "breach", "--all-clients", "--reason", "breach drill", "--yes", "--json",
            config=lab.config,
        )  # fmt: skip
        assert json.loads(res.stdout)["ok"] is True
        assert not any(works(http, token=t) for t in tokens)
        assert not works(http, client=a) and not works(http, client=b)
        assert works(http, client=new_secret(lab, a)) and works(http, client=new_secret(lab, b))
    check = run_cli("security", "check", "--json", config=lab.config, check=False)
    assert check.returncode == 0, check.stdout


def test_breach_usage_errors_are_one_line(lab: LabHandle) -> None:
    for args in (
        ["--reason", "x", "--yes"],
        ["--reason", "x", "--yes", "--all-clients", "--clients", "a"],
        ["--reason", " ", "--yes", "--all-clients"],
        ["--reason", "x", "--all-clients"],  # no terminal to confirm on
    ):
        res = run_cli("recover", "breach", *args, config=lab.config, check=False)
        assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1, res.stderr


def test_a_clean_deployment_of_a_recorded_release(lab: LabHandle, tmp_path: Path) -> None:
    from importlib import metadata

    version = metadata.version("payapi")
    built = tmp_path / f"payapi-{version}-py3-none-any.whl"  # stands in for the built wheel
    built.write_bytes(b"the trusted build")
    releases = tmp_path / "releases.json"
    image = "registry.example.com/payapi@sha256:" + "0f" * 32
    run_cli("release", "record", "--wheel", str(built), "--releases", str(releases),
            "--image", image, config=lab.config)  # fmt: skip
    res = run_cli(
        "deploy", "--clean-deployment", "--version", version, "--wheel", str(built),
        "--releases", str(releases), "--json", config=lab.config,
    )  # fmt: skip
    out = json.loads(res.stdout)
    assert out["ok"] is True and [s["name"] for s in out["steps"]] == [
        "wheel",
        "installed files",
        "restart",
    ]
    client = lab.create_client("after-deploy")
    with lab.http() as http:
        assert works(http, client=client)  # the restarted services serve
    k8s = tmp_path / "k8s"
    run_cli("deploy", "--clean-deployment", "--version", version, "--releases", str(releases),
            "--kubernetes-out", str(k8s), config=lab.config)  # fmt: skip
    assert "@sha256:" + "0f" * 32 in (k8s / "payment-eapi.yaml").read_text()
    built.write_bytes(b"tampered on the way")
    bad = run_cli(
        "deploy", "--clean-deployment", "--version", version, "--wheel", str(built),
        "--releases", str(releases), config=lab.config, check=False,
    )  # fmt: skip
    assert bad.returncode == 1 and "differs" in bad.stdout + bad.stderr
    unknown = run_cli(
        "deploy", "--clean-deployment", "--version", "0.0.0", "--releases", str(releases),
        config=lab.config, check=False,
    )  # fmt: skip
    assert unknown.returncode == 2 and "not a recorded release" in unknown.stderr
