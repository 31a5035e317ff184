"""The seed's "Security Breach Recovery" as one procedure, every step timed.

1. **containment**: EAPI refuses the named clients' credentials (or every client's) at
   once — a block in Redis that the verification reads in the round trip it already
   makes — and every token of theirs is revoked;
2. **rotation**: the emergency rotation (new secrets in the vault, tokens revoked again:
   any issued during the rotation die too);
3. **clean deployment**: the caller's (``payapi deploy --clean-deployment --version V``:
   the installed release checked against its record, the services restarted); skipped
   with the reason when no version is given;
4. **security verification**: the caller's check (``payapi security check``);
5. **enhanced monitoring**: the security alert rules are written beside the others
   (``deploy/prometheus/alerts-security.yml`` in the wheel) for Prometheus to load;
6. **lift the block**: the old secrets are dead now, the new ones may be used.

The block is held in Redis: when Redis is down, EAPI falls back on the vault, where the
rotation is what refuses the old secrets (the durable containment). A procedure that stops
half-way leaves the block in place: containment never lifts itself on a failure.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from payapi.core.errors import PayapiError, UsageError
from payapi.core.journal import Journal
from payapi.core.settings import Settings

Check = Callable[[], tuple[bool, str]]  # () -> (ok, one line)

ALERT_RULES = "alerts-security.yml"


class BreachError(PayapiError):
    """A step of the breach recovery failed (exit 1); the block stays in place."""


@dataclass
class BreachOutcome:
    reason: str
    clients: list[str] | None  # None: every client
    journal: Journal
    started: float = field(default_factory=time.monotonic)
    ok: bool = False
    error: str | None = None
    rotated: int = 0
    tokens_revoked: int = 0
    total_seconds: float = 0.0
    rules_file: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "reason": self.reason,
            "clients": "all" if self.clients is None else self.clients,
            "ok": self.ok,
            "error": self.error,
            "rotated": self.rotated,
            "tokens_revoked": self.tokens_revoked,
            "rules_file": self.rules_file,
            "steps": [
                {
                    "name": s.name,
                    "status": str(s.status),
                    "seconds": round(s.duration or 0, 3),
                    "detail": s.output,
                }
                for s in self.journal.steps
            ],
            "total_seconds": round(self.total_seconds, 3),
        }


def security_rules() -> str:
    """The enhanced monitoring's alert rules, as shipped."""
    return resources.files("payapi.data").joinpath(ALERT_RULES).read_text()


async def _ids(settings: Settings, clients: Sequence[str] | None) -> list[str] | None:
    from payapi.credentials.service import Platform, client_ids

    if clients is None:
        return None
    p = Platform.from_settings(settings)
    try:
        return list((await client_ids(p, clients)).values())
    finally:
        await p.aclose()


async def _contain(settings: Settings, ids: Sequence[str] | None) -> int:
    from payapi.credentials.service import Platform

    p = Platform.from_settings(settings)
    try:
        await p.cache.block(ids)
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


def recover_breach(
    settings: Settings,
    *,
    reason: str,
    clients: Sequence[str] | None,
    rules_dir: Path | None,
    deploy: Check | None = None,
    security: Check | None = None,
    journal: Journal | None = None,
) -> BreachOutcome:
    """Contain, rotate, redeploy, verify, monitor, lift the block (module docstring)."""
    from payapi.eapi.cache import CacheDown

    if not reason.strip():
        raise UsageError("--reason must not be empty")
    journal = journal or Journal()
    names = None if clients is None else list(clients)
    out = BreachOutcome(reason=reason, clients=names, journal=journal)
    step = journal.step
    ids = asyncio.run(_ids(settings, names))  # an unknown name: refused, nothing done
    try:
        with step("containment"):
            try:
                out.tokens_revoked = asyncio.run(_contain(settings, ids))
            except CacheDown as exc:
                raise BreachError(f"containment: Redis unavailable ({exc})") from None
            who = "every client" if names is None else ", ".join(names)
            journal.note(f"{who} blocked at EAPI, {out.tokens_revoked} tokens revoked")
        with step("rotation"):
            result = asyncio.run(_rotate(settings, reason, names))
            out.rotated = len(result.clients) - len(result.errors)
            out.tokens_revoked += result.tokens_revoked
            if result.errors:
                raise BreachError(f"{len(result.errors)} clients not rotated: {result.errors[0]}")
            journal.note(f"{out.rotated} clients rotated, {result.tokens_revoked} tokens revoked")
        _checked(journal, "clean deployment", deploy, "no --version given: not redeployed")
        _checked(journal, "security verification", security, "no security check given")
        with step("enhanced monitoring"):
            if rules_dir is None:
                journal.note("no rules folder given: the rules ship as payapi/data/" + ALERT_RULES)
            else:
                rules_dir.mkdir(parents=True, exist_ok=True)
                target = rules_dir / ALERT_RULES
                tmp = target.with_suffix(".tmp")
                tmp.write_text(security_rules())
                tmp.replace(target)
                out.rules_file = str(target)
                journal.note(f"security alert rules written to {target} (reload Prometheus)")
        with step("lift the block"):
            try:
                asyncio.run(_unblock(settings, ids))
            except CacheDown as exc:
                raise BreachError(f"lifting the block: Redis unavailable ({exc})") from None
            journal.note("new secrets in force; the old ones are refused by the vault")
        out.ok = True
    except PayapiError as exc:
        out.error = str(exc)
    finally:
        out.total_seconds = time.monotonic() - out.started
    return out


def _checked(journal: Journal, name: str, check: Check | None, skipped: str) -> None:
    if check is None:
        journal.skip(name, skipped)
        return
    with journal.step(name):
        ok, detail = check()
        if not ok:
            raise BreachError(f"{name}: {detail}")
        journal.note(detail)
