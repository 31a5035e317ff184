"""The one root of every error an operator can see.

An error that derives from :class:`PayapiError` is a *known* failure: its message is one
line for the operator (whitespace collapsed, never a secret), and the CLI prints it and
exits with :attr:`PayapiError.exit_code` without a traceback. Anything else that escapes
is a programming error and keeps its traceback, so that it gets fixed rather than hidden.

Packages define their own subclasses (``RepositoryError``, ``VaultError``, ``ServerError``
…) under this root, as Patroni and Barman each keep one ``exceptions`` root; callers that
only need "did a known thing fail" catch this one type.
"""

from __future__ import annotations

EXIT_FAILED = 1
EXIT_USAGE = 2


class PayapiError(Exception):
    """A known failure; ``str(exc)`` is one line for the operator."""

    exit_code: int = EXIT_FAILED

    def __init__(self, message: object = "", *args: object) -> None:
        if isinstance(message, str):
            message = " ".join(message.split())
        super().__init__(message, *args)


class UsageError(PayapiError):
    """The request itself is wrong (an unknown name, options that exclude each other)."""

    exit_code = EXIT_USAGE
