"""Run a real vault (uvicorn on a loopback port, in a thread) for tests and tools.

The official Conjur client needs a real URL, and services that depend on the vault are
best tested against the real thing; this starts one on a database you give it,
bootstrapped, and hands back its URL and admin API key.
"""

from __future__ import annotations

import base64
import secrets
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from payapi.core.settings import Settings, VaultSettings
from payapi.servers.procs import ServerError
from payapi.servers.uvicorn import ServerThread
from payapi.vault.app import create_app
from payapi.vault.bootstrap import bootstrap


@dataclass
class RunningVault:
    url: str
    account: str
    admin_login: str
    admin_api_key: str = field(repr=False)
    data_key: bytes = field(repr=False)
    settings: Settings
    server: ServerThread


@asynccontextmanager
async def running_vault(
    dsn: str,
    *,
    account: str = "payapi",
    admin_login: str = "admin",
    data_key: bytes | None = None,
    **vault_settings: Any,
) -> AsyncIterator[RunningVault]:
    """Bootstrap ``account`` on ``dsn`` and serve it until the block exits."""
    key = data_key or secrets.token_bytes(32)
    admin_key = await bootstrap(dsn, account, admin_login, data_key=key)
    if admin_key is None:
        raise ServerError(f"vault account {account!r} already exists on this database")
    async with serving_vault(
        dsn, data_key=key, account=account, admin_login=admin_login, **vault_settings
    ) as vault:
        vault.admin_api_key = admin_key
        yield vault


@asynccontextmanager
async def serving_vault(
    dsn: str,
    *,
    data_key: bytes,
    account: str = "payapi",
    admin_login: str = "admin",
    **vault_settings: Any,
) -> AsyncIterator[RunningVault]:
    """Serve a vault database that is already bootstrapped (a second vault on it, or a
    standby vault on a replica of it) with its ``data_key``; ``admin_api_key`` is empty."""
    with tempfile.TemporaryDirectory(prefix="payapi-vault-") as tmp:
        key_file = Path(tmp) / "data.key"
        key_file.write_bytes(base64.b64encode(data_key))
        key_file.chmod(0o600)
        settings = Settings(
            vault=VaultSettings(
                account=account,
                admin_login=admin_login,
                dsn=dsn,
                data_key_file=key_file,
                **vault_settings,
            )
        )
        server = ServerThread(create_app(settings))
        url = server.start()
        settings.vault.url = url
        settings.vault.port = server.port
        try:
            yield RunningVault(url, account, admin_login, "", data_key, settings, server)
        finally:
            server.stop()
