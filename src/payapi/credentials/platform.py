"""The platform's own identities and service secrets in the vault.

EAPI and SAPI are vault hosts; their API keys are the only bootstrap credentials kept
outside the vault (files with mode 0600, like a Kubernetes-mounted Conjur API key).
Everything else — the SAPI service token, the EAPI cache key, client secrets — lives in
the vault only.
"""

from __future__ import annotations

import base64
import os
import secrets
from collections.abc import Callable
from pathlib import Path

from pydantic import SecretStr

from payapi.core.naming import EAPI_CACHE_KEY, EAPI_HOST, SAPI_HOST, SAPI_SERVICE_TOKEN
from payapi.vault.client import VaultClient, VaultNotFound

PLATFORM_POLICY = f"""
- !host {EAPI_HOST}
- !host {SAPI_HOST}
- !variable {SAPI_SERVICE_TOKEN}
- !variable {EAPI_CACHE_KEY}
- !permit
  role: !host {SAPI_HOST}
  privileges: [read, execute]
  resource: !variable {SAPI_SERVICE_TOKEN}
- !permit
  role: !host {EAPI_HOST}
  privileges: [read, execute]
  resources:
  - !variable {SAPI_SERVICE_TOKEN}
  - !variable {EAPI_CACHE_KEY}
"""


def write_private(path: Path, value: str) -> None:
    """Write a credential file readable by its owner only, atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(value + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    tmp.replace(path)


async def ensure_platform(
    admin: VaultClient, *, eapi_key_file: Path, sapi_key_file: Path
) -> list[str]:
    """Make sure the platform's hosts, service secrets and key files exist. Idempotent.

    Returns a list of what it did, for the operator.
    """
    done: list[str] = []
    result = await admin.load_policy("root", PLATFORM_POLICY, "POST")
    created = result.get("created_roles", {})
    for host, key_file in ((EAPI_HOST, eapi_key_file), (SAPI_HOST, sapi_key_file)):
        role_id = f"{admin.account}:host:{host}"
        if role_id in created:
            write_private(key_file, created[role_id]["api_key"])
            done.append(f"created vault host {host}")
        elif not key_file.exists():
            key = await admin.rotate_api_key(role=f"host:{host}")
            write_private(key_file, key.get_secret_value())
            done.append(f"re-issued the API key of {host} (key file was missing)")
    initial: dict[str, Callable[[], str]] = {
        SAPI_SERVICE_TOKEN: lambda: secrets.token_urlsafe(32),
        EAPI_CACHE_KEY: lambda: base64.b64encode(secrets.token_bytes(32)).decode(),
    }
    for var, make in initial.items():
        try:
            await admin.get_secret(var)
        except VaultNotFound:
            await admin.set_secret(var, SecretStr(make()))
            done.append(f"initialized {var}")
    return done


async def rotate_service_token(admin: VaultClient) -> None:
    """Replace SAPI's service token; both services pick it up without a restart."""
    await admin.set_secret(SAPI_SERVICE_TOKEN, SecretStr(secrets.token_urlsafe(32)))
