"""Running `payapi verify system` (acting; the verdicts are :mod:`payapi.ops.verify`'s).

The seed's "Recovery Verification", in its order, against one region (``environment``,
default the configured primary):

1. component health: :mod:`payapi.ops.health` (one check per component);
2. functional: the seed's curls with a dedicated client (``payapi-verification``,
   created through the credentials service the first time, its secret read from the
   vault as admin, held in memory only): authenticate, make a payment with the client's
   headers, read it back with the token;
3. performance: a few hundred sequential payments with the token, p50/p99 against the
   baseline file (the first run records it);
4. security: :func:`payapi.ops.security_scan.check` (its checks, prefixed ``security.``).

A step that cannot run fails with why; the later steps still run.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import httpx
from pydantic import SecretStr

from payapi.core.naming import ClientPaths
from payapi.core.plan import Plan
from payapi.core.settings import Settings
from payapi.core.topology import topology_from_settings
from payapi.ops import health, health_observe, security_scan
from payapi.ops.security import Check
from payapi.ops.state_observe import write_document
from payapi.ops.verify import Latency, VerifyReport, performance_check

__all__ = ["VERIFY_CLIENT", "baseline_path", "run"]

VERIFY_CLIENT = "payapi-verification"
DEFAULT_PAYMENTS = 200
BASELINE_NAME = "verify-baseline.json"


@dataclass(frozen=True)
class _Credentials:
    client_id: str
    secret: SecretStr


async def _verification_client(settings: Settings) -> _Credentials:
    from payapi.credentials.service import CredentialError, Platform, create_client

    p = Platform.from_settings(settings)
    try:
        try:
            made = await create_client(p, name=VERIFY_CLIENT)
            return _Credentials(made.client_id, made.client_secret)
        except CredentialError:  # it exists: read it back as admin
            paths = ClientPaths(VERIFY_CLIENT)
            values = await p.vault.get_secrets([paths.client_id, paths.client_secret])
            return _Credentials(
                values[paths.client_id].get_secret_value(), values[paths.client_secret]
            )
    finally:
        await p.aclose()


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"[:200]


def _functional(http: httpx.Client, creds: _Credentials) -> tuple[list[Check], str | None]:
    """Authenticate, pay with the client's headers, read the payment back with the token.
    Returns the checks and the token (None when authentication failed)."""
    headers = {"X-Client-ID": creds.client_id, "X-Client-Secret": creds.secret.get_secret_value()}
    r = http.post("/api/v1/authenticate", headers=headers)
    token = r.json().get("access_token") if r.status_code == 200 else None
    if not token:
        return [
            Check(
                "functional.authenticate", False, f"POST /api/v1/authenticate: HTTP {r.status_code}"
            )
        ], None
    checks = [Check("functional.authenticate", True, "POST /api/v1/authenticate: 200, a token")]
    reference = f"VERIFY-{secrets.token_hex(6).upper()}"
    body = {"amount": "100.00", "currency": "USD", "reference": reference}
    r = http.post("/api/v1/payments", headers=headers, json=body)
    if r.status_code != 201:
        checks.append(
            Check("functional.payment", False, f"POST /api/v1/payments: HTTP {r.status_code}")
        )
        return checks, token
    payment = r.json()
    checks.append(Check("functional.payment", True, f"POST /api/v1/payments: 201 ({reference})"))
    r = http.get(f"/api/v1/payments/{payment['id']}", headers={"Authorization": f"Bearer {token}"})
    same = (
        r.status_code == 200
        and r.json().get("reference") == reference
        and Decimal(str(r.json().get("amount"))) == Decimal("100.00")
    )
    detail = f"GET /api/v1/payments/{payment['id']}: HTTP {r.status_code}"
    checks.append(
        Check("functional.read_back", same, detail + ("" if same else ", not as written"))
    )
    return checks, token


def _performance(http: httpx.Client, token: str, count: int) -> tuple[list[float], int]:
    auth = {"Authorization": f"Bearer {token}"}
    run = secrets.token_hex(4).upper()
    samples: list[float] = []
    failures = 0
    for i in range(count):
        body = {"amount": "1.00", "currency": "USD", "reference": f"PERF-{run}-{i}"}
        start = time.perf_counter()
        try:
            r = http.post("/api/v1/payments", headers=auth, json=body)
        except httpx.HTTPError:
            failures += 1
            continue
        elapsed = (time.perf_counter() - start) * 1000
        if r.status_code == 201:
            samples.append(elapsed)
        else:
            failures += 1
    return samples, failures


def baseline_path(settings: Settings) -> Path:
    if settings.recovery.baseline_file is not None:
        return settings.recovery.baseline_file
    folder = settings.config_path.parent if settings.config_path is not None else Path(".")
    return folder / BASELINE_NAME


def _read_baseline(path: Path, environment: str) -> Latency | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    entry = data.get(environment) if isinstance(data, dict) else None
    return Latency.from_json(entry) if isinstance(entry, dict) else None


def _record_baseline(path: Path, environment: str, latency: Latency) -> None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        data = {}
    if not isinstance(data, dict):
        data = {}
    data[environment] = {**latency.to_json(), "recorded_at": datetime.now(UTC).isoformat()}
    write_document(path, data)


def run(
    settings: Settings,
    plan: Plan,
    environment: str | None = None,
    *,
    comprehensive: bool = False,
    payments: int = DEFAULT_PAYMENTS,
) -> VerifyReport:
    """Every step; :class:`~payapi.core.topology.UnknownRegionError` for an unknown name."""
    topology = topology_from_settings(settings)
    region = topology.region(environment) if environment is not None else topology.primary
    checks: list[Check] = []

    obs = health_observe.observe(settings, region.name)
    report = health.assess(obs, health_observe.context(settings, plan))
    checks += [Check(f"health.{n}", c.healthy, c.detail) for n, c in report.components.items()]

    latency: Latency | None = None
    baseline: Latency | None = None
    if region.eapi.url is None:
        checks.append(Check("functional", False, "no EAPI URL configured for the region"))
    else:
        try:
            creds = asyncio.run(_verification_client(settings))
            with httpx.Client(base_url=region.eapi.url, timeout=15, trust_env=False) as http:
                functional, token = _functional(http, creds)
                checks += functional
                if token is not None and payments > 0:
                    samples, failures = _performance(http, token, payments)
                    latency = Latency.of(samples)
                    path = baseline_path(settings)
                    baseline = _read_baseline(path, region.name)
                    checks.append(performance_check(latency, baseline, failures=failures))
                    if baseline is None and not failures and samples:
                        _record_baseline(path, region.name, latency)
        except Exception as exc:  # the vault's, httpx's, a missing admin key
            checks.append(Check("functional", False, f"could not run: {_one_line(exc)}"))

    security = security_scan.check(settings, comprehensive=comprehensive)
    checks += [Check(f"security.{c.name}", c.ok, c.detail) for c in security.checks]
    return VerifyReport(region.name, tuple(checks), comprehensive, latency, baseline)
