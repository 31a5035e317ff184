"""Bootstrap a vault account: its root policy and admin user (Conjur's ``account create``).

Run once per account, before the first policy load. The admin's API key is returned once
and never again (the vault stores only its hash): the caller must write it somewhere safe
(``vault.admin_api_key_file``) at once.
"""

from __future__ import annotations

import asyncpg

from payapi.vault import db, service
from payapi.vault.crypto import generate_data_key_file, load_data_key

__all__ = ["bootstrap", "generate_data_key_file", "load_data_key"]


async def bootstrap(
    dsn: str, account: str, admin_login: str = "admin", *, data_key: bytes
) -> str | None:
    """Create ``account`` with its root policy owned by the admin user.

    Applies migrations and checks (or records) the data key first, so that a database is
    never bootstrapped under one key and served under another. Returns the admin's new
    API key, or None when the account already exists.
    """
    conn = await asyncpg.connect(dsn)
    try:
        await db.prepare(conn, data_key)
        async with conn.transaction():
            return await service.bootstrap_account(conn, account=account, admin_login=admin_login)
    finally:
        await conn.close()
