"""Access control on recovery operations (seed "Access Control"), against the vault.

Operators are vault identities (Conjur users or hosts, each with an API key), and each
runbook is the Conjur resource ``webservice:runbooks/<name>``: running, resuming or
approving it needs ``execute`` on it, asked of the vault with Conjur's permission check
*as the operator* (their login and API key → an access token), so one RBAC governs the
platform's secrets and its recovery. Who holds a role is the operator's memberships in
the vault (``GET /roles/…?all``): the DR team's roles are Conjur groups.

The lab's team (:data:`TEAM`) and who may execute which shipped runbook
(:data:`EXECUTE`) are data here; :func:`team_policy` turns them into one policy load.
An API key is a :class:`~pydantic.SecretStr` from a file or the environment, never an
argument, and never in a message, a journal or an audit event.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import SecretStr

from payapi.core.errors import PayapiError
from payapi.core.settings import Settings
from payapi.vault.client import VaultClient, VaultError, VaultNotFound, VaultUnauthorized

EXIT_DENIED = 3
RESOURCE_KIND = "webservice"
RESOURCE_PREFIX = "runbooks/"
PRIVILEGE = "execute"

# The plan's team roles that act in a recovery (dr-plan.yaml ``team``) → the one lab
# user of each group. The Communications Lead sends messages and runs no runbook.
COORDINATOR = "dr-coordinator"
TEAM: Mapping[str, str] = {
    COORDINATOR: "dr-coordinator",
    "infrastructure-lead": "infra-lead",
    "application-lead": "app-lead",
    "security-lead": "security-lead",
}
# Shipped runbook → the groups that may execute it, besides the DR coordinator (who may
# execute everything). A runbook not named here: the coordinator only.
_LEADS = ("infrastructure-lead", "application-lead", "security-lead")
EXECUTE: Mapping[str, tuple[str, ...]] = {
    "engine-selftest": _LEADS,
    "platform-check": _LEADS,
    "approval-selftest": ("infrastructure-lead", "application-lead"),
    "component-eapi": ("application-lead",),
    "component-sapi": ("application-lead",),
    "component-vault": ("infrastructure-lead",),
    "component-redis": ("infrastructure-lead",),
    "component-db": ("infrastructure-lead",),
    "system-recovery": ("infrastructure-lead",),
    "security-breach": ("security-lead",),
    "corruption-db": ("infrastructure-lead", "application-lead"),
    "corruption-vault": ("infrastructure-lead", "security-lead"),
}


class AccessDenied(PayapiError):
    """Refused by access control (exit 3): no operator, bad credentials, no ``execute``,
    an approver who is the requester or does not hold the role."""

    exit_code = EXIT_DENIED


@dataclass(frozen=True)
class Operator:
    """Who acts (``payapi --as LOGIN``): a Conjur login (``host/…`` for a host)."""

    login: str
    api_key: SecretStr = field(repr=False)


def resource_id(runbook: str) -> str:
    return RESOURCE_PREFIX + runbook


def groups_of(role_ids: Iterable[str]) -> frozenset[str]:
    """The group names among full role ids (``acct:group:dr-coordinator`` → the name)."""
    out = set()
    for rid in role_ids:
        _, kind, ident = [*rid.split(":", 2), "", ""][:3]
        if kind == "group" and ident:
            out.add(ident)
    return frozenset(out)


def executors(runbook: str) -> tuple[str, ...]:
    """The groups that may execute ``runbook`` (the coordinator first)."""
    return (COORDINATOR, *(g for g in EXECUTE.get(runbook, ()) if g != COORDINATOR))


def team_policy(runbooks: Iterable[str]) -> str:
    """The root-policy YAML of the team (a group and a user per role) and of one
    webservice per runbook, ``execute`` permitted as :func:`executors` says."""
    lines: list[str] = []
    for group, user in TEAM.items():
        lines += [f"- !group {group}", f"- !user {user}"]
        lines += ["- !grant", f"  role: !group {group}", f"  member: !user {user}"]
    for name in sorted(set(runbooks)):
        lines.append(f"- !webservice {resource_id(name)}")
        for group in executors(name):
            lines += [
                "- !permit",
                f"  role: !group {group}",
                "  privileges: [read, execute]",
                f"  resource: !webservice {resource_id(name)}",
            ]
    return "\n".join(lines) + "\n"


def key_file(secrets_dir: Path, login: str) -> Path:
    return secrets_dir / f"{login.replace('/', '-')}.api_key"


async def ensure_team(
    admin: VaultClient, *, secrets_dir: Path, runbooks: Iterable[str]
) -> list[str]:
    """Load :func:`team_policy` (one policy load; idempotent) and write each new user's
    API key to ``<secrets_dir>/<login>.api_key`` (0600). A user whose key file is
    missing gets a new key. Returns what it did, for the operator."""
    from payapi.credentials.platform import write_private

    done: list[str] = []
    result = await admin.load_policy("root", team_policy(runbooks), "POST")
    created = result.get("created_roles", {})
    for group, user in TEAM.items():
        path = key_file(secrets_dir, user)
        role_id = f"{admin.account}:user:{user}"
        if role_id in created:
            write_private(path, created[role_id]["api_key"])
            done.append(f"created operator {user} ({group})")
        elif not path.exists():
            key = await admin.rotate_api_key(role=f"user:{user}")
            write_private(path, key.get_secret_value())
            done.append(f"re-issued the API key of operator {user} (key file was missing)")
    return done


@dataclass(frozen=True)
class Standing:
    """What the vault says of an operator and one runbook."""

    login: str
    may_execute: bool
    groups: frozenset[str]


async def _standing(settings: Settings, operator: Operator, runbook: str) -> Standing:
    v = settings.vault
    async with VaultClient(v.endpoints(), v.account, operator.login, operator.api_key) as c:
        try:
            allowed = await c.check_permission(RESOURCE_KIND, resource_id(runbook), PRIVILEGE)
            groups = groups_of(await c.memberships()) if allowed else frozenset()
        except VaultUnauthorized:
            raise AccessDenied(
                f"the vault rejected the credentials of operator {operator.login}"
            ) from None
        except VaultNotFound:
            groups = frozenset()
    return Standing(operator.login, allowed, groups)


def standing(settings: Settings, operator: Operator, runbook: str) -> Standing:
    """Ask the vault, as ``operator``: ``execute`` on the runbook, and the groups held.
    A vault that cannot answer fails the command (closed: exit 1), never allows."""
    try:
        return asyncio.run(_standing(settings, operator, runbook))
    except AccessDenied:
        raise
    except VaultError as exc:
        raise VaultError(f"access check for {operator.login}: {exc}") from None
