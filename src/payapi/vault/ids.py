"""Conjur identifiers: ``account:kind:identifier``, logins, and what a valid id is.

Conjur's full ids split on the first two colons, so an identifier may contain slashes
(``payment-system/clients/xyz/client-id``) but this vault refuses anything outside a
conservative alphabet: ids end up in URLs, logs and file names of other tools, and an id
that cannot be written safely is never worth accepting.
"""

from __future__ import annotations

import re

from payapi.core.errors import PayapiError

KINDS = frozenset(
    {"user", "host", "group", "layer", "policy", "variable", "webservice", "host_factory"}
)
# Kinds that are also roles (can hold privileges, be members of other roles).
ROLE_KINDS = frozenset({"user", "host", "group", "layer", "policy"})
# Roles that can authenticate, hence have an API key.
ACTOR_KINDS = frozenset({"user", "host"})
PRIVILEGES = frozenset({"read", "execute", "update", "create"})
ROOT_POLICY = "root"

MAX_ID_LENGTH = 512
_ACCOUNT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")
_SEGMENT = r"[A-Za-z0-9_][A-Za-z0-9._@+=-]*"
_ID_RE = re.compile(rf"^{_SEGMENT}(?:/{_SEGMENT})*\Z")
_PRIVILEGE_RE = re.compile(r"^[a-z][a-z_]{0,31}\Z")


class InvalidId(PayapiError, ValueError):
    """An identifier that this vault does not accept."""


def valid_account(account: str) -> bool:
    return bool(_ACCOUNT_RE.match(account))


def valid_identifier(identifier: str) -> bool:
    return len(identifier) <= MAX_ID_LENGTH and bool(_ID_RE.match(identifier))


def valid_privilege(privilege: str) -> bool:
    return bool(_PRIVILEGE_RE.match(privilege))


def full_id(account: str, kind: str, identifier: str) -> str:
    return f"{account}:{kind}:{identifier}"


def split_full_id(value: str) -> tuple[str, str, str]:
    parts = value.split(":", 2)
    if len(parts) != 3 or not all(parts):
        raise InvalidId("expected account:kind:identifier")
    return parts[0], parts[1], parts[2]


def make_full_id(value: str, account: str) -> str:
    """Conjur's ``Role.make_full_id``: ``kind:id`` gets the account, a full id stays."""
    if "\x00" in value:  # no id has one, and PostgreSQL cannot even look for it
        raise InvalidId("an id cannot contain NUL")
    parts = value.split(":", 2)
    if len(parts) == 3 and all(parts):
        return value
    if len(parts) == 2 and all(parts):
        return f"{account}:{parts[0]}:{parts[1]}"
    raise InvalidId("expected kind:identifier or account:kind:identifier")


def storable(value: str) -> bool:
    """Whether PostgreSQL can compare ``value`` at all (text cannot hold a NUL): a
    value that fails this names nothing, and is refused before any query."""
    return "\x00" not in value


def valid_full_id(value: str) -> bool:
    """``account:kind:identifier`` as this vault could have stored it."""
    parts = value.split(":", 2)
    return (
        len(parts) == 3
        and valid_account(parts[0])
        and parts[1] in KINDS
        and (valid_identifier(parts[2]) or parts[2] == ROOT_POLICY)
    )


def role_id_from_login(account: str, login: str) -> str:
    """``host/a/b`` is the host ``a/b``; any other login is a user (Conjur's rule)."""
    if login.startswith("host/"):
        return full_id(account, "host", login[len("host/") :])
    return full_id(account, "user", login)


def login_from_role_id(role_id: str) -> str:
    _, kind, identifier = split_full_id(role_id)
    if kind == "user":
        return identifier
    return f"{kind}/{identifier}"
