"""Where a client's credentials live in the vault, and what a client id looks like.

A client id is ``<name>-<16 hex>``: the name says which vault variables to read, the
random suffix makes ids unguessable from names. Names are DNS-label-like so that they
are safe in vault ids, URLs and log lines.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass

from payapi.core.errors import PayapiError

CLIENTS_PREFIX = "payment-system/clients"
EAPI_HOST = "payment-system/payment-eapi"
SAPI_HOST = "payment-system/payment-sapi"
SAPI_SERVICE_TOKEN = "payment-system/sapi/service-token"  # noqa: S105 - a vault id
EAPI_CACHE_KEY = "payment-system/eapi/cache-key"

NAME_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,46}[a-z0-9])?\Z")
_CLIENT_ID_RE = re.compile(r"^([a-z0-9](?:[a-z0-9-]{0,46}[a-z0-9])?)-([0-9a-f]{16})\Z")


class InvalidName(PayapiError, ValueError):
    pass


def validate_name(name: str) -> str:
    if not NAME_RE.match(name):
        raise InvalidName(
            f"invalid client name {name!r}: use 1-48 characters of a-z, 0-9 and '-', "
            "starting and ending with a letter or digit"
        )
    return name


def new_client_id(name: str) -> str:
    return f"{validate_name(name)}-{secrets.token_hex(8)}"


def new_client_secret() -> str:
    # 256 bits, URL-safe: fits a header without escaping.
    return secrets.token_urlsafe(32)


def name_of(client_id: str) -> str | None:
    """The client name encoded in ``client_id``, or None if it is not a client id at all."""
    m = _CLIENT_ID_RE.match(client_id)
    return m.group(1) if m else None


@dataclass(frozen=True)
class ClientPaths:
    """The vault variables of one client."""

    name: str

    @property
    def base(self) -> str:
        return f"{CLIENTS_PREFIX}/{self.name}"

    @property
    def client_id(self) -> str:
        return f"{self.base}/client-id"

    @property
    def client_secret(self) -> str:
        return f"{self.base}/client-secret"

    @property
    def previous_secret(self) -> str:
        return f"{self.base}/previous-secret"

    @property
    def previous_valid_until(self) -> str:
        return f"{self.base}/previous-valid-until"

    def all(self) -> tuple[str, str, str, str]:
        return (self.client_id, self.client_secret, self.previous_secret, self.previous_valid_until)


def client_name_from_variable(variable_id: str) -> str | None:
    """``payment-system/clients/NAME/client-secret`` → NAME (as listed by the vault)."""
    prefix = CLIENTS_PREFIX + "/"
    if not variable_id.startswith(prefix) or not variable_id.endswith("/client-secret"):
        return None
    name = variable_id[len(prefix) : -len("/client-secret")]
    return name if NAME_RE.match(name) else None
