"""What a running vault holds: settings, the pool, the cipher and the token service.

Kept apart from ``app.py`` so that routes can depend on it without importing the app.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import asyncpg
from fastapi import Request

from payapi import pgfailure
from payapi.core.settings import VaultSettings
from payapi.vault import errors
from payapi.vault.crypto import SecretCipher
from payapi.vault.tokens import TokenService


@dataclass
class VaultState:
    settings: VaultSettings
    dsn: str
    cipher: SecretCipher = field(repr=False)
    tokens: TokenService = field(repr=False)
    pool: asyncpg.Pool[Any] | None = None

    @property
    def accepts_standby(self) -> bool:
        """Whether the DSN lets this vault run on a standby database (a standby vault)."""
        return pgfailure.accepts_standby(self.dsn)

    @property
    def seeks_writer(self) -> bool:
        """Any server will do, but the writer is preferred (``pgfailure.seeks_writer``)."""
        return pgfailure.seeks_writer(self.dsn)

    def require_pool(self) -> asyncpg.Pool[Any]:
        if self.pool is None:
            raise errors.ConjurError(503, "service_unavailable", "vault database unavailable")
        return self.pool


def get_state(request: Request) -> VaultState:
    state = request.app.state.vault
    assert isinstance(state, VaultState)
    return state
