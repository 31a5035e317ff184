"""The three message templates of the seed's Communication Plan, rendered with Jinja2.

The packaged templates (``templates/*.txt``) are the seed's text verbatim, each bracketed
placeholder replaced by one Jinja field (a list of ``- [Item 1]`` lines by one loop).
Rendering uses ``StrictUndefined``: a field that is missing is an error naming it, never an
empty line in a message sent at 3 a.m. ``[incident] templates`` may name a folder of the
operator's own; a file missing there is taken from the wheel.

Drill mode stamps ``[DRILL]`` at the start of the first line (which is also the subject),
so that nobody who receives a drill message mistakes it for a disaster.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import jinja2

from payapi.core.errors import PayapiError

__all__ = [
    "DRILL_STAMP",
    "TEMPLATE_FILES",
    "MessageKind",
    "Rendered",
    "TemplateFieldError",
    "Templates",
]

MessageKind = Literal["declaration", "status-update", "recovery-complete"]
TEMPLATE_FILES: Mapping[MessageKind, str] = {
    "declaration": "declaration.txt",
    "status-update": "status-update.txt",
    "recovery-complete": "recovery-complete.txt",
}
DRILL_STAMP = "[DRILL] "


class TemplateFieldError(PayapiError):
    """A template could not be rendered (a missing field, a syntax error); one line."""


@dataclass(frozen=True, slots=True)
class Rendered:
    kind: MessageKind
    subject: str
    text: str
    drill: bool


class Templates:
    """The templates to render: an operator's folder first, then the packaged ones."""

    def __init__(self, folder: Path | None = None) -> None:
        loaders: list[jinja2.BaseLoader] = []
        if folder is not None:
            if not folder.is_dir():
                raise TemplateFieldError(f"[incident] templates: {folder} is not a folder")
            loaders.append(jinja2.FileSystemLoader(str(folder)))
        loaders.append(jinja2.PackageLoader("payapi.incident", "templates"))
        # Plain text, not HTML: nothing to escape (autoescape would turn & into &amp;).
        self.env = jinja2.Environment(
            loader=jinja2.ChoiceLoader(loaders),
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=True,
            autoescape=False,  # noqa: S701 - plain-text messages, never HTML
        )

    def render(self, kind: MessageKind, fields: Mapping[str, Any], *, drill: bool) -> Rendered:
        name = TEMPLATE_FILES[kind]
        try:
            text = self.env.get_template(name).render(**fields)
        except jinja2.UndefinedError as exc:
            raise TemplateFieldError(f"template {name}: missing field: {exc.message}") from None
        except jinja2.TemplateSyntaxError as exc:
            raise TemplateFieldError(f"template {name}: line {exc.lineno}: {exc.message}") from None
        except jinja2.TemplateError as exc:
            raise TemplateFieldError(f"template {name}: {exc}") from None
        if drill:
            text = DRILL_STAMP + text
        subject = text.split("\n", 1)[0].strip()
        return Rendered(kind, subject, text, drill)
