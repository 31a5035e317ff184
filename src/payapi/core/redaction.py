"""One way to show a URL or DSN without its credentials, for every module that prints one
(topology, object stores, Git remotes)."""

from __future__ import annotations

import re

__all__ = ["REDACTED", "SENSITIVE_NAME", "is_sensitive_name", "redact_url"]

# What stands in for a removed secret, in URLs here and in log events (core.logs). Kept
# here, not in core.logs, so that printing a URL never imports structlog (``wal push``
# runs once per WAL segment and must start fast).
REDACTED = "[redacted]"

# A field whose name matches this may hold a credential: log events redact its value
# (core.logs), audit events refuse it (audit), reports never write it (drills.report).
SENSITIVE_NAME = re.compile(
    r"(secret|password|passwd|api_?key|token|authorization|credential|cookie|data_?key)",
    re.IGNORECASE,
)


def is_sensitive_name(name: str) -> bool:
    """True when a field called ``name`` may hold a credential."""
    return SENSITIVE_NAME.search(name) is not None


_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^/?#\s]*)@")
_PASSWORD_PARAM = re.compile(
    r"(?P<key>password\s*=\s*)(?P<value>'(?:[^'\\]|\\.)*'|[^\s&]+)", re.IGNORECASE
)


def redact_url(text: str, *, keep_user: bool = True) -> str:
    """``text`` (a URL or a libpq DSN) without any password.

    With ``keep_user=False`` the whole user-info goes (a Git remote's or an object
    store's ``https://token@host``: there the "user" may be the credential).

    ``postgresql://app:pw@db/payments`` → ``postgresql://app@db/payments``;
    ``redis://:pw@host:6379/0`` → ``redis://host:6379/0``; ``password=pw`` (a key/value
    DSN or a URL query parameter, also ``sslpassword``) → ``password=[redacted]``.
    """

    def userinfo(match: re.Match[str]) -> str:
        user = match["userinfo"].split(":", 1)[0] if keep_user else ""
        return f"{match['scheme']}{user}@" if user else match["scheme"]

    text = _USERINFO.sub(userinfo, text)
    return _PASSWORD_PARAM.sub(lambda m: f"{m['key']}{REDACTED}", text)
