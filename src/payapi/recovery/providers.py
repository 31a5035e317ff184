"""Capabilities the recovery actions use but may not import: injected by the caller.

The layers (``lint-imports``) put ``ops`` beside ``recovery``, so an action cannot import
the security scan or the clean deployment; the CLI registers them here before it runs a
runbook (:mod:`payapi.cli.recovery_providers`), as it injects the approval policy and
the audit sink. An action whose provider is missing fails its step with one line.

A provider is ``(settings, params) -> (ok, one line)``: ``ok`` False fails the step with
that line. It must be idempotent like every action (a resumed run calls it again).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from payapi.core.settings import Settings

Provider = Callable[[Settings, Mapping[str, Any]], tuple[bool, str]]

SECURITY_CHECK = "security_check"  # params: comprehensive (bool)
CLEAN_DEPLOYMENT = "clean_deployment"  # params: version (str), releases (str: a path or "")

_PROVIDERS: dict[str, Provider] = {}


def provide(name: str, fn: Provider) -> None:
    """Register (or replace) the provider ``name``."""
    _PROVIDERS[name] = fn


def get(name: str) -> Provider | None:
    return _PROVIDERS.get(name)
