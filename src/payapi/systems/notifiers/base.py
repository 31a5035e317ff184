"""The one interface every notification channel implements (as Dispatch's plugins sit
behind small bases): :meth:`Notifier.render` turns a note into exactly the bytes that
will be sent, :meth:`Notifier.send` sends them.

Rendering is separate from sending so that the caller can record the SHA-256 of what was
sent (or attempted) even when the send fails. The channel's credential (an SMTP password,
a webhook URL) is an argument of :meth:`Notifier.send` only: a notifier never keeps it,
never logs it, and never puts it in an error message.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from payapi.core.errors import PayapiError
from payapi.core.settings import IncidentChannelSettings

__all__ = ["Addressee", "Note", "Notifier", "NotifierError"]


class NotifierError(PayapiError):
    """A send failed (refused, timed out, rejected); the message names no secret."""


@dataclass(frozen=True)
class Addressee:
    """Who a note is for: a role of the plan and one way to reach them."""

    role: str
    contact: str


@dataclass(frozen=True)
class Note:
    """What a channel sends. ``drill`` notes already carry ``[DRILL]`` (the caller's job)."""

    subject: str
    body: str
    drill: bool
    to: tuple[Addressee, ...] = ()

    @property
    def text(self) -> str:
        """Subject and body as one text, without repeating a subject the body starts with."""
        if self.body.startswith(self.subject):
            return self.body
        return f"{self.subject}\n\n{self.body}"


class Notifier(ABC):
    """One configured channel. Subclasses set :attr:`kind` and implement both methods."""

    kind: ClassVar[str]

    def __init__(self, channel: IncidentChannelSettings, *, default_dir: Path) -> None:
        self.channel = channel
        self.default_dir = default_dir

    @property
    def needs_credential(self) -> bool:
        return self.channel.credential is not None

    @abstractmethod
    def render(self, note: Note) -> bytes:
        """The exact bytes :meth:`send` sends for ``note`` (pure)."""

    @abstractmethod
    def send(self, note: Note, payload: bytes, credential: str | None) -> None:
        """Send ``payload``; :class:`NotifierError` when the channel did not take it."""
