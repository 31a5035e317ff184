"""Notification channels (file outbox, SMTP, Slack webhook, generic webhook) behind one
interface, :class:`~payapi.systems.notifiers.base.Notifier`, and a factory keyed by the
channel's configured ``kind``. Implementations are imported lazily, as Barman's cloud
providers are: sending to a file never imports smtplib or httpx.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from payapi.core.settings import IncidentChannelSettings
from payapi.systems.notifiers.base import Addressee, Note, Notifier, NotifierError

__all__ = ["KINDS", "Addressee", "Note", "Notifier", "NotifierError", "open_notifier"]

# kind -> (module, class); the module is imported on first use.
KINDS: dict[str, tuple[str, str]] = {
    "file": ("payapi.systems.notifiers.outbox", "FileOutbox"),
    "smtp": ("payapi.systems.notifiers.smtp", "SmtpNotifier"),
    "slack": ("payapi.systems.notifiers.webhook", "SlackNotifier"),
    "webhook": ("payapi.systems.notifiers.webhook", "WebhookNotifier"),
}


def open_notifier(channel: IncidentChannelSettings, *, default_dir: Path) -> Notifier:
    """The notifier for ``channel`` (``default_dir``: the file outbox's folder when the
    channel names none)."""
    try:
        module_name, class_name = KINDS[channel.kind]
    except KeyError:
        raise NotifierError(f"channel {channel.name}: unknown kind {channel.kind!r}") from None
    cls: type[Notifier] = getattr(importlib.import_module(module_name), class_name)
    return cls(channel, default_dir=default_dir)
