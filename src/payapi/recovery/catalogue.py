"""Which runbooks exist: the ones shipped in the wheel (``payapi/data/runbooks``) and the
operator's own (``[recovery] runbook_dirs``), each a ``*.yaml`` file holding one runbook.

A file that does not parse or validate is an error of one line naming the file and the
field (``runbook ops/x.yaml: steps[1] (restart).timeout: …``), as is a runbook that names
an action nobody registered, or a name that two files define (an operator's runbook never
silently replaces a shipped one).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from payapi.core.errors import PayapiError, UsageError
from payapi.recovery import actions
from payapi.recovery.runbook import Runbook

SHIPPED = "shipped"


class RunbookError(PayapiError):
    """A runbook file is invalid (the message names the file and the field)."""


@dataclass(frozen=True)
class Entry:
    runbook: Runbook
    source: str  # "shipped", or the operator folder it came from
    path: str

    def to_json(self) -> dict[str, Any]:
        rb = self.runbook
        return {
            "name": rb.name,
            "title": rb.title,
            "description": rb.description,
            "source": self.source,
            "path": self.path,
            "parameters": {
                n: {"type": p.type, "default": p.default, "required": p.required}
                for n, p in rb.parameters.items()
            },
            "steps": [s.id for s in rb.steps],
        }


def _where(loc: tuple[int | str, ...], data: Any) -> str:
    """``('steps', 1, 'timeout')`` → ``steps[1] (restart).timeout``."""
    out = ""
    node = data
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
            try:
                node = node[part]
                if isinstance(node, dict) and "id" in node:
                    out += f" ({node['id']})"
            except (IndexError, KeyError, TypeError):
                node = None
        else:
            out += f".{part}" if out else str(part)
            node = node.get(part) if isinstance(node, dict) else None
    return out


def _error(name: str, exc: ValidationError, data: Any) -> RunbookError:
    errors = exc.errors()
    # A misspelt key also makes the real one "missing": the unknown key is the news.
    first = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
    msg = str(first["msg"]).removeprefix("Value error, ")
    where = _where(tuple(first["loc"]), data)
    if first["type"] == "extra_forbidden":
        msg = "unknown field"
    elif first["type"] == "missing":
        msg = "required field missing"
    return RunbookError(f"runbook {name}: {where + ': ' if where else ''}{msg}")


def parse(text: str, name: str) -> Runbook:
    """The runbook in ``text`` (the YAML of file ``name``), validated."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        raise RunbookError(f"runbook {name}: not valid YAML{at}") from None
    if not isinstance(data, dict):
        raise RunbookError(f"runbook {name}: expected a mapping (name, title, steps, …)")
    try:
        runbook = Runbook.model_validate(data)
    except ValidationError as exc:
        raise _error(name, exc, data) from None
    known = set(actions.names())
    for i, step in enumerate([*runbook.steps, *runbook.rollback_steps]):
        where = "steps" if i < len(runbook.steps) else "rollback_steps"
        index = i if i < len(runbook.steps) else i - len(runbook.steps)
        for field, action in (("action", step.action), ("verify.action", _verify(step))):
            if action is not None and action not in known:
                raise RunbookError(
                    f"runbook {name}: {where}[{index}] ({step.id}).{field}: no action "
                    f"{action!r} (actions: {', '.join(sorted(known))})"
                )
    return runbook


def _verify(step: Any) -> str | None:
    return step.verify.action if step.verify is not None else None


def load_file(path: Path) -> Runbook:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RunbookError(f"runbook {path}: cannot read: {exc.strerror or exc}") from None
    return parse(text, str(path))


def _shipped() -> list[Entry]:
    folder = resources.files("payapi") / "data" / "runbooks"
    out = []
    for item in sorted(folder.iterdir(), key=lambda t: t.name):
        if item.name.endswith(".yaml"):
            name = f"payapi/data/runbooks/{item.name}"
            out.append(Entry(parse(item.read_text(encoding="utf-8"), name), SHIPPED, name))
    return out


def discover(dirs: Iterable[Path]) -> list[Entry]:
    """Every runbook, shipped first, then each operator folder's, sorted by file name."""
    entries = _shipped()
    for folder in dirs:
        if not folder.is_dir():
            raise RunbookError(f"[recovery] runbook_dirs: {folder} is not a folder")
        entries += [Entry(load_file(p), str(folder), str(p)) for p in sorted(folder.glob("*.yaml"))]
    seen: dict[str, Entry] = {}
    for e in entries:
        other = seen.get(e.runbook.name)
        if other is not None:
            raise RunbookError(
                f"runbook {e.runbook.name} is defined twice: {other.path} and {e.path}"
            )
        seen[e.runbook.name] = e
    return entries


def find(dirs: Iterable[Path], name: str) -> Entry:
    entries = discover(dirs)
    for e in entries:
        if e.runbook.name == name:
            return e
    known = ", ".join(e.runbook.name for e in entries) or "none"
    raise UsageError(f"no runbook {name!r} (runbooks: {known}; see: payapi runbook list)")
