"""The one templating runbooks have: ``{{ name }}`` stands for the runbook parameter
``name``. Nothing else (no filters, no expressions, no Jinja): a runbook is data an
approver reads, so what a step will do must be plain from the text.

A string that is exactly one reference becomes the parameter's typed value (an ``int``
stays an ``int``, a duration is seconds); a reference inside a longer string is replaced
by the value's text. Lists and mappings are rendered item by item; keys are never
templated.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from payapi.core.errors import PayapiError

_REF = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
_WHOLE = re.compile(r"\A\s*\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}\s*\Z")


class TemplateError(PayapiError):
    """A template names an unknown parameter or is not ``{{ name }}``."""


def _check_syntax(text: str) -> None:
    rest = _REF.sub("", text)
    if "{{" in rest or "}}" in rest:
        raise TemplateError(
            f"{text!r}: only {{{{ name }}}} (a parameter name) may appear between braces"
        )


def references(value: Any) -> set[str]:
    """Every parameter name ``value`` refers to (raises on malformed braces)."""
    if isinstance(value, str):
        _check_syntax(value)
        return set(_REF.findall(value))
    if isinstance(value, Mapping):
        return set().union(*(references(v) for v in value.values())) if value else set()
    if isinstance(value, list | tuple):
        return set().union(*(references(v) for v in value)) if value else set()
    return set()


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def render(value: Any, values: Mapping[str, Any]) -> Any:
    """``value`` with every reference replaced by its parameter's value."""
    if isinstance(value, str):
        _check_syntax(value)
        whole = _WHOLE.match(value)
        if whole:
            return _lookup(whole.group(1), values)
        return _REF.sub(lambda m: _text(_lookup(m.group(1), values)), value)
    if isinstance(value, Mapping):
        return {k: render(v, values) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [render(v, values) for v in value]
    return value


def _lookup(name: str, values: Mapping[str, Any]) -> Any:
    if name not in values:
        known = ", ".join(sorted(values)) or "none"
        raise TemplateError(f"{{{{ {name} }}}}: no such parameter (parameters: {known})")
    return values[name]
