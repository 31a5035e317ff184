"""What every system a drill acts on through the ``payapi`` CLI shares: the health check,
the probes, the search for acknowledged writes, runbook recoveries and the tabletop
walk-through. The lab (:mod:`payapi.lab.drill_system`) and a named environment
(:mod:`payapi.drills.environment_system`) differ only in how they inject a failure and
restore normal operation.

Everything an operator would do is the ``payapi`` command itself, run against the
system's config: the drill proves the commands the plan names, not a shortcut beside
them.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from payapi.core.errors import PayapiError
from payapi.core.settings import Settings, load_settings, read_secret_file
from payapi.drills.probe import Attempt
from payapi.drills.probe_http import PROBE_VARIABLE, PaymentAttempt, TokenAttempt, VaultAttempt
from payapi.drills.runner import TabletopStep
from payapi.drills.spec import DrillSpec
from payapi.servers.postgres import psql

__all__ = ["CLI_TIMEOUT", "CliDrillError", "CliDrillSystem"]

CLI_TIMEOUT = 600.0


class CliDrillError(PayapiError):
    """A drill action failed (one line)."""


class CliDrillSystem:
    """A drill's system behind one config file; subclasses inject and restore."""

    # What restore-normal does, in words (the tabletop walk-through shows it).
    restore_what = "start what was killed; wait until payapi health check passes"

    def __init__(self, config: Path, environment: str) -> None:
        self._config = config
        self.environment = environment
        self._tokens: TokenAttempt | None = None
        self._vault: VaultAttempt | None = None
        # The drill's [DRILL] incident (set by whoever declared it): a drill with the
        # primary channels down sends a status update of it.
        self.incident_id: str | None = None

    @property
    def config(self) -> Path:
        return self._config

    @property
    def endpoint_url(self) -> str:
        """Where the probes write: the global endpoint, or EAPI when there is none."""
        s = self.settings()
        url = s.topology.endpoint or s.eapi.url
        if not url:
            raise CliDrillError("no endpoint to probe: set [topology] endpoint or [eapi] url")
        return url

    def payment_dsn(self) -> str:
        """The database the acknowledged payments are looked for in after recovery."""
        return self.settings().postgres.payment_dsn

    def settings(self) -> Settings:
        return load_settings(self.config)

    def _run_cli(self, *args: str, timeout: float) -> tuple[int, Any, str]:
        """``payapi --config LAB ARGS --json``: its exit code, its JSON (None when it
        printed none) and why it failed (:func:`_why`)."""
        argv = [sys.executable, "-m", "payapi", "--config", str(self.config), *args, "--json"]
        try:
            res = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise CliDrillError(f"payapi {' '.join(args)} did not end in {timeout:g}s") from None
        try:
            data = json.loads(res.stdout) if res.stdout.strip() else None
        except ValueError:
            data = None
        return res.returncode, data, _why(res.returncode, res.stderr, data)

    def cli(self, *args: str, timeout: float = CLI_TIMEOUT) -> dict[str, Any]:
        """``payapi --config LAB ARGS --json``; its JSON, or one line of why it failed."""
        code, data, why = self._run_cli(*args, timeout=timeout)
        if code != 0:
            raise CliDrillError(f"payapi {' '.join(args)}: {why}")
        if data is None:
            return {}
        return data if isinstance(data, dict) else {"result": data}

    def health(self) -> tuple[bool, str]:
        code, data, why = self._run_cli("health", "check", timeout=120)
        if not isinstance(data, dict):
            return False, why
        bad = [n for n, c in data.get("components", {}).items() if not c.get("healthy", False)]
        if code == 0 and data.get("healthy"):
            return True, f"health check passes in {data.get('environment', self.environment)}"
        return False, "unhealthy: " + (", ".join(bad) or "see payapi health check")

    def probes(self, spec: DrillSpec, tag: str) -> Mapping[str, tuple[Attempt, float]]:
        endpoint = self.endpoint_url
        client = self.cli("clients", "create", f"drill-{tag[-6:]}")
        secret = SecretStr(str(client.pop("client_secret")))
        client_id = str(client["client_id"])
        out: dict[str, tuple[Attempt, float]] = {}
        names = spec.all_probes()
        if "payments" in names:
            out["payments"] = (
                PaymentAttempt(endpoint, client_id, secret, tag=f"drill-{tag[-6:]}"),
                0.1,
            )
        if "tokens" in names:
            self._tokens = TokenAttempt(endpoint, client_id, secret)
            out["tokens"] = (self._tokens, 1.0)
        if "vault" in names:
            self._vault = self._vault_probe(tag)
            out["vault"] = (self._vault, 1.0)
        return out

    def _vault_probe(self, tag: str) -> VaultAttempt:
        from payapi.vault.client import VaultClient

        s = self.settings().vault
        key = read_secret_file(s.admin_api_key_file, "vault admin API key")

        async def declare() -> None:
            async with VaultClient(s.endpoints(), s.account, s.admin_login, key) as admin:
                await admin.load_policy("root", f"- !variable {PROBE_VARIABLE}\n", "POST")

        asyncio.run(declare())
        return VaultAttempt(s.endpoints(), s.account, s.admin_login, key, tag=tag[-6:])

    def found(self, probe: str, refs: Sequence[str]) -> set[str]:
        if probe == "payments":
            return self._payments_found(refs)
        if probe == "tokens" and self._tokens is not None:
            return self._tokens.found(refs)
        if probe == "vault" and self._vault is not None:
            try:
                return self._vault.found(refs)
            finally:
                self._vault.close()
        raise CliDrillError(f"no check for the {probe} probe")

    def _payments_found(self, refs: Sequence[str]) -> set[str]:
        """The acknowledged payments that are in the serving database as acknowledged
        (1.00 USD): a corrupted amount counts as missing until it is corrected."""
        dsn = self.payment_dsn()
        found: set[str] = set()
        ids = list(dict.fromkeys(refs))
        for i in range(0, len(ids), 500):
            part = ",".join(f"'{x}'" for x in ids[i : i + 500] if _uuidish(x))
            if not part:
                continue
            rows = psql(dsn, f"SELECT id FROM payments WHERE id IN ({part}) AND amount = 1.00")  # noqa: S608 (ids checked)
            found |= {r[0] for r in rows}
        return found

    def run_runbook(self, spec: DrillSpec) -> str:
        """A ``runbook`` recovery: ``recover component C`` for the component ladders, else
        ``runbook run NAME`` with the spec's parameters."""
        rec = spec.recovery
        assert rec.runbook is not None
        if rec.runbook.startswith("component-"):
            component = rec.runbook.removeprefix("component-")
            out = self.cli("recover", "component", component, "--yes")
            return f"{rec.runbook}: {out.get('outcome', out.get('status', 'done'))}"
        out = self.cli("runbook", "run", rec.runbook, "--yes", *_params(rec.params))
        return f"{rec.runbook}: {out.get('status', 'done')}"

    def describe(self, spec: DrillSpec) -> list[TabletopStep]:
        exp = spec.expected_seconds
        inj = spec.injection
        what_inj = {
            "kill": f"kill -9 of {inj.component} in the serving region"
            + (" (the primary only)" if inj.component in ("db", "redis") else ""),
            "region-outage": "kill -9 of every process of the primary region",
            "corrupt-payments": f"change {inj.updated} payments' amounts and delete {inj.deleted}",
            "leak-credentials": "a client's secret and a bearer token are taken as leaked",
            "store-outage": "the backup repository becomes unreachable",
        }[inj.kind]
        if inj.channel_down:
            what_inj += "; the primary communication channel goes down"
        rec = spec.recovery
        what_rec = {
            "automatic": "nothing: Patroni / Sentinel recover by themselves; watch the probes",
            "region-failover": "payapi region failover --to dr --yes",
            "breach": "payapi recover breach --clients LEAKED --yes; the leaked secret and"
            " token must then fail",
            "runbook": f"run the runbook {rec.runbook}",
            "store-return": f"after {rec.delay_seconds:g}s the store returns; the WAL that"
            " PostgreSQL kept must drain and a backup must be accepted",
        }[rec.kind]
        if rec.component_failure:
            what_rec += (
                f"; then {rec.component_failure} fails in the region that took over:"
                f" payapi recover component {rec.component_failure} --region R --yes"
            )
        if inj.channel_down:
            what_rec += "; a status update must reach a backup channel"
        steps = [
            TabletopStep(
                "steady",
                "steady-state",
                "payapi health check; the probes succeed",
                exp.get("steady"),
            ),
            TabletopStep("inject", "inject", what_inj, exp.get("inject")),
            TabletopStep("recover", "recover", what_rec, exp.get("recover")),
        ]
        if rec.kind == "runbook" and rec.runbook:
            steps += self._runbook_steps(rec.runbook, exp.get("recover"))
        steps += [
            TabletopStep(
                "restore",
                "restore-normal",
                self.restore_what,
                exp.get("restore"),
            ),
            TabletopStep(
                "verify", "verify", "look for every acknowledged write", exp.get("verify")
            ),
        ]
        return steps

    def _runbook_steps(self, name: str, expected: float | None) -> list[TabletopStep]:
        try:
            shown = self.cli("runbook", "list")
        except CliDrillError:
            return []
        for rb in shown.get("result", shown.get("runbooks", [])) or []:
            if isinstance(rb, dict) and rb.get("name") == name:
                return [
                    TabletopStep("recover", f"runbook {name}: {s}", f"step {s} of {name}")
                    for s in rb.get("steps", [])
                ]
        return []


def _params(params: Mapping[str, str]) -> list[str]:
    out: list[str] = []
    for k, v in params.items():
        out += ["--param", f"{k}={v}"]
    return out


def _uuidish(text: str) -> bool:
    return all(c in "0123456789abcdefABCDEF-" for c in text) and 8 <= len(text) <= 64


def _why(code: int, stderr: str, data: Any) -> str:
    """One line of why a command failed: the last line of its stderr; with ``--json`` a
    command that fails after it started reports in its JSON instead (``error``), so the
    drill's reason says what went wrong rather than only the exit code."""
    lines = stderr.strip().splitlines()
    if lines:
        return lines[-1]
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, str) and error:
        return f"exit {code}: {error}"
    return f"exit {code}"
