"""The seed's "Security Breach Recovery" as the shipped runbook ``security-breach``, run
by the engine (journaled, resumable, access-controlled: ``payapi recover breach``).

1. **containment** (steps ``contain`` and ``revoke``): EAPI refuses the named clients'
   credentials (or every client's) at once — a block in Redis that the verification
   reads in the round trip it already makes — then every token of theirs is revoked;
2. **rotation** (``rotate``): the emergency rotation (new secrets in the vault, tokens
   revoked again: any issued during the rotation die too);
3. **clean deployment** (``deploy``): ``payapi deploy --clean-deployment --version V``
   (the installed release checked against its record, the services restarted), a
   provider the CLI injects; skipped with the reason when no version is given;
4. **security verification** (``security``): ``payapi security check``, injected too;
5. **enhanced monitoring** (``monitoring``): the security alert rules are written beside
   the others (``deploy/prometheus/alerts-security.yml`` in the wheel) for Prometheus;
6. **lift the block** (``unblock``): the old secrets are dead now, the new ones may be
   used.

Every step is idempotent (blocking, revoking and lifting twice is doing it once; a
second rotation after a kill only replaces secrets nobody has yet). The block is held in
Redis: when Redis is down, EAPI falls back on the vault, where the rotation is what
refuses the old secrets (the durable containment). A run that stops half-way leaves the
block in place: containment never lifts itself on a failure (``runbook resume`` goes on).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from payapi.core.errors import PayapiError, UsageError
from payapi.core.settings import Settings

if TYPE_CHECKING:
    from payapi.recovery.service import RunView

ALERT_RULES = "alerts-security.yml"
RUNBOOK = "security-breach"
# The runbook's steps → the steps ``recover breach --json`` has always printed.
LEGACY_STEPS = {
    "contain": "containment",
    "revoke": "containment",
    "rotate": "rotation",
    "deploy": "clean deployment",
    "security": "security verification",
    "monitoring": "enhanced monitoring",
    "unblock": "lift the block",
}


class BreachError(PayapiError):
    """A step of the breach recovery failed (exit 1); the block stays in place."""


def security_rules() -> str:
    """The enhanced monitoring's alert rules, as shipped."""
    return resources.files("payapi.data").joinpath(ALERT_RULES).read_text()


def client_names(clients: str, all_clients: bool) -> list[str] | None:
    """The runbook's ``clients`` (comma-separated) and ``all_clients`` as the names, or
    None for every client; UsageError unless exactly one is given."""
    names = [c.strip() for c in clients.split(",") if c.strip()]
    if all_clients == bool(names):
        raise UsageError("give exactly one of --clients A,B and --all-clients")
    return None if all_clients else names


async def _ids(settings: Settings, clients: Sequence[str] | None) -> list[str] | None:
    from payapi.credentials.service import Platform, client_ids

    if clients is None:
        return None
    p = Platform.from_settings(settings)
    try:
        return list((await client_ids(p, clients)).values())
    finally:
        await p.aclose()


def client_ids(settings: Settings, clients: Sequence[str] | None) -> list[str] | None:
    """The clients' ids from the vault (None: every client); an unknown name raises."""
    return asyncio.run(_ids(settings, clients))


def _cache_down(what: str, exc: Exception) -> BreachError:
    return BreachError(f"{what}: Redis unavailable ({exc})")


async def _block(settings: Settings, ids: Sequence[str] | None) -> None:
    from payapi.credentials.service import Platform

    p = Platform.from_settings(settings)
    try:
        await p.cache.block(ids)
    finally:
        await p.aclose()


async def _revoke(settings: Settings, ids: Sequence[str] | None) -> int:
    from payapi.credentials.service import Platform

    p = Platform.from_settings(settings)
    try:
        if ids is None:
            return await p.cache.revoke_all()
        return sum([await p.cache.revoke_client(i) for i in ids])
    finally:
        await p.aclose()


async def _rotate(settings: Settings, reason: str, clients: Sequence[str] | None) -> Any:
    from payapi.credentials.service import Platform, emergency_rotate

    p = Platform.from_settings(settings)
    try:
        return await emergency_rotate(p, reason=reason, names=clients)
    finally:
        await p.aclose()


async def _unblock(settings: Settings, clients: Sequence[str] | None) -> None:
    from payapi.credentials.service import Platform

    p = Platform.from_settings(settings)
    try:
        await p.cache.unblock(clients)
    finally:
        await p.aclose()


def _who(names: Sequence[str] | None) -> str:
    return "every client" if names is None else ", ".join(names)


def block(settings: Settings, names: Sequence[str] | None) -> str:
    from payapi.eapi.cache import CacheDown

    ids = client_ids(settings, names)
    try:
        asyncio.run(_block(settings, ids))
    except CacheDown as exc:
        raise _cache_down("containment", exc) from None
    return f"{_who(names)} blocked at EAPI"


def revoke(settings: Settings, names: Sequence[str] | None) -> str:
    from payapi.eapi.cache import CacheDown

    ids = client_ids(settings, names)
    try:
        n = asyncio.run(_revoke(settings, ids))
    except CacheDown as exc:
        raise _cache_down("revoking tokens", exc) from None
    return f"{n} tokens revoked"


def rotate(settings: Settings, reason: str, names: Sequence[str] | None) -> str:
    if not reason.strip():
        raise UsageError("--reason must not be empty")
    result = asyncio.run(_rotate(settings, reason, None if names is None else list(names)))
    rotated = len(result.clients) - len(result.errors)
    if result.errors:
        raise BreachError(f"{len(result.errors)} clients not rotated: {result.errors[0]}")
    return f"{rotated} clients rotated, {result.tokens_revoked} tokens revoked"


def write_rules(rules_dir: Path | None) -> str:
    if rules_dir is None:
        return "no rules folder given: the rules ship as payapi/data/" + ALERT_RULES
    rules_dir.mkdir(parents=True, exist_ok=True)
    target = rules_dir / ALERT_RULES
    tmp = target.with_suffix(".tmp")
    tmp.write_text(security_rules())
    tmp.replace(target)
    return f"security alert rules written to {target} (reload Prometheus)"


def unblock(settings: Settings, names: Sequence[str] | None) -> str:
    from payapi.eapi.cache import CacheDown

    ids = client_ids(settings, names)
    try:
        asyncio.run(_unblock(settings, ids))
    except CacheDown as exc:
        raise _cache_down("lifting the block", exc) from None
    return "new secrets in force; the old ones are refused by the vault"


_COUNT = re.compile(r"(\d+) (clients rotated|tokens revoked)")


def outcome(view: RunView) -> dict[str, Any]:
    """What ``recover breach --json`` prints, from the run: ``reason``, ``clients``
    ("all" or the names), ``ok``, ``error``, ``rotated``, ``tokens_revoked``,
    ``rules_file``, ``steps`` (name, status, seconds, detail: the two containment steps
    are one, as the procedure always printed), ``total_seconds``, and ``run_id``."""
    data = view.to_json()
    params = dict(view.state.params)
    names = client_names(str(params.get("clients", "")), bool(params.get("all_clients")))
    steps: list[dict[str, Any]] = []
    rotated = revoked = 0
    for s in data["steps"]:
        if s["attempts"] == 0 and s["status"] != "skipped":
            continue  # never reached (the run stopped before it)
        for n, what in _COUNT.findall(s["output"]):
            if what == "clients rotated":
                rotated += int(n)
            else:
                revoked += int(n)
        name = LEGACY_STEPS.get(s["step"], s["step"])
        seconds = round(s["duration"] or 0.0, 3)
        if steps and steps[-1]["name"] == name:
            prev = steps[-1]
            prev["seconds"] = round(prev["seconds"] + seconds, 3)
            prev["detail"] = f"{prev['detail']}, {s['output']}"
            if prev["status"] == "ok":
                prev["status"] = s["status"]
            continue
        steps.append(
            {"name": name, "status": s["status"], "seconds": seconds, "detail": s["output"]}
        )
    ok = data["status"] == "succeeded"
    rules_dir = str(params.get("rules_dir") or "")
    monitored = any(s["name"] == "enhanced monitoring" and s["status"] == "ok" for s in steps)
    return {
        "reason": params.get("reason", ""),
        "clients": "all" if names is None else names,
        "ok": ok,
        "error": None if ok else data["reason"],
        "rotated": rotated,
        "tokens_revoked": revoked,
        "rules_file": str(Path(rules_dir) / ALERT_RULES) if rules_dir and monitored else None,
        "steps": steps,
        "total_seconds": round(sum(s["seconds"] for s in steps), 3),
        "run_id": data["run_id"],
        "status": data["status"],
    }
